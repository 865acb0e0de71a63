"""The op on a CUDA device (csrc/vitpe_cuda.cu).

What is held to what:
  * the CUDA op against the ATen CUDA recipe (vitpe_ext.op.reference) over modes x
    flags x dtypes x prefix x shapes x strided layouts: float32/float64 at
    their rounding level (ATen's CUDA kernels fuse multiply-adds and evaluate
    some weights differently), half types within one rounding of the float64
    recipe; lanczos3 against the CPU op where F.interpolate has no lanczos;
  * the CUDA op against the CPU op, bit for bit: both run the same tap
    formulas (vitpe_taps.h) and the same sums in the same order, without FMA
    (only lanczos3's sin() may differ in its last bit between libm and CUDA);
  * gradients: CPU op bitwise, the CUDA recipe's autograd, gradcheck;
  * determinism (10 runs, torch.use_deterministic_algorithms), opcheck,
    torch.compile, CUDA graph capture/replay, a second GPU;
  * grids of rank 1 and 3 with suffix tokens (every staging, device-table and
    direct-kernel paths, graphs, determinism): bit for bit the CPU op.
Everything is skipped without a CUDA device.
"""
from __future__ import annotations

import pytest
import torch

import vitpe_ext
from vitpe_ext import interpolate_pos_embed
from vitpe_ext.op.reference import has_recipe, recipe_interpolate

from conftest import (FLOAT_DTYPES, MODES, assert_within_half_ulp, exact_scale_factor,
                      flag_combos, make_table)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

_fwd = torch.ops.vitpe.interpolate_pos_embed.default
_bwd = torch.ops.vitpe.interpolate_pos_embed_backward.default

# (batch, prefix, old (h, w), new (h, w), channels, layout, scale_factor?)
# Channel counts cover the 16-byte vector path (C % 8 == 0 with aligned
# strides) and the scalar path (C=13, the channel_slice/token_slice offsets);
# "transposed" makes the shim copy to channel stride 1 first.
CASES = [
    (2, 1, (7, 7), (12, 12), 64, "contiguous", False),
    (1, 5, (14, 14), (9, 11), 13, "token_slice", False),
    (3, 0, (5, 8), (8, 5), 40, "channel_slice", False),
    (2, 2, (6, 6), (6, 6), 32, "batch_major_last", False),
    (2, 1, (4, 6), (9, 7), 24, "transposed", True),
    (3, 1, (5, 5), (7, 7), 16, "expanded_batch", False),
]


def _kwargs(mode, ac, aa, old, new, use_sf):
    kw = dict(new_size=new, old_size=old, mode=mode, align_corners=ac, antialias=aa)
    if use_sf:
        kw["scale_factor"] = (exact_scale_factor(old[0], new[0]), exact_scale_factor(old[1], new[1]))
    return kw


def _table(batch, prefix, old, channels, dtype, layout, seed, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    return make_table(batch, prefix + old[0] * old[1], channels, dtype, layout, generator=g).to(device)


def _assert_matches_cpu(ours_cuda, ours_cpu, mode, what):
    """Bitwise, except lanczos3 (its weights call sin(), whose last bit may
    differ between glibc and CUDA's libdevice)."""
    got = ours_cuda.cpu()
    if mode == "lanczos3":
        tol = {torch.float64: 1e-12, torch.float32: 1e-6}.get(got.dtype, 1e-2)
        torch.testing.assert_close(got, ours_cpu, rtol=tol, atol=tol, msg=what)
    else:
        assert torch.equal(got, ours_cpu) or (
            torch.isnan(got).equal(torch.isnan(ours_cpu))
            and torch.equal(got.nan_to_num(), ours_cpu.nan_to_num())), \
            f"{what}: CUDA and CPU ops differ (max {(got.double() - ours_cpu.double()).abs().max()})"


def _assert_matches_recipe(ours, x, prefix, kw, what):
    """ours (CUDA) against the recipe on CUDA (float32/64) or its float64 run
    (half types); lanczos3 without torch lanczos falls back to the CPU op in
    float64 (itself held to the recipe by the CPU tests)."""
    mode = kw["mode"]
    if not has_recipe(mode):
        ref64 = _fwd(x.double().cpu(), kw["new_size"], kw["old_size"], prefix, mode,
                     kw["align_corners"], kw["antialias"], kw.get("scale_factor")).cuda()
    else:
        ref64 = None
        if x.dtype in (torch.float32, torch.float64):
            ref = recipe_interpolate(x, num_prefix_tokens=prefix, **kw)
            tol = 1e-5 if x.dtype == torch.float32 else 1e-11
            torch.testing.assert_close(ours, ref, rtol=tol, atol=tol, msg=what)
            return
        ref64 = recipe_interpolate(x, num_prefix_tokens=prefix, compute_dtype=torch.float64, **kw)
    if x.dtype in (torch.float16, torch.bfloat16):
        assert_within_half_ulp(ours.cpu(), ref64.cpu(), x.double().cpu(), what)
    else:
        tol = 1e-5 if x.dtype == torch.float32 else 1e-11
        torch.testing.assert_close(ours.double(), ref64, rtol=tol, atol=tol, msg=what)


SWEEP = [(m, ac, aa) for m in MODES for ac, aa in flag_combos(m)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("mode,align_corners,antialias", SWEEP)
def test_forward_matches_recipe_and_cpu(mode, align_corners, antialias, dtype):
    for i, (batch, prefix, old, new, channels, layout, use_sf) in enumerate(CASES):
        kw = _kwargs(mode, align_corners, antialias, old, new, use_sf)
        x = _table(batch, prefix, old, channels, dtype, layout, seed=i)
        what = f"{mode} ac={align_corners} aa={antialias} {dtype} case {i} ({layout})"
        out = interpolate_pos_embed(x, num_prefix_tokens=prefix, **kw)
        assert out.is_cuda and out.dtype == dtype and out.is_contiguous()
        assert out.shape == (batch, prefix + new[0] * new[1], channels)
        assert torch.equal(out[:, :prefix], x[:, :prefix]), f"{what}: prefix tokens changed"
        _assert_matches_recipe(out, x, prefix, kw, what)
        _assert_matches_cpu(out, interpolate_pos_embed(x.cpu(), num_prefix_tokens=prefix, **kw),
                            mode, what)


@pytest.mark.parametrize("mode,align_corners,antialias", SWEEP)
def test_gradients_float64_match_cpu_and_recipe(mode, align_corners, antialias):
    for i, (batch, prefix, old, new, channels, layout, use_sf) in enumerate(CASES[:3]):
        kw = _kwargs(mode, align_corners, antialias, old, new, use_sf)
        x = _table(batch, prefix, old, channels, torch.float64, "contiguous", seed=10 + i)
        g = torch.randn(batch, prefix + new[0] * new[1], channels, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(20 + i)).cuda()
        what = f"grad {mode} ac={align_corners} aa={antialias} case {i}"
        xc = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(interpolate_pos_embed(xc, num_prefix_tokens=prefix, **kw), xc, g)
        xh = x.cpu().requires_grad_()
        (gh,) = torch.autograd.grad(interpolate_pos_embed(xh, num_prefix_tokens=prefix, **kw), xh,
                                    g.cpu())
        _assert_matches_cpu(gx, gh, mode, what)
        if has_recipe(mode):
            xr = x.clone().requires_grad_()
            (gr,) = torch.autograd.grad(recipe_interpolate(xr, num_prefix_tokens=prefix, **kw), xr, g)
            torch.testing.assert_close(gx, gr, rtol=1e-11, atol=1e-11, msg=what)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_backward_op_matches_cpu_all_dtypes(mode, dtype):
    """The backward op directly, strided gradients, every dtype, bit for bit
    with the CPU op (the half types round once, on store, on both)."""
    for i, (batch, prefix, old, new, channels, layout, _) in enumerate(CASES):
        dout = _table(batch, prefix, new, channels, dtype, layout, seed=30 + i)
        args = (prefix + old[0] * old[1], list(new), list(old), prefix, mode, None, False, None)
        got = _bwd(dout, *args)
        assert got.shape == (batch, prefix + old[0] * old[1], channels)
        _assert_matches_cpu(got, _bwd(dout.cpu(), *args), mode, f"backward {mode} {dtype} case {i}")


@pytest.mark.parametrize("mode,old,new,antialias", [
    # tables inline in the launch, up to 2 KB (ViT-B) and up to 8 KB
    # (DINOv2-g, lanczos3 on a 100-wide grid), windows wider than 16 taps
    ("bicubic", (14, 14), (32, 32), False),
    ("bicubic", (37, 37), (73, 73), False),
    ("lanczos3", (64, 64), (100, 100), False),
    ("area", (40, 40), (2, 3), False),
    ("bicubic", (24, 30), (3, 4), True),
    ("lanczos3", (33, 20), (5, 2), True),
    # tables over 8 KB: a workspace, filled by the one-block plan kernel...
    ("bicubic", (300, 300), (400, 400), False),
    # ...over 6144 grid indices, the grid-wide plan kernel, adjoint
    # recomputing forward taps (windows <= 16 taps)...
    ("bilinear", (2, 3000), (3, 4000), False),
    # ...or reading them from the forward tables (a second launch)
    ("area", (40, 3000), (2, 3100), False),
])
def test_plan_paths(mode, old, new, antialias):
    """Every way the tables reach the kernel (inline in the launch, or a
    device workspace built by each plan kernel) must give the CPU op's
    forward and gradient."""
    x = _table(2, 1, old, 8, torch.float32, "contiguous", seed=5)
    args = dict(new_size=new, old_size=old, mode=mode, antialias=antialias)
    xc = x.clone().requires_grad_()
    out = interpolate_pos_embed(xc, **args)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, xc, g)
    xh = x.cpu().requires_grad_()
    out_h = interpolate_pos_embed(xh, **args)
    (gh,) = torch.autograd.grad(out_h, xh, g.cpu())
    _assert_matches_cpu(out, out_h.detach(), mode, f"plan {mode} {old}->{new} forward")
    _assert_matches_cpu(gx, gh, mode, f"plan {mode} {old}->{new} gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_wide_grid_direct_kernel(dtype):
    """A scratch row over 48 KiB of shared memory (1000+ columns) goes to the
    direct kernel: same results, forward and backward."""
    old, new = (2, 1000), (3, 1500)
    x = _table(1, 1, old, 256, dtype, "contiguous", seed=7)
    xc = x.clone().requires_grad_()
    out = interpolate_pos_embed(xc, new, old_size=old, mode="bilinear")
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, xc, g)
    xh = x.cpu().requires_grad_()
    out_h = interpolate_pos_embed(xh, new, old_size=old, mode="bilinear")
    (gh,) = torch.autograd.grad(out_h, xh, g.cpu())
    _assert_matches_cpu(out, out_h.detach(), "bilinear", "direct forward")
    _assert_matches_cpu(gx, gh, "bilinear", "direct gradient")


def test_many_channel_tiles_and_rows():
    """Big enough that blocks stride over rows and tiles: ViT-L scale, batch 3."""
    x = _table(3, 1, (16, 16), 1024, torch.float32, "contiguous", seed=8)
    out = interpolate_pos_embed(x, (37, 37))
    _assert_matches_cpu(out, interpolate_pos_embed(x.cpu(), (37, 37)), "bicubic", "vit-l")


def test_gradcheck_cuda():
    for mode, ac, aa in [("bicubic", False, False), ("bilinear", True, False),
                         ("bicubic", False, True), ("area", None, False), ("lanczos3", None, True)]:
        x = torch.randn(2, 1 + 4 * 5, 3, dtype=torch.float64, device="cuda", requires_grad=True)
        f = lambda t: interpolate_pos_embed(t, (6, 3), old_size=(4, 5), mode=mode,
                                            align_corners=ac, antialias=aa)
        assert torch.autograd.gradcheck(f, (x,)), mode
        assert torch.autograd.gradgradcheck(f, (x,)), mode


def _vitb_grad(x, g):
    xc = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(interpolate_pos_embed(xc, (32, 32)), xc, g)
    return gx


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gradients_are_deterministic(dtype):
    x = torch.randn(2, 1 + 14 * 14, 768, device="cuda").to(dtype)
    g = torch.randn(2, 1 + 32 * 32, 768, device="cuda").to(dtype)
    first = _vitb_grad(x, g)
    for _ in range(9):
        assert torch.equal(_vitb_grad(x, g), first)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(_vitb_grad(x, g), first)  # no error: the backward is a gather
    finally:
        torch.use_deterministic_algorithms(before)


def test_opcheck_cuda():
    x = torch.randn(2, 1 + 5 * 5, 16, device="cuda")
    for args in [([7, 7], None, 1, "bicubic", None, False, None),
                 ([4, 6], [5, 5], 1, "bilinear", True, False, None),
                 ([3, 3], None, 1, "area", None, False, None)]:
        torch.library.opcheck(_fwd, (x.clone().requires_grad_(), *args))
        tokens = args[2] + args[0][0] * args[0][1]
        dout = torch.randn(2, tokens, 16, device="cuda")
        torch.library.opcheck(_bwd, (dout, x.shape[1], *args))


def test_torch_compile_cuda():
    x = torch.randn(2, 1 + 14 * 14, 64, device="cuda", requires_grad=True)

    def f(t):
        return interpolate_pos_embed(t * 2, (24, 24)).sum(-1)

    compiled = torch.compile(f, fullgraph=True)
    # inductor may order the channel sum differently: float32 tolerance
    torch.testing.assert_close(compiled(x), f(x))
    (g_eager,) = torch.autograd.grad(f(x).sum(), x)
    (g_comp,) = torch.autograd.grad(compiled(x).sum(), x)
    torch.testing.assert_close(g_comp, g_eager)


@pytest.mark.parametrize("old,new,channels", [(14, 32, 768), (300, 400, 8)])
def test_cuda_graph_capture_and_replay(old, new, channels):
    """The tables travel inside the kernel launch (ViT-B) or are built in a
    device workspace in stream order (a 300 -> 400 grid), so either way the
    forward and backward ops can be captured and replayed."""
    x = torch.randn(1, 1 + old * old, channels, device="cuda")
    dout = torch.randn(1, 1 + new * new, channels, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture, as torch asks
        for _ in range(2):
            _fwd(x, [new, new], None, 1, "bicubic", None, False, None)
            _bwd(dout, x.shape[1], [new, new], None, 1, "bicubic", None, False, None)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = _fwd(x, [new, new], None, 1, "bicubic", None, False, None)
        dx = _bwd(dout, x.shape[1], [new, new], None, 1, "bicubic", None, False, None)
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        dout.copy_(torch.randn_like(dout))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, _fwd(x, [new, new], None, 1, "bicubic", None, False, None))
        assert torch.equal(dx, _bwd(dout, x.shape[1], [new, new], None, 1, "bicubic", None, False, None))
        assert torch.equal(y.cpu(), _fwd(x.cpu(), [new, new], None, 1, "bicubic", None, False, None))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    x = torch.randn(2, 1 + 7 * 7, 32)
    with torch.cuda.device(0):  # the current device is not the tensor's
        xd = x.to("cuda:1").requires_grad_()
        out = interpolate_pos_embed(xd, (10, 10))
        assert out.device == torch.device("cuda:1")
        g = torch.randn_like(out)
        (gx,) = torch.autograd.grad(out, xd, g)
    assert gx.device == torch.device("cuda:1")
    xh = x.clone().requires_grad_()
    out_h = interpolate_pos_embed(xh, (10, 10))
    (gh,) = torch.autograd.grad(out_h, xh, g.cpu())
    assert torch.equal(out.cpu(), out_h.detach()) and torch.equal(gx.cpu(), gh)


def test_two_dim_and_empty_on_cuda():
    x = torch.randn(1 + 4 * 4, 8, device="cuda")
    out = interpolate_pos_embed(x, (6, 6))
    assert out.shape == (37, 8) and out.is_cuda
    assert torch.equal(out.cpu(), interpolate_pos_embed(x.cpu(), (6, 6)))
    assert interpolate_pos_embed(torch.randn(0, 17, 8, device="cuda"), (6, 6)).shape == (0, 37, 8)
    assert interpolate_pos_embed(torch.randn(2, 17, 0, device="cuda"), (6, 6)).shape == (2, 37, 0)


_ERRORS_SCRIPT = r"""
import pytest, torch, vitpe_ext
f = vitpe_ext.interpolate_pos_embed
x = torch.randn(1, 17, 8, device="cuda")
for _ in range(3):  # repeated: an error must leave the process healthy
    with pytest.raises(ValueError, match="align_corners"):
        f(x, (6, 6), mode="area", align_corners=True)
    with pytest.raises(ValueError, match="square grid"):
        f(torch.randn(1, 1 + 12, 8, device="cuda"), (6, 6))
    with pytest.raises(ValueError, match="float32, float64"):
        f(torch.zeros(1, 17, 8, dtype=torch.int32, device="cuda"), (6, 6))
    with pytest.raises(ValueError, match="grad_output has"):
        torch.ops.vitpe.interpolate_pos_embed_backward(x, 17, [5, 5])
    # beyond the GPU's memory: refused before the caching allocator is asked
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(ValueError, match=r"new_size \[65536, 65536\].*bytes.*memory of the device"):
        f(torch.randn(1, 197, 768, device="cuda"), (2**16, 2**16))
    with pytest.raises(ValueError, match="new_size"):
        vitpe_ext.ops.check_call([1, 197, 768], torch.float32, "cuda", [2**16, 2**16])
# below the GPU's memory but above what is free: the caching allocator
# fails, and the op says so in one line (no crash, no C++ backtrace)
free, _ = torch.cuda.mem_get_info()
hog = torch.empty(free - (1 << 30), dtype=torch.uint8, device="cuda")  # leave 1 GiB
side = 2 ** 12  # 1 x 16.8M tokens x 64 float32 = 4 GiB > the 1 GiB left
for op_call in (lambda: f(torch.randn(1, 17, 64, device="cuda"), (side, side)),
                lambda: torch.ops.vitpe.interpolate_pos_embed_backward(
                    torch.randn(1, 5, 64, device="cuda"), 1 + side * side, [2, 2])):
    with pytest.raises(RuntimeError) as caught:
        op_call()
    assert "could not allocate the output of 1 x 16777217 x 64 elements (4.0 GiB)" in str(caught.value), caught.value
    assert "\n" not in str(caught.value), caught.value
del hog
y = f(x, (6, 6))
assert torch.equal(y.cpu(), f(x.cpu(), (6, 6)))
print("ERRORS OK")
"""


def test_bad_arguments_on_cuda_raise_value_error():
    """Bad arguments with CUDA tensors raise ValueError (from the shim), and
    the process carries on. Run in a fresh interpreter so that a crash in
    the error path fails this test instead of ending the whole session."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _ERRORS_SCRIPT], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "ERRORS OK" in r.stdout, (
        f"rc={r.returncode}\n{r.stdout[-1000:]}\n{r.stderr[-3000:]}")


def test_nonfinite_values_propagate_like_cpu():
    x = torch.randn(1, 1 + 5 * 5, 16)
    x[0, 3, 2], x[0, 9, 5], x[0, 0, 1] = float("nan"), float("inf"), float("-inf")
    for dtype in FLOAT_DTYPES:
        xd = x.to(dtype)
        _assert_matches_cpu(interpolate_pos_embed(xd.cuda(), (8, 8)),
                            interpolate_pos_embed(xd, (8, 8)), "bicubic", f"non-finite {dtype}")


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_scale_factor_follows_aten_cpu(mode):
    """ATen's CPU and CUDA nearest kernels disagree for some explicit scale
    factors (the 9x9 grid at (2.694, 2.049) is one: CUDA rounds the source
    index through another float expression). vitpe uses ATen's CPU formula
    on both devices, so its CUDA result is held to ATen CPU, bit for bit."""
    import math
    import random
    rng = random.Random(0)
    cases = [((9, 9), (2.694, 2.049))]
    for _ in range(200):
        old = (rng.randint(2, 20), rng.randint(2, 20))
        cases.append((old, (rng.uniform(0.3, 4.0), rng.uniform(0.3, 4.0))))
    aten_devices_differ = 0
    for i, (old, sf) in enumerate(cases):
        new = (math.floor(old[0] * sf[0]), math.floor(old[1] * sf[1]))
        if min(new) < 1:
            continue
        kw = dict(new_size=new, old_size=old, mode=mode, scale_factor=sf)
        x = _table(2, 1, old, 8, torch.float32, "contiguous", seed=i)
        ours = interpolate_pos_embed(x, **kw)
        aten_cpu = recipe_interpolate(x.cpu(), **kw)
        assert torch.equal(ours.cpu(), aten_cpu), f"{mode} {old} -> {new} at {sf}: CUDA op differs from ATen CPU"
        assert torch.equal(ours.cpu(), interpolate_pos_embed(x.cpu(), **kw))
        aten_devices_differ += not torch.equal(recipe_interpolate(x, **kw).cpu(), aten_cpu)
    print(f"{mode}: ATen CUDA differed from ATen CPU in {aten_devices_differ} of {len(cases)} cases")


# -- grids of rank 1 and 3, suffix tokens (issue #17) ---------------------------------------------
# The CUDA stages mirror the CPU's (csrc/vitpe_stages.h): the rows kernel over
# T slices, the T pass kernel over (H, W) slabs, float slabs between them for
# half data; every staging, the device-table paths and graphs, bit for bit
# with the CPU op. DEVICE is a module constant so that the checks' logic can
# be dry-run with DEVICE = "cpu" on a machine without a GPU.
DEVICE = "cuda"

# (batch, prefix, suffix, old, new, channels, layout): rank 1 and every rank-3
# staging (T kept: rows kernel over slices; H, W kept: T pass alone; both:
# two stages), vector (C % 8 == 0) and scalar paths, strided layouts
GRID_CASES = [
    (2, 1, 3, (9,), (14,), 64, "contiguous"),
    (1, 0, 2, (20,), (7,), 13, "token_slice"),
    (2, 1, 2, (3, 4, 5), (5, 6, 3), 64, "contiguous"),
    (1, 2, 0, (2, 5, 5), (2, 7, 7), 40, "channel_slice"),
    (2, 1, 3, (4, 3, 3), (2, 3, 3), 24, "token_slice"),
    (1, 1, 1, (1, 2, 3), (3, 2, 4), 13, "transposed"),
    (3, 0, 2, (5, 1, 6), (3, 2, 6), 16, "expanded_batch"),
]


def _grid_table(batch, prefix, suffix, old, channels, dtype, layout, seed, device):
    n = 1
    for side in old:
        n *= side
    g = torch.Generator().manual_seed(seed)
    return make_table(batch, prefix + n + suffix, channels, dtype, layout, generator=g).to(device)


def _check_grids_match_cpu(mode, align_corners, antialias, dtype, device=None):
    device = device or DEVICE
    for i, (batch, prefix, suffix, old, new, channels, layout) in enumerate(GRID_CASES):
        x = _grid_table(batch, prefix, suffix, old, channels, dtype, layout, 40 + i, device)
        kw = dict(mode=mode, align_corners=align_corners, antialias=antialias, num_suffix_tokens=suffix)
        what = f"rank {len(old)} {mode} ac={align_corners} aa={antialias} {dtype} case {i} ({layout})"
        out = interpolate_pos_embed(x, list(new), list(old), prefix, **kw)
        assert out.device == x.device and out.dtype == dtype and out.is_contiguous(), what
        assert torch.equal(out[:, :prefix], x[:, :prefix]), f"{what}: prefix changed"
        assert torch.equal(out[:, out.shape[1] - suffix:], x[:, x.shape[1] - suffix:]), f"{what}: suffix changed"
        _assert_matches_cpu(out, interpolate_pos_embed(x.cpu(), list(new), list(old), prefix, **kw), mode, what)
        # the backward op, from a strided gradient
        dout = _grid_table(batch, prefix, suffix, new, channels, dtype, layout, 60 + i, device)
        args = (x.shape[1], list(new), list(old), prefix, mode, align_corners, antialias, None, suffix)
        _assert_matches_cpu(_bwd(dout, *args), _bwd(dout.cpu(), *args), mode, f"backward {what}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("mode,align_corners,antialias", SWEEP)
def test_grids_match_cpu(mode, align_corners, antialias, dtype):
    """Ranks 1 and 3 with prefix and suffix tokens, forward and backward op,
    every mode x flags x dtype: bit for bit the CPU op."""
    _check_grids_match_cpu(mode, align_corners, antialias, dtype)


# (mode, old, new, antialias): the T table too large to travel in the launch
# (a device table), rows tables in a workspace, a scratch row too wide for
# shared memory (the direct kernel, also reading/writing float slabs)
GRID_PATHS = [
    ("bicubic", (8, 3, 3), (200, 4, 4), False),
    ("lanczos3", (120, 2, 2), (7, 3, 3), True),
    ("bicubic", (2, 60, 60), (3, 90, 90), False),
    ("bilinear", (3, 2, 1000), (2, 3, 1500), False),
]


def _check_grid_paths(mode, old, new, antialias, device=None):
    device = device or DEVICE
    for dtype in (torch.float32, torch.bfloat16):
        x = _grid_table(1, 1, 2, old, 8, dtype, "contiguous", 80, device)
        args = dict(new_size=list(new), old_size=list(old), mode=mode, antialias=antialias, num_suffix_tokens=2)
        xc = x.clone().requires_grad_()
        out = interpolate_pos_embed(xc, num_prefix_tokens=1, **args)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(81)).to(dtype).to(device)
        (gx,) = torch.autograd.grad(out, xc, g)
        xh = x.cpu().requires_grad_()
        out_h = interpolate_pos_embed(xh, num_prefix_tokens=1, **args)
        (gh,) = torch.autograd.grad(out_h, xh, g.cpu())
        _assert_matches_cpu(out, out_h.detach(), mode, f"grid path {mode} {old}->{new} {dtype} forward")
        _assert_matches_cpu(gx, gh, mode, f"grid path {mode} {old}->{new} {dtype} gradient")


@pytest.mark.parametrize("mode,old,new,antialias", GRID_PATHS)
def test_grid_plan_paths(mode, old, new, antialias):
    _check_grid_paths(mode, old, new, antialias)


def test_grid_gradcheck_cuda():
    for old, new, mode in (([6], [9], "bicubic"), ([2, 3, 4], [3, 5, 2], "bicubic"),
                           ([3, 2, 3], [2, 4, 4], "trilinear"), ([4, 3, 5], [2, 2, 3], "lanczos3")):
        n = 1
        for side in old:
            n *= side
        x = torch.randn(2, 1 + n + 2, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
        f = lambda t: interpolate_pos_embed(t, new, old, 1, mode, num_suffix_tokens=2)
        assert torch.autograd.gradcheck(f, (x,)), (old, new, mode)
        assert torch.autograd.gradgradcheck(f, (x,)), (old, new, mode)


def _check_grid_gradients_deterministic(dtype, device=None):
    device = device or DEVICE
    x = torch.randn(2, 1 + 8 * 14 * 14 + 3, 768, device=device).to(dtype)
    g = torch.randn(2, 1 + 16 * 16 * 16 + 3, 768, device=device).to(dtype)

    def grad(x=x, g=g):
        xc = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(interpolate_pos_embed(xc, [16, 16, 16], [8, 14, 14], num_suffix_tokens=3), xc, g)
        return gx

    first = grad()
    assert torch.equal(first.cpu(), grad(x.cpu(), g.cpu()))
    for _ in range(9):
        assert torch.equal(grad(), first)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert torch.equal(grad(), first)  # no error: the backward stages are gathers
    finally:
        torch.use_deterministic_algorithms(before)
    return first


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grid_gradients_are_deterministic(dtype):
    """A video table (8 x 14 x 14 -> 16 x 16 x 16, ViT-B channels): two
    stages through the workspace, 10 runs bit for bit, and the CPU's."""
    _check_grid_gradients_deterministic(dtype)


def _check_grid_graph_capture(device=None):
    device = device or DEVICE
    new, old = [6, 5, 7], [4, 3, 3]
    x = torch.randn(1, 1 + 36 + 3, 64, device=device)
    dout = torch.randn(1, 1 + 210 + 3, 64, device=device)
    args = (None, 1, "bicubic", None, False, None, 3)

    def run():
        return (_fwd(x, new, old, *args[1:]), _bwd(dout, x.shape[1], new, old, *args[1:]))

    if device == "cpu":
        y, dx = run()
    else:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm-up outside the capture, as torch asks
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y, dx = run()
    for _ in range(2):
        x.copy_(torch.randn_like(x))
        dout.copy_(torch.randn_like(dout))
        if device == "cpu":
            y, dx = run()
        else:
            graph.replay()
            torch.cuda.synchronize()
        y_now, dx_now = run()
        assert torch.equal(y, y_now) and torch.equal(dx, dx_now)
        assert torch.equal(y.cpu(), _fwd(x.cpu(), new, old, *args[1:]))
        assert torch.equal(dx.cpu(), _bwd(dout.cpu(), x.shape[1], new, old, *args[1:]))


def test_grid_cuda_graph_capture_and_replay():
    """A two-stage rank-3 resize (its slabs in the workspace) is captured and
    replayed, forward and backward."""
    _check_grid_graph_capture()


def test_grid_torch_compile_cuda():
    x = torch.randn(1, 1 + 2 * 3 * 4 + 2, 32, device=DEVICE, requires_grad=True)

    def f(t, n):
        return interpolate_pos_embed(t * 2, [n, 5, 6], [2, 3, 4], num_suffix_tokens=2).sum(-1)

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for n in (3, 4):
        torch.testing.assert_close(compiled(x, n), f(x, n))
        (g_eager,) = torch.autograd.grad(f(x, n).sum(), x)
        (g_comp,) = torch.autograd.grad(compiled(x, n).sum(), x)
        torch.testing.assert_close(g_comp, g_eager)


# -- sample_positions: the tables the host plans and those filled on the device -------------------

def _positions(sizes_in, sizes_out, seed):
    """Sorted positions from before the first token to past the last, per axis."""
    g = torch.Generator().manual_seed(seed)
    return [torch.sort(torch.rand(o, generator=g, dtype=torch.float64) * (i + 1.5) - 0.75).values.tolist()
            for i, o in zip(sizes_in, sizes_out)]


# (old, new, channels): inline tables (a BEiT window 14 -> 24 and a 3-D grid);
# rows tables filled on the device, several fill launches per axis (over 384
# positions each) and a scratch row too wide for shared memory; a T table on
# the device
POSITION_CASES = [((27, 27), (47, 47), 16), ((3, 4, 5), (5, 3, 6), 8), ((30, 500), (40, 900), 8),
                  ((2, 60, 60), (3, 90, 90), 8), ((8, 3, 3), (700, 4, 4), 8), ((900,), (2000,), 64)]


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic"])
@pytest.mark.parametrize("old,new,channels", POSITION_CASES)
def test_sample_positions_match_cpu(mode, old, new, channels):
    """Forward and gradient, float32 and bfloat16: bit for bit the CPU op,
    wherever the CUDA passes take their tables from."""
    positions = _positions(old, new, 90)
    for dtype in (torch.float32, torch.bfloat16):
        x = _grid_table(1, 1, 3, old, channels, dtype, "contiguous", 91, DEVICE)
        kw = dict(mode=mode, num_suffix_tokens=3, sample_positions=positions)
        xc = x.clone().requires_grad_()
        out = interpolate_pos_embed(xc, list(new), list(old), 1, **kw)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(92)).to(dtype).to(DEVICE)
        (gx,) = torch.autograd.grad(out, xc, g)
        xh = x.cpu().requires_grad_()
        out_h = interpolate_pos_embed(xh, list(new), list(old), 1, **kw)
        (gh,) = torch.autograd.grad(out_h, xh, g.cpu())
        what = f"sample_positions {mode} {old}->{new} {dtype}"
        _assert_matches_cpu(out, out_h.detach(), mode, what)
        _assert_matches_cpu(gx, gh, mode, f"{what} gradient")


def test_sample_positions_graph_capture():
    """Device-filled tables with positions are captured and replayed: the
    positions travel in the launches, nothing is read from host memory."""
    old, new = (30, 500), (40, 900)
    positions = _positions(old, new, 93)
    x = torch.randn(1, 30 * 500, 8, device=DEVICE)
    args = (new, old, 0, "bicubic", None, False, None, 0, [p for axis in positions for p in axis])
    _fwd(x, *args)  # warm up the plan cache and the allocator outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = _fwd(x, *args)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y.cpu(), _fwd(x.cpu(), *args))


def test_beit_geometric_resize_on_cuda():
    from vitpe_ext.integrations.rel_pos import resize_rel_pos_bias_table
    table = torch.randn(27 * 27 + 3, 16)
    ours = resize_rel_pos_bias_table(table.to(DEVICE), (24, 24), (47 * 47 + 3, 16))
    assert ours.device.type == "cuda"
    assert torch.equal(ours.cpu(), resize_rel_pos_bias_table(table, (24, 24), (47 * 47 + 3, 16)))
