"""Forward numerics of torch.ops.vitpe.interpolate_pos_embed against the
F.interpolate recipe (vitpe_ext.op.reference.recipe_interpolate).

float32/float64 must equal the recipe within rounding; float16/bfloat16 must
be within one rounding (0.5 ulp) of the recipe run in float64 on the same
(upcast) input, which also covers CPU antialias in half precision, where ATen
itself raises."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from conftest import (FLOAT_DTYPES, HALF_DTYPES, LAYOUTS, MODES, assert_within_half_ulp,
                      dinov2_scale_factor, exact_scale_factor, flag_combos, make_table,
                      has_recipe, recipe_interpolate, skip_if_no_lanczos, torch_has_lanczos)
from vitpe_ext import interpolate_pos_embed

# (old grid, new grid): square up/down/identity, 1x1 in and out, non-square
# with one axis up and the other down.
GRIDS = [
    ((7, 7), (12, 12)),
    ((12, 12), (5, 5)),
    ((6, 6), (6, 6)),
    ((1, 1), (3, 5)),
    ((5, 4), (1, 1)),
    ((4, 6), (9, 5)),
    ((6, 4), (3, 8)),
]
SCALE_KINDS = (None, "exact", "dinov2")


def scale_for(kind, old, new):
    if kind is None:
        return None
    pick = exact_scale_factor if kind == "exact" else dinov2_scale_factor
    return [pick(o, n) for o, n in zip(old, new)]


def check_against_recipe(out, x, new, old, prefix, mode, ac, aa, sf, what):
    assert out.dtype == x.dtype and out.device == x.device, what
    assert out.is_contiguous(), what
    assert out.shape == (x.shape[0], prefix + new[0] * new[1], x.shape[2]), what
    # the prefix tokens are copied, not computed: bit-identical in every dtype
    assert torch.equal(out[:, :prefix], x[:, :prefix]), f"{what}: prefix tokens changed"
    if x.dtype in HALF_DTYPES:
        ref64 = recipe_interpolate(x, new, old, prefix, mode, ac, aa, sf, compute_dtype=torch.float64)
        assert_within_half_ulp(out, ref64, x.to(torch.float64), what)
    else:
        ref = recipe_interpolate(x, new, old, prefix, mode, ac, aa, sf)
        tol = {} if x.dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-13}
        torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{what}: {m}")


SWEEP = [(dtype, mode, ac, aa, kind)
         for dtype in FLOAT_DTYPES for mode in MODES for ac, aa in flag_combos(mode) for kind in SCALE_KINDS]


@pytest.mark.parametrize("dtype,mode,align_corners,antialias,scale_kind", SWEEP,
                         ids=[f"{str(d)[6:]}-{m}-ac{ac}-aa{int(aa)}-sf{k}" for d, m, ac, aa, k in SWEEP])
def test_matches_recipe(dtype, mode, align_corners, antialias, scale_kind):
    """Every mode x flag x scale-factor combination, per dtype, over every grid
    pair and every memory layout; batch, prefix and channels are sampled with
    a fixed seed."""
    skip_if_no_lanczos(mode)
    case = SWEEP.index((dtype, mode, align_corners, antialias, scale_kind))
    rng = random.Random(1000 + case)
    gen = torch.Generator().manual_seed(case)
    for old, new in GRIDS:
        for layout in LAYOUTS:
            batch, prefix, channels = rng.choice((1, 3)), rng.choice((0, 1, 5)), rng.choice((1, 4, 7))
            square = old[0] == old[1]
            old_arg = None if square and rng.random() < 0.5 else old
            sf = scale_for(scale_kind, old, new)
            x = make_table(batch, prefix + old[0] * old[1], channels, dtype, layout, gen)
            out = interpolate_pos_embed(x, new, old_arg, prefix, mode, align_corners, antialias, sf)
            what = f"{old}->{new} {layout} B={batch} P={prefix} C={channels} old_size={old_arg} sf={sf}"
            check_against_recipe(out, x, new, old, prefix, mode, align_corners, antialias, sf, what)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
def test_realistic_table(dtype):
    """A ViT-S/16 224 table (1 + 14*14, 384) resized to 518/14 = 37 with the
    DINOv2 factor, and down to 7: the sizes people actually use."""
    gen = torch.Generator().manual_seed(7)
    x = make_table(1, 1 + 14 * 14, 384, dtype, "contiguous", gen)
    for mode in MODES:
        if not has_recipe(mode):
            continue
        for new in ((37, 37), (7, 7)):
            sf = [dinov2_scale_factor(14, new[0])] * 2
            out = interpolate_pos_embed(x, new, mode=mode, scale_factor=sf)
            check_against_recipe(out, x, new, (14, 14), 1, mode, None, False, sf, f"{mode} 14->{new}")


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16), ids=lambda d: str(d)[6:])
def test_lanczos3_is_torch_lanczos(dtype):
    """lanczos3 is F.interpolate(mode='lanczos', antialias=True) on the grid,
    called here directly rather than through the recipe; the antialias flag
    does not change it."""
    if not torch_has_lanczos():
        pytest.skip("this torch has no F.interpolate(mode='lanczos')")
    gen = torch.Generator().manual_seed(3)
    for old, new in ((9, 9), (4, 13)), ((8, 10), (8, 3)), ((5, 5), (5, 5)):
        x = make_table(2, 1 + old[0] * old[1], 6, dtype, "contiguous", gen)
        grid = x[:, 1:].to(torch.float64).reshape(2, old[0], old[1], 6).permute(0, 3, 1, 2)
        ref = F.interpolate(grid, size=new, mode="lanczos", antialias=True)
        ref = ref.permute(0, 2, 3, 1).reshape(2, -1, 6)
        for aa in (True, False):
            out = interpolate_pos_embed(x, new, old, mode="lanczos3", antialias=aa)
            if dtype == torch.float32:
                torch.testing.assert_close(out[:, 1:], ref.to(dtype))
            else:
                assert_within_half_ulp(out[:, 1:], ref, x.to(torch.float64), f"lanczos3 {old}->{new} aa={aa}")
        assert torch.equal(interpolate_pos_embed(x, new, old, mode="lanczos3", antialias=True),
                           interpolate_pos_embed(x, new, old, mode="lanczos3", antialias=False))


@pytest.mark.parametrize("mode", MODES)
def test_2d_input(mode):
    """(L, C) in, (L', C) out: the same as the batched call."""
    skip_if_no_lanczos(mode)
    gen = torch.Generator().manual_seed(11)
    x = make_table(1, 2 + 5 * 5, 8, torch.float32, "contiguous", gen)[0]
    out = interpolate_pos_embed(x, (8, 3), num_prefix_tokens=2, mode=mode)
    assert out.shape == (2 + 8 * 3, 8) and out.is_contiguous()
    ref = recipe_interpolate(x.unsqueeze(0), (8, 3), (5, 5), 2, mode)[0]
    torch.testing.assert_close(out, ref)
    # a strided 2-D view (every other channel) too
    wide = make_table(1, 2 + 5 * 5, 16, torch.float32, "contiguous", gen)[0]
    out = interpolate_pos_embed(wide[:, ::2], (8, 3), num_prefix_tokens=2, mode=mode)
    torch.testing.assert_close(out, recipe_interpolate(wide[:, ::2].unsqueeze(0), (8, 3), (5, 5), 2, mode)[0])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
def test_empty_batch_or_channels(mode, dtype):
    """B = 0 or C = 0: an empty result of the right shape, forward and backward."""
    for batch, channels in ((0, 4), (2, 0), (0, 0)):
        x = torch.zeros(batch, 1 + 4 * 4, channels, dtype=dtype, requires_grad=True)
        out = interpolate_pos_embed(x, (3, 6), mode=mode)
        assert out.shape == (batch, 1 + 3 * 6, channels) and out.dtype == dtype
        out.sum().backward()
        assert x.grad.shape == x.shape
        out2d = interpolate_pos_embed(torch.zeros(1 + 4 * 4, 0, dtype=dtype), (3, 6), mode=mode)
        assert out2d.shape == (1 + 3 * 6, 0)


NONFINITE = [(mode, ac, aa) for mode in MODES for ac, aa in flag_combos(mode) if ac is not False]


@pytest.mark.parametrize("special", ("nan", "inf"))
@pytest.mark.parametrize("mode,align_corners,antialias", NONFINITE,
                         ids=[f"{m}-ac{ac}-aa{int(aa)}" for m, ac, aa in NONFINITE])
def test_nonfinite_propagate_like_interpolate(special, mode, align_corners, antialias):
    """NaN / +-Inf in the grid (and the prefix) come out where F.interpolate
    puts them: equal isfinite masks, finite values still equal, and NaN inputs
    give NaN exactly where F.interpolate's do. For Inf inputs ATen also turns
    Inf into NaN where it multiplies one sample by several taps (inf*1 + inf*0
    at clamped edges and same-size linear axes); vitpe merges such taps into
    one weight and keeps +-Inf there, so only NaN-from-NaN must agree, and a
    NaN of ours must be a NaN of F.interpolate's."""
    skip_if_no_lanczos(mode)
    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        for old, new in GRIDS + [((8, 8), (4, 4)), ((2, 2), (2, 2))]:
            grid = old[0] * old[1]
            x = make_table(2, 1 + grid, 3, dtype, "contiguous", gen)
            if special == "nan":
                x[0, 1, 0] = float("nan")
                x[1, 1 + grid // 2, 2] = float("nan")
                x[1, 0, 1] = float("nan")  # prefix
            else:
                x[0, 1, 0] = float("inf")
                x[0, 1 + grid // 2, 1] = float("inf")
                x[1, grid, 2] = -float("inf")
                x[1, 0, 1] = float("inf")  # prefix
            out = interpolate_pos_embed(x, new, old, 1, mode, align_corners, antialias)
            ref = recipe_interpolate(x, new, old, 1, mode, align_corners, antialias)
            what = f"{dtype} {old}->{new}"
            differ = (out.isnan() != ref.isnan()) if special == "nan" else (out.isnan() & ~ref.isnan())
            if differ.any():
                raise AssertionError(
                    f"{what}: NaN mask differs at {int(differ.sum())} elements, first (b, token, c) "
                    f"{differ.nonzero().tolist()[:4]}: ours {out[differ].tolist()[:4]} vs F.interpolate "
                    f"{ref[differ].tolist()[:4]}")
            differ = out.isfinite() != ref.isfinite()
            if differ.any():
                raise AssertionError(f"{what}: finite mask differs at {differ.nonzero().tolist()[:4]}")
            finite, both_inf = ref.isfinite(), out.isinf() & ref.isinf()
            torch.testing.assert_close(out[finite], ref[finite], msg=lambda m: f"{what}: {m}")
            assert torch.equal(out[both_inf], ref[both_inf]), f"{what}: an Inf has the wrong sign"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=lambda d: str(d)[6:])
def test_thread_count_does_not_change_results(mode, dtype, num_threads):
    """A table big enough to be split over threads (4 x 24*24 x 768 outputs):
    1 and 2 threads give bit-identical forward and backward results."""
    gen = torch.Generator().manual_seed(9)
    x = make_table(4, 1 + 14 * 14, 768, dtype, "contiguous", gen)
    grad = make_table(4, 1 + 24 * 24, 768, dtype, "contiguous", gen)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = torch.ops.vitpe.interpolate_pos_embed(x, [24, 24], None, 1, mode)
        back = torch.ops.vitpe.interpolate_pos_embed_backward(grad, x.shape[1], [24, 24], None, 1, mode)
        results.append((out, back))
    assert torch.equal(results[0][0], results[1][0]), "forward differs between 1 and 2 threads"
    assert torch.equal(results[0][1], results[1][1]), "backward differs between 1 and 2 threads"
    # and the split result is still the right one
    if dtype == torch.float32 and has_recipe(mode):
        torch.testing.assert_close(results[1][0], recipe_interpolate(x, (24, 24), None, 1, mode))


def test_op_callable_by_keyword():
    """The schema's argument names are the documented ones."""
    gen = torch.Generator().manual_seed(2)
    x = make_table(2, 2 + 4 * 6, 5, torch.float64, "contiguous", gen)
    sf = [dinov2_scale_factor(4, 7), dinov2_scale_factor(6, 3)]
    out = torch.ops.vitpe.interpolate_pos_embed(
        pos_embed=x, new_size=[7, 3], old_size=[4, 6], num_prefix_tokens=2, mode="bilinear",
        align_corners=False, antialias=True, scale_factor=sf)
    torch.testing.assert_close(out, recipe_interpolate(x, (7, 3), (4, 6), 2, "bilinear", False, True, sf),
                               rtol=1e-12, atol=1e-13)
    grad = torch.ops.vitpe.interpolate_pos_embed_backward(
        grad_output=out, input_tokens=x.shape[1], new_size=[7, 3], old_size=[4, 6], num_prefix_tokens=2,
        mode="bilinear", align_corners=False, antialias=True, scale_factor=sf)
    assert grad.shape == x.shape
    # the public function forwards the same names
    again = interpolate_pos_embed(pos_embed=x, new_size=(7, 3), old_size=(4, 6), num_prefix_tokens=2,
                                  mode="bilinear", align_corners=False, antialias=True, scale_factor=sf)
    assert torch.equal(again, out)
    # defaults: old_size=None, num_prefix_tokens=1, mode="bicubic", align_corners=None
    y = make_table(1, 1 + 5 * 5, 3, torch.float64, "contiguous", gen)
    torch.testing.assert_close(torch.ops.vitpe.interpolate_pos_embed(pos_embed=y, new_size=[3, 4]),
                               recipe_interpolate(y, (3, 4), None, 1, "bicubic"), rtol=1e-12, atol=1e-13)


def test_scalar_and_int_arguments_of_the_wrapper():
    """new_size / old_size / scale_factor given as one number mean a square."""
    gen = torch.Generator().manual_seed(4)
    x = make_table(2, 1 + 6 * 6, 4, torch.float32, "contiguous", gen)
    sf = dinov2_scale_factor(6, 9)
    torch.testing.assert_close(interpolate_pos_embed(x, 9, 6, scale_factor=sf),
                               recipe_interpolate(x, (9, 9), (6, 6), 1, "bicubic", scale_factor=(sf, sf)))


def test_plan_cache_is_keyed_and_thread_safe():
    """The shim keeps the 16 most recent plans. Resizes that share sizes and
    mode but differ in align_corners, antialias or scale_factor (the
    coordinate mapping) must not share a plan; 4 threads at once run 48 of
    them in different orders, so entries are evicted while other threads
    use them. Every output and gradient must match the recipe's."""
    import threading

    jobs = []
    for i, (old, new) in enumerate([((5, 7), (9, 4)), ((8, 8), (13, 13)), ((9, 6), (4, 11))]):
        sf = [(n + 0.5) / o for o, n in zip(old, new)]  # floor(o * sf) == n, another mapping
        for mode, extra in [("bilinear", {}), ("bilinear", {"align_corners": True}),
                            ("bilinear", {"antialias": True}), ("bilinear", {"scale_factor": sf}),
                            ("bicubic", {}), ("bicubic", {"align_corners": True}),
                            ("bicubic", {"antialias": True}), ("bicubic", {"scale_factor": sf}),
                            ("nearest", {}), ("nearest", {"scale_factor": sf}),
                            ("nearest-exact", {}), ("area", {})]:
            x = torch.randn(1, 1 + old[0] * old[1], 16, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(i))
            jobs.append((x, new, old, dict(mode=mode, **extra)))

    def run(job):
        x, new, old, kwargs = job
        xg = x.clone().requires_grad_()
        out = interpolate_pos_embed(xg, new, old, **kwargs)
        (grad,) = torch.autograd.grad(out, xg, torch.ones_like(out))
        return out.detach(), grad

    expected = []
    for x, new, old, kwargs in jobs:
        xr = x.clone().requires_grad_()
        ref = recipe_interpolate(xr, new, old, num_prefix_tokens=1, **kwargs)
        (gref,) = torch.autograd.grad(ref, xr, torch.ones_like(ref))
        expected.append((ref.detach(), gref))
    results = [None] * (4 * len(jobs))
    errors = []

    def worker(t):
        try:
            order = list(range(len(jobs)))
            random.Random(t).shuffle(order)
            for k in order:
                results[t * len(jobs) + k] = run(jobs[k])
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for t in range(4):
        for k, (out, grad) in enumerate(expected):
            got_out, got_grad = results[t * len(jobs) + k]
            where = (t, jobs[k][1], jobs[k][2], jobs[k][3])
            torch.testing.assert_close(got_out, out, msg=lambda m: f"{where}: {m}")
            torch.testing.assert_close(got_grad, grad, msg=lambda m: f"{where}: {m}")


def test_plan_cache_is_bounded_by_bytes():
    """Plans grow with the grid and the filter's width: shrinking a 1 x 2^21
    grid to 1 x k with lanczos3 plans ~6*2^21/k taps per output, ~100 MB for
    k = 1. Four such plans must not stay resident (the cache holds 32 MB at
    most), where a cache bounded by count alone kept all four. RSS is read
    in a fresh process so other tests' memory does not blur it."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch, vitpe_ext
        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20
        table = torch.randn(1, 2**21, 1)
        vitpe_ext.interpolate_pos_embed(table, (1, 3), (1, 2**21), 0, mode="bilinear")  # warm up
        before = rss_mb()
        for k in (1, 2, 3, 4):
            vitpe_ext.interpolate_pos_embed(table, (1, k), (1, 2**21), 0, mode="lanczos3")
        print(rss_mb() - before)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth_mb = float(proc.stdout.split()[-1])
    assert growth_mb < 64, f"RSS grew by {growth_mb:.0f} MB over four huge plans"
