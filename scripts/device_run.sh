#!/usr/bin/env bash
# device_run.sh — build vitpe with its CUDA kernels, run the CUDA tests and time
# the target cases, in one go (one call of the lent GPU machine costs a start,
# so everything that needs the GPU happens here). Logs go to $OUT.
#
#   bash scripts/device_run.sh            build + tests/test_cuda.py + timings + vitpe bench
#   bash scripts/device_run.sh tune       build + kernel tuning table + timings
#   SKIP_BENCH=1 ...                      leave out vitpe bench
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

if [ "$WHAT" = occ ]; then  # register cap experiment: default grids only, GPU time
  gcc -O2 -std=c11 -ffp-contract=off -Icsrc -c csrc/vitpe_plan.c -o /tmp/vitpe_plan.o || exit 1
  sed -n "/cat > \/tmp\/vitpe_tune.cu <<'CUEOF'/,/^CUEOF/p" "$0" | sed '1d;$d' > /tmp/vitpe_tune.cu
  for mb in 1 3 4 5 6; do
    nvcc -O3 -fmad=false -std=c++17 -gencode=arch=compute_90,code=sm_90 -DVITPE_ROWS_MIN_BLOCKS=$mb \
      -Xptxas -v -Icsrc /tmp/vitpe_tune.cu /tmp/vitpe_plan.o -o /tmp/vitpe_tune_$mb 2>/tmp/ptxas_$mb.txt &
  done
  wait
  for mb in 1 3 4 5 6; do
    echo "== __launch_bounds__(256, $mb)"
    awk '/Compiling entry.*rows_kernel.*(f32Li4|bf16Li8)/ {n=$0} /spill/ && n {s=$0} /Used/ && n {print "  ", substr(n, index(n,"rows_kernel"), 28), s, $0; n=""}' /tmp/ptxas_$mb.txt | sed 's/ptxas info    ://g'
    /tmp/vitpe_tune_$mb nosweep 2>&1 | grep default | sed 's/plan fwd.*default/default/'
  done | tee "$OUT/occ.txt"
  exit 0
fi

echo "== build (TORCH_CUDA_ARCH_LIST=9.0 VITPE_CUDA=1)"
start=$(date +%s)
if ! TORCH_CUDA_ARCH_LIST=9.0 VITPE_CUDA=1 MAX_JOBS=8 $PY -m pip install --no-build-isolation --no-deps -e . \
     >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
$PY -c "import torch, vitpe_ext; x = torch.randn(1, 5, 8, device='cuda'); print('smoke', vitpe_ext.interpolate_pos_embed(x, (3, 3)).shape)" || exit 1

if [ "$WHAT" = all ]; then
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
echo "== kernel tuning table (standalone nvcc harness, GPU time only, CUDA events)"
cat > /tmp/vitpe_tune.cu <<'CUEOF'
// Times vitpe__rows_kernel under explicit (tx, rows_per_block) choices against
// a same-size device copy; includes the library's .cu to reach its templates.
#include "vitpe_cuda.cu"
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); return 1; } } while (0)

static int g_profile = 0; /* 1: no sweep, few launches (under ncu) */
static int g_sweep = 1;

template <typename F> static float time_us(F f, cudaStream_t s, int iters = 200) {
    if (g_profile) iters = 2;
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 20; i++) f();
    cudaEventRecord(a, s);
    for (int i = 0; i < iters; i++) f();
    cudaEventRecord(b, s); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b);
    return ms * 1000.f / iters;
}

/* Host time per launch: the launches are queued without waiting, so this
 * is the CPU's cost of a call (argument packing, the driver), not the GPU's. */
template <typename F> static float host_us(F f, cudaStream_t s, int iters = 200) {
    for (int i = 0; i < 20; i++) f();
    cudaStreamSynchronize(s);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) f();
    auto t1 = std::chrono::steady_clock::now();
    cudaStreamSynchronize(s);
    return std::chrono::duration<float, std::micro>(t1 - t0).count() / iters;
}

template <typename TR, int V>
static int run_case(const char *name, int64_t B, int64_t P, int64_t hin, int64_t hout, int64_t C,
                    double sf, int backward) {
    typedef typename TR::T T;
    vitpe_axis h = {hin, hout, VITPE_MODE_BICUBIC, 0, 0, 0, sf}, w = h;
    vitpe_plan_layout L;
    if (vitpe_plan_measure(&L, &h, &w, 1)) { printf("measure failed\n"); return 1; }
    void *plan; CK(cudaMalloc(&plan, L.bytes));
    cudaStream_t s; CK(cudaStreamCreate(&s));
    const int64_t tin = P + hin * hin, tout = P + hout * hout;
    const int64_t src_tokens = backward ? tout : tin, dst_tokens = backward ? tin : tout;
    void *src, *dst, *cpy;
    CK(cudaMalloc(&src, B * src_tokens * C * sizeof(T)));
    CK(cudaMalloc(&dst, B * dst_tokens * C * sizeof(T)));
    CK(cudaMalloc(&cpy, B * dst_tokens * C * sizeof(T)));
    CK(cudaMemset(src, 0x3C, B * src_tokens * C * sizeof(T)));
    vitpe__rows_args a;
    int t = backward ? 2 : 0;
    a.th = vitpe__table_at(plan, &L, t); a.tw = vitpe__table_at(plan, &L, t + 1);
    a.batch = B; a.prefix = P; a.channels = C;
    a.in_bs = src_tokens * C; a.in_ts = C; a.out_bs = dst_tokens * C; a.out_ts = C;
    const size_t bytes = B * dst_tokens * C * sizeof(T);
    vitpe_plan_layout Lf;
    vitpe_plan_measure(&Lf, &h, &w, 0);
    float fill_fwd = time_us([&] { vitpe_plan_fill_cuda(plan, &Lf, &h, &w, s); }, s);
    float fill = time_us([&] { vitpe_plan_fill_cuda(plan, &L, &h, &w, s); }, s);
    float copy = time_us([&] { cudaMemcpyAsync(cpy, dst, bytes, cudaMemcpyDeviceToDevice, s); }, s);
    int sms = 132; vitpe__sm_count(&sms);
    vitpe__grid_plan def = vitpe__choose_grid<TR, V>(a, sms);
    float tdef = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, nullptr, nullptr, s); }, s);
    vitpe_plan *hp = nullptr;
    if (vitpe_plan_create(&hp, &h, &w, 1)) { printf("plan_create failed\n"); return 1; }
    const vitpe_taps *th = backward ? &hp->adj_h : &hp->fwd_h, *tw = backward ? &hp->adj_w : &hp->fwd_w;
    float tinl = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, th, tw, s); }, s);
    float hdev = host_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, nullptr, nullptr, s); }, s);
    float hinl = host_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, th, tw, s); }, s);
    float hcpy = host_us([&] { cudaMemcpyAsync(cpy, dst, bytes, cudaMemcpyDeviceToDevice, s); }, s);
    CK(cudaStreamSynchronize(s)); CK(cudaGetLastError());
    printf("   host us per call: launch with device tables %.2f, with inline tables %.2f, cudaMemcpyAsync %.2f\n",
           hdev, hinl, hcpy);
    printf("%-8s %-4s %s plan fwd %.2f / +adjoint %.2f us | copy(out size) %.2f us | default tx=%lld ty=%lld R=%lld direct=%d: device tables %.2f us, inline (%lld B) %.2f us (%.2fx copy)\n",
           name, sizeof(T) == 4 ? "f32" : "bf16", backward ? "bwd" : "fwd", fill_fwd, fill, copy,
           (long long)def.tx, (long long)def.ty, (long long)def.rows_per_block, def.direct, tdef,
           (long long)vitpe__table_bytes<typename TR::ACC>(a), tinl, tinl / copy);
    for (int tx : {32, 16, 8}) for (int ty : {8, 16, 32}) {
        if (tx * ty > 256 || g_profile || !g_sweep || strcmp(name, "dinov2") != 0) continue;
        printf("   tx=%2d ty=%2d:", tx, ty);
        for (int R : {1, 2}) {
            vitpe__grid_plan g = def; g.tx = tx; g.ty = ty; g.rows_per_block = R; g.direct = 0;
            if (vitpe__rows_smem<typename TR::ACC, V>(a, tx) > VITPE_SMEM_LIMIT) {
                printf("  R=%d %7s", R, "-");
                continue;
            }
            float us = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, g, th, tw, s); }, s);
            printf("  R=%d %7.2f", R, us);
        }
        printf("\n");
    }
    vitpe_plan_destroy(hp);
    cudaFree(plan); cudaFree(src); cudaFree(dst); cudaFree(cpy); cudaStreamDestroy(s);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 0;
    setvbuf(stdout, NULL, _IONBF, 0); /* a timeout must not eat buffered lines */
    if (argc > 1 && argv[1][0] == 'n') g_sweep = 0; /* "nosweep": default grids only */
    if (argc > 1 && argv[1][0] == 'p') { /* "profile": the DINOv2 forward kernels only, for ncu */
        g_profile = 1;
        rc |= run_case<vitpe__f32, 4>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, 0);
        rc |= run_case<vitpe__bf16, 8>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, 0);
        return rc;
    }
    for (int bwd = 0; bwd < 2; bwd++) {
        rc |= run_case<vitpe__f32, 4>("vitb", 1, 1, 14, 32, 768, 0.0, bwd);
        rc |= run_case<vitpe__bf16, 8>("vitb", 1, 1, 14, 32, 768, 0.0, bwd);
        rc |= run_case<vitpe__f32, 4>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, bwd);
        rc |= run_case<vitpe__bf16, 8>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, bwd);
    }
    rc |= run_case<vitpe__f32, 4>("vitb-b8", 8, 1, 14, 24, 768, 0.0, 0);
    return rc;
}
CUEOF
gcc -O2 -std=c11 -ffp-contract=off -Icsrc -c csrc/vitpe_plan.c -o /tmp/vitpe_plan.o \
  && nvcc -O3 -fmad=false -std=c++17 -gencode=arch=compute_90,code=sm_90 -Icsrc /tmp/vitpe_tune.cu /tmp/vitpe_plan.o -o /tmp/vitpe_tune \
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
timeout 300 $PY - <<'PYEOF' 2>&1 | tee "$OUT/timings.txt"
import statistics, torch
import vitpe_ext
from vitpe_ext import interpolate_pos_embed as op
from vitpe_ext.reference import recipe_interpolate as recipe
from vitpe_ext.bench import capture_graph

torch.backends.cudnn.benchmark = False
dev = "cuda"
print(torch.cuda.get_device_name(0), "| torch", torch.__version__)


def timed(fn, reps=7, target_ms=25.0):
    """Median per-call time in microseconds of back-to-back calls."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); fn(); e.record(); e.synchronize()
    iters = int(min(2000, max(5, target_ms / max(s.elapsed_time(e), 1e-3))))
    out = []
    for _ in range(reps):
        s.record()
        for _ in range(iters):
            fn()
        e.record(); e.synchronize()
        out.append(s.elapsed_time(e) * 1000.0 / iters)
    return statistics.median(out)


def graphed(fn, n=20):
    """Per-call GPU time with launch gaps removed: n calls captured in a graph."""
    return timed(capture_graph(fn, n)) / n


CASES = [  # name, B, P, hin, hout, C, kwargs
    ("vitb16-224to512", 1, 1, 14, 32, 768, dict(mode="bicubic")),
    ("dinov2g14-518to1022", 1, 5, 37, 73, 1536,
     dict(mode="bicubic", scale_factor=((73 + 0.1) / 37, (73 + 0.1) / 37))),
]
rows = []
for name, B, P, hin, hout, C, kw in CASES:
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(B, P + hin * hin, C, device=dev).to(dtype)
        g = torch.randn(B, P + hout * hout, C, device=dev).to(dtype)
        rkw = dict(kw, new_size=(hout, hout), num_prefix_tokens=P)
        if "scale_factor" in kw:
            rkw["scale_factor"] = list(kw["scale_factor"])
        y = op(x, (hout, hout), num_prefix_tokens=P, **kw)
        ref = recipe(x.double(), compute_dtype=torch.float64, **rkw)
        err = ((y.double() - ref).norm() / ref.norm()).item()
        xr = x.clone().requires_grad_()
        xo = x.clone().requires_grad_()
        f_op = lambda: op(x, (hout, hout), num_prefix_tokens=P, **kw)
        f_rec = lambda: recipe(x, **rkw)
        fb_op = lambda: torch.autograd.grad(op(xo, (hout, hout), num_prefix_tokens=P, **kw), xo, g)
        fb_rec = lambda: torch.autograd.grad(recipe(xr, **rkw), xr, g)
        gx_op, = fb_op()
        gx_rec, = torch.autograd.grad(recipe(xr.double(), compute_dtype=torch.float64, **rkw), xr, g.double())
        gerr = ((gx_op.double() - gx_rec.double()).norm() / gx_rec.double().norm()).item()
        src = torch.empty_like(y).normal_()
        dst = torch.empty_like(y)
        f_copy = lambda: dst.copy_(src)
        src_in, dst_in = torch.empty_like(x).normal_(), torch.empty_like(x)
        f_copy2 = lambda: (dst.copy_(src), dst_in.copy_(src_in))
        t = dict(op=timed(f_op), op_graph=graphed(f_op), recipe=timed(f_rec), copy=timed(f_copy),
                 fb_op=timed(fb_op), fb_rec=timed(fb_rec), copy2=timed(f_copy2))
        rows.append((name, str(dtype).replace("torch.", ""), t, err, gerr))
        print(name, dtype, {k: round(v, 2) for k, v in t.items()}, f"rel err fwd {err:.2e} grad {gerr:.2e}",
              flush=True)

print()
print(f"{'case':22s} {'dtype':9s} {'pass':7s} {'op us':>9s} {'op graph':>9s} {'recipe us':>10s} "
      f"{'copy us':>8s} {'recipe/op':>10s} {'op/copy':>8s} {'graph/copy':>10s}")
for name, dt, t, err, gerr in rows:
    print(f"{name:22s} {dt:9s} {'fwd':7s} {t['op']:9.2f} {t['op_graph']:9.2f} {t['recipe']:10.1f} "
          f"{t['copy']:8.2f} {t['recipe'] / t['op']:9.1f}x {t['op'] / t['copy']:7.2f}x "
          f"{t['op_graph'] / t['copy']:9.2f}x")
    print(f"{name:22s} {dt:9s} {'fwd+bwd':7s} {t['fb_op']:9.2f} {'':9s} {t['fb_rec']:10.1f} "
          f"{t['copy2']:8.2f} {t['fb_rec'] / t['fb_op']:9.1f}x {t['fb_op'] / t['copy2']:7.2f}x")

# where the host time goes: the raw ops (no Python wrapper), a one-op floor
_fwd = torch.ops.vitpe.interpolate_pos_embed.default
_bwd = torch.ops.vitpe.interpolate_pos_embed_backward.default
x = torch.randn(1, 197, 768, device=dev)
g = torch.randn(1, 1 + 32 * 32, 768, device=dev)
xg = x.clone().requires_grad_()
parts = {
    "raw fwd op": lambda: _fwd(x, [32, 32], None, 1, "bicubic", None, False, None),
    "raw bwd op": lambda: _bwd(g, 197, [32, 32], None, 1, "bicubic", None, False, None),
    "wrapper fwd": lambda: op(x, (32, 32)),
    "wrapper fwd, requires_grad": lambda: op(xg, (32, 32)),
    "autograd.grad only (recorded fwd)": None,
    "floor: empty_like": lambda: torch.empty_like(g),
    "floor: x.add(1)": lambda: x.add(1.0),
}
y = op(xg, (32, 32))
parts["autograd.grad only (recorded fwd)"] = lambda: torch.autograd.grad(y, xg, g, retain_graph=True)


class Plain(torch.autograd.Function):  # the same two ops under a plain autograd.Function
    @staticmethod
    def forward(ctx, t):
        return _fwd(t, [32, 32], None, 1, "bicubic", None, False, None)

    @staticmethod
    def backward(ctx, go):
        return _bwd(go, 197, [32, 32], None, 1, "bicubic", None, False, None)


parts["raw fwd op + raw bwd op, no autograd"] = lambda: (parts["raw fwd op"](), parts["raw bwd op"]())
parts["fwd+bwd, op (register_autograd)"] = lambda: torch.autograd.grad(op(xg, (32, 32)), xg, g)
parts["fwd+bwd, plain autograd.Function"] = lambda: torch.autograd.grad(Plain.apply(xg), xg, g)
parts["fwd+bwd floor: (x * 2)"] = lambda: torch.autograd.grad(xg * 2, xg, x)


class Twice(torch.autograd.Function):  # the floor of any op whose autograd is Python
    @staticmethod
    def forward(ctx, t):
        return t * 2

    @staticmethod
    def backward(ctx, go):
        return go * 2


parts["fwd+bwd floor: (x * 2) in autograd.Function"] = lambda: torch.autograd.grad(Twice.apply(xg), xg, x)
xt_cpu = torch.randn(1, 5, 8)
xt_cuda = xt_cpu.cuda()
parts["tiny table, raw fwd op, CPU tensor"] = lambda: _fwd(xt_cpu, [3, 3], None, 1, "bicubic", None, False, None)
parts["tiny table, raw fwd op, CUDA tensor"] = lambda: _fwd(xt_cuda, [3, 3], None, 1, "bicubic", None, False, None)
parts["floor: torch.empty CPU"] = lambda: torch.empty(1, 10, 8)
parts["floor: torch.empty CUDA"] = lambda: torch.empty(1, 10, 8, device=dev)
print("\nhost overhead, ViT-B fp32 (us per call, back-to-back):")
for k, f in parts.items():
    print(f"  {k:36s} {timed(f):8.2f}")

from torch.profiler import profile, ProfilerActivity
fb = lambda: torch.autograd.grad(op(xg, (32, 32)), xg, g)
for _ in range(5):
    fb()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(10):
        fb()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))

# where the op's GPU time goes (kernel by kernel), DINOv2 fp32 forward
x = torch.randn(1, 5 + 37 * 37, 1536, device=dev)
from torch.profiler import profile, ProfilerActivity
for _ in range(3):
    op(x, (73, 73), num_prefix_tokens=5)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    for _ in range(10):
        op(x, (73, 73), num_prefix_tokens=5)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=6))
PYEOF

if [ "$WHAT" = all ] && [ -z "${SKIP_BENCH:-}" ] && $PY -c "import vitpe_ext.bench" 2>/dev/null; then
  echo "== vitpe bench --device cuda"
  timeout 240 $PY -m vitpe_ext.bench --device cuda --cases vitb16-512,dinov2g14-1022 \
    --modes bicubic,bicubic-ac,bilinear --dtypes float32,bfloat16 --min-time 0.05 --repeats 5 \
    --json "$OUT/bench.json" >"$OUT/vitpe_bench.txt" 2>&1
  echo "vitpe bench rc=$?"
  cat "$OUT/vitpe_bench.txt"
fi
echo "== done"
