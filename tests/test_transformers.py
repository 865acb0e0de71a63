"""vitpe_ext.transformers (vitpe_ext.integrations.transformers) against transformers' own
interpolate_pos_encoding: tiny random models, no downloads."""
from __future__ import annotations

import copy
import importlib
import inspect
import sys
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import vitpe_ext.integrations.transformers as vt  # noqa: E402
from conftest import assert_within_half_ulp, count_op_calls  # noqa: E402


def _covered_class(label):
    model, _, name = label.partition(".")
    for _, _, members in vt._GROUPS:
        for module, class_name in members:
            if class_name == name and module.partition(".")[0] == model:
                return getattr(importlib.import_module(f"transformers.models.{module}"), class_name)
    raise KeyError(label)


CLASSES = {label: _covered_class(label) for label in vt.COVERED}
ORIGINALS = {cls: cls.__dict__["interpolate_pos_encoding"] for cls in CLASSES.values()}  # HF's, before any patch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# image 32, patch 8: a 4 x 4 grid. Sizes: HF's early return, non-square, the same token count
# but not square (16 x 64: 2 x 8), the same grid but height != width (32 x 39: 4 x 4, resized
# anyway), up, down, square up.
SIZES = [(32, 32), (48, 64), (16, 64), (32, 39), (24, 40), (16, 16), (64, 64)]
EARLY = (32, 32)


@pytest.fixture
def op_calls(monkeypatch):
    return count_op_calls(monkeypatch, vt)


@pytest.fixture(autouse=True)
def no_patch_left_open():
    yield
    vt.unpatch()  # a failed test must not leave the classes patched for the next


def table_of(embeddings_module):
    """The position table's parameter: (1, N, C), or an nn.Embedding's (N, C) weight."""
    for name in ("position_embeddings", "position_embedding"):
        table = getattr(embeddings_module, name, None)
        if table is not None:
            return table.weight if isinstance(table, torch.nn.Embedding) else table
    raise AttributeError(type(embeddings_module).__name__)


def randomize_table(embeddings_module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    table = table_of(embeddings_module)
    with torch.no_grad():
        table.copy_(torch.randn(table.shape, generator=generator, dtype=torch.float64))


# -- the six classes, as whole models ------------------------------------------------------------

PRIMARY = {  # embeddings class: (config, model, extra config, takes interpolate_pos_encoding=)
    "vit.ViTEmbeddings": ("ViTConfig", "ViTModel", {}, True),
    "deit.DeiTEmbeddings": ("DeiTConfig", "DeiTModel", {}, True),
    "dinov2.Dinov2Embeddings": ("Dinov2Config", "Dinov2Model", {}, False),  # always interpolates
    "dinov2_with_registers.Dinov2WithRegistersEmbeddings": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                                                            {"num_register_tokens": 2}, False),
    "clip.CLIPVisionEmbeddings": ("CLIPVisionConfig", "CLIPVisionModel", {}, True),
    "siglip.SiglipVisionEmbeddings": ("SiglipVisionConfig", "SiglipVisionModel", {}, True),
}


def tiny_model(label, seed=0):
    config_name, model_name, extra, _ = PRIMARY[label]
    config = getattr(transformers, config_name)(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                intermediate_size=64, image_size=32, patch_size=8, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    randomize_table(embeddings_of(model), seed)
    return model


def embeddings_of(model):
    return next(m for m in model.modules() if type(m) in ORIGINALS)


def run(model, image):
    flag = {"interpolate_pos_encoding": True} if PRIMARY[type_label(embeddings_of(model))][3] else {}
    return model(pixel_values=image, **flag).last_hidden_state


def type_label(module):
    return next(label for label, cls in CLASSES.items() if type(module) is cls)


def image(size, dtype=torch.float32, device="cpu", batch=2):
    generator = torch.Generator().manual_seed(size[0] * 1000 + size[1])
    return torch.randn(batch, 3, *size, generator=generator, dtype=torch.float64).to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("label", list(PRIMARY))
def test_model_matches_hf_fp32(label, device, op_calls):
    model = tiny_model(label).to(device)
    for size in SIZES:
        x = image(size, device=device)
        with torch.no_grad():
            theirs = run(model, x)
            with vt.patch():
                ours = run(model, x)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=f"{label} at {size}")
    # the op ran for every size but HF's early return, whose value is HF's own
    assert op_calls == [(h // 8, w // 8) for h, w in SIZES if (h, w) != EARLY]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("label", list(PRIMARY))
def test_model_half_precision_no_worse_than_hf(label, dtype, device):
    model = tiny_model(label).to(device, dtype)
    reference = copy.deepcopy(model).double()  # the same rounded weights, exactly; HF's own method
    ours_err = theirs_err = 0.0
    for size in SIZES[1:]:
        x = image(size, dtype, device)
        with torch.no_grad():
            ref = run(reference, x.double())
            theirs = run(model, x)
            with vt.patch():
                ours = run(model, x)
        torch.testing.assert_close(ours, theirs, rtol=0.1, atol=0.1)  # the same function, in half precision
        ours_err += (ours.double() - ref).abs().mean().item()
        theirs_err += (theirs.double() - ref).abs().mean().item()
    # The rest of the network's half-precision arithmetic dominates the output's error, and a table
    # value rounded the other way moves it by a few percent either way at one size; summed over the
    # sizes it is HF's to within 5%. The table's own error is held to HF's strictly (test_table_precision).
    assert ours_err <= 1.05 * theirs_err, f"{label} {dtype}: {ours_err:.3e} vs HF {theirs_err:.3e}"


@pytest.mark.parametrize("label", list(PRIMARY))
def test_model_gradient_reaches_the_table(label):
    model = tiny_model(label).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    table = table_of(embeddings_of(model))
    for size in [(48, 64), (16, 64), (32, 39)]:
        x = image(size)
        weight = torch.randn(run(model, x).shape, generator=torch.Generator().manual_seed(1))
        model.zero_grad()
        (run(model, x) * weight).sum().backward()
        theirs = table.grad.clone()
        model.zero_grad()
        with vt.patch():
            (run(model, x) * weight).sum().backward()
        ours = table.grad.clone()
        assert ours.abs().sum() > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, msg=f"{label} at {size}")


def test_models_built_before_and_after_patch_are_routed(op_calls):
    before = tiny_model("vit.ViTEmbeddings")
    with vt.patch():
        after = tiny_model("vit.ViTEmbeddings", seed=1)
        with torch.no_grad():
            run(before, image((48, 64)))
            run(after, image((24, 40)))
    assert op_calls == [(6, 8), (3, 5)]
    with torch.no_grad():
        run(after, image((48, 64)))  # unpatched again
    assert len(op_calls) == 2


def test_early_return_is_hfs_own(op_calls):
    vit = embeddings_of(tiny_model("vit.ViTEmbeddings"))
    clip = embeddings_of(tiny_model("clip.CLIPVisionEmbeddings"))
    probe = torch.zeros(1, 17, 32)
    with vt.patch():
        assert vit.interpolate_pos_encoding(probe, 32, 32) is vit.position_embeddings
        looked_up = clip.interpolate_pos_encoding(probe, 32, 32)  # CLIP's embedding lookup, as HF
    assert torch.equal(looked_up, clip.position_embedding(clip.position_ids))
    assert looked_up.grad_fn is not None and "Embedding" in type(looked_up.grad_fn).__name__
    assert op_calls == []


# -- every covered class, at the method ------------------------------------------------------------

def tiny_embeddings(label, seed=0):
    """The covered class built from a tiny config of the class its __init__ names."""
    cls = CLASSES[label]
    config_class = list(inspect.signature(cls.__init__).parameters.values())[1].annotation
    kwargs = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2,
                  image_size=32, patch_size=8, num_channels=3)
    if config_class is inspect.Parameter.empty:  # SwinEmbeddings(self, config, use_mask_token=False)
        config_class = transformers.SwinConfig
    if issubclass(config_class, transformers.SwinConfig):
        kwargs.update(embed_dim=32, use_absolute_embeddings=True)
    if label.startswith(("beit.", "data2vec.")):
        kwargs.update(use_absolute_position_embeddings=True)
    torch.manual_seed(seed)
    module = cls(config_class(**kwargs)).eval()
    randomize_table(module, seed)
    return module


def prefix_of(module):
    tokens = table_of(module).shape[-2]
    return tokens - 16  # what a 4 x 4 grid leaves: class, distillation and register tokens


def probe(module, size, dtype=torch.float32, device="cpu"):
    """An `embeddings` argument for the size: only its shape is read."""
    h, w = size[0] // 8, size[1] // 8
    return torch.zeros(1, prefix_of(module) + h * w, 32, dtype=dtype, device=device)


def hf(module, size, dtype=torch.float32, device="cpu"):
    return ORIGINALS[type(module)](module, probe(module, size, dtype, device), *size)


def ours(module, size, dtype=torch.float32, device="cpu"):
    with vt.patch():
        return module.interpolate_pos_encoding(probe(module, size, dtype, device), *size)


@pytest.mark.parametrize("label", vt.COVERED)
def test_covered_class_matches_hf(label, op_calls):
    module = tiny_embeddings(label)
    for size in SIZES:
        theirs = hf(module, size)
        mine = ours(module, size)
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6, msg=f"{label} at {size}")
    assert op_calls == [(h // 8, w // 8) for h, w in SIZES if (h, w) != EARLY]
    # gradient to the parameter itself (ViTMAE's fixed sin-cos table takes none)
    table = table_of(module)
    if not table.requires_grad:
        return
    weight = torch.randn(hf(module, (48, 64)).shape, generator=torch.Generator().manual_seed(2))
    (hf(module, (48, 64)) * weight).sum().backward()
    theirs, table.grad = table.grad.clone(), None
    (ours(module, (48, 64)) * weight).sum().backward()
    torch.testing.assert_close(table.grad, theirs, rtol=1e-5, atol=1e-6)


# the models whose method interpolates in float32 whatever the table's dtype
HF_IN_FLOAT32 = ("dinov2.", "dinov2_with_registers.", "pixio.", "rf_detr.", "tipsv2.", "unlimited_ocr.")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("label", list(PRIMARY) + ["blip.BlipVisionEmbeddings", "groupvit.GroupViTVisionEmbeddings",
                                                   "internvl.InternVLVisionEmbeddings", "pixio.PixioEmbeddings",
                                                   "tipsv2.Tipsv2VisionEmbeddings",
                                                   "unlimited_ocr.UnlimitedOcrVisionEmbeddings"])
def test_table_precision(label, dtype, device):
    """The resized table against HF's: equal within fp32 rounding in float32/64; in half
    precision vitpe's is correctly rounded and no further from the float64 reference
    (HF's own method on a float64 copy of the same table) than HF's."""
    module = tiny_embeddings(label).to(device, dtype)
    reference = copy.deepcopy(module).double()
    table64 = table_of(reference).detach()
    for size in SIZES[1:]:
        with torch.no_grad():
            theirs, mine = hf(module, size, dtype, device), ours(module, size, dtype, device)
            ref = hf(reference, size, torch.float64, device)
        assert mine.dtype == theirs.dtype == dtype
        if dtype == torch.float64 and not label.startswith(HF_IN_FLOAT32):
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)  # float64 arithmetic, both
            continue
        if dtype in (torch.float32, torch.float64):
            torch.testing.assert_close(mine.double(), theirs.double(), rtol=1e-5, atol=1e-6)
            continue
        assert_within_half_ulp(mine, ref, table64, what=f"{label} {size}")
        slack = 64 * 2.0 ** -24 * table64.abs().max().item()  # a midpoint rounded the other way
        ours_err, theirs_err = (mine.double() - ref).abs().max(), (theirs.double() - ref).abs().max()
        assert ours_err <= theirs_err + slack, f"{label} {dtype} {size}: {ours_err:.3e} vs HF {theirs_err:.3e}"


def test_float32_copies_keep_a_float64_prefix():
    # Dinov2's float32 interpolation never casts the class token: nor does vitpe's
    module = tiny_embeddings("dinov2.Dinov2Embeddings").double()
    mine, theirs = ours(module, (48, 64), torch.float64), hf(module, (48, 64), torch.float64)
    assert torch.equal(mine[:, :1], module.position_embeddings[:, :1]) and torch.equal(mine[:, :1], theirs[:, :1])
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


# -- where vitpe hands the call to HF ------------------------------------------------------------

def errors_alike(call_hf, call_ours):
    with pytest.raises(Exception) as theirs:
        call_hf()
    with pytest.raises(type(theirs.value)) as mine:
        call_ours()
    assert str(mine.value) == str(theirs.value)


def test_patch_size_hf_cannot_use_falls_back(op_calls):
    module = tiny_embeddings("vit.ViTEmbeddings")
    module.patch_size = (8, 8)  # HF's `height // self.patch_size` raises TypeError
    errors_alike(lambda: hf(module, (48, 64)), lambda: ours(module, (48, 64)))
    assert op_calls == []


def test_table_that_is_not_a_square_grid_falls_back(op_calls):
    module = tiny_embeddings("vit.ViTEmbeddings")
    module.position_embeddings = torch.nn.Parameter(torch.randn(1, 1 + 4 * 8, 32))  # 4 x 8: HF's reshape fails
    errors_alike(lambda: hf(module, (48, 64)), lambda: ours(module, (48, 64)))
    assert op_calls == []


def test_non_square_config_is_read_as_hf_reads_it(op_calls):
    # image_size (16, 64): a 2 x 8 grid of 16 tokens, which HF's method takes for 4 x 4
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=(16, 64), patch_size=8)
    torch.manual_seed(0)
    model = transformers.ViTModel(config).eval()
    x = image((16, 64))
    with torch.no_grad():
        theirs = model(x, interpolate_pos_encoding=True).last_hidden_state
        with vt.patch():
            mine = model(x, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert op_calls == [(2, 8)]


def test_sizes_that_are_not_ints_fall_back(op_calls):
    module = tiny_embeddings("vit.ViTEmbeddings")
    embeddings = probe(module, (48, 64))
    theirs = ORIGINALS[type(module)](module, embeddings, torch.tensor(48), torch.tensor(64))
    with vt.patch():
        mine = module.interpolate_pos_encoding(embeddings, torch.tensor(48), torch.tensor(64))
    assert torch.equal(mine, theirs) and op_calls == []


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_with_a_half_table_falls_back(device, op_calls):
    # CUDA's autocast runs F.interpolate in float32: HF's ViT method returns a float32 table
    # from a bfloat16 one. vitpe leaves those calls to HF; Dinov2 casts itself, as vitpe does.
    probe_size = (48, 64)
    for label, routed_in_bf16 in [("vit.ViTEmbeddings", False), ("dinov2.Dinov2Embeddings", True)]:
        for dtype in (torch.float32, torch.bfloat16):
            module = tiny_embeddings(label).to(device, dtype)
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
                theirs, mine = hf(module, probe_size, dtype, device), ours(module, probe_size, dtype, device)
            assert mine.dtype == theirs.dtype, (label, dtype)
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
            routed = dtype == torch.float32 or routed_in_bf16
            assert len(op_calls) == (1 if routed else 0), (label, dtype)
            op_calls.clear()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_jit_trace_uses_hfs_method_and_follows_the_input(op_calls):
    model = tiny_model("vit.ViTEmbeddings")

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state

    with vt.patch():
        traced = torch.jit.trace(Wrapped(model), image((32, 32)))
    assert op_calls == []  # HF's traced sizes follow the input; a vitpe call would fix them
    with torch.no_grad():
        for size in [(48, 64), (24, 40)]:
            torch.testing.assert_close(traced(image(size)), run(model, image(size)), rtol=1e-5, atol=1e-5)


def test_compile_with_dynamic_sizes(op_calls):
    embeddings = embeddings_of(tiny_model("vit.ViTEmbeddings"))
    with vt.patch():
        compiled = torch.compile(lambda x: embeddings(x, interpolate_pos_encoding=True), dynamic=True,
                                 fullgraph=True)
        with torch.no_grad():
            got = [compiled(image(size)) for size in [(48, 64), (24, 40), (32, 32)]]
    assert op_calls  # traced into the graph
    with torch.no_grad():
        for size, g in zip([(48, 64), (24, 40), (32, 32)], got):
            torch.testing.assert_close(g, embeddings(image(size), interpolate_pos_encoding=True),
                                       rtol=1e-5, atol=1e-5)


def test_changed_code_keeps_hfs_method_with_a_warning(monkeypatch):
    cls = CLASSES["vit.ViTEmbeddings"]

    def interpolate_pos_encoding(self, embeddings, height, width):  # not transformers 5.24's code
        return ORIGINALS[cls](self, embeddings, height, width) * 2

    monkeypatch.setattr(cls, "interpolate_pos_encoding", interpolate_pos_encoding)
    with pytest.warns(UserWarning, match="vit.ViTEmbeddings"):
        handle = vt.patch()
    assert cls not in handle.classes and "vit.ViTEmbeddings" in handle.skipped
    assert cls.interpolate_pos_encoding is interpolate_pos_encoding
    assert CLASSES["deit.DeiTEmbeddings"] in handle.classes  # the others are routed
    handle.unpatch()
    assert cls.interpolate_pos_encoding is interpolate_pos_encoding


# -- patch() / unpatch() -------------------------------------------------------------------------

def assert_restored():
    for cls, original in ORIGINALS.items():
        assert cls.interpolate_pos_encoding is original, cls.__name__


def assert_patched():
    for cls, original in ORIGINALS.items():
        assert cls.__dict__["interpolate_pos_encoding"] is not original, cls.__name__
        assert cls.interpolate_pos_encoding.__wrapped__ is original


def test_patch_covers_every_listed_class_and_restores():
    assert_restored()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # transformers 5.24: no class left unpatched
        with vt.patch() as handle:
            assert set(handle.classes) == set(ORIGINALS) and handle.skipped == {}
            assert_patched()
    assert_restored()
    handle = vt.patch()
    handle.unpatch()
    handle.unpatch()  # spent: a no-op
    assert_restored()
    vt.patch()
    vt.unpatch()
    assert_restored()


def test_patches_nest():
    with vt.patch():
        with vt.patch() as inner:
            assert set(inner.classes) == set(ORIGINALS)
        assert_patched()  # the outer patch is still open
    assert_restored()
    outer = vt.patch()
    inner = vt.patch()
    outer.unpatch()  # out of order
    assert_patched()
    inner.unpatch()
    assert_restored()
    stale = vt.patch()
    vt.unpatch()  # closes every open patch
    assert_restored()
    fresh = vt.patch()
    stale.unpatch()  # from before unpatch(): no effect on the fresh one
    assert_patched()
    fresh.unpatch()
    assert_restored()


def test_the_same_replacement_is_installed_each_time():
    cls = CLASSES["vit.ViTEmbeddings"]
    with vt.patch():
        first = cls.interpolate_pos_encoding
    with vt.patch():
        assert cls.interpolate_pos_encoding is first
    assert first.__name__ == "interpolate_pos_encoding" and first.__doc__ == ORIGINALS[cls].__doc__


def test_a_method_replaced_while_patched_is_left_alone():
    cls = CLASSES["deit.DeiTEmbeddings"]

    def someone_elses(self, embeddings, height, width):
        return ORIGINALS[cls](self, embeddings, height, width)

    handle = vt.patch()
    try:
        cls.interpolate_pos_encoding = someone_elses
        handle.unpatch()
        assert cls.interpolate_pos_encoding is someone_elses
    finally:
        cls.interpolate_pos_encoding = ORIGINALS[cls]
    assert_restored()


def test_subclasses_inherit_the_patch(op_calls):
    class MyEmbeddings(CLASSES["vit.ViTEmbeddings"]):
        pass

    module = tiny_embeddings("vit.ViTEmbeddings")
    module.__class__ = MyEmbeddings
    with vt.patch():
        module.interpolate_pos_encoding(probe(module, (48, 64)), 48, 64)
    assert op_calls == [(6, 8)]


def test_public_alias():
    import vitpe_ext.transformers as alias
    assert alias is vt and sys.modules["vitpe_ext.transformers"] is vt
    assert alias.COVERED[:1] == ("vit.ViTEmbeddings",)
