#!/usr/bin/env bash
# device_run.sh — build vitpe with its CUDA kernels, run the CUDA tests and time
# the target cases, in one go (one call of the lent GPU machine costs a start,
# so everything that needs the GPU happens here). Logs go to $OUT.
#
#   bash scripts/device_run.sh            build + CUDA hashes + tests/test_cuda.py + kernel
#                                         tuning table + timings + vitpe bench
#   bash scripts/device_run.sh tune       build + kernel tuning table + timings
#   SKIP_BENCH=1 ...                      leave out vitpe bench
#   NCU=1 ...                             ncu on the DINOv2 forward rows kernels too
#
# The programs it runs are real files: bench/cuda_tuning.cu (the rows kernel
# under explicit launch choices, GPU time), bench/cuda_timings.py (the op
# against the recipe, profiler tables) and bench/host_overhead.py (host cost
# per call against native ops).
#
# Expects torch with CUDA (2.11+cu130 on the lent H100/H200), nvcc of the same
# major version, pytest and setuptools importable (checked first).
set -u
OUT=${OUT:-/tmp/vitpe-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
WHAT=${1:-all}
PY=python3
cd "$(dirname "$0")/.."

echo "== environment" | tee "$OUT/env.log"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpus', torch.cuda.device_count(), '|', torch.cuda.get_device_name(0))"
  $PY -c "import pytest, setuptools, wheel; print('pytest', pytest.__version__, '| setuptools', setuptools.__version__)" \
    || echo "MISSING pytest/setuptools/wheel: carry wheels (see .library/device/README.md)"
  command -v nvcc && nvcc --version | tail -1
} 2>&1 | tee -a "$OUT/env.log"

echo "== build (TORCH_CUDA_ARCH_LIST=9.0 VITPE_CUDA=1)"
start=$(date +%s)
if ! TORCH_CUDA_ARCH_LIST=9.0 VITPE_CUDA=1 MAX_JOBS=8 $PY -m pip install --no-build-isolation --no-deps -e . \
     >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
$PY -c "import torch, vitpe_ext; x = torch.randn(1, 5, 8, device='cuda'); print('smoke', vitpe_ext.interpolate_pos_embed(x, (3, 3)).shape)" || exit 1

if [ "$WHAT" = all ]; then
  echo "== output hashes (scripts/output_hashes.py; the CPU hash is aff624d6d332e0c4)"
  $PY scripts/output_hashes.py --device cpu --out "$OUT/hashes_cpu.txt" | tail -1
  $PY scripts/output_hashes.py --device cuda --out "$OUT/hashes_cuda.txt" | tail -1
  echo "== a ValueError thrown by the op, repeated, in a fresh process (rc 0 = survived)"
  for dev in cpu cuda; do for n in 1 2 4; do
    $PY -c "
import sys, torch, vitpe_ext
for i in range($n):
    try:
        vitpe_ext.interpolate_pos_embed(torch.randn(1, 13, 8, device='$dev'), (6, 6))
    except ValueError:
        pass
" >/dev/null 2>&1
    echo "  $dev x$n: rc=$?"
  done; done
  echo "== tests/test_cuda.py"
  start=$(date +%s)
  timeout 420 $PY -m pytest -q -p no:cacheprovider --durations=8 tests/test_cuda.py >"$OUT/test_cuda.log" 2>&1
  echo "pytest rc=$? in $(( $(date +%s) - start )) s"
  grep -E "passed|failed|error" "$OUT/test_cuda.log" | tail -3
  grep -E "^(FAILED|ERROR)" "$OUT/test_cuda.log" | head -20
fi

if [ "$WHAT" = all ] || [ "$WHAT" = tune ]; then
echo "== kernel tuning table (bench/cuda_tuning.cu: GPU time only, CUDA events)"
gcc -O2 -std=c11 -ffp-contract=off -Icsrc -c csrc/vitpe_plan.c -o /tmp/vitpe_plan.o \
  && nvcc -O3 -fmad=false -std=c++17 -gencode=arch=compute_90,code=sm_90 -Icsrc \
       bench/cuda_tuning.cu csrc/vitpe_cuda_plan.cu /tmp/vitpe_plan.o -o /tmp/vitpe_tune \
  && timeout 120 /tmp/vitpe_tune 2>&1 | tee "$OUT/tune.txt"
if [ -n "${NCU:-}" ] && command -v ncu >/dev/null; then
  echo "== ncu: DINOv2 forward rows kernel (f32, then bf16), default grid"
  for dt in f32 bf16; do
    timeout 120 ncu --launch-skip 5 --launch-count 1 --kernel-name-base mangled -k regex:"rows_kernel.*$dt" \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
        --section LaunchStats --section SchedulerStats /tmp/vitpe_tune profile >>"$OUT/ncu.txt" 2>&1
    echo "ncu $dt rc=$?"
  done
  grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit|Waves|Stall|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Grid Size|Block Size|Shared Memory Config|Dynamic Shared" "$OUT/ncu.txt" | head -60
fi
fi

echo "== timings (CUDA events, medians)"
timeout 300 $PY bench/cuda_timings.py 2>&1 | tee "$OUT/timings.txt"
echo "== host cost per call against native ops (bench/host_overhead.py)"
timeout 120 $PY bench/host_overhead.py --device cuda 2>&1 | tee "$OUT/host_overhead.txt"

if [ "$WHAT" = all ] && [ -z "${SKIP_BENCH:-}" ] && $PY -c "import vitpe_ext.bench" 2>/dev/null; then
  echo "== vitpe bench --device cuda"
  timeout 240 $PY -m vitpe_ext.bench --device cuda --cases vitb16-512,dinov2g14-1022 \
    --modes bicubic,bicubic-ac,bilinear --dtypes float32,bfloat16 --min-time 0.05 --repeats 5 \
    --json "$OUT/bench.json" >"$OUT/vitpe_bench.txt" 2>&1
  echo "vitpe bench rc=$?"
  cat "$OUT/vitpe_bench.txt"
fi
echo "== done"
