"""vitpe_ext.integrations.patch_embed: FlexiViT's kernel resample against
timm's own, the identity it exists for, and change_patch_size on torchvision
and timm ViTs built at the new patch size (tiny random configs)."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import vitpe_ext
from vitpe_ext.integrations.patch_embed import change_patch_size, resample_patch_embed

timm_patch_embed = pytest.importorskip("timm.layers.patch_embed")

# up, down, non-square, and sizes timm's own code paths meet (FlexiViT 8..48; DINOv2 14)
SHAPES = [((16, 16), (14, 14)), ((16, 16), (8, 8)), ((14, 14), (16, 16)), ((8, 8), (32, 32)),
          ((16, 16), (12, 20)), ((4, 6), (7, 3)), ((32, 32), (16, 16))]


def _timm_float64(kernel, new, interpolation="bicubic", antialias=True):
    """timm's resample_patch_embed computed in float64: its own helpers, with
    its float32 intermediate swapped for float64."""
    old = tuple(kernel.shape[-2:])
    matrix = timm_patch_embed._compute_resize_matrix(old, new, interpolation, antialias, kernel.device, torch.float64)
    return timm_patch_embed._apply_resampling(kernel, torch.linalg.pinv(matrix), new, torch.float64, torch.float64)


@pytest.mark.parametrize("old,new", SHAPES)
def test_equals_timm_in_float64(old, new):
    kernel = torch.randn(6, 3, *old, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = resample_patch_embed(kernel, new)
    assert ours.shape == (6, 3, *new) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, _timm_float64(kernel, new), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("old,new", SHAPES[:4])
def test_equals_timm_function_in_float32(old, new):
    kernel = torch.randn(8, 3, *old, generator=torch.Generator().manual_seed(2))
    ours = resample_patch_embed(kernel, new)
    theirs = timm_patch_embed.resample_patch_embed(kernel, list(new))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


@pytest.mark.parametrize("interpolation,antialias", [("bilinear", True), ("bilinear", False), ("bicubic", False)])
def test_other_interpolations_equal_timm(interpolation, antialias):
    kernel = torch.randn(4, 2, 16, 16, dtype=torch.float64)
    for new in ((12, 12), (24, 24)):
        torch.testing.assert_close(resample_patch_embed(kernel, new, interpolation, antialias),
                                   _timm_float64(kernel, new, interpolation, antialias), rtol=1e-10, atol=1e-10)


def test_upsampled_patches_give_the_same_tokens():
    """FlexiViT's point: w2 = pinv(R)^T w makes <R x, w2> = <x, w>; exact when
    the patch grows (R has full column rank)."""
    g = torch.Generator().manual_seed(3)
    kernel = torch.randn(5, 3, 8, 8, dtype=torch.float64, generator=g)
    patches = torch.randn(7, 3, 8, 8, dtype=torch.float64, generator=g)
    bigger = F.interpolate(patches, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)
    tokens = F.conv2d(patches, kernel, stride=8)
    torch.testing.assert_close(F.conv2d(bigger, resample_patch_embed(kernel, 12), stride=12), tokens,
                               rtol=1e-9, atol=1e-9)
    # with the kernel merely interpolated (what one might try instead) the tokens are off
    naive = F.interpolate(kernel, size=(12, 12), mode="bicubic", antialias=True) * (8 * 8) / (12 * 12)
    assert (F.conv2d(bigger, naive, stride=12) - tokens).abs().max() > 1e-3


def test_same_size_returns_the_kernel_and_dtypes_devices_grad():
    kernel = torch.randn(4, 3, 16, 16)
    assert resample_patch_embed(kernel, 16) is kernel
    half = resample_patch_embed(kernel.to(torch.bfloat16), (14, 14))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), resample_patch_embed(kernel, 14), rtol=2e-2, atol=2e-2)
    leaf = kernel.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda k: resample_patch_embed(k, (5, 3)), (leaf[:1, :1, :4, :4].detach()
                                                                              .clone().requires_grad_(),))


@pytest.mark.parametrize("args,needle", [
    ((torch.randn(3, 16, 16), 14), "conv kernel (out, in, ph, pw)"),
    ((torch.zeros(4, 3, 16, 16, dtype=torch.int64), 14), "floating-point"),
    ((torch.randn(4, 3, 16, 16), 0), "new_size must be positive"),
    ((torch.randn(4, 3, 16, 16), (14, 14, 1)), "new_size must be an int or (height, width)"),
    ((torch.randn(4, 3, 16, 16), True), "new_size must be"),
    ((torch.randn(4, 3, 16, 16), 14, "cubic"), "interpolation must be one of"),
    (([1.0], 14), "must be a torch.Tensor"),
])
def test_bad_arguments_one_line(args, needle):
    with pytest.raises(ValueError) as info:
        resample_patch_embed(*args)
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- change_patch_size: both halves, loaded by models built at the new patch -------

def _torchvision_vit(image_size, patch_size):
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=1, num_heads=2,
                             hidden_dim=32, mlp_dim=64, num_classes=5)


def _timm_vit(image_size, patch_size, **kw):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(img_size=image_size, patch_size=patch_size, embed_dim=32, depth=1, num_heads=2,
                             num_classes=5, **kw)


def test_torchvision_vit_loads_and_runs_at_the_new_patch():
    sd = _torchvision_vit(224, 16).state_dict()
    out = change_patch_size(sd, 14)
    assert out["conv_proj.weight"].shape == (32, 3, 14, 14)
    assert out["encoder.pos_embedding"].shape == (1, 1 + 16 * 16, 32)
    torch.testing.assert_close(out["encoder.pos_embedding"], vitpe_ext.interpolate_pos_embed(
        sd["encoder.pos_embedding"], (16, 16), (14, 14), 1, profile="torchvision"), rtol=0, atol=0)
    assert out._metadata is sd._metadata and sd["conv_proj.weight"].shape[-1] == 16  # argument untouched
    model = _torchvision_vit(224, 14)
    model.load_state_dict(out, strict=True)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 5)


@pytest.mark.parametrize("kw,tokens", [({}, 1), ({"class_token": False, "global_pool": "avg"}, 0),
                                       ({"reg_tokens": 2}, 3), ({"no_embed_class": True}, 0)])
def test_timm_vit_loads_and_runs_at_the_new_patch_and_image_size(kw, tokens):
    sd = _timm_vit(64, 16, **kw).state_dict()
    sd = OrderedDict(("module." + k, v) for k, v in sd.items())  # DDP prefix
    out = change_patch_size(sd, (8, 8), image_size=(48, 40))
    assert out["module.pos_embed"].shape == (1, tokens + 6 * 5, 32)
    torch.testing.assert_close(out["module.pos_embed"], vitpe_ext.interpolate_pos_embed(
        sd["module.pos_embed"], (6, 5), (4, 4), tokens, profile="timm"), rtol=0, atol=0)
    model = _timm_vit((48, 40), 8, **kw)
    model.load_state_dict({k[len("module."):]: v for k, v in out.items()}, strict=True)
    assert model(torch.randn(2, 3, 48, 40)).shape == (2, 5)


def test_table_settings_and_explicit_keys():
    sd = _timm_vit(64, 16).state_dict()
    out = change_patch_size(sd, 8, mode="bilinear", align_corners=True)
    torch.testing.assert_close(out["pos_embed"], vitpe_ext.interpolate_pos_embed(
        sd["pos_embed"], (8, 8), (4, 4), 1, mode="bilinear", align_corners=True), rtol=0, atol=0)
    custom = {"stem.w": sd["patch_embed.proj.weight"], "pe": sd["pos_embed"][:, 1:]}  # no prefix row
    out = change_patch_size(custom, 32, patch_key="stem.w", pos_key="pe")
    assert out["stem.w"].shape[-2:] == (32, 32) and out["pe"].shape == (1, 2 * 2, 32)
    torch.testing.assert_close(out["pe"], vitpe_ext.interpolate_pos_embed(custom["pe"], (2, 2), (4, 4), 0),
                               rtol=0, atol=0)


@pytest.mark.parametrize("call,needle", [
    (lambda sd: change_patch_size(sd, 12), "checkpoint's image (grid (4, 4) x patch (16, 16)) height 64 is not a "
                                           "multiple of the new patch size 12"),
    (lambda sd: change_patch_size(sd, 8, image_size=60), "image height 60 is not a multiple of the new patch size 8"),
    (lambda sd: change_patch_size({"pos_embed": sd["pos_embed"]}, 8), "no patch-kernel/position-table pairs"),
    (lambda sd: change_patch_size(sd, 8, patch_key="patch_embed.proj.weight"), "pass both patch_key= and pos_key="),
    (lambda sd: change_patch_size(sd, 8, patch_key="patch_embed.proj.bias", pos_key="pos_embed"),
     "not a conv kernel"),
    (lambda sd: change_patch_size(sd, 8, patch_key="nope", pos_key="pos_embed"), "patch_key 'nope': no such tensor"),
    (lambda sd: change_patch_size(sd, 8, num_prefix_tokens=2), "not a square grid: pass old_grid"),
    (lambda sd: change_patch_size(sd, 8, old_grid=(3, 5)), "leaves 2 prefix tokens in pos_embed (17 tokens), "
                                                           "but this table has 1 or 0"),
    (lambda sd: change_patch_size(sd, 8, old_grid=(4, 4), num_prefix_tokens=0), "needs 16 tokens, pos_embed has 17"),
    (lambda sd: change_patch_size(sd, 8, profile="hf", antialias=True), "profile 'hf' fixes antialias"),
])
def test_change_patch_size_errors(call, needle):
    sd = _timm_vit(64, 16).state_dict()
    with pytest.raises(ValueError) as info:
        call(sd)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_mismatched_kernel_and_table_widths_refused():
    sd = _timm_vit(64, 16).state_dict()
    sd["patch_embed.proj.weight"] = torch.randn(48, 3, 16, 16)
    with pytest.raises(ValueError, match="48-wide tokens but pos_embed .* is 32 wide"):
        change_patch_size(sd, 8)
