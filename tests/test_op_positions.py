"""sample_positions: the op sampling each axis at given positions instead of
the uniform mapping (issue #17; BEiT's geometric-progression resize).

The spec is vitpe_ext.op.reference.sampled_interpolate: per axis the weights
F.grid_sample(padding_mode="border", align_corners=True) takes at those
positions, as one dense float64 product over the grid."""
import math

import pytest
import torch

import vitpe_ext as vt
from vitpe_ext.op.reference import sampled_interpolate
from conftest import assert_within_half_ulp

POINT_MODES = ["nearest", "nearest-exact", "bilinear", "bicubic"]

# (old grid, new grid): ranks 1, 2 and 3, growing, shrinking, one unit axis
GRIDS = [((7,), (12,)), ((9,), (4,)), ((5, 7), (9, 4)), ((6, 6), (11, 11)), ((1, 5), (3, 8)),
         ((3, 4, 5), (5, 2, 7)), ((2, 3, 3), (2, 6, 6))]


def positions_for(old, new, generator):
    """Per axis: sorted positions from a little before the first token to a
    little past the last, with a repeat and a half-way point (nearest's tie)."""
    axes = []
    for i, o in zip(old, new):
        p = torch.sort(torch.rand(o, generator=generator, dtype=torch.float64) * (i + 1.5) - 0.75).values
        if o >= 3:
            p[1] = p[2]        # two outputs at one position
            p[o // 2] = math.floor(p[o // 2].item()) + 0.5
            p = torch.sort(p).values
        axes.append(p.tolist())
    return axes


@pytest.mark.parametrize("mode", POINT_MODES)
@pytest.mark.parametrize("old,new", GRIDS)
def test_matches_grid_sample_in_float64(mode, old, new):
    g = torch.Generator().manual_seed(hash((mode, old, new)) % 2 ** 31)
    prefix, suffix = 1, 2
    table = torch.randn(2, prefix + math.prod(old) + suffix, 5, dtype=torch.float64, generator=g)
    positions = positions_for(old, new, g)
    out = vt.interpolate_pos_embed(table, new, old, prefix, mode=mode, sample_positions=positions,
                                   num_suffix_tokens=suffix)
    ref = sampled_interpolate(table, new, old, positions, prefix, mode, suffix)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_reduced_precision_rounds_once(dtype, mode):
    """float32: float32 accumulation (a few epsilons of the table's scale);
    half types: the float32 sums rounded once to the dtype."""
    g = torch.Generator().manual_seed(3)
    old, new = (7, 7), (13, 11)
    table = torch.randn(1, 1 + 49, 16, generator=g).to(dtype)
    positions = positions_for(old, new, g)
    out = vt.interpolate_pos_embed(table, new, old, 1, mode=mode, sample_positions=positions)
    ref = sampled_interpolate(table, new, old, positions, 1, mode)
    assert out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=8 * 2.0 ** -23 * table.abs().max().item())
    else:
        assert_within_half_ulp(out, ref, table.double())


@pytest.mark.parametrize("mode,align_corners", [("bilinear", False), ("bilinear", True), ("bicubic", False),
                                                ("bicubic", True)])
@pytest.mark.parametrize("old,new", [((7,), (12,)), ((5, 7), (9, 4)), ((3, 4, 5), (5, 2, 7))])
def test_uniform_positions_are_the_uniform_mapping(mode, align_corners, old, new):
    """ATen's source index, written out as positions, gives the op's own resize."""
    def source(i, o, k):
        if align_corners:
            return k * (i - 1) / (o - 1) if o > 1 else 0.0
        r = (k + 0.5) * i / o - 0.5
        return max(r, 0.0) if mode == "bilinear" else r
    positions = [[source(i, o, k) for k in range(o)] for i, o in zip(old, new)]
    table = torch.randn(1, 1 + math.prod(old), 6, dtype=torch.float64)
    sampled = vt.interpolate_pos_embed(table, new, old, 1, mode=mode, sample_positions=positions)
    uniform = vt.interpolate_pos_embed(table, new, old, 1, mode=mode, align_corners=align_corners)
    torch.testing.assert_close(sampled, uniform, rtol=0, atol=1e-14)


def test_nearest_takes_the_nearest_token_and_ties_go_to_even():
    table = torch.arange(5, dtype=torch.float64).view(1, 5, 1)
    positions = [[-3.0, -0.5, 0.49, 0.5, 1.5, 2.5, 2.51, 3.5, 9.0]]
    out = vt.interpolate_pos_embed(table, (9,), (5,), 0, mode="nearest", sample_positions=positions)
    assert out.flatten().tolist() == [0, 0, 0, 0, 2, 2, 3, 4, 4]
    exact = vt.interpolate_pos_embed(table, (9,), (5,), 0, mode="nearest-exact", sample_positions=positions)
    assert torch.equal(out, exact)


@pytest.mark.parametrize("old,new", [((6,), (9,)), ((4, 5), (6, 3)), ((2, 3, 4), (3, 2, 5))])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_gradients(old, new, mode):
    g = torch.Generator().manual_seed(11)
    table = torch.randn(1, 1 + math.prod(old), 3, dtype=torch.float64, generator=g, requires_grad=True)
    positions = positions_for(old, new, g)

    def f(x):
        return vt.interpolate_pos_embed(x, new, old, 1, mode=mode, sample_positions=positions)
    assert torch.autograd.gradcheck(f, (table,))
    assert torch.autograd.gradgradcheck(f, (table,))


def test_opcheck():
    from torch.library import opcheck
    table = torch.randn(2, 1 + 20, 4, requires_grad=True)
    flat = [-0.5, 0.0, 1.25, 2.0, 3.75, 4.0] + [0.0, 0.5, 3.9]
    for op in (torch.ops.vitpe.interpolate_pos_embed.default,):
        opcheck(op, (table, [6, 3], [4, 5], 1, "bicubic", None, False, None, 0, flat))


def test_plans_are_cached_by_position_values():
    """A plan cached for one set of positions must not serve another of the
    same sizes (the cache compares the values, not the sizes alone)."""
    table = torch.randn(1, 16, 3, dtype=torch.float64)
    first = vt.interpolate_pos_embed(table, (5, 5), (4, 4), 0, mode="bilinear",
                                     sample_positions=[[0, 0.5, 1, 2, 3]] * 2)
    second = vt.interpolate_pos_embed(table, (5, 5), (4, 4), 0, mode="bilinear",
                                      sample_positions=[[0, 0.25, 1, 2, 3]] * 2)
    uniform = vt.interpolate_pos_embed(table, (5, 5), (4, 4), 0, mode="bilinear")
    assert not torch.equal(first, second) and not torch.equal(second, uniform)
    torch.testing.assert_close(second, sampled_interpolate(table, (5, 5), (4, 4), [[0, 0.25, 1, 2, 3]] * 2, 0,
                                                           "bilinear"), rtol=0, atol=1e-14)


def test_positions_as_tensors_and_arrays():
    np = pytest.importorskip("numpy")
    table = torch.randn(1, 1 + 12, 4)
    lists = [[0.0, 1.5, 2.0], [0.0, 0.5, 1.0, 3.0, 3.5]]
    want = vt.interpolate_pos_embed(table, (3, 5), (3, 4), sample_positions=lists)
    assert torch.equal(vt.interpolate_pos_embed(table, (3, 5), (3, 4), sample_positions=[torch.tensor(lists[0]),
                                                                                        np.array(lists[1])]), want)
    assert torch.equal(vt.interpolate_pos_embed(table[0], (3, 5), (3, 4), sample_positions=lists), want[0])


def test_compile_fullgraph():
    table = torch.randn(1, 1 + 20, 8)
    positions = [[0.0, 0.6, 1.7, 3.0], [-1.0, 0.4, 2.0, 4.5, 5.0, 6.0]]

    def f(x):
        return vt.interpolate_pos_embed(x, (4, 6), (4, 5), 1, mode="bicubic", sample_positions=positions)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(table), f(table))


def test_torchscript():
    class Resize(torch.nn.Module):
        def forward(self, x):
            return vt.interpolate_pos_embed(x, [3, 4], [2, 2], 1, "bilinear",
                                            sample_positions=[[0.0, 0.5, 1.0], [0.0, 0.25, 0.75, 1.0]])
    table = torch.randn(1, 5, 3)
    scripted = torch.jit.script(Resize())
    assert torch.equal(scripted(table), Resize()(table))


ERRORS = [
    (dict(mode="area"), "sample_positions need a mode that samples at a point (nearest, nearest-exact, bilinear, "
                        "bicubic), not mode 'area'"),
    (dict(mode="lanczos3"), "not mode 'lanczos3'"),
    (dict(mode="bilinear", align_corners=True), "sample_positions replace the uniform mapping that "
                                                "align_corners=True sets; pass one or the other"),
    (dict(mode="bicubic", antialias=True), "the uniform mapping that antialias=True sets"),
    (dict(scale_factor=(1.5, 1.5)), "the uniform mapping that scale_factor sets"),
    (dict(sample_positions=[[0, 1, 2], [0, 1]]), "sample_positions[1] has 2 positions but new_size[1] is 3: one "
                                                  "position per output of that axis"),
    # the total is right but not the split: the op alone would read it as [[0, 1, 2], [3, 4, 5]]
    (dict(sample_positions=[[0, 1, 2, 3], [4, 5]]), "sample_positions[0] has 4 positions but new_size[0] is 3"),
    (dict(sample_positions=[[0, 2, 1], [0, 1, 2]]), "sample_positions must not decrease along an axis: the height "
                                                     "axis has 1 at output 2 after 2"),
    (dict(sample_positions=[[0, 1, 2], [0, float("inf"), 2]]), "sample_positions must be finite and within "
                                                                "+-16777216, got inf at output 1 of the width axis"),
    (dict(sample_positions=[[0, 1, 2]]), "sample_positions must be a list of 2 sequences, one per axis of new_size "
                                         "(outermost first), got 1 entry"),
    (dict(sample_positions=[[0, 1, 2], "abc"]), "sample_positions[1] must be a sequence of floats"),
    (dict(sample_positions=[[0, 1, 2], [0, True, 2]]), "sample_positions[1] must hold real numbers (old-grid positions), got True of type bool"),
    (dict(profile="timm"), "sample_positions replace the uniform mapping that profile 'timm' reproduces"),
]


@pytest.mark.parametrize("kwargs,message", ERRORS)
def test_errors_name_the_problem(kwargs, message):
    table = torch.randn(1, 1 + 4, 2)
    args = dict(mode="bicubic", sample_positions=[[0, 0.5, 1], [0, 0.5, 1]])
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        vt.interpolate_pos_embed(table, (3, 3), (2, 2), 1, **args)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_float32_positions_are_not_rounded_to_float():
    """The tap math of given positions runs in double for float32 data too: a
    position near 50 rounded to float moves by up to 2e-6, and the output by
    that times the neighbours' difference (N(0,1): up to ~1e-5); in double
    only the weights' and sums' float32 rounding is left."""
    g = torch.Generator().manual_seed(17)
    table = torch.randn(1, 64, 32, generator=g)
    positions = [torch.sort(32 + 31 * torch.rand(200, generator=g, dtype=torch.float64)).values.tolist()]
    for mode in ("bilinear", "bicubic"):
        out = vt.interpolate_pos_embed(table, (200,), (64,), 0, mode=mode, sample_positions=positions)
        ref = sampled_interpolate(table, (200,), (64,), positions, 0, mode)
        assert (out.double() - ref).abs().max().item() < 1.5e-6, mode


def test_the_op_checks_the_total():
    """torch.ops.vitpe.* takes the flat list: its own check is the total."""
    with pytest.raises(ValueError, match=r"sample_positions must hold one position per output of every axis, "
                                         r"outermost first: 3 \+ 3 = 6 values for new_size \[3, 3\], got 5"):
        torch.ops.vitpe.interpolate_pos_embed(torch.randn(1, 5, 2), [3, 3], [2, 2], 1, "bilinear", None, False, None,
                                              0, [0.0, 1.0, 2.0, 0.0, 1.0])


def test_torchscript_checks_the_count_per_axis():
    class Resize(torch.nn.Module):
        def forward(self, x):
            return vt.interpolate_pos_embed(x, [2, 2], [2, 2], 1, "nearest",
                                            sample_positions=[[0.0, 1.0, 1.0], [0.0]])
    with pytest.raises(Exception, match="sample_positions"):
        torch.jit.script(Resize())(torch.randn(1, 5, 3))
