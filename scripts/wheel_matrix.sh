#!/usr/bin/env bash
# wheel_matrix.sh — issue #16's proof that one wheel serves every torch: build
# the wheel once, install that same file into fresh virtual environments of
# other torch releases and flavours, and run the core tests in each.
#
#   bash scripts/wheel_matrix.sh          make wheel (unless WHEEL=FILE), then here:
#                                         torch 2.13.0 (CPU-only build) and torch 2.14.1
#                                         (CUDA 13 build, no GPU here), each in a fresh venv
#   bash scripts/wheel_matrix.sh device   on the GPU machine: the wheel in dist/ (built here,
#                                         carried there: run's carry ["dist"]) installed into
#                                         the python3 that holds its torch (2.11+cu130, Python
#                                         3.12); the core tests, the CUDA tests among them
#
# Core tests: the fixed list CORE below. They need pytest and safetensors (the
# script installs them; the GPU machine has them) and no torchvision, timm or
# transformers: torchvision has no build that imports beside torch 2.13.0+cpu from
# this machine's disk (so test_profiles.py and test_provenance.py, which compare
# with torchvision and timm, are not core). The tests run from the repository's tests/ against the
# installed wheel: each venv's python is started outside the repository, and the
# script checks that vitpe_ext comes from the venv before it runs them.
#
# Writes one line per environment to $OUT/matrix.txt (torch, flavour, python,
# pytest's summary) and each run's log beside it; exits 1 if any run failed.
set -u
cd "$(dirname "$0")/.."
REPO=$PWD
WHERE=${1:-local}
OUT=${OUT:-/tmp/vitpe-wheel-matrix}
WORK=${WORK:-/tmp/vitpe-wheel-venvs}
mkdir -p "$OUT" "$WORK"
: >"$OUT/matrix.txt"
export PYTHONUNBUFFERED=1

CORE="tests/test_install.py tests/test_op_numerics.py tests/test_op_autograd.py tests/test_op_compile.py
      tests/test_op_errors.py tests/test_dynamic.py tests/test_mode_table.py tests/test_checkpoint.py
      tests/test_cuda.py"
# Builds a copy of the sources with a new mode: a source-build test (make test runs it).
DESELECT="test_a_new_filter_mode_is_one_function_and_one_row"
TEST_DEPS="pytest safetensors"

# check_wheel FILE: both compiled modules and the license are in it (a wheel
# built under a CPU-only torch, or without nvcc, would lack the CUDA module).
check_wheel() {
  python3 - "$1" <<'PY' || exit 1
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
missing = [want for want in ("vitpe_ext/_C.abi3.so", "vitpe_ext/_C_cuda.abi3.so", ".dist-info/licenses/LICENSE")
           if not any(name.endswith(want) for name in names)]
sys.exit(f"{sys.argv[1]} lacks {', '.join(missing)}" if missing else 0)
PY
}

# run_core NAME PYTHON FLAVOUR: the core tests with that interpreter, one matrix line.
run_core() {
  local name=$1 py=$2 flavour=$3 log="$OUT/$1.log"
  (cd "$WORK" && "$py" -c "import vitpe_ext, sys; sys.exit(0 if vitpe_ext.__file__.startswith(sys.prefix) else
      'vitpe_ext comes from ' + vitpe_ext.__file__ + ', not from the venv ' + sys.prefix)") || return 1
  (cd "$WORK" && "$(dirname "$py")/vitpe" --version) | tee "$OUT/$name.version"
  local paths="" t
  for t in $CORE; do paths="$paths $REPO/$t"; done
  # From $WORK, not the repository: `python -m pytest` puts the current folder first on sys.path.
  (cd "$WORK" && timeout "${TEST_TIMEOUT:-1800}" "$py" -m pytest -q -p no:cacheprovider -k "not $DESELECT" $paths) \
    >"$log" 2>&1
  local rc=$? summary
  summary=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error).* =+$" "$log" | tail -1 | tr -d '=')
  local torch_version python_version
  torch_version=$("$py" -c "import torch; print(torch.__version__)")
  python_version=$("$py" -c "import platform; print(platform.python_version())")
  printf '%-16s %-28s python %-7s %s (rc %s)\n' "$torch_version" "$flavour" "$python_version" \
    "${summary:-no summary, see $log}" "$rc" | tee -a "$OUT/matrix.txt"
  grep -E "^(FAILED|ERROR)" "$log" | head -20
  return $rc
}

if [ "$WHERE" = device ]; then
  WHEEL=${WHEEL:-$(ls "$REPO"/dist/vitpe_ext-*.whl 2>/dev/null | head -1)}
  [ -n "$WHEEL" ] || { echo "no wheel in dist/: build it here (make wheel) and carry dist"; exit 1; }
  check_wheel "$WHEEL"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  # Into the environment that holds the machine's torch (a fresh machine each
  # lease, and no index there to install another torch from).
  PY=$(python3 -c "import sys; print(sys.executable)")
  "$PY" -m pip install -q --no-index --no-deps --force-reinstall "$WHEEL" || exit 1
  TEST_TIMEOUT=${TEST_TIMEOUT:-540}  # inside the device tool's 10 minutes a command
  run_core device "$PY" "$("$PY" -c "import torch; print('CUDA ' + str(torch.version.cuda) + ', ' + torch.cuda.get_device_name(0))")"
  status=$?
  cat "$OUT/matrix.txt"
  exit $status
fi

if [ -z "${WHEEL:-}" ]; then
  make wheel >"$OUT/wheel.log" 2>&1 || { tail -30 "$OUT/wheel.log"; echo "make wheel failed"; exit 1; }
  WHEEL=$(ls "$REPO"/dist/vitpe_ext-*.whl | head -1)
fi
echo "wheel: $WHEEL"
check_wheel "$WHEEL"
status=0
# torch 2.13.0 resolves to this machine's CPU-only build, 2.14.1 to its CUDA 13 build.
for spec in "2.13.0 cpu" "2.14.1 cuda"; do
  set -- $spec
  venv="$WORK/venv-torch-$1"
  rm -rf "$venv" && python3 -m venv "$venv" || exit 1
  if ! "$venv/bin/python" -m pip install -q "$WHEEL" "torch==$1" $TEST_DEPS >"$OUT/torch-$1-install.log" 2>&1; then
    tail -20 "$OUT/torch-$1-install.log"; echo "install into torch $1 failed"; status=1; continue
  fi
  flavour=$("$venv/bin/python" -c "import torch; print('CPU-only' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda + ', no GPU')")
  run_core "torch-$1" "$venv/bin/python" "$flavour" || status=1
done
echo "matrix ($OUT/matrix.txt):"
cat "$OUT/matrix.txt"
exit $status
