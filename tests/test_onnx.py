"""ONNX export of the op (vitpe_ext/op/onnx_export.py, vitpe_ext.onnx).

torch.onnx.export(dynamo=True) of a model that calls the op must give a
standard ONNX graph (the full checker passes, only default-domain ops) that
onnxruntime runs to vitpe's own output: bit-exact for the nearest modes and
the prefix tokens, within float32 rounding elsewhere (Resize and ATen round
the source coordinate differently: x / (out/in) against x * (in/out)).

Exports take seconds each on 2 cores, so a model holds many calls of the op
as separate outputs and is exported once per module (fixtures); the
parametrized tests each read their outputs.
"""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

import vitpe_ext  # noqa: E402
import vitpe_ext.onnx  # noqa: E402
from conftest import dinov2_scale_factor, ulp  # noqa: E402
from vitpe_ext import interpolate_pos_embed  # noqa: E402
from vitpe_ext.op import PROFILES, onnx_export  # noqa: E402
from vitpe_ext.op.onnx_export import OnnxExportError  # noqa: E402

EPS32 = 2.0 ** -23
# what the translation emits, and torch's own around it (a traced size: Shape + Squeeze; casts)
TRANSLATION_OPS = {"Slice", "Concat", "Reshape", "Transpose", "Resize", "Gather", "MatMul", "Shape", "Cast",
                   "Constant", "Range", "Mul", "Add", "Sub", "Div", "Floor", "Min", "Squeeze"}


def export(module, args, dynamic_shapes=None, optimize=False, **kwargs):
    """torch.onnx.export of the module in eval mode under no_grad (inference:
    the backward op must not appear), quietly; checked in full."""
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(module.eval(), args, dynamo=True, dynamic_shapes=dynamic_shapes,
                                    optimize=optimize, **kwargs)
    onnx.checker.check_model(program.model_proto, full_check=True)
    targets = {str(n.target) for n in program.exported_program.graph.nodes if n.op == "call_function"}
    assert not any("backward" in t for t in targets), targets
    return program


class Runner:
    """An onnxruntime CPU session over an exported model; outputs cached per input."""

    def __init__(self, program):
        self.proto = program.model_proto
        self.session = ort.InferenceSession(self.proto.SerializeToString(), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self._cache = {}

    def run(self, *inputs, key=None):
        key = key if key is not None else tuple(tuple(x.shape) for x in inputs)
        if key not in self._cache:
            feeds = {name: x.numpy() for name, x in zip(self.names, inputs)}
            self._cache[key] = [torch.from_numpy(y) for y in self.session.run(None, feeds)]
        return self._cache[key]

    def op_types(self):
        return {n.op_type for n in self.proto.graph.node}


def tolerance(table, *sizes):
    """Resize's and ATen's source coordinates differ by a few float32 ulps of
    the coordinate (up to the largest grid side); an output moves by that
    times the interpolant's slope (a few times max|x|), plus the rounding of
    the weighted sums. A wrong mapping (half a pixel) is off by O(max|x|)."""
    return 32 * EPS32 * max(max(s) for s in sizes) * table.abs().max().item()


def assert_close(got, want, atol, what):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got.to(torch.float64) - want.to(torch.float64)).abs().max().item() if want.numel() else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:.3g}"


# -- every mode Resize or Gather expresses, at sizes traced as symbols -------------------------

COMBOS = [("nearest", None, False), ("nearest-exact", None, False),
          ("bilinear", None, False), ("bilinear", True, False), ("bilinear", False, True),
          ("bicubic", None, False), ("bicubic", True, False), ("bicubic", False, True)]
PREFIXES = (0, 1, 5)
OLD_GRIDS = {0: (6, 5), 1: (7, 7), 5: (5, 6)}   # non-square, the usual square, non-square
HALF_COMBOS = [("nearest", None, False), ("bicubic", None, False), ("bilinear", False, True)]
HALF_DTYPES = (torch.float16, torch.bfloat16, torch.float64)
# up, down, one axis each way, square, a 1-wide axis, far up (the native grids are added per table)
SIZES = [(9, 7), (4, 3), (3, 8), (12, 12), (1, 4), (30, 17)]


class EveryMode(torch.nn.Module):
    """The op in every combo x prefix (float32), and in three combos per half
    and double dtype, at the grid of `size`'s shape."""

    def forward(self, table0, table1, table5, size):
        new = (size.shape[0], size.shape[1])
        tables = {0: table0, 1: table1, 5: table5}
        outs = [interpolate_pos_embed(tables[p], new, OLD_GRIDS[p], p, mode=m, align_corners=ac, antialias=aa)
                for m, ac, aa in COMBOS for p in PREFIXES]
        for dtype in HALF_DTYPES:  # cast inside the graph: onnxruntime's Python API has no bfloat16 arrays
            outs += [interpolate_pos_embed(table1.to(dtype), new, OLD_GRIDS[1], 1, mode=m, align_corners=ac,
                                           antialias=aa).to(torch.float64) for m, ac, aa in HALF_COMBOS]
        return tuple(outs)


@pytest.fixture(scope="module")
def every_mode():
    gen = torch.Generator().manual_seed(0)
    tables = [torch.randn(1, p + OLD_GRIDS[p][0] * OLD_GRIDS[p][1], 8, generator=gen) for p in PREFIXES]
    h, w = torch.export.Dim("h", min=1, max=64), torch.export.Dim("w", min=1, max=64)
    program = export(EveryMode(), (*tables, torch.empty(9, 7)), dynamic_shapes=(None, None, None, {0: h, 1: w}))
    return Runner(program), tables


def _every_mode_output(every_mode, index, size):
    runner, tables = every_mode
    return runner.run(*tables, torch.empty(size))[index]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: f"{c[0]}-ac{c[1]}-aa{c[2]}")
def test_every_mode_matches_vitpe_at_traced_sizes(every_mode, combo, prefix):
    mode, align_corners, antialias = combo
    table = every_mode[1][PREFIXES.index(prefix)]
    index = COMBOS.index(combo) * len(PREFIXES) + PREFIXES.index(prefix)
    for size in SIZES + [OLD_GRIDS[prefix]]:
        got = _every_mode_output(every_mode, index, size)
        want = interpolate_pos_embed(table, size, OLD_GRIDS[prefix], prefix, mode=mode,
                                     align_corners=align_corners, antialias=antialias)
        what = f"{combo} prefix {prefix} {OLD_GRIDS[prefix]} -> {size}"
        assert torch.equal(got[:, :prefix], table[:, :prefix]), f"{what}: prefix tokens changed"
        if mode.startswith("nearest") or size == OLD_GRIDS[prefix]:
            assert torch.equal(got, want), f"{what}: not bit-exact"  # Gather; the op's own grid is the table
        else:
            assert_close(got, want, tolerance(table, size, OLD_GRIDS[prefix]), what)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("combo", HALF_COMBOS, ids=lambda c: f"{c[0]}-ac{c[1]}-aa{c[2]}")
def test_half_and_double_tables(every_mode, combo, dtype):
    """Resize runs in float32 and casts back once, as the op computes half
    tables: at most one rounding apart; float64 tables are resized in
    float32 (onnxruntime has no double Resize)."""
    mode, align_corners, antialias = combo
    table = every_mode[1][1].to(dtype)
    index = len(COMBOS) * len(PREFIXES) + HALF_DTYPES.index(dtype) * len(HALF_COMBOS) + HALF_COMBOS.index(combo)
    for size in [(9, 7), (4, 3), (3, 8)]:
        got = _every_mode_output(every_mode, index, size)
        want = interpolate_pos_embed(table, size, OLD_GRIDS[1], 1, mode=mode, align_corners=align_corners,
                                     antialias=antialias).to(torch.float64)
        what = f"{combo} {dtype} -> {size}"
        if mode == "nearest":
            assert torch.equal(got, want), what
            continue
        rounding = ulp(want, dtype) if dtype != torch.float64 else EPS32 * want.abs()
        err = (got - want).abs() - rounding
        assert err.max().item() <= tolerance(table.double(), size, OLD_GRIDS[1]), what


def test_the_graph_is_standard_onnx(every_mode):
    runner = every_mode[0]
    assert {d.domain for d in runner.proto.opset_import} <= {"", "ai.onnx"}
    assert not runner.proto.functions
    assert max(d.version for d in runner.proto.opset_import if d.domain in ("", "ai.onnx")) >= 18
    assert runner.op_types() <= TRANSLATION_OPS, runner.op_types() - TRANSLATION_OPS
    resizes = [n for n in runner.proto.graph.node if n.op_type == "Resize"]
    attrs = {tuple(sorted((a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute)) for n in resizes}
    want = {("antialias", 1), ("coordinate_transformation_mode", b"half_pixel"), ("cubic_coeff_a", -0.5),
            ("exclude_outside", 1), ("mode", b"cubic")}
    assert any(want <= set(a) for a in attrs), "no antialiased bicubic Resize as ATen's (a=-0.5, exclude_outside)"


# -- fixed sizes: area, antialias with align_corners, scale factors --------------------------

OLD = (6, 5)
# (mode, align_corners, antialias, new grid, scale_factor, route the translation takes)
STATIC_CASES = [
    ("area", None, False, (3, 5), None, "matrices"),      # integer factor on H
    ("area", None, False, (4, 3), None, "matrices"),
    ("area", None, False, (9, 7), None, "matrices"),
    ("bilinear", True, True, (4, 3), None, "matrices"),
    ("bilinear", True, True, (9, 7), None, "matrices"),
    ("bicubic", True, True, (4, 3), None, "matrices"),
    ("bicubic", True, True, (9, 7), None, "matrices"),
    ("bicubic", None, False, (9, 7), "dinov2", "resize"),
    ("bicubic", None, False, (4, 3), "dinov2", "resize"),
    ("bicubic", None, True, (4, 3), "dinov2", "resize"),
    ("bicubic", True, False, (9, 7), "dinov2", "resize"),
    ("bilinear", None, False, (6, 8), "dinov2", "resize"),  # H unchanged: ATen copies it whatever the scale
    ("bicubic", None, True, (6, 8), "dinov2", "resize"),
    ("bicubic", None, False, (6, 5), "dinov2", "matrices"),  # onnxruntime copies a same-shape Resize
    ("nearest", None, False, (9, 7), "dinov2", "gather"),
    ("nearest", None, False, (12, 10), (2.05, 2.05), "gather"),  # ATen: o >> 1 at twice the size
    ("nearest", None, False, (6, 5), (1.05, 1.1), "gather"),     # ATen: a copy at the same size
    ("nearest-exact", None, False, (4, 3), "dinov2", "gather"),
]
# onnxruntime derives the output size of Resize(scales) as floor(11 * float32(13/11)) = 12
ODD_OLD, ODD_CASE = (11, 4), ("bicubic", None, False, (13, 4), (13 / 11, 1.0), "matrices")


def _factors(old, new, scale_factor):
    if scale_factor == "dinov2":
        return [dinov2_scale_factor(o, n) for o, n in zip(old, new)]
    return None if scale_factor is None else list(scale_factor)


class FixedSizes(torch.nn.Module):
    def forward(self, table, odd_table, table64):
        outs = [interpolate_pos_embed(table, new, OLD, 1, mode=m, align_corners=ac, antialias=aa,
                                      scale_factor=_factors(OLD, new, sf)) for m, ac, aa, new, sf, _ in STATIC_CASES]
        m, ac, aa, new, sf, _ = ODD_CASE
        outs.append(interpolate_pos_embed(odd_table, new, ODD_OLD, 1, mode=m, scale_factor=list(sf)))
        outs.append(interpolate_pos_embed(table64, (4, 3), OLD, 1, mode="area"))  # double MatMul
        return tuple(outs)


@pytest.fixture(scope="module")
def fixed_sizes():
    gen = torch.Generator().manual_seed(1)
    tables = (torch.randn(1, 1 + 30, 8, generator=gen), torch.randn(1, 1 + 44, 8, generator=gen),
              torch.randn(1, 1 + 30, 8, generator=gen, dtype=torch.float64))
    runner = Runner(export(FixedSizes(), tables))
    return runner, tables, runner.run(*tables)


@pytest.mark.parametrize("case", STATIC_CASES + [ODD_CASE],
                         ids=lambda c: f"{c[0]}-ac{c[1]}-aa{c[2]}-{c[3][0]}x{c[3][1]}-sf{c[4]}")
def test_fixed_sizes_match_vitpe(fixed_sizes, case):
    runner, (table, odd_table, _), outs = fixed_sizes
    mode, align_corners, antialias, new, scale_factor, route = case
    old, t = (ODD_OLD, odd_table) if case is ODD_CASE else (OLD, table)
    factors = _factors(old, new, scale_factor)
    assert onnx_export._route(mode, bool(align_corners), antialias, old, new,
                              None if factors is None else tuple(factors)) == route
    got = outs[len(STATIC_CASES)] if case is ODD_CASE else outs[STATIC_CASES.index(case)]
    want = interpolate_pos_embed(t, new, old, 1, mode=mode, align_corners=align_corners, antialias=antialias,
                                 scale_factor=factors)
    if route == "gather":
        assert torch.equal(got, want)
    else:
        assert_close(got, want, tolerance(t, new, old), f"{case}")


def test_double_area_is_computed_in_double(fixed_sizes):
    runner, (_, _, table64), outs = fixed_sizes
    want = interpolate_pos_embed(table64, (4, 3), OLD, 1, mode="area")
    assert outs[-1].dtype == torch.float64
    assert_close(outs[-1], want, 64 * 2.0 ** -52 * table64.abs().max().item(), "float64 area")


# -- the library profiles --------------------------------------------------------------------

PROFILE_NAMES = sorted(PROFILES)
HALF_PROFILES = ("timm", "dinov2")  # float32 compute on a float16 table, cast back


class Profiles(torch.nn.Module):
    def forward(self, table):
        outs = [interpolate_pos_embed(table, (9, 11), profile=name) for name in PROFILE_NAMES]
        outs += [interpolate_pos_embed(table.half(), (9, 11), profile=name).double() for name in HALF_PROFILES]
        return tuple(outs)


@pytest.fixture(scope="module")
def profiles():
    table = torch.randn(1, 1 + 7 * 7, 8, generator=torch.Generator().manual_seed(2))
    runner = Runner(export(Profiles(), (table,)))
    return table, runner.run(table)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profiles(profiles, name):
    table, outs = profiles
    want = interpolate_pos_embed(table, (9, 11), profile=name)
    assert_close(outs[PROFILE_NAMES.index(name)], want, tolerance(table, (9, 11)), name)


@pytest.mark.parametrize("name", HALF_PROFILES)
def test_profiles_on_half_tables(profiles, name):
    table, outs = profiles
    want = interpolate_pos_embed(table.half(), (9, 11), profile=name).double()
    got = outs[len(PROFILE_NAMES) + HALF_PROFILES.index(name)]
    assert ((got - want).abs() - ulp(want, torch.float16)).max().item() <= tolerance(table, (9, 11)), name


# -- what ONNX cannot express: refused while exporting -------------------------------------------

def _export_error(module, args, **kwargs):
    with pytest.raises(Exception) as info:
        export(module, args, **kwargs)
    cause = info.value
    while cause is not None and not isinstance(cause, OnnxExportError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, f"no OnnxExportError behind {info.value!r}"
    assert str(cause) in str(info.value), "torch's error summary does not show vitpe's message"
    return str(cause)


class Lanczos(torch.nn.Module):
    def forward(self, table):
        return interpolate_pos_embed(table, (9, 7), mode="lanczos3")


def test_lanczos3_is_refused_at_export():
    message = _export_error(Lanczos(), (torch.randn(1, 1 + 36, 8),))
    assert message.startswith("vitpe ONNX export: mode 'lanczos3' has no ONNX equivalent: Resize has no Lanczos")
    assert "mode='bicubic' and antialias=True" in message and "before export" in message


class AreaAtTracedSize(torch.nn.Module):
    def forward(self, table, size):
        return interpolate_pos_embed(table, (size.shape[0], size.shape[1]), mode="area")


def test_area_at_traced_sizes_is_refused():
    message = _export_error(AreaAtTracedSize(), (torch.randn(1, 1 + 36, 8), torch.empty(4, 3)),
                            dynamic_shapes=(None, {0: torch.export.Dim("h", min=1, max=64), 1: None}))
    assert "mode 'area' is adaptive average pooling, which ONNX expresses only for fixed sizes" in message


class ProfileAtTracedSize(torch.nn.Module):
    def __init__(self, profile):
        super().__init__()
        self.profile = profile

    def forward(self, table, size):
        return interpolate_pos_embed(table, (size.shape[0], size.shape[1]), profile=self.profile)


@pytest.mark.parametrize("profile, dtype", [("dinov2", torch.float32), ("timm", torch.float64)])
def test_a_profile_that_needs_fixed_sizes_is_refused_at_traced_sizes(profile, dtype):
    # Without the refusal the exporter retries with the sizes made static and
    # succeeds: a model that onnxruntime refuses at any other size.
    with pytest.raises(Exception, match=rf"ValueError'>: interpolate_pos_embed: profile '{profile}' .*"
                                        r"export at a fixed size"):
        export(ProfileAtTracedSize(profile), (torch.randn(1, 1 + 36, 8, dtype=dtype), torch.empty(4, 3)),
               dynamic_shapes=(None, {0: torch.export.Dim("h", min=1, max=64), 1: None}))


class Rank3(torch.nn.Module):
    def forward(self, table):
        return interpolate_pos_embed(table, (3, 4, 4), (2, 3, 3), mode="trilinear")


class Suffix(torch.nn.Module):
    def forward(self, table):
        return interpolate_pos_embed(table, (5, 5), (3, 3), num_suffix_tokens=3)


def test_other_ranks_and_suffix_tokens_are_refused_at_export():
    message = _export_error(Rank3(), (torch.randn(1, 1 + 18, 8),))
    assert message.startswith("vitpe ONNX export: grids of rank 3 (new_size [3, 4, 4]) are not translated")
    message = _export_error(Suffix(), (torch.randn(1, 1 + 9 + 3, 8),))
    assert message.startswith("vitpe ONNX export: num_suffix_tokens=3 is not translated")


def test_routes_and_refusals_without_exporting():
    traced = object()  # a size the exporter hands over as an ONNX value
    route = onnx_export._route
    assert route("nearest", False, False, (6, 5), (traced, traced), None) == "gather"
    assert route("bicubic", True, False, (6, 5), (traced, traced), None) == "resize"
    assert route("bilinear", False, True, (6, 5), (traced, 3), None) == "resize"
    assert route("bilinear", True, True, (6, 5), (4, 3), None) == "matrices"
    with pytest.raises(OnnxExportError, match="antialias=True and align_corners=True has no ONNX Resize"):
        route("bicubic", True, True, (6, 5), (traced, 3), None)
    with pytest.raises(OnnxExportError, match="mode 'lanczos3'"):
        route("lanczos3", False, True, (6, 5), (4, 3), None)


# -- dynamic ViTs: torchvision make_dynamic and timm dynamic_img_size -----------------------------

def _check_vit(model, table, head, patch, example, sizes, pad=False):
    # N(0, 1) table and head: the libraries' initial ones (std 0.02 table,
    # torchvision's zero head) would hide a wrong resize in the logits
    with torch.no_grad():
        table.normal_()
        head.weight.normal_()
    if pad:  # any size above the patch
        dims = (torch.export.Dim("h", min=patch + 1, max=256), torch.export.Dim("w", min=patch + 1, max=256))
    else:
        dims = (patch * torch.export.Dim("gh", min=1, max=32), patch * torch.export.Dim("gw", min=1, max=32))
    program = export(model, (example,), dynamic_shapes=({2: dims[0], 3: dims[1]},), optimize=True)
    runner = Runner(program)
    assert "Resize" in runner.op_types()
    gen = torch.Generator().manual_seed(3)
    for h, w in sizes:
        x = torch.randn(2, 3, h, w, generator=gen)
        with torch.no_grad():
            want = model(x)
        got = runner.run(x, key=(h, w))[0]
        assert_close(got, want, 1e-4 * max(1.0, want.abs().max().item()), f"input {h}x{w}")


def test_torchvision_make_dynamic_vit():
    tv_vit = pytest.importorskip("torchvision.models.vision_transformer")
    from vitpe_ext.torchvision import make_dynamic
    torch.manual_seed(0)
    model = tv_vit.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=5)
    make_dynamic(model.eval())
    # 48x40 traced; then the native 32x32, non-square up and down
    _check_vit(model, model.encoder.pos_embedding, model.heads.head, 8, torch.randn(2, 3, 48, 40),
               [(48, 40), (32, 32), (24, 64), (16, 8)])


def test_torchvision_make_dynamic_vit_pads():
    # The grid was -(-h // p): ONNX's integer Div truncates, so the table came
    # out at the floored grid and onnxruntime failed at every size that is
    # not a multiple of the patch.
    tv_vit = pytest.importorskip("torchvision.models.vision_transformer")
    from vitpe_ext.torchvision import make_dynamic
    torch.manual_seed(0)
    model = tv_vit.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=5)
    make_dynamic(model.eval(), pad=True)
    _check_vit(model, model.encoder.pos_embedding, model.heads.head, 8, torch.randn(2, 3, 37, 45),
               [(37, 45), (32, 32), (17, 63), (9, 9), (40, 24)], pad=True)


def test_timm_dynamic_vit_with_registers():
    timm = pytest.importorskip("timm")
    import vitpe_ext.timm
    torch.manual_seed(0)
    with vitpe_ext.timm.patch():  # timm's resample_abs_pos_embed -> vitpe (profile "timm")
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                                  num_heads=2, embed_dim=16, num_classes=5, reg_tokens=4, no_embed_class=False,
                                  dynamic_img_size=True).eval()
        assert model.pos_embed.shape[1] == 1 + 4 + 16  # class + 4 registers: 5 prefix tokens
        _check_vit(model, model.pos_embed, model.head, 8, torch.randn(2, 3, 48, 40),
                   [(48, 40), (32, 32), (24, 64), (16, 8)])


# -- how users get the translation -------------------------------------------------------------------

def test_custom_translation_table_without_registration(monkeypatch):
    """The supported-API path, with vitpe's entry out of torch's own table,
    and register()'s fallback where that table is not what it expects."""
    from torch.onnx._internal.exporter._torchlib import _torchlib_registry as torchlib
    ours = [e for e in torchlib._registry if e.onnx_function is onnx_export.interpolate_pos_embed_onnx]
    assert ours, "importing vitpe_ext.onnx registered nothing"
    monkeypatch.setattr(torchlib, "_registry", [e for e in torchlib._registry if e not in ours])
    table = torch.randn(1, 1 + 36, 8)
    program = export(Bicubic(), (table,), custom_translation_table=vitpe_ext.onnx.translation_table())
    got = Runner(program).run(table)[0]
    assert_close(got, interpolate_pos_embed(table, (9, 7)), tolerance(table, (9, 7)), "custom table")

    monkeypatch.setattr(torchlib, "_registry", tuple(torchlib._registry))
    with pytest.warns(RuntimeWarning, match=r"pass custom_translation_table=vitpe_ext.onnx.translation_table\(\)"):
        assert vitpe_ext.onnx.register() is False


def test_install_registers_at_once_when_the_exporter_is_loaded(monkeypatch):
    import torch.onnx._internal.exporter._compat  # noqa: F401  (what torch.onnx.export loads first)
    from torch.onnx._internal.exporter._torchlib import _torchlib_registry as torchlib
    from vitpe_ext.op import onnx_hook
    others = [e for e in torchlib._registry if e.onnx_function is not onnx_export.interpolate_pos_embed_onnx]
    monkeypatch.setattr(torchlib, "_registry", list(others))
    onnx_hook.install()  # the exporter is loaded in this process: no finder, the entry now
    assert [e.fx_target for e in torchlib._registry[len(others):]] == [torch.ops.vitpe.interpolate_pos_embed.default]
    assert not any(isinstance(f, onnx_hook._AfterExporterImport) for f in sys.meta_path)


class Bicubic(torch.nn.Module):
    def forward(self, table):
        return interpolate_pos_embed(table, (9, 7))


def test_plain_export_needs_no_extra_import():
    """In a fresh process: importing vitpe_ext loads no onnx/onnxscript, and
    a plain torch.onnx.export translates the op all the same."""
    script = textwrap.dedent("""
        import contextlib, io, sys
        import torch, vitpe_ext
        assert not {"onnx", "onnxscript", "onnx_ir"} & set(sys.modules), "vitpe_ext imported onnx"
        class M(torch.nn.Module):
            def forward(self, t):
                return vitpe_ext.interpolate_pos_embed(t, (9, 7), mode="bilinear")
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(M().eval(), (torch.randn(1, 37, 8),), dynamo=True, optimize=False)
        print(sorted({n.op_type for n in program.model.graph}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'Resize'" in done.stdout.splitlines()[-1]


# -- given sample positions: constant matrices ------------------------------------------------

POSITIONS = [[-0.5, 0.0, 1.3, 2.0, 2.5, 4.9, 7.0], [0.0, 0.5, 1.5, 3.2]]


class Sampled(torch.nn.Module):
    def forward(self, table):
        return tuple(interpolate_pos_embed(table, (7, 4), (5, 6), 1, mode=mode, sample_positions=POSITIONS)
                     for mode in ("nearest", "bilinear", "bicubic"))


def test_sample_positions_export_as_matrices():
    table = torch.randn(1, 1 + 30, 8, generator=torch.Generator().manual_seed(5))
    runner = Runner(export(Sampled(), (table,)))
    assert "MatMul" in runner.op_types() and "Resize" not in runner.op_types()
    for got, mode in zip(runner.run(table), ("nearest", "bilinear", "bicubic")):
        want = interpolate_pos_embed(table, (7, 4), (5, 6), 1, mode=mode, sample_positions=POSITIONS)
        assert_close(got, want, 8 * EPS32 * table.abs().max().item(), f"sample_positions {mode}")


class SampledAtTracedSize(torch.nn.Module):
    def forward(self, table, size):
        positions = [[0.0] * 3, [float(i) for i in range(4)]]
        return interpolate_pos_embed(table, (3, 4), (size.shape[0], 4), 1, mode="bilinear",
                                     sample_positions=positions)


def test_sample_positions_at_a_traced_grid_are_refused():
    message = _export_error(SampledAtTracedSize(), (torch.randn(1, 1 + 12, 8), torch.empty(3, 4)),
                            dynamic_shapes=({1: torch.export.Dim("t", min=2, max=64)}, {0: torch.export.Dim("h", min=1, max=16)}))
    assert "sample_positions need grid sizes fixed at export" in message
