"""vitpe_ext.torchvision (vitpe_ext.integrations.torchvision) against
torchvision 0.29's own interpolate_embeddings and VisionTransformer."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import vitpe_ext
from vitpe_ext.integrations import torchvision as vtv
from vitpe_ext.op import MODES, PROFILES
from vitpe_ext.op.reference import has_recipe, recipe_interpolate

tv_vit = pytest.importorskip("torchvision.models.vision_transformer")
TV_INTERPOLATE = tv_vit.interpolate_embeddings  # torchvision's, captured before any patch


@pytest.fixture(scope="module")
def state_dicts():
    torch.manual_seed(0)
    return {"vit_b_16": tv_vit.vit_b_16().state_dict(), "vit_b_32": tv_vit.vit_b_32().state_dict()}


def check_same_result(image_size, patch_size, state, mode="bicubic", reset_heads=False):
    """Run both on shallow copies; returns (theirs, ours, their input, our input)."""
    theirs_in, ours_in = OrderedDict(state), OrderedDict(state)
    theirs = TV_INTERPOLATE(image_size, patch_size, theirs_in, mode, reset_heads)
    ours = vtv.interpolate_embeddings(image_size, patch_size, ours_in, mode, reset_heads)
    assert type(ours) is type(theirs) and list(ours) == list(theirs)
    assert (ours is ours_in) == (theirs is theirs_in)  # same object back unless reset_heads copied
    for key in theirs:
        if key == "encoder.pos_embedding":
            torch.testing.assert_close(ours[key], theirs[key], atol=2e-6, rtol=0)
        else:
            assert ours[key] is theirs[key]
    # torchvision writes the resized table into the caller's dict
    torch.testing.assert_close(ours_in["encoder.pos_embedding"], theirs_in["encoder.pos_embedding"],
                               atol=2e-6, rtol=0)
    return theirs, ours


@pytest.mark.parametrize("name, patch", [("vit_b_16", 16), ("vit_b_32", 32)])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("image_size", [384, 160, 232, 224])
def test_matches_torchvision(state_dicts, name, patch, mode, image_size):
    theirs, _ = check_same_result(image_size, patch, state_dicts[name], mode)
    grid = image_size // patch
    assert theirs["encoder.pos_embedding"].shape[1] == 1 + grid * grid


def test_matches_torchvision_vit_l_16():
    torch.manual_seed(1)
    state = tv_vit.vit_l_16().state_dict()
    check_same_result(512, 16, state, "bicubic")
    check_same_result(128, 16, state, "bilinear", reset_heads=True)


def test_float64_tables_match_to_float64_precision():
    x = torch.randn(1, 1 + 14 * 14, 32, dtype=torch.float64)
    theirs = TV_INTERPOLATE(384, 16, OrderedDict({"encoder.pos_embedding": x}))
    ours = vtv.interpolate_embeddings(384, 16, OrderedDict({"encoder.pos_embedding": x}))
    torch.testing.assert_close(ours["encoder.pos_embedding"], theirs["encoder.pos_embedding"], atol=1e-12, rtol=0)


def test_reset_heads_only_when_resizing(state_dicts):
    state = state_dicts["vit_b_16"]
    _, resized = check_same_result(384, 16, state, reset_heads=True)
    assert not any(k.startswith("heads") for k in resized)
    _, untouched = check_same_result(224, 16, state, reset_heads=True)  # torchvision's quirk: kept
    assert any(k.startswith("heads") for k in untouched)


def test_same_errors_as_torchvision():
    batched = OrderedDict({"encoder.pos_embedding": torch.zeros(2, 197, 8)})
    not_square = OrderedDict({"encoder.pos_embedding": torch.zeros(1, 1 + 15, 8)})
    for state in (batched, not_square):
        with pytest.raises(ValueError) as theirs:
            TV_INTERPOLATE(384, 16, OrderedDict(state))
        with pytest.raises(ValueError) as ours:
            vtv.interpolate_embeddings(384, 16, OrderedDict(state))
        assert str(ours.value) == str(theirs.value)


# -- beyond torchvision --------------------------------------------------------------------------

def test_pair_image_size_and_prefix_tokens():
    x = torch.randn(1, 1 + 14 * 14, 32)
    square = vtv.interpolate_embeddings((384, 384), 16, OrderedDict({"encoder.pos_embedding": x}))
    as_int = vtv.interpolate_embeddings(384, 16, OrderedDict({"encoder.pos_embedding": x}))
    assert torch.equal(square["encoder.pos_embedding"], as_int["encoder.pos_embedding"])

    # (224, 448): 14 x 28; the same token count as no square grid, so no early return
    wide = vtv.interpolate_embeddings((224, 448), 16, OrderedDict({"encoder.pos_embedding": x}))
    expected = vitpe_ext.interpolate_pos_embed(x, (14, 28), mode="bicubic", align_corners=True)
    assert torch.equal(wide["encoder.pos_embedding"], expected)
    # 7 x 28 has as many tokens as 14 x 14 but is another grid: resized
    same_count = vtv.interpolate_embeddings((112, 448), 16, OrderedDict({"encoder.pos_embedding": x}))
    assert torch.equal(same_count["encoder.pos_embedding"],
                       vitpe_ext.interpolate_pos_embed(x, (7, 28), mode="bicubic", align_corners=True))

    two = torch.randn(1, 2 + 10 * 12, 32)  # class + distillation token, non-square checkpoint grid
    out = vtv.interpolate_embeddings(320, 16, OrderedDict({"encoder.pos_embedding": two}), "bilinear",
                                     num_prefix_tokens=2, old_size=(10, 12))["encoder.pos_embedding"]
    assert torch.equal(out[:, :2], two[:, :2]) and out.shape == (1, 2 + 400, 32)
    assert torch.equal(out, vitpe_ext.interpolate_pos_embed(two, (20, 20), (10, 12), 2, "bilinear", True))


@pytest.mark.parametrize("mode", [m for m in MODES if m not in PROFILES["torchvision"].modes])
def test_modes_torchvision_rejects(mode):
    if not has_recipe(mode):
        pytest.skip("no F.interpolate lanczos in this torch")
    x = torch.randn(1, 1 + 14 * 14, 16)
    with pytest.raises((ValueError, NotImplementedError)):
        TV_INTERPOLATE(384, 16, OrderedDict({"encoder.pos_embedding": x}), mode)
    out = vtv.interpolate_embeddings(384, 16, OrderedDict({"encoder.pos_embedding": x}), mode)
    expected = recipe_interpolate(x, (24, 24), (14, 14), 1, mode)
    torch.testing.assert_close(out["encoder.pos_embedding"], expected, atol=2e-5, rtol=0)


def test_old_size_must_fit_the_table():
    x = torch.randn(1, 1 + 14 * 14, 16)
    with pytest.raises(ValueError, match="old_size"):
        vtv.interpolate_embeddings(384, 16, OrderedDict({"encoder.pos_embedding": x}), old_size=(10, 20))


# -- patch ----------------------------------------------------------------------------------------

def test_patch_context_manager_and_unpatch():
    x = torch.randn(1, 1 + 14 * 14, 16)
    with vtv.patch():
        assert tv_vit.interpolate_embeddings is vtv.interpolate_embeddings
        out = tv_vit.interpolate_embeddings((224, 320), 16, OrderedDict({"encoder.pos_embedding": x}))
        assert out["encoder.pos_embedding"].shape == (1, 1 + 14 * 20, 16)  # only vitpe takes (h, w)
    assert tv_vit.interpolate_embeddings is TV_INTERPOLATE

    handle = vtv.patch()
    assert tv_vit.interpolate_embeddings is vtv.interpolate_embeddings
    handle.unpatch()
    assert tv_vit.interpolate_embeddings is TV_INTERPOLATE

    vtv.patch()
    vtv.unpatch()
    assert tv_vit.interpolate_embeddings is TV_INTERPOLATE


def test_patches_nest():
    outer = vtv.patch()
    with vtv.patch():
        pass
    assert tv_vit.interpolate_embeddings is vtv.interpolate_embeddings  # outer still open
    outer.unpatch()
    assert tv_vit.interpolate_embeddings is TV_INTERPOLATE
    stale = vtv.patch()
    vtv.unpatch()               # closes every patch
    fresh = vtv.patch()
    stale.unpatch()             # a spent handle does not close the new patch
    assert tv_vit.interpolate_embeddings is vtv.interpolate_embeddings
    fresh.unpatch()
    assert tv_vit.interpolate_embeddings is TV_INTERPOLATE


# -- make_dynamic ---------------------------------------------------------------------------------

def small_vit(image_size=64, seed=0):
    torch.manual_seed(seed)
    model = tv_vit.VisionTransformer(image_size=image_size, patch_size=16, num_layers=2, num_heads=2,
                                     hidden_dim=32, mlp_dim=64, num_classes=10)
    with torch.no_grad():  # torchvision zero-inits the head: no gradient would reach the table
        model.heads.head.weight.normal_(std=0.1)
    return model


def test_dynamic_native_size_is_unchanged():
    ref, dyn = small_vit().eval(), vtv.make_dynamic(small_vit().eval())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dyn(x), ref(x))
    assert list(dyn.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("size", [128, 32, 96])
def test_dynamic_equals_a_model_built_for_that_size(size):
    dyn = vtv.make_dynamic(small_vit().eval())
    built = small_vit(size).eval()
    built.load_state_dict(TV_INTERPOLATE(size, 16, small_vit().state_dict()))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(dyn(x), built(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(dyn(x), built(x), atol=1e-5, rtol=0)  # second call: from the cache


def test_dynamic_non_square_and_padding():
    dyn = vtv.make_dynamic(small_vit().eval())
    with torch.no_grad():
        assert dyn(torch.randn(1, 3, 48, 112)).shape == (1, 10)
        with pytest.raises(ValueError, match="not a multiple of the patch size"):
            dyn(torch.randn(1, 3, 50, 64))
    padded = vtv.make_dynamic(small_vit().eval(), pad=True)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        torch.testing.assert_close(padded(x), dyn(F.pad(x, (0, 10, 0, 14))), atol=0, rtol=0)


def test_dynamic_training_step_at_two_resolutions():
    model = vtv.make_dynamic(small_vit()).train()
    pos = model.encoder.pos_embedding
    before = pos.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for size in (96, (48, 80)):
        h, w = (size, size) if isinstance(size, int) else size
        opt.zero_grad()
        loss = model(torch.randn(2, 3, h, w)).logsumexp(-1).mean()
        loss.backward()
        assert pos.grad is not None and pos.grad.abs().sum() > 0
        opt.step()
    assert model.encoder.pos_embedding is pos and not torch.equal(pos.detach(), before)
    # after the steps, eval output at a new size uses the updated table
    model.eval()
    with torch.no_grad():
        built = small_vit(96).eval()
        built.load_state_dict(TV_INTERPOLATE(96, 16, OrderedDict(model.state_dict())))
        x = torch.randn(1, 3, 96, 96)
        torch.testing.assert_close(model(x), built(x), atol=1e-5, rtol=0)


def test_make_dynamic_rejects_other_models():
    with pytest.raises(TypeError, match="VisionTransformer"):
        vtv.make_dynamic(torch.nn.Linear(2, 2))


def test_dynamic_model_deepcopies():
    import copy
    model = vtv.make_dynamic(small_vit().eval())
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        twin = copy.deepcopy(model)  # e.g. an EMA copy: its own forward, table and cache
        twin.encoder.pos_embedding.add_(torch.randn_like(twin.encoder.pos_embedding))
        assert twin.forward.__self__ is twin
        assert torch.equal(model(x), before) and not torch.equal(twin(x), before)


def test_dynamic_cache_invalidation_and_clear_cache():
    model = vtv.make_dynamic(small_vit().eval())
    x = torch.randn(1, 3, 96, 96)
    pos = model.encoder.pos_embedding

    def fresh():
        built = small_vit(96).eval()
        built.load_state_dict(TV_INTERPOLATE(96, 16, OrderedDict(model.state_dict())))
        return built(x)

    with torch.no_grad():
        model(x)
        pos.mul_(0.5)  # an in-place edit bumps the version counter: the cache is dropped
        torch.testing.assert_close(model(x), fresh(), atol=1e-5, rtol=0)
        pos.data.mul_(0)  # .data has its own counter: the cached table is stale ...
        stale = model(x)
        model.clear_cache()  # ... until the public clear_cache()
        torch.testing.assert_close(model(x), fresh(), atol=1e-5, rtol=0)
        assert not torch.allclose(stale, model(x))
