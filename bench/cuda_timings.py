"""GPU timings of the op against the recipe, a device copy and CUDA graphs,
and the op's host and kernel time in the profiler (CUDA events, medians). scripts/device_run.sh runs it on the lent GPU machine:

    python3 bench/cuda_timings.py

Cases: ViT-B/16 224 -> 512 and DINOv2-g/14 518 -> 1022 (bicubic), float32 and
bfloat16, forward and forward+backward; then profiler tables of a ViT-B fp32
forward+backward (host) and a DINOv2 forward (kernels). The host cost per
call against native ops: bench/host_overhead.py.
"""
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

# the host cost per call against native ops is bench/host_overhead.py's job;
# here, where a ViT-B fp32 forward+backward spends it, op by op
xg = torch.randn(1, 197, 768, device=dev, requires_grad=True)
g = torch.randn(1, 1 + 32 * 32, 768, device=dev)
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
