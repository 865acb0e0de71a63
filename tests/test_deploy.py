"""Deploying models that call the op: torch.export, AOTInductor packages and
TorchScript (script, trace, save/load), each compared with eager.

Four models: a bare module that resizes its table to a grid read off its
input (and returns the table's gradient too, so the backward op is deployed
as well), a tiny torchvision ViT made dynamic by vitpe_ext.torchvision's
make_dynamic, and a tiny timm ViT with dynamic_img_size under
vitpe_ext.timm.patch(), all fed multiples of the patch (8): grids 5x3, the
native 4x4 and 2x6; and the torchvision ViT made dynamic with pad=True, fed
sizes that are not (PADDED_SIZES).

The slow part is one AOTInductor compile of all four models at once (about
a minute on 2 cores, a module fixture); a package loads in a fresh process
only where the op library is loaded (subprocess tests below).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest
import torch

import vitpe_ext
from vitpe_ext import interpolate_pos_embed

tv_vit = pytest.importorskip("torchvision.models.vision_transformer")
timm = pytest.importorskip("timm")
import vitpe_ext.timm as vtimm  # noqa: E402
from vitpe_ext.torchvision import make_dynamic  # noqa: E402

PATCH = 8
SIZES = [(40, 24), (32, 32), (16, 48)]  # grids 5x3, native 4x4, 2x6
PADDED_SIZES = [(37, 45), (32, 32), (17, 47)]  # padded to grids 5x6, native 4x4, 3x6
OP_LIBRARY = vitpe_ext._C.__file__  # what a process without vitpe's Python loads

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),  # torch.jit.* is deprecated, still used
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]  # torch's attention, when traced


# -- models -----------------------------------------------------------------------------

class ResizeToInput(torch.nn.Module):
    """The op alone: its table at the input's grid, and the gradient of a loss
    on it with respect to the table (the backward op)."""

    def __init__(self):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 6 * 6, 8))

    def forward(self, images):
        grid = (images.shape[2] // PATCH, images.shape[3] // PATCH)
        with torch.enable_grad():
            table = self.pos_embed.detach().requires_grad_()
            resized = interpolate_pos_embed(table, grid, mode="bicubic", antialias=True)
            (grad,) = torch.autograd.grad(resized.square().sum(), table)
        return resized.detach(), grad


def tiny_torchvision(**kwargs):
    torch.manual_seed(0)
    model = tv_vit.VisionTransformer(image_size=32, patch_size=PATCH, num_layers=2, num_heads=2, hidden_dim=16,
                                     mlp_dim=32, num_classes=5)
    return make_dynamic(model, **kwargs).eval()


def tiny_timm():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=PATCH,
                             embed_dim=16, depth=2, num_heads=2, num_classes=5, dynamic_img_size=True).eval()


class Models(torch.nn.Module):
    """All four behind two inputs, so that one AOTInductor compile serves them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bare, self.torchvision, self.timm = ResizeToInput(), tiny_torchvision(), tiny_timm()
        self.padded = tiny_torchvision(pad=True)

    def forward(self, images, padded_images):
        return (*self.bare(images), self.torchvision(images), self.timm(images), self.padded(padded_images))


OUTPUTS = ["resized table", "its gradient", "torchvision ViT", "timm ViT", "torchvision ViT, pad=True"]


def dynamic_hw():
    """H and W as multiples of the patch: make_dynamic and timm check divisibility,
    which a plain Dim would turn into a guard."""
    return {2: PATCH * torch.export.Dim("gh", min=2, max=16), 3: PATCH * torch.export.Dim("gw", min=2, max=16)}


def padded_hw():
    """Any H and W above the patch (make_dynamic(pad=True)): grids from 2 up."""
    return {2: torch.export.Dim("h", min=PATCH + 1, max=128), 3: torch.export.Dim("w", min=PATCH + 1, max=128)}


def images(h, w, seed=0):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


def eager(model, x):
    with torch.no_grad(), vtimm.patch():
        return model(*x)


def assert_outputs_close(got, want):
    for name, g, w in zip(OUTPUTS, got, want):
        # inductor fuses the ViTs' layer norms and matmuls differently: float32 rounding
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")


# -- torch.export: sizes stay dynamic (no specialisation, no guard against the native grid) -----------

class ResizeWithProfile(torch.nn.Module):
    def __init__(self, profile):
        super().__init__()
        self.profile = profile
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 4 * 4, 8))

    def forward(self, tokens):  # (B, H, W, C): the grid is the tokens' H x W
        return interpolate_pos_embed(self.pos_embed, (tokens.shape[1], tokens.shape[2]), (4, 4),
                                     profile=self.profile)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("profile", ["torchvision", "timm"])
def test_export_with_a_profile_runs_at_every_size(profile, strict):
    # a size check on the Python side (the profiles' "same grid: the table
    # itself") specialised non-strict export to the example size, and left
    # strict export a guard that refused the table's own 4x4
    module = ResizeWithProfile(profile)
    dims = {1: torch.export.Dim("h", min=2, max=32), 2: torch.export.Dim("w", min=2, max=32)}
    program = torch.export.export(module, (torch.empty(1, 6, 5, 8),), dynamic_shapes=(dims,), strict=strict)
    for h, w in [(6, 5), (4, 4), (3, 9)]:
        tokens = torch.empty(1, h, w, 8)
        torch.testing.assert_close(program.module()(tokens), module(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("strict", [False, True])
def test_export_make_dynamic_torchvision_runs_at_every_size(strict):
    model = tiny_torchvision()
    program = torch.export.export(model, (images(*SIZES[0]),), dynamic_shapes=(dynamic_hw(),), strict=strict)
    for h, w in SIZES + [(24, 16)]:
        x = images(h, w, seed=1)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("strict", [False, True])
def test_export_make_dynamic_torchvision_pads_at_every_size(strict):
    # a branch on the padding amount (none at a multiple of the patch) was a
    # guard export refused for sizes traced as symbols
    model = tiny_torchvision(pad=True)
    program = torch.export.export(model, (images(*PADDED_SIZES[0]),), dynamic_shapes=(padded_hw(),), strict=strict)
    for h, w in PADDED_SIZES + [(24, 16), (9, 128)]:
        x = images(h, w, seed=1)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("profile, dtype", [("dinov2", torch.float32), ("timm", torch.float64)])
def test_export_refuses_a_profile_that_needs_fixed_sizes(profile, dtype):
    # dinov2's scale factor is a float of the sizes; a narrowing compute dtype
    # keeps the table as it is on its own grid, a branch on them. int() of the
    # traced sizes would fix the program to the example's: a refusal instead.
    module = ResizeWithProfile(profile).to(dtype)
    dims = {1: torch.export.Dim("h", min=2, max=32), 2: torch.export.Dim("w", min=2, max=32)}
    tokens = torch.empty(1, 6, 5, 8, dtype=dtype)
    with pytest.raises(ValueError, match=rf"^interpolate_pos_embed: profile '{profile}' .*; export at a fixed size"):
        torch.export.export(module, (tokens,), dynamic_shapes=(dims,))
    program = torch.export.export(module, (tokens,))  # a fixed size exports
    assert torch.equal(program.module()(tokens), module(tokens))


def test_export_timm_dynamic_img_size_runs_at_every_size():
    # non-strict, torch.export's default: strict export of timm's ViT fails in
    # timm's own PatchEmbed (it formats H into an assert message), patched or not
    model = tiny_timm()
    with vtimm.patch():
        program = torch.export.export(model, (images(*SIZES[0]),), dynamic_shapes=(dynamic_hw(),))
        assert any(n.target == torch.ops.vitpe.interpolate_pos_embed.default for n in program.graph.nodes)
        for h, w in SIZES:
            x = images(h, w, seed=2)
            with torch.no_grad():
                torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def test_export_in_training_mode_differentiates_through_the_op():
    module = ResizeToInput().train()
    program = torch.export.export(module, (images(*SIZES[0]),), dynamic_shapes=(dynamic_hw(),))
    targets = {n.target for n in program.graph.nodes if n.op == "call_function"}
    assert {torch.ops.vitpe.interpolate_pos_embed.default,
            torch.ops.vitpe.interpolate_pos_embed_backward.default} <= targets
    for h, w in SIZES:
        for got, want in zip(program.module()(images(h, w)), module(images(h, w))):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


# -- AOTInductor ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(models, path of their AOTInductor package, input pairs, eager outputs)."""
    models = Models().eval()
    path = str(tmp_path_factory.mktemp("aoti") / "models.pt2")
    with vtimm.patch():
        program = torch.export.export(models, (images(*SIZES[0]), images(*PADDED_SIZES[0])),
                                      dynamic_shapes=(dynamic_hw(), padded_hw()))
        torch._inductor.aoti_compile_and_package(program, package_path=path)
    inputs = [(images(*size, seed=3), images(*padded, seed=3)) for size, padded in zip(SIZES, PADDED_SIZES)]
    return models, path, inputs, [eager(models, x) for x in inputs]


def test_aoti_package_matches_eager(package):
    models, path, inputs, want = package
    loaded = torch._inductor.aoti_load_package(path)
    for x, w in zip(inputs, want):
        assert_outputs_close(loaded(*x), w)


def run_python(code, *args):
    """Run code in a fresh interpreter; returns its stdout."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


LOAD_AOTI_WITHOUT_VITPE = """
    import sys, torch
    package, inputs, outputs, library = sys.argv[1:]
    try:
        torch._inductor.aoti_load_package(package)
    except RuntimeError as error:
        print("refused:", error)
    torch.ops.load_library(library)  # the op library alone, not vitpe_ext's Python
    model = torch._inductor.aoti_load_package(package)
    torch.save([model(*x) for x in torch.load(inputs)], outputs)
    print("vitpe_ext imported:", "vitpe_ext" in sys.modules)
"""


def test_aoti_package_in_a_process_without_vitpe(package, tmp_path):
    # The package calls the op through the dispatcher (the proxy executor):
    # without the library it cannot load, and torch says which op is missing.
    _, path, inputs, want = package
    torch.save(inputs, tmp_path / "inputs.pt")
    out = run_python(LOAD_AOTI_WITHOUT_VITPE, path, tmp_path / "inputs.pt", tmp_path / "out.pt", OP_LIBRARY)
    assert "refused: Could not find schema for vitpe::interpolate_pos_embed" in out
    assert "vitpe_ext imported: False" in out
    for got, w in zip(torch.load(tmp_path / "out.pt"), want):
        assert_outputs_close(got, w)


def test_aoti_package_in_a_process_that_imports_vitpe(package, tmp_path):
    _, path, inputs, want = package
    torch.save(inputs, tmp_path / "inputs.pt")
    run_python("""
        import sys, torch, vitpe_ext
        model = torch._inductor.aoti_load_package(sys.argv[1])
        torch.save([model(*x) for x in torch.load(sys.argv[2])], sys.argv[3])
    """, path, tmp_path / "inputs.pt", tmp_path / "out.pt")
    for got, w in zip(torch.load(tmp_path / "out.pt"), want):
        assert_outputs_close(got, w)


# -- TorchScript ---------------------------------------------------------------------------------

class EveryArgumentForm(torch.nn.Module):
    """Calls the function with each argument form its docstring promises
    TorchScript: sizes as int or List[int], scale_factor as float or
    List[float], None for any optional argument, a 2-D table."""

    def __init__(self):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 2 + 5 * 5, 8))

    def forward(self, h: int, w: int) -> List[torch.Tensor]:
        t = self.pos_embed
        return [
            interpolate_pos_embed(t, h, 5, 2),
            interpolate_pos_embed(t, [h, w], [5, 5], num_prefix_tokens=2),
            interpolate_pos_embed(t, [h, w], None, 2, None, None, None, None, None),  # old grid inferred
            interpolate_pos_embed(t, [h, w], 5, 2, "bilinear", True, False),
            interpolate_pos_embed(t, [h, w], [5, 5], 2, mode="area"),
            interpolate_pos_embed(t, h, [5, 5], 2, antialias=True, scale_factor=h / 5.0 + 1e-6),
            interpolate_pos_embed(t, [h, w], [5, 5], 2, mode="bicubic", align_corners=False,
                                  scale_factor=[h / 5.0 + 1e-6, w / 5.0 + 1e-6]),
            interpolate_pos_embed(t[0], [h, w], [5, 5], 2, mode="lanczos3"),
        ]


def test_torchscript_every_argument_form_matches_eager():
    module = EveryArgumentForm()
    scripted = torch.jit.script(module)
    for h, w in [(7, 9), (3, 4), (5, 5)]:
        want = module(h, w)
        (want_grad,) = torch.autograd.grad(sum(t.square().sum() for t in want), module.pos_embed)
        got = scripted(h, w)
        (got_grad,) = torch.autograd.grad(sum(t.square().sum() for t in got), module.pos_embed)
        for i, (g, w_) in enumerate(zip(got, want)):
            assert torch.equal(g, w_), f"call {i} at {h}x{w}"
        assert torch.equal(got_grad, want_grad)


@pytest.mark.parametrize("profile", [None] + sorted(vitpe_ext.PROFILES))
def test_interpolate_resolved_is_the_profile(profile):
    # what a scripted make_dynamic ViT runs in place of profile=
    from vitpe_ext.op.function import interpolate_resolved
    scripted = torch.jit.script(interpolate_resolved)
    p = vitpe_ext.op.resolve(profile)
    settings = (p.mode, p.align_corners, p.antialias, p.compute_dtype, p.scale_offset, p.cast_prefix)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        table = torch.randn(1, 2 + 5 * 5, 6, dtype=torch.float64).to(dtype)
        for new in ([7, 4], [5, 5], [3, 3]):
            want = interpolate_pos_embed(table, new, [5, 5], 2, profile=profile)
            assert torch.equal(scripted(table, new, [5, 5], 2, *settings), want), (dtype, new)


@pytest.mark.parametrize("settings", [{}, {"profile": None, "mode": "bilinear", "antialias": True},
                                      {"profile": "timm"}, {"profile": "dinov2"}, {"pad": True}])
def test_torchscript_make_dynamic_torchvision(settings):
    model = tiny_torchvision(**settings)
    scripted = torch.jit.script(model)
    assert "vitpe::interpolate_pos_embed" in str(scripted.inlined_graph)
    sizes = SIZES + ([(37, 21)] if settings.get("pad") else [])
    for h, w in sizes:
        x = images(h, w, seed=4)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), model(x), rtol=1e-6, atol=1e-7)
    if not settings.get("pad"):
        with pytest.raises(Exception, match="input 37x21 is not a multiple of the patch size 8"):
            scripted(images(37, 21))


def test_torchscript_make_dynamic_torchvision_trains_like_eager():
    model = tiny_torchvision().train()
    scripted = torch.jit.script(model)
    x = images(40, 24, seed=5)
    grads = []
    for m in (model, scripted):
        m.zero_grad()
        m(x).logsumexp(-1).sum().backward()
        grads.append(m.encoder.pos_embedding.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_torchscript_trace_fixes_the_grid():
    # torch.jit.trace records the grid as a constant: the traced model runs at
    # the traced size only (torchvision's ViT fails trace's re-trace check
    # with or without vitpe, hence check_trace=False)
    model = tiny_torchvision()
    x = images(40, 24, seed=6)
    traced = torch.jit.trace(model, x, check_trace=False)
    assert "vitpe::interpolate_pos_embed" in str(traced.inlined_graph)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=1e-6, atol=1e-7)
    with pytest.raises(RuntimeError, match="must match the size"):
        traced(images(32, 48))


LOAD_TORCHSCRIPT = """
    import sys, torch
    scripted, traced, inputs, outputs, library = sys.argv[1:]
    if library == "import":
        import vitpe_ext
    else:
        try:
            torch.jit.load(scripted)
        except RuntimeError as error:
            print("refused:", str(error).strip().splitlines()[0])
        torch.ops.load_library(library)  # the op library alone, not vitpe_ext's Python
    print("vitpe_ext imported:", "vitpe_ext" in sys.modules)
    scripted, traced = torch.jit.load(scripted), torch.jit.load(traced)
    xs = torch.load(inputs)
    with torch.no_grad():
        torch.save([scripted(x) for x in xs] + [traced(xs[0])], outputs)
"""


@pytest.mark.parametrize("library", ["import", "op library"])
def test_torchscript_save_load_in_a_fresh_process(library, tmp_path):
    model = tiny_torchvision()
    inputs = [images(h, w, seed=7) for h, w in SIZES]
    torch.jit.save(torch.jit.script(model), tmp_path / "scripted.pt")
    torch.jit.save(torch.jit.trace(model, inputs[0], check_trace=False), tmp_path / "traced.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    out = run_python(LOAD_TORCHSCRIPT, tmp_path / "scripted.pt", tmp_path / "traced.pt", tmp_path / "inputs.pt",
                     tmp_path / "out.pt", "import" if library == "import" else OP_LIBRARY)
    assert f"vitpe_ext imported: {library == 'import'}" in out
    if library != "import":
        assert "refused: Unknown builtin op: vitpe::interpolate_pos_embed" in out
    with torch.no_grad():
        want = [model(x) for x in inputs] + [model(inputs[0])]
    for got, w in zip(torch.load(tmp_path / "out.pt"), want):
        torch.testing.assert_close(got, w, rtol=1e-6, atol=1e-7)


# -- bench/deploy_bench.py ------------------------------------------------------------------------

def test_deploy_bench_smoke(tmp_path):
    # the lead's GPU benchmark, in its CPU smoke mode: a 1-layer ViT, fp32
    script = Path(__file__).resolve().parents[1] / "bench" / "deploy_bench.py"
    result = subprocess.run([sys.executable, str(script), "--device", "cpu", "--batch", "1", "--iters", "3",
                             "--warmup", "1", "--tiny", "--dtype", "fp32", "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == "fp32" and fields[1] == "1":
            rows[fields[2]] = float(fields[5])  # backend -> max |diff| vs eager
    expected = {"eager", "aoti", "onnxruntime"} if "ONNX skipped" not in result.stdout else {"eager", "aoti"}
    assert rows.keys() == expected, result.stdout
    assert max(rows.values()) < 1e-4, result.stdout
    assert (tmp_path / "vit_float32.pt2").exists()
