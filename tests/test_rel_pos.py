"""Relative-position-bias tables (vitpe_ext/integrations/rel_pos.py) against
timm 1.0.31's own resizers, F.interpolate in float64, and timm models loaded
at another window size through timm's checkpoint_filter_fn."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")
import timm.layers.pos_embed_rel as timm_rel  # noqa: E402
from timm.models import beit, efficientvit_msra, swin_transformer, tiny_vit  # noqa: E402

import vitpe_ext  # noqa: E402
import vitpe_ext.integrations.rel_pos as rp  # noqa: E402
import vitpe_ext.integrations.timm as vtimm  # noqa: E402
from conftest import HALF_DTYPES, assert_within_half_ulp, count_op_calls, skip_if_no_lanczos  # noqa: E402

# timm's geometric path (timm.layers.RegularGridInterpolator) warns on torch 2.14 about its indexing
pytestmark = pytest.mark.filterwarnings("ignore:.*(searchsorted|non-tuple sequence).*:UserWarning")

# timm's own functions, captured before any patch
TIMM_SIMPLE = timm_rel.resize_rel_pos_bias_table_simple
TIMM_LEVIT = timm_rel.resize_rel_pos_bias_table_levit
TIMM_GEOMETRIC = timm_rel.resize_rel_pos_bias_table
# N(0,1) tables: ATen and the op sum the same taps in another order (fp32: measured <= 4e-6)
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture
def op_calls(monkeypatch):
    return count_op_calls(monkeypatch, rp)


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def reference(grid64, size, **kwargs):
    """F.interpolate in float64 on a (heads, H, W) grid."""
    return F.interpolate(grid64.unsqueeze(0), size=size, **kwargs)[0]


def to_flat(grid):  # (heads, H, W) -> (H*W, heads)
    return grid.flatten(1).T


def assert_matches(ours, theirs, ref64=None):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if ours.dtype in HALF_DTYPES:
        # ATen's half bicubic (timm's) strays further than one rounding from the float64 values
        # near zero; the op rounds once: correctly rounded, and close to timm's on the table's scale
        assert_within_half_ulp(ours, ref64, ref64)
        scale = theirs.double().abs().max() * torch.finfo(ours.dtype).eps
        assert (ours.double() - theirs.double()).abs().max() <= 2 * scale
    else:
        torch.testing.assert_close(ours.double(), theirs.double(), atol=TOL[ours.dtype], rtol=0)


# -- timm's _simple and _levit -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("old, new", [(7, 12), (12, 7), (7, (5, 9)), (14, 24)])
@pytest.mark.parametrize("extra", [0, 3])
def test_simple_flat_matches_timm(dtype, old, new, extra):
    new2 = new if isinstance(new, tuple) else (new, new)
    side, dst = 2 * old - 1, (2 * new2[0] - 1, 2 * new2[1] - 1)
    grid64 = randn(4, side, side, dtype=torch.float64)
    table = torch.cat([to_flat(grid64), randn(extra, 4, seed=1)]).to(dtype)
    shape = (dst[0] * dst[1] + extra, 4)
    theirs, ours = TIMM_SIMPLE(table, new2, shape), rp.resize_rel_pos_bias_table_simple(table, new2, shape)
    ref64 = to_flat(reference(grid64.to(dtype).double(), dst, mode="bicubic", align_corners=False))
    assert_matches(ours[:ours.shape[0] - extra], theirs[:theirs.shape[0] - extra], ref64)
    assert torch.equal(ours[ours.shape[0] - extra:], table[table.shape[0] - extra:])  # BEiT's rows, bit for bit


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_simple_heads_first_matches_timm(dtype):  # TF MaxViT's (heads, 2Wh-1, 2Ww-1)
    table = randn(3, 13, 13, dtype=dtype)
    for new in [(12, 12), (4, 8)]:
        shape = (3, 2 * new[0] - 1, 2 * new[1] - 1)
        theirs, ours = TIMM_SIMPLE(table, new, shape), rp.resize_rel_pos_bias_table_simple(table, new, shape)
        assert_matches(ours, theirs, reference(table.double(), shape[1:], mode="bicubic"))


def test_simple_same_window_returns_the_table_as_timm():
    flat, grid = randn(13 * 13 + 3, 4), randn(2, 13, 13)
    assert rp.resize_rel_pos_bias_table_simple(flat, (7, 7), (13 * 13 + 3, 4)) is flat
    assert rp.resize_rel_pos_bias_table_simple(grid, (7, 7), (2, 13, 13)) is grid
    assert TIMM_SIMPLE(flat, (7, 7), (13 * 13 + 3, 4)) is flat


def test_simple_non_square_source_window():  # timm: "FIXME could support non-equal src"
    grid64 = randn(4, 5, 13, dtype=torch.float64)  # window (3, 7)
    table = torch.cat([to_flat(grid64).float(), randn(3, 4, seed=1)])
    out = rp.resize_rel_pos_bias_table_simple(table, (6, 6), (11 * 11 + 3, 4), old_window_size=(3, 7))
    ref = to_flat(reference(grid64, (11, 11), mode="bicubic"))
    torch.testing.assert_close(out[:-3].double(), ref, atol=1e-5, rtol=0)
    assert torch.equal(out[-3:], table[-3:])
    # without old_window_size: a non-square count equal to the destination's is that window (timm's
    # resize_rel_pos_bias_table rule); any other non-square count is refused
    assert rp.resize_rel_pos_bias_table_simple(table, (3, 7), (5 * 13 + 3, 4)) is table
    with pytest.raises(ValueError, match="pass old_window_size"):
        rp.resize_rel_pos_bias_table_simple(table, (6, 6), (11 * 11 + 3, 4))


LEVIT_MODES = [("bicubic", True), ("bicubic", False), ("bilinear", True), ("bilinear", False),
               ("nearest", False), ("area", False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interpolation, antialias", LEVIT_MODES)
@pytest.mark.parametrize("old, new", [(7, 12), (14, 7), (4, 5)])
def test_levit_matches_timm(dtype, interpolation, antialias, old, new):
    biases = randn(3, old * old).to(dtype)  # TinyViT's attention_biases (heads, offsets); timm passes .T
    theirs = TIMM_LEVIT(biases.T, (new * new, 3), interpolation, antialias)
    ours = rp.resize_rel_pos_bias_table_levit(biases.T, (new * new, 3), interpolation, antialias)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if dtype in HALF_DTYPES:  # both compute in float32 and cast once: at most one ulp apart
        assert (ours.double() - theirs.double()).abs().max() <= theirs.double().abs().max() * torch.finfo(dtype).eps
    else:
        torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-5, rtol=0)
    if dtype == torch.float64:  # computed in float32 like timm's, not in float64
        assert torch.equal(ours, ours.float().double())


def test_levit_same_size_and_errors():
    table = randn(49, 2)
    assert rp.resize_rel_pos_bias_table_levit(table, (49, 2)) is table
    with pytest.raises(ValueError, match="2 heads, new_size .* asks for 3"):
        rp.resize_rel_pos_bias_table_levit(table, (64, 3))
    with pytest.raises(ValueError, match="not square grids"):
        rp.resize_rel_pos_bias_table_levit(table, (50, 2))
    with pytest.raises(ValueError, match="antialias"):  # as F.interpolate: nearest has no antialias
        rp.resize_rel_pos_bias_table_levit(table, (64, 2), "nearest", True)


# -- the general function --------------------------------------------------------------------

MODES = [("bicubic", None, None), ("bicubic", True, None), ("bicubic", False, True), ("bilinear", True, None),
         ("bilinear", False, True), ("nearest", None, None), ("area", None, None), ("lanczos3", None, None)]


@pytest.mark.parametrize("mode, align_corners, antialias", MODES)
def test_general_function_is_f_interpolate_on_the_offset_grid(mode, align_corners, antialias):
    if mode == "lanczos3":
        skip_if_no_lanczos(mode)
    kwargs = dict(mode="lanczos", antialias=True) if mode == "lanczos3" else dict(mode=mode)
    kwargs.update({k: v for k, v in (("align_corners", align_corners), ("antialias", antialias)) if v is not None})
    grid = randn(4, 5, 13, dtype=torch.float64)  # window (3, 7): signed offsets
    ref = reference(grid, (9, 7), **kwargs)       # window (5, 4)
    settings = dict(mode=mode, align_corners=align_corners, antialias=antialias)
    heads_first = vitpe_ext.resize_rel_pos_bias(grid, (3, 7), (5, 4), layout="heads_first", **settings)
    torch.testing.assert_close(heads_first, ref, atol=1e-12, rtol=0)
    extra = randn(3, 4, seed=2, dtype=torch.float64)
    flat = vitpe_ext.resize_rel_pos_bias(torch.cat([to_flat(grid), extra]), (3, 7), (5, 4), num_extra_tokens=3,
                                         **settings)
    torch.testing.assert_close(flat[:-3], to_flat(ref), atol=1e-12, rtol=0)
    assert torch.equal(flat[-3:], extra)
    # absolute offsets (LeViT): the window is the grid; heads-first (heads, positions) too
    levit = vitpe_ext.resize_rel_pos_bias(grid.flatten(1), (5, 13), (9, 7), layout="heads_first",
                                          offsets="absolute", **settings)
    torch.testing.assert_close(levit, ref.flatten(1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_beit_extra_rows_are_the_ops_suffix_tokens(monkeypatch, dtype):
    """A BEiT table (grid + 3 class-token rows) is one op call with num_suffix_tokens=3,
    bit for bit what slicing the rows off, resizing the grid and appending them gives."""
    table = torch.cat([to_flat(randn(4, 27, 27)), randn(3, 4, seed=1)]).to(dtype)  # window 14
    expected = torch.cat([vitpe_ext.interpolate_pos_embed(table[None, :-3], (47, 47), (27, 27), 0)[0],
                          table[-3:]])
    real, calls = rp.interpolate_pos_embed, []

    def recording(*args, **kwargs):
        calls.append(kwargs.get("num_suffix_tokens"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rp, "interpolate_pos_embed", recording)
    out = vitpe_ext.resize_rel_pos_bias(table, 14, 24, num_extra_tokens=3)
    assert calls == [3]
    assert torch.equal(out, expected)


def test_gradcheck_float64():
    flat = randn(7 * 7 + 3, 2, dtype=torch.float64).requires_grad_()
    grid = randn(2, 5, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: vitpe_ext.resize_rel_pos_bias(t, 4, (3, 5), num_extra_tokens=3),
                                    (flat,))
    assert torch.autograd.gradgradcheck(lambda t: vitpe_ext.resize_rel_pos_bias(t, 4, 5, num_extra_tokens=3),
                                        (flat,))
    assert torch.autograd.gradcheck(
        lambda t: vitpe_ext.resize_rel_pos_bias(t, None, (4, 2), layout="heads_first", antialias=True), (grid,))
    assert torch.autograd.gradcheck(lambda t: rp.resize_rel_pos_bias_table_simple(t, (5, 5), (81 + 3, 2)), (flat,))


@pytest.mark.parametrize("call, message", [
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, 5, layout="rows"), "layout must be one of"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, 5, offsets="relative"), "offsets must be one of"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, 0), "new_window must be a positive int"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, (2.5, 3)), "new_window must be a positive int"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 3, 5), "5x5 offset grid has 25 rows, the table has 49"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(50, 2), None, 5), "50 offsets are not a square grid"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(2, 7, 7), 4, 5, layout="heads_first", num_extra_tokens=3),
     "no room for extra tokens"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(2, 7, 7), 3, 5, layout="heads_first"), "the table is"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(2, 7, 7), 4, 5), "a flat table is \\(positions, heads\\)"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, 5, num_extra_tokens=-1), "num_extra_tokens must be"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2).numpy(), 4, 5), "must be a torch.Tensor"),
    (lambda: vitpe_ext.resize_rel_pos_bias(randn(49, 2), 4, 5, mode="cubic"), "mode"),
])
def test_errors_are_one_line_value_errors(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# -- timm's BEiT/Swin path: studied, not routed -------------------------------------------------

def experiment():
    path = Path(__file__).resolve().parents[1] / "experiments" / "rel_pos_beit.py"
    spec = importlib.util.spec_from_file_location("rel_pos_beit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("old, new", [(7, 12), (12, 7), (14, 24)])
def test_timm_geometric_path_is_separable_linear_at_geometric_offsets(old, new):
    """What the README says of timm's resize_rel_pos_bias_table (default
    path): per axis, piecewise-linear at BEiT's geometric offsets — not any
    evenly spaced resize, which is why the op needs sample_positions for it."""
    lab = experiment()
    grid = randn(3, 2 * old - 1, 2 * old - 1, dtype=torch.float64)
    d = 2 * new - 1
    ours = torch.from_numpy(lab.geometric_linear(grid.numpy(), (d, d)))
    theirs = lab.timm_default(grid, new)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)  # timm's runs in float32
    plain = vitpe_ext.resize_rel_pos_bias(grid, None, new, layout="heads_first")
    assert (plain - theirs).abs().max() > 0.1 * grid.abs().max()


# -- vitpe_ext.timm.patch() --------------------------------------------------------------------

def bound_to(name, function):
    return sorted(m for m, mod in list(sys.modules.items())
                  if m.startswith("timm") and getattr(mod, name, None) is function)


def test_patch_rebinds_simple_and_levit_and_restores():
    before = {name: bound_to(name, f) for name, f in
              (("resize_rel_pos_bias_table_simple", TIMM_SIMPLE), ("resize_rel_pos_bias_table_levit", TIMM_LEVIT))}
    assert {"timm.models.tiny_vit", "timm.models.efficientvit_msra"} <= set(before["resize_rel_pos_bias_table_levit"])
    before["resize_rel_pos_bias_table"] = bound_to("resize_rel_pos_bias_table", TIMM_GEOMETRIC)
    assert {"timm.models.beit", "timm.models.swin_transformer", "timm.models.maxxvit"} \
        <= set(before["resize_rel_pos_bias_table"])
    with vtimm.patch() as outer:
        assert outer.rebound_rel_pos == sum(len(v) for v in before.values())
        for name, modules in before.items():
            assert bound_to(name, getattr(rp, name)) == modules
        with vtimm.patch() as inner:
            assert inner.rebound_rel_pos == 0  # already routed
        assert tiny_vit.resize_rel_pos_bias_table_levit is rp.resize_rel_pos_bias_table_levit  # outer still open
    assert {name: bound_to(name, f) for name, f in
            (("resize_rel_pos_bias_table_simple", TIMM_SIMPLE),
             ("resize_rel_pos_bias_table_levit", TIMM_LEVIT),
             ("resize_rel_pos_bias_table", TIMM_GEOMETRIC))} == before
    handle = vtimm.patch()
    vtimm.unpatch()
    assert tiny_vit.resize_rel_pos_bias_table_levit is TIMM_LEVIT and handle.rebound_rel_pos > 0


def filtered(module, state_dict, model, patched):
    if not patched:
        return module.checkpoint_filter_fn(dict(state_dict), model)
    with vtimm.patch():
        return module.checkpoint_filter_fn(dict(state_dict), model)


def randomized(model, key_suffix):
    """The model's state dict with its bias tables drawn N(0,1) (timm inits
    several to zero, which any resize keeps at zero)."""
    sd = model.state_dict()
    for i, k in enumerate(k for k in sd if k.endswith(key_suffix)):
        sd[k] = randn(*sd[k].shape, seed=i)
    return sd


def small_tiny_vit(windows):
    torch.manual_seed(0)
    return tiny_vit.TinyVit(embed_dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2),
                            window_sizes=windows, num_classes=10).eval()


def small_efficientvit(img_size):
    torch.manual_seed(0)
    return efficientvit_msra.EfficientVitMsra(img_size=img_size, embed_dim=(16, 32, 48), key_dim=(4, 4, 4),
                                              depth=(1, 1, 1), num_heads=(2, 2, 2), num_classes=10).eval()


@pytest.mark.parametrize("build, old, new, module", [
    (small_tiny_vit, (3, 3, 3, 3), (5, 7, 4, 2), tiny_vit),
    (small_efficientvit, 112, 224, efficientvit_msra),
])
def test_levit_models_load_through_checkpoint_filter_like_timm(build, old, new, module, op_calls):
    sd = randomized(build(old), "attention_biases")
    target = build(new)
    theirs = filtered(module, sd, target, patched=False)
    assert op_calls == []
    ours = filtered(module, sd, target, patched=True)
    assert len(op_calls) >= 2 and ours.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=0)
    target.load_state_dict(ours, strict=False)
    assert target(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_efficientvit_set_input_size_like_timm(op_calls):
    theirs, ours = small_efficientvit(112), small_efficientvit(112)
    sd = randomized(theirs, "attention_biases")
    theirs.load_state_dict(sd)
    ours.load_state_dict(sd)
    theirs.set_input_size(224)
    with vtimm.patch():
        ours.set_input_size(224)
    assert len(op_calls) == 2  # the two stages whose window grows
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=k)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)


def small_swin(img, window):
    torch.manual_seed(0)
    return swin_transformer.SwinTransformer(img_size=img, patch_size=4, window_size=window, embed_dim=16,
                                            depths=(1, 1), num_heads=(2, 2), num_classes=10).eval()


def small_beit(img, window=None):
    torch.manual_seed(0)
    return beit.Beit(img_size=img, patch_size=4, embed_dim=16, depth=1, num_heads=2, use_abs_pos_emb=False,
                     use_rel_pos_bias=True, num_classes=10).eval()


# timm's geometric resize runs in float32 through RegularGridInterpolator's distance
# arithmetic; the op samples the same positions with its own float32 rounding
GEOMETRIC_TOL = 3e-6


@pytest.mark.parametrize("build, module", [(small_swin, swin_transformer), (small_beit, beit)])
def test_swin_and_beit_load_through_the_op_under_patch(build, module, op_calls):
    """Swin/BEiT checkpoints resize their tables through BEiT's geometric
    resize_rel_pos_bias_table: under patch() that is the op, one call per
    table, within float32 rounding of timm's own, and the model runs."""
    sd = randomized(build(32, 4), "relative_position_bias_table")
    target = build(48, 6)
    theirs = filtered(module, sd, target, patched=False)
    assert op_calls == []
    ours = filtered(module, sd, target, patched=True)
    resized = [k for k in sd if k.endswith("relative_position_bias_table") and sd[k].shape != theirs[k].shape]
    assert resized and len(op_calls) == len(resized) and ours.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], atol=GEOMETRIC_TOL * sd.get(k, theirs[k]).abs().max(),
                                   rtol=0, msg=k)
    target.load_state_dict(ours, strict=False)
    assert target(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_swin_stage_of_window_one_under_patch(op_calls):
    """A 1x1 feature map makes a 1x1 window; timm resizes its 1x1 offset grid to the new one."""
    def build():
        torch.manual_seed(0)
        return swin_transformer.SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16,
                                                depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), num_classes=10).eval()
    theirs, ours = build(), build()
    sd = randomized(theirs, "relative_position_bias_table")
    theirs.load_state_dict(sd, strict=False)
    ours.load_state_dict(sd, strict=False)
    theirs.set_input_size(img_size=64, window_size=4)
    with vtimm.patch():
        ours.set_input_size(img_size=64, window_size=4)
    assert op_calls
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(b, a, atol=GEOMETRIC_TOL * max(a.abs().max().item(), 1), rtol=0, msg=k)


def test_swin_set_input_size_through_the_op(op_calls):
    theirs, ours = small_swin(32, 4), small_swin(32, 4)
    sd = randomized(theirs, "relative_position_bias_table")
    theirs.load_state_dict(sd, strict=False)
    ours.load_state_dict(sd, strict=False)
    theirs.set_input_size(img_size=48, window_size=6)
    with vtimm.patch():
        ours.set_input_size(img_size=48, window_size=6)
    assert len(op_calls) >= 1
    for (k, a), b in zip(theirs.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(b, a, atol=GEOMETRIC_TOL * max(a.abs().max().item(), 1), rtol=0, msg=k)
    x = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)


def test_scipy_spline_stays_timms(monkeypatch):
    """TIMM_USE_SCIPY_INTERP=1 selects scipy's cubic spline in timm's function,
    which the op does not compute: patch() leaves that one to timm."""
    monkeypatch.setattr(timm_rel, "_USE_SCIPY", True)
    with vtimm.patch():
        assert beit.resize_rel_pos_bias_table is TIMM_GEOMETRIC
        assert tiny_vit.resize_rel_pos_bias_table_levit is rp.resize_rel_pos_bias_table_levit


# -- resize_rel_pos_bias_table: BEiT's geometric resize at the op's sample positions ----------------

# big windows: a float32 position near 60 would move by 4e-6 (the op's tap math is double);
# a window of 1 (a Swin stage on a 1x1 feature map): one offset, read everywhere
GEOMETRIC_CASES = [(7, 12, 3), (12, 7, 3), (14, 24, 0), ((8, 6), (12, 10), 0), (7, (7, 12), 3), (16, 32, 3),
                   (40, 24, 3), (64, 48, 0), ((1, 4), (3, 4), 0), (1, 5, 3)]


@pytest.mark.parametrize("old, new, extra, layout", [(*case, "flat") for case in GEOMETRIC_CASES] +
                         [(*case[:2], 0, "heads_first") for case in GEOMETRIC_CASES])  # (heads, H, W): no extra rows
def test_geometric_matches_timm(old, new, extra, layout):
    ow, nw = (old, old) if isinstance(old, int) else old, (new, new) if isinstance(new, int) else new
    src, dst = (2 * ow[0] - 1, 2 * ow[1] - 1), (2 * nw[0] - 1, 2 * nw[1] - 1)
    if layout == "flat":
        table = randn(src[0] * src[1] + extra, 4)
        args = (nw, (dst[0] * dst[1] + extra, 4), ow if ow[0] != ow[1] else None)
    else:
        table = randn(4, *src)
        args = (nw, (4, *dst))
    theirs = TIMM_GEOMETRIC(table, *args)
    ours = rp.resize_rel_pos_bias_table(table, *args)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, atol=GEOMETRIC_TOL * table.abs().max(), rtol=0)
    if extra:
        assert torch.equal(ours[-extra:], table[-extra:])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_geometric_dtypes_as_timm(dtype):
    """timm computes in float32 and casts back; so does the op's version."""
    table = randn(13 * 13 + 3, 2, dtype=dtype)
    theirs = TIMM_GEOMETRIC(table, (12, 12), (23 * 23 + 3, 2))
    ours = rp.resize_rel_pos_bias_table(table, (12, 12), (23 * 23 + 3, 2))
    assert ours.dtype == dtype
    rounding = GEOMETRIC_TOL if dtype == torch.float64 else 2 * torch.finfo(dtype).eps
    torch.testing.assert_close(ours.double(), theirs.double(), atol=rounding * table.double().abs().max(), rtol=0)


def test_geometric_positions_are_where_the_recipe_reads():
    """In float64 the op at beit_sample_positions is BEiT's recipe exactly:
    per axis, piecewise-linear (np.interp) at the geometric offsets, taken
    as the float32 values timm builds them in."""
    np = pytest.importorskip("numpy")
    lab = experiment()
    grid = randn(3, 13, 9, dtype=torch.float64)
    y = np.float32(lab.geometric_offsets(13, 23)).astype(np.float64)
    x = np.float32(lab.geometric_offsets(9, 17)).astype(np.float64)
    ty, tx = lab.target_offsets(23), lab.target_offsets(17)
    g = grid.numpy()
    rows = np.stack([[np.interp(ty, y, g[h, :, j]) for j in range(9)] for h in range(3)])     # (3, 9, 23)
    exact = np.stack([[np.interp(tx, x, rows[h, :, i]) for i in range(23)] for h in range(3)])  # (3, 23, 17)
    ours = vitpe_ext.interpolate_pos_embed(grid.flatten(1).unsqueeze(-1), (23, 17), (13, 9), 0, mode="bilinear",
                                           sample_positions=[rp.beit_sample_positions(13, 23),
                                                             rp.beit_sample_positions(9, 17)])
    torch.testing.assert_close(ours.view(3, 23, 17), torch.from_numpy(exact), atol=1e-13, rtol=0)


def test_geometric_same_window_meta_and_errors():
    table = randn(13 * 13 + 3, 2)
    assert rp.resize_rel_pos_bias_table(table, (7, 7), (13 * 13 + 3, 2)) is table
    meta = rp.resize_rel_pos_bias_table(table.to("meta"), (12, 12), (23 * 23 + 3, 2))
    assert meta.is_meta and meta.shape == (23 * 23 + 3, 2)
    with pytest.raises(ValueError, match="170 offsets are not a square grid; pass old_window_size"):
        rp.resize_rel_pos_bias_table(randn(173, 2), (12, 12), (23 * 23 + 3, 2))
    with pytest.raises(ValueError, match="has fewer rows than a 23x23 grid"):
        rp.resize_rel_pos_bias_table(table, (12, 12), (100, 2))


def test_geometric_gradient_flows():
    table = randn(13 * 13 + 3, 2, dtype=torch.float64).requires_grad_()
    out = rp.resize_rel_pos_bias_table(table, (9, 9), (17 * 17 + 3, 2))
    out.sum().backward()
    assert table.grad is not None and torch.isfinite(table.grad).all()
