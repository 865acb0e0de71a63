"""Grids of rank 1 and 3, and suffix tokens (issue #17).

What is held to what:
  * F.interpolate's own 1-D and 3-D modes: rank 1 against F.interpolate on
    (B, C, L) (linear, nearest, nearest-exact, area; align_corners both), rank
    3 against F.interpolate on (B, C, T, H, W) (trilinear, nearest,
    nearest-exact, area): float32/float64 at their rounding level, the half
    types within one rounding of the float64 F.interpolate;
  * the modes F.interpolate has only in 2-D (bicubic, lanczos3, antialias):
    rank 1 against 2-D F.interpolate on a (1, L) grid; rank 3 against the 2-D
    op per T slice, then a 1-D op along T over whole (H, W, C) slabs, bit for
    bit in float32/float64 (the same sums in the same order), and against 2-D
    F.interpolate per slice then along T in float64;
  * the half types: the float32 op on the widened table, rounded once, bit for
    bit (the slabs between the stages are float);
  * prefix and suffix tokens bitwise; gradcheck and gradgradcheck per rank;
    torch.compile(dynamic=True) and torch.export with rank-3 dynamic sizes;
    the public function's sizes, aliases, TorchScript.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import vitpe_ext
from vitpe_ext import interpolate_pos_embed
from vitpe_ext.op.reference import has_recipe, torch_mode

from conftest import (FLOAT_DTYPES, HALF_DTYPES, MODES, assert_within_half_ulp, exact_scale_factor, flag_combos,
                      make_table, skip_if_no_lanczos)

op = torch.ops.vitpe.interpolate_pos_embed.default


# -- references -------------------------------------------------------------------

def grid_of(x, prefix, suffix, old):
    """(B, P + prod(old) + S, C) -> the grid (B, C, *old)."""
    batch, tokens, channels = x.shape
    return x[:, prefix:tokens - suffix].reshape(batch, *old, channels).movedim(-1, 1)


def tokens_of(grid):
    """(B, C, *sizes) -> (B, prod(sizes), C)."""
    return grid.movedim(1, -1).reshape(grid.shape[0], -1, grid.shape[1])


def _flags(mode, align_corners, antialias):
    if mode == "lanczos3":
        return {"antialias": True}
    if mode in ("bilinear", "bicubic"):
        return {"align_corners": bool(align_corners), "antialias": antialias}
    return {}


def _interp(g, mode, size, sf, flags):
    if sf is not None:
        return F.interpolate(g, scale_factor=tuple(sf), mode=mode, recompute_scale_factor=False, **flags)
    return F.interpolate(g, size=tuple(size), mode=mode, **flags)


def f_interpolate(grid, new, mode, align_corners=None, antialias=False, sf=None):
    """F.interpolate on a (B, C, *old) grid of rank 1 or 3: its own 1-D/3-D
    mode where it has one; otherwise its 2-D mode per axis: rank 1 on a
    (1, L) grid, rank 3 per T slice and then along T over (T, H*W)."""
    rank = grid.dim() - 2
    native = {"bilinear": "linear" if rank == 1 else "trilinear", "nearest": "nearest",
              "nearest-exact": "nearest-exact", "area": "area"}
    if mode in native and not antialias:
        flags = {"align_corners": bool(align_corners)} if mode == "bilinear" else {}
        return _interp(grid, native[mode], new, sf, flags)
    flags = _flags(mode, align_corners, antialias)
    mode2d = torch_mode(mode)
    if rank == 1:
        out = _interp(grid.unsqueeze(2), mode2d, (1, new[0]), None if sf is None else (1.0, sf[0]), flags)
        return out.squeeze(2)
    b, c, t, h, w = grid.shape
    slices = grid.movedim(2, 1).reshape(b * t, c, h, w)
    hw = _interp(slices, mode2d, new[1:], None if sf is None else sf[1:], flags)
    h2, w2 = hw.shape[-2:]
    along_t = hw.reshape(b, t, c, h2 * w2).movedim(1, 2)  # (B, C, T, H'W')
    out = _interp(along_t, mode2d, (new[0], h2 * w2), None if sf is None else (sf[0], 1.0), flags)
    return out.reshape(b, c, new[0], h2, w2)


def reference(x, new, old, prefix, suffix, mode, align_corners=None, antialias=False, sf=None,
              dtype=None):
    """The op's result by F.interpolate, in `dtype` (default x's)."""
    g = grid_of(x, prefix, suffix, old).to(dtype or x.dtype)
    out = tokens_of(f_interpolate(g, new, mode, align_corners, antialias, sf))
    return torch.cat([x[:, :prefix].to(out.dtype), out, x[:, x.shape[1] - suffix:].to(out.dtype)], dim=1)


def separable_op(x, new, old, prefix, suffix, **kw):
    """A rank-3 resize from the 2-D op per T slice and the 1-D op along T,
    whose channels are a whole (H', W', C) slab."""
    batch, _, channels = x.shape
    t, h, w = old
    grid = x[:, prefix:x.shape[1] - suffix].reshape(batch * t, h * w, channels)
    hw = op(grid, list(new[1:]), [h, w], 0, **kw)  # (B*T, H'W', C)
    slabs = hw.reshape(batch, t, -1)
    kw1 = dict(kw)
    if kw1.get("scale_factor") is not None:
        kw1["scale_factor"] = [kw["scale_factor"][0]]
    along_t = op(slabs, [new[0]], [t], 0, **kw1)
    out = along_t.reshape(batch, -1, channels)
    return torch.cat([x[:, :prefix], out, x[:, x.shape[1] - suffix:]], dim=1)


def check_close(out, ref64, x, what):
    """float32/float64 at their rounding level against a float64 reference
    (run in x's dtype where x is float32), half types within one rounding."""
    if out.dtype in HALF_DTYPES:
        assert_within_half_ulp(out, ref64, x.to(torch.float64), what)
    else:
        tol = {"rtol": 1e-12, "atol": 1e-13} if out.dtype == torch.float64 else {"rtol": 1.3e-6, "atol": 1e-5}
        torch.testing.assert_close(out, ref64.to(out.dtype), **tol, msg=lambda m: f"{what}: {m}")


# -- F.interpolate's 1-D and 3-D modes ----------------------------------------------

RANK1 = [(7, 12), (12, 5), (1, 4), (9, 9), (16, 1)]
RANK3 = [((3, 4, 5), (5, 6, 3)), ((2, 5, 5), (2, 7, 7)), ((4, 3, 3), (2, 3, 3)), ((1, 2, 3), (3, 2, 4)),
         ((5, 1, 6), (3, 2, 6))]
NATIVE = [("bilinear", None), ("bilinear", True), ("bilinear", False), ("nearest", None),
          ("nearest-exact", None), ("area", None)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode,align_corners", NATIVE, ids=[f"{m}-ac{a}" for m, a in NATIVE])
@pytest.mark.parametrize("use_sf", [False, True], ids=["size", "sf"])
def test_rank1_matches_f_interpolate(dtype, mode, align_corners, use_sf):
    """Rank 1 against F.interpolate on (B, C, L) (linear, nearest,
    nearest-exact, area); with prefix and suffix tokens, strided layouts."""
    gen = torch.Generator().manual_seed(hash((str(dtype), mode, align_corners, use_sf)) % 2**31)
    rng = random.Random(1)
    for old, new in RANK1:
        if use_sf and mode == "area":
            continue  # area takes a scale factor only for its size, as F.interpolate
        prefix, suffix = rng.choice((0, 1, 2)), rng.choice((0, 3))
        layout = rng.choice(("contiguous", "token_slice", "channel_slice"))
        x = make_table(2, prefix + old + suffix, 5, dtype, layout, gen)
        sf = [exact_scale_factor(old, new)] if use_sf else None
        name = "linear" if mode == "bilinear" else mode  # F.interpolate's 1-D name
        out = interpolate_pos_embed(x, [new], [old], prefix, name, align_corners, scale_factor=sf,
                                    num_suffix_tokens=suffix)
        what = f"rank 1 {mode} ac={align_corners} {old}->{new} P={prefix} S={suffix} {layout} sf={sf}"
        assert out.shape == (2, prefix + new + suffix, 5), what
        assert torch.equal(out[:, :prefix], x[:, :prefix]) and torch.equal(out[:, prefix + new:], x[:, prefix + old:])
        compute = torch.float64 if dtype in HALF_DTYPES else dtype
        ref = reference(x, [new], [old], prefix, suffix, mode, align_corners, sf=sf, dtype=compute)
        check_close(out, ref, x, what)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode,align_corners", NATIVE, ids=[f"{m}-ac{a}" for m, a in NATIVE])
def test_rank3_matches_f_interpolate(dtype, mode, align_corners):
    """Rank 3 against F.interpolate on (B, C, T, H, W) (trilinear, nearest,
    nearest-exact, area), every staging (T kept, H and W kept, both)."""
    gen = torch.Generator().manual_seed(hash((str(dtype), mode, align_corners)) % 2**31)
    rng = random.Random(3)
    for old, new in RANK3:
        prefix, suffix = rng.choice((0, 1)), rng.choice((0, 2))
        layout = rng.choice(("contiguous", "token_slice", "transposed"))
        n_old = old[0] * old[1] * old[2]
        x = make_table(2, prefix + n_old + suffix, 6, dtype, layout, gen)
        name = "trilinear" if mode == "bilinear" else mode
        out = interpolate_pos_embed(x, list(new), list(old), prefix, name, align_corners, num_suffix_tokens=suffix)
        what = f"rank 3 {mode} ac={align_corners} {old}->{new} P={prefix} S={suffix} {layout}"
        assert torch.equal(out[:, :prefix], x[:, :prefix]), what
        assert torch.equal(out[:, out.shape[1] - suffix:], x[:, x.shape[1] - suffix:]), what
        compute = torch.float64 if dtype in HALF_DTYPES else dtype
        check_close(out, reference(x, new, old, prefix, suffix, mode, align_corners, dtype=compute), x, what)


def test_rank3_scale_factor_matches_f_interpolate():
    x = make_table(1, 1 + 3 * 4 * 5, 4, torch.float64, "contiguous", torch.Generator().manual_seed(5))
    old, new = (3, 4, 5), (7, 6, 9)
    sf = [exact_scale_factor(o, n) + 0.01 for o, n in zip(old, new)]
    for mode, ac in (("trilinear", False), ("nearest", None), ("nearest-exact", None)):
        out = interpolate_pos_embed(x, list(new), list(old), 1, mode, ac, scale_factor=sf)
        ref = reference(x, new, old, 1, 0, "bilinear" if mode == "trilinear" else mode, ac, sf=sf)
        check_close(out, ref, x, f"{mode} sf={sf}")
    with pytest.raises(ValueError, match="scale_factor"):
        interpolate_pos_embed(x, list(new), list(old), 1, "trilinear", scale_factor=sf[:2])


# -- the 2-D-only modes, extended per axis --------------------------------------------

EXTENDED = [(m, ac, aa) for m in MODES for ac, aa in flag_combos(m)
            if m in ("bicubic", "lanczos3") or aa]


@pytest.mark.parametrize("mode,align_corners,antialias", EXTENDED,
                         ids=[f"{m}-ac{a}-aa{int(b)}" for m, a, b in EXTENDED])
def test_rank1_extended_modes_match_2d_f_interpolate(mode, align_corners, antialias):
    """bicubic, lanczos3 and antialias on a rank-1 grid are F.interpolate's
    2-D modes on a (1, L) grid (its unchanged height is a copy in every mode)."""
    skip_if_no_lanczos(mode)
    gen = torch.Generator().manual_seed(11)
    for old, new in RANK1 + [(20, 6), (5, 13)]:
        x = make_table(2, 1 + old + 2, 4, torch.float64, "contiguous", gen)
        out = interpolate_pos_embed(x, [new], None, 1, mode, align_corners, antialias, num_suffix_tokens=2)
        ref = reference(x, [new], [old], 1, 2, mode, align_corners, antialias)
        check_close(out, ref, x, f"{mode} {old}->{new}")
        two_d = interpolate_pos_embed(x, (1, new), (1, old), 1, mode, align_corners, antialias, num_suffix_tokens=2)
        assert torch.equal(out, two_d), f"{mode} {old}->{new}: rank 1 is not the 2-D op on a (1, L) grid"


SEPARABLE = [(m, ac, aa) for m in MODES for ac, aa in flag_combos(m)]


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64), ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode,align_corners,antialias", SEPARABLE,
                         ids=[f"{m}-ac{a}-aa{int(b)}" for m, a, b in SEPARABLE])
def test_rank3_is_the_2d_op_per_slice_then_1d(dtype, mode, align_corners, antialias):
    """Every mode of rank 3 is the 2-D op on each T slice followed by the 1-D
    op along T over whole (H', W', C) slabs, bit for bit: the stages run the
    very sums of those two calls, in the accumulator type, which float32 and
    float64 round to exactly. And it is F.interpolate's 2-D mode per slice
    then along T, in float64."""
    gen = torch.Generator().manual_seed(13)
    for old, new in RANK3 + [((6, 5, 5), (3, 9, 2))]:
        n_old = old[0] * old[1] * old[2]
        x = make_table(2, 1 + n_old + 3, 5, dtype, "contiguous", gen)
        kw = dict(mode=mode, align_corners=align_corners, antialias=antialias)
        out = op(x, list(new), list(old), 1, num_suffix_tokens=3, **kw)
        what = f"{mode} {old}->{new}"
        assert torch.equal(out, separable_op(x, new, old, 1, 3, **kw)), f"{what}: not the 2-D op then the 1-D op"
        if has_recipe(mode) and dtype == torch.float64:
            check_close(out, reference(x, new, old, 1, 3, mode, align_corners, antialias), x, what)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("mode", MODES)
def test_rank3_halves_round_once(dtype, mode):
    """Half tables: the float32 op on the widened table, rounded once, bit for
    bit (the slabs between the stages stay float), in every staging and for
    channel counts that take the vector paths (64, 128) and their tails; and
    within one rounding of F.interpolate in float64."""
    gen = torch.Generator().manual_seed(17)
    aa = mode_info_aa(mode)
    for (old, new), channels in zip(RANK3, (64, 83, 128, 7, 64)):
        x = make_table(1, 1 + old[0] * old[1] * old[2] + 2, channels, dtype, "contiguous", gen)
        kw = dict(mode=mode, antialias=aa, num_suffix_tokens=2)
        out = op(x, list(new), list(old), 1, **kw)
        want = op(x.float(), list(new), list(old), 1, **kw).to(dtype)
        assert torch.equal(out[:, 1:-2], want[:, 1:-2]), f"{mode} {old}->{new} C={channels}"
        assert torch.equal(out[:, :1], x[:, :1]) and torch.equal(out[:, -2:], x[:, -2:])
        if has_recipe(mode):
            ref = reference(x, new, old, 1, 2, mode, antialias=aa, dtype=torch.float64)
            assert_within_half_ulp(out, ref, x.to(torch.float64), f"{mode} {old}->{new}")


def mode_info_aa(mode):
    return vitpe_ext.op.mode_info(mode).antialias != "never"


# -- tokens, autograd, compile, export ----------------------------------------------

@pytest.mark.parametrize("rank", (1, 2, 3))
def test_suffix_and_prefix_tokens_are_copied_bitwise(rank):
    """BEiT-style tables: S extra tokens at the end, copied unchanged (NaN
    payloads, -0 and inf included), in every mode; and their gradient is the
    output gradient's."""
    old, new = {1: ([9], [14]), 2: ([4, 5], [6, 3]), 3: ([2, 3, 4], [3, 2, 5])}[rank]
    n_old = 1
    for s in old:
        n_old *= s
    special = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf")], dtype=torch.float32)
    for dtype in FLOAT_DTYPES:
        x = torch.randn(2, 2 + n_old + 3, 4, dtype=torch.float64).to(dtype)
        x[0, -3:, :] = special.to(dtype)
        x[1, :2, :] = special.to(dtype)
        for mode in MODES:
            out = interpolate_pos_embed(x, new, old, 2, mode=mode, num_suffix_tokens=3)
            bits = (lambda t: t.view(torch.int16) if t.element_size() == 2 else
                    t.view(torch.int32) if t.element_size() == 4 else t.view(torch.int64))
            assert torch.equal(bits(out[:, :2]), bits(x[:, :2])), (rank, dtype, mode)
            assert torch.equal(bits(out[:, -3:]), bits(x[:, -3:])), (rank, dtype, mode)
    x = torch.randn(1, 1 + n_old + 3, 2, dtype=torch.float64, requires_grad=True)
    out = interpolate_pos_embed(x, new, old, 1, num_suffix_tokens=3)
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    assert torch.equal(gx[:, :1], g[:, :1]) and torch.equal(gx[:, -3:], g[:, -3:])


GRAD_CASES = [([7], [4], "bicubic", None, False), ([5], [11], "bilinear", True, False),
              ([9], [4], "lanczos3", None, True), ([8], [3], "area", None, False),
              ([2, 3, 4], [3, 5, 2], "bicubic", None, False), ([3, 2, 3], [2, 4, 4], "trilinear", False, False),
              ([4, 3, 5], [2, 2, 3], "bicubic", None, True), ([3, 4, 2], [5, 2, 3], "nearest-exact", None, False),
              ([2, 4, 4], [4, 4, 4], "bicubic", True, False), ([3, 3, 3], [3, 5, 4], "area", None, False)]


@pytest.mark.parametrize("old,new,mode,align_corners,antialias", GRAD_CASES,
                         ids=[f"r{len(c[0])}-{c[2]}-{i}" for i, c in enumerate(GRAD_CASES)])
def test_gradcheck_and_gradgradcheck(old, new, mode, align_corners, antialias):
    n_old = 1
    for s in old:
        n_old *= s
    x = torch.randn(2, 1 + n_old + 2, 3, dtype=torch.float64, requires_grad=True)

    def f(t):
        return interpolate_pos_embed(t, new, old, 1, mode, align_corners, antialias, num_suffix_tokens=2)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_opcheck_ranks_and_suffix():
    bop = torch.ops.vitpe.interpolate_pos_embed_backward.default
    for new, old, prefix, suffix in (([5], [7], 1, 0), ([3, 2, 4], [2, 3, 3], 1, 2), ([2, 2, 2], None, 0, 3)):
        n_old = 8 if old is None else int(torch.tensor(old).prod())
        x = torch.randn(2, prefix + n_old + suffix, 8, requires_grad=True)
        args = (new, old, prefix, "bicubic", None, False, None, suffix)
        torch.library.opcheck(op, (x, *args))
        dout = torch.randn(2, prefix + int(torch.tensor(new).prod()) + suffix, 8)
        torch.library.opcheck(bop, (dout, x.shape[1], *args))


def test_torch_compile_dynamic_rank3_one_frame():
    """torch.compile(dynamic=True): one compiled frame serves several rank-3
    sizes (SymInt sizes, the fake kernel's token count), with gradients."""
    torch._dynamo.reset()
    counts = {"frames": 0}

    def backend(gm, example_inputs):
        counts["frames"] += 1
        return gm.forward

    def f(t, nt, nh, nw):
        return interpolate_pos_embed(t, [nt, nh, nw], [2, 3, 4], 1, "trilinear", num_suffix_tokens=2) * 2

    compiled = torch.compile(f, backend=backend, dynamic=True, fullgraph=True)
    x = torch.randn(1, 1 + 24 + 2, 8, requires_grad=True)
    for size in ((3, 5, 6), (4, 6, 7), (2, 7, 3)):
        out = compiled(x, *size)
        torch.testing.assert_close(out, f(x, *size))
        (g,) = torch.autograd.grad(out.sum(), x)
        (g_eager,) = torch.autograd.grad(f(x, *size).sum(), x)
        torch.testing.assert_close(g, g_eager)
    assert counts["frames"] == 1


def test_torch_export_rank3_dynamic_sizes():
    class Resize(torch.nn.Module):
        def forward(self, table, frames, grid):
            t, h, w = frames.shape[0], grid.shape[0], grid.shape[1]
            return op(table, [t, h, w], [2, 3, 4], 1, "bicubic", None, False, None, 2)

    x = torch.randn(1, 1 + 24 + 2, 4)
    t_dim, h_dim, w_dim = torch.export.Dim("t", min=2, max=64), torch.export.Dim("h", min=2, max=64), \
        torch.export.Dim("w", min=2, max=64)
    ep = torch.export.export(Resize(), (x, torch.empty(3), torch.empty(5, 6)),
                             dynamic_shapes={"table": None, "frames": {0: t_dim}, "grid": {0: h_dim, 1: w_dim}})
    for t, h, w in ((3, 5, 6), (7, 4, 9)):
        got = ep.module()(x, torch.empty(t), torch.empty(h, w))
        assert got.shape == (1, 1 + t * h * w + 2, 4)
        assert torch.equal(got, op(x, [t, h, w], [2, 3, 4], 1, "bicubic", None, False, None, 2))


# -- the public function's arguments --------------------------------------------------

def test_sizes_set_the_rank():
    x = torch.randn(1, 1 + 16, 3, dtype=torch.float64)
    assert interpolate_pos_embed(x, 6).shape == (1, 37, 3)  # one int: still a square 2-D grid
    assert torch.equal(interpolate_pos_embed(x, 6), interpolate_pos_embed(x, (6, 6), (4, 4)))
    assert interpolate_pos_embed(x, [20]).shape == (1, 21, 3)  # rank 1, the whole grid inferred
    assert torch.equal(interpolate_pos_embed(x, [20]), interpolate_pos_embed(x, (20,), 16))
    cube = torch.randn(1, 1 + 27 + 3, 2, dtype=torch.float64)
    out = interpolate_pos_embed(cube, (2, 5, 4), num_suffix_tokens=3)  # a cube inferred
    assert torch.equal(out, interpolate_pos_embed(cube, torch.tensor([2, 5, 4]), old_size=3, num_suffix_tokens=3))
    assert torch.equal(out, interpolate_pos_embed(cube, [2, 5, 4], [3, 3, 3], num_suffix_tokens=3))
    with pytest.raises(ValueError, match="cubic grid"):
        interpolate_pos_embed(torch.randn(1, 1 + 24, 2), (2, 5, 4))
    # one scale factor for every axis
    assert torch.equal(interpolate_pos_embed(cube, [4, 4, 4], scale_factor=1.5, num_suffix_tokens=3),
                       interpolate_pos_embed(cube, [4, 4, 4], scale_factor=[1.5] * 3, num_suffix_tokens=3))
    # unsqueezed 2-D tables too
    assert interpolate_pos_embed(cube[0], (2, 5, 4), num_suffix_tokens=3).shape == (44, 2)


def test_aliases_are_bilinear_at_their_rank():
    x1 = torch.randn(2, 10, 3)
    assert torch.equal(interpolate_pos_embed(x1, [14], mode="linear"), interpolate_pos_embed(x1, [14], mode="bilinear"))
    x3 = torch.randn(2, 1 + 8, 3)
    assert torch.equal(interpolate_pos_embed(x3, [3, 3, 3], mode="trilinear", align_corners=True),
                       interpolate_pos_embed(x3, [3, 3, 3], mode="bilinear", align_corners=True))
    assert vitpe_ext.op.modes.ALIASES == {"linear": (1, "bilinear"), "trilinear": (3, "bilinear")}
    with pytest.raises(ValueError, match="'trilinear' is F.interpolate's name for grids of rank 3"):
        interpolate_pos_embed(x1, [4], mode="trilinear")


def test_torchscript_ranks_and_suffix():
    @torch.jit.script
    def resize(t: torch.Tensor):
        a = vitpe_ext.interpolate_pos_embed(t, [3, 4, 5], [2, 3, 4], 1, "trilinear", num_suffix_tokens=2)
        b = vitpe_ext.interpolate_pos_embed(t, [40], None, 1, num_suffix_tokens=2)
        return a, b

    x = torch.randn(2, 1 + 24 + 2, 3)
    a, b = resize(x)
    assert torch.equal(a, interpolate_pos_embed(x, [3, 4, 5], [2, 3, 4], 1, "trilinear", num_suffix_tokens=2))
    assert torch.equal(b, interpolate_pos_embed(x, [40], None, 1, num_suffix_tokens=2))


def test_profile_keeps_prefix_and_suffix_out_of_a_narrowing_cast():
    """timm computes in float32: a float64 table's grid goes through float32,
    its prefix and suffix tokens stay float64, as the libraries split them off
    first."""
    x = torch.randn(1, 1 + 2 * 3 * 3 + 2, 4, dtype=torch.float64)
    out = interpolate_pos_embed(x, [3, 4, 4], [2, 3, 3], 1, profile="timm", num_suffix_tokens=2)
    assert out.dtype == torch.float64
    assert torch.equal(out[:, :1], x[:, :1]) and torch.equal(out[:, -2:], x[:, -2:])
    prof = vitpe_ext.op.resolve("timm")
    grid = interpolate_pos_embed(x.float(), [3, 4, 4], [2, 3, 3], 1, prof.mode, prof.align_corners, prof.antialias,
                                 num_suffix_tokens=2)
    assert torch.equal(out[:, 1:-2], grid[:, 1:-2].double())


def test_backward_op_refuses_a_rank3_grid_whose_token_count_wraps_int64():
    """Three sides of up to 2^24 multiply past int64: 2^16 * 2^24 * 2^24 wraps
    to 0, so an unchecked count expected only the prefix and suffix tokens and
    let a 4-token grad_output through to the kernels (a segfault). The forward
    op refuses such a new_size; the backward op, public too, must as well."""
    with pytest.raises(ValueError, match="too large to allocate"):
        torch.ops.vitpe.interpolate_pos_embed_backward(
            torch.randn(1, 4, 1), 1 + 2**16 * 4 + 3, [2**16, 2**24, 2**24], [2**16, 2, 2], 1, "nearest",
            None, False, None, 3)
