"""vitpe_ext.timm (vitpe_ext.integrations.timm) against timm's own resample_abs_pos_embed and ViT."""
from __future__ import annotations

import copy
import logging
import sys

import pytest
import torch

timm = pytest.importorskip("timm")
import timm.layers.pos_embed as timm_pos_embed  # noqa: E402
import timm.models.vision_transformer as timm_vit  # noqa: E402

import vitpe_ext.integrations.timm as vtimm  # noqa: E402
from conftest import count_op_calls  # noqa: E402

TIMM_RESAMPLE = timm_pos_embed.resample_abs_pos_embed  # timm's, captured before any patch
TOL = {torch.float32: 2e-5, torch.float64: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}  # timm: fp32 math


@pytest.fixture
def op_calls(monkeypatch):
    return count_op_calls(monkeypatch, vtimm)


def check(posemb, *args, **kwargs):
    theirs = TIMM_RESAMPLE(posemb, *args, **kwargs)
    ours = vtimm.resample_abs_pos_embed(posemb, *args, **kwargs)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours.double(), theirs.double(), atol=TOL[posemb.dtype], rtol=0)
    return theirs, ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("new, old, prefix", [([24, 24], None, 1), ([10, 30], None, 1), ([20, 12], [14, 14], 5),
                                              ([14, 14], [7, 28], 0), ([5, 6], [16, 12], 1)])
@pytest.mark.parametrize("kwargs", [{}, {"antialias": False}, {"interpolation": "bilinear"},
                                    {"interpolation": "area", "antialias": False},
                                    {"align_corners": True, "antialias": False}])
def test_resample_matches_timm(dtype, new, old, prefix, kwargs):
    grid = old if old is not None else [14, 14]
    posemb = torch.randn(1, prefix + grid[0] * grid[1], 24, dtype=torch.float64).to(dtype)
    theirs, ours = check(posemb, new, old, num_prefix_tokens=prefix, **kwargs)
    assert torch.equal(ours[:, :prefix], posemb[:, :prefix])  # prefix never cast


def test_early_returns_are_timms(op_calls):
    posemb = torch.randn(1, 1 + 14 * 14, 8)
    assert vtimm.resample_abs_pos_embed(posemb, [14, 14]) is posemb
    assert vtimm.resample_abs_pos_embed(posemb, [14, 14], [14, 14]) is posemb
    rect = torch.randn(1, 7 * 28, 8)
    assert vtimm.resample_abs_pos_embed(rect, [7, 28], [7, 28], num_prefix_tokens=0) is rect
    assert op_calls == []
    # old_size given and different: timm >= 1.0.20 resizes even at the same token count
    theirs, ours = check(rect, [14, 14], [7, 28], num_prefix_tokens=0)
    assert not torch.equal(theirs, rect) and len(op_calls) == 1


def test_verbose_logs(caplog):
    with caplog.at_level(logging.INFO, logger="vitpe_ext.timm"):
        vtimm.resample_abs_pos_embed(torch.randn(1, 1 + 16, 8), [6, 6], verbose=True)
    assert "Resized position embedding: (4, 4) to [6, 6]" in caplog.text


# -- patch(): timm's ViT through vitpe -----------------------------------------------------------------

def tiny(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs).eval()


def bound_to(function):
    return sorted(name for name, m in list(sys.modules.items())
                  if name.startswith("timm") and getattr(m, "resample_abs_pos_embed", None) is function)


def test_patch_rebinds_and_restores():
    before = bound_to(TIMM_RESAMPLE)
    assert "timm.models.vision_transformer" in before and "timm.layers" in before
    with vtimm.patch() as handle:
        assert bound_to(vtimm.resample_abs_pos_embed) == before and handle.rebound == len(before)
        assert bound_to(TIMM_RESAMPLE) == []
    assert bound_to(TIMM_RESAMPLE) == before
    handle = vtimm.patch()
    handle.unpatch()
    vtimm.patch()
    vtimm.unpatch()
    assert bound_to(TIMM_RESAMPLE) == before


def test_patches_nest():
    before = bound_to(TIMM_RESAMPLE)
    with vtimm.patch():
        with vtimm.patch() as inner:
            assert inner.rebound == 0  # already routed
        assert bound_to(vtimm.resample_abs_pos_embed) == before
    assert bound_to(TIMM_RESAMPLE) == before
    stale = vtimm.patch()
    vtimm.unpatch()
    fresh = vtimm.patch()
    stale.unpatch()
    assert bound_to(vtimm.resample_abs_pos_embed) == before
    fresh.unpatch()
    assert bound_to(TIMM_RESAMPLE) == before


@pytest.mark.parametrize("model_kwargs", [{}, {"reg_tokens": 4}, {"no_embed_class": True, "reg_tokens": 2},
                                          {"dynamic_img_pad": True}])
def test_dynamic_img_size_matches_unpatched(model_kwargs, op_calls):
    model = tiny(dynamic_img_size=True, **model_kwargs)
    sizes = [(224, 224), (160, 288), (384, 384), (96, 112)]
    if model_kwargs.get("dynamic_img_pad"):
        sizes.append((150, 201))
    torch.manual_seed(1)
    inputs = [torch.randn(1, 3, h, w) for h, w in sizes]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
        with vtimm.patch():
            got = [model(x) for x in inputs]
    assert len(op_calls) == len(sizes) - 1  # 224 x 224 is timm's early return
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_set_input_size_matches_unpatched():
    theirs, ours = tiny(), tiny()
    theirs.set_input_size(img_size=(256, 320))
    with vtimm.patch():
        ours.set_input_size(img_size=(256, 320))
    assert ours.pos_embed.shape == theirs.pos_embed.shape == (1, 1 + 16 * 20, 192)
    torch.testing.assert_close(ours.pos_embed, theirs.pos_embed, atol=2e-5, rtol=0)
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-4, rtol=1e-4)


def test_checkpoint_filter_matches_unpatched():
    state = tiny().state_dict()
    target = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=384)
    theirs = timm_vit.checkpoint_filter_fn(copy.copy(state), target)
    with vtimm.patch():
        ours = timm_vit.checkpoint_filter_fn(copy.copy(state), target)
    assert ours.keys() == theirs.keys()
    torch.testing.assert_close(ours["pos_embed"], theirs["pos_embed"], atol=2e-5, rtol=0)
    target.load_state_dict(ours)


def test_training_through_the_patched_model():
    model = tiny(dynamic_img_size=True).train()
    with vtimm.patch():
        for size in ((96, 96), (64, 128)):
            model.zero_grad()
            model(torch.randn(2, 3, *size)).logsumexp(-1).mean().backward()
            assert model.pos_embed.grad.abs().sum() > 0


# -- TorchScript and FX: patched models compile and trace as unpatched ones do ---------------------

DEPLOY_MODELS = [("eva02_tiny_patch14_224", {"dynamic_img_size": True}),
                 ("vit_tiny_patch16_224", {"dynamic_img_size": True}),
                 ("deit_tiny_patch16_224", {"dynamic_img_size": True}),
                 ("vit_tiny_patch16_224", {})]


def deploy_model(name, kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def odd_image(name, batch=2):
    """An input off the pretraining grid, for a model of that name's patch size."""
    patch = 14 if "patch14" in name else 16
    return torch.randn(batch, 3, 16 * patch, 12 * patch)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated, still used
@pytest.mark.parametrize("name,kwargs", DEPLOY_MODELS)
def test_torchscript_of_patched_model(name, kwargs):
    model = deploy_model(name, kwargs)
    dynamic = kwargs.get("dynamic_img_size", False)
    image = odd_image(name) if dynamic else torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model(image)
    with vtimm.patch():
        scripted = torch.jit.script(model)
    # A dynamic model's compiled graph calls vitpe's op (and keeps it after unpatch).
    assert ("vitpe::interpolate_pos_embed" in str(scripted.inlined_graph)) == dynamic
    with torch.no_grad():
        got = scripted(image)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_torchscript_keeps_the_timm_profile(dtype):
    # the scripted branch passes the "timm" profile's settings to interpolate_resolved:
    # float32 math, a float64 prefix untouched
    posemb = torch.randn(1, 2 + 5 * 5, 8, dtype=torch.float64).to(dtype)
    scripted = torch.jit.script(vtimm.resample_abs_pos_embed)
    got = scripted(posemb, [7, 6], [5, 5], 2)
    assert torch.equal(got, vtimm.resample_abs_pos_embed(posemb, [7, 6], [5, 5], 2))
    if dtype == torch.float64:
        assert torch.equal(got[:, :2], posemb[:, :2])


@pytest.mark.parametrize("name,kwargs", DEPLOY_MODELS[:3])
def test_fx_feature_extraction_of_patched_model(name, kwargs):
    from timm.models._features_fx import create_feature_extractor
    model = deploy_model(name, kwargs)
    image = odd_image(name, batch=1)
    with vtimm.patch():
        extractor = create_feature_extractor(model, return_nodes={"norm": "out"})
    leaves = [n.target for n in extractor.graph.nodes if n.op == "call_function"]
    assert vtimm.resample_abs_pos_embed in leaves  # traced as a leaf, like timm's own
    with torch.no_grad():
        torch.testing.assert_close(extractor(image)["out"], model.forward_features(image))
