"""Each profile against that library's own code: torchvision's and timm's
real functions, and transcriptions of HF ViT, MAE, DINOv2 and big_vision
(docs/anchors.md §1-4) written out here line by line."""
from __future__ import annotations

import math
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import vitpe_ext
from vitpe_ext import interpolate_pos_embed
from vitpe_ext.op.profiles import PROFILES

# float32 arithmetic in different orders (and ATen's float weights) differ by
# a few ulps of values ~4: tolerances sized for N(0,1) tables.
TOL = {torch.float32: 2e-5, torch.float64: 1e-10, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def table(tokens, channels=24, dtype=torch.float32, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, channels, generator=g, dtype=torch.float64).to(dtype)


def assert_close(actual, expected, dtype, computed_in_float32=False):
    """computed_in_float32: the library runs float64 tables in float32."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    tol = TOL[torch.float32 if computed_in_float32 and dtype == torch.float64 else dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=tol, rtol=0)


# -- transcriptions ------------------------------------------------------------------

def hf_vit_interpolate_pos_encoding(position_embeddings, patch_size, height, width):
    """transformers ViTEmbeddings.interpolate_pos_encoding (after #33226)."""
    num_positions = position_embeddings.shape[1] - 1
    num_patches = (height // patch_size) * (width // patch_size)
    if num_patches == num_positions and height == width:
        return position_embeddings
    class_pos_embed = position_embeddings[:, :1]
    patch_pos_embed = position_embeddings[:, 1:]
    dim = position_embeddings.shape[-1]
    new_height = height // patch_size
    new_width = width // patch_size
    sqrt_num_positions = int(num_positions ** 0.5)
    patch_pos_embed = patch_pos_embed.reshape(1, sqrt_num_positions, sqrt_num_positions, dim)
    patch_pos_embed = patch_pos_embed.permute(0, 3, 1, 2)
    patch_pos_embed = F.interpolate(patch_pos_embed, size=(new_height, new_width), mode="bicubic",
                                    align_corners=False)
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed, patch_pos_embed), dim=1)


def mae_interpolate_pos_embed(model, checkpoint_model):
    """MAE util/pos_embed.py interpolate_pos_embed (mutates the dict)."""
    if "pos_embed" in checkpoint_model:
        pos_embed_checkpoint = checkpoint_model["pos_embed"]
        embedding_size = pos_embed_checkpoint.shape[-1]
        num_patches = model.patch_embed.num_patches
        num_extra_tokens = model.pos_embed.shape[-2] - num_patches
        orig_size = int((pos_embed_checkpoint.shape[-2] - num_extra_tokens) ** 0.5)
        new_size = int(num_patches ** 0.5)
        if orig_size != new_size:
            extra_tokens = pos_embed_checkpoint[:, :num_extra_tokens]
            pos_tokens = pos_embed_checkpoint[:, num_extra_tokens:]
            pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
            pos_tokens = F.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic",
                                       align_corners=False)
            pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
            checkpoint_model["pos_embed"] = torch.cat((extra_tokens, pos_tokens), dim=1)


def dinov2_interpolate_pos_encoding(pos_embed_param, patch_size, w, h, interpolate_offset,
                                    interpolate_antialias, x_dtype):
    """facebookresearch/dinov2 DinoVisionTransformer.interpolate_pos_encoding
    (its w/h are really H/W: dinov2#456)."""
    previous_dtype = x_dtype
    N = pos_embed_param.shape[1] - 1
    npatch = (w // patch_size) * (h // patch_size)
    if npatch == N and w == h:
        return pos_embed_param
    pos_embed = pos_embed_param.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    M = int(math.sqrt(N))
    assert N == M * M
    kwargs = {}
    if interpolate_offset:
        sx = float(w0 + interpolate_offset) / M
        sy = float(h0 + interpolate_offset) / M
        kwargs["scale_factor"] = (sx, sy)
    else:
        kwargs["size"] = (w0, h0)
    patch_pos_embed = F.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
                                    mode="bicubic", antialias=interpolate_antialias, **kwargs)
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(previous_dtype)


def big_vision_resample_posemb(old, new_tokens):
    """big_vision models/vit.py resample_posemb (numpy + scipy; no class slot)."""
    import numpy as np
    import scipy.ndimage
    gs_old = int(np.sqrt(old.shape[1]))
    gs_new = int(np.sqrt(new_tokens))
    grid = old.reshape(gs_old, gs_old, -1)
    zoom = (gs_new / gs_old, gs_new / gs_old, 1)
    grid = scipy.ndimage.zoom(grid, zoom, order=1)
    return grid.reshape(1, gs_new * gs_new, -1)


# -- per profile ------------------------------------------------------------------------

def test_profile_names():
    assert set(PROFILES) == {"torchvision", "timm", "hf", "mae", "dinov2", "dinov2-reg", "big_vision"}
    assert vitpe_ext.PROFILES is PROFILES
    assert PROFILES["dinov2"].settings()["scale_offset"] == 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("old, image_size", [(14, 384), (14, 160), (7, 224)])
def test_torchvision_profile(dtype, mode, old, image_size):
    interpolate_embeddings = pytest.importorskip("torchvision.models.vision_transformer").interpolate_embeddings
    x = table(1 + old * old, dtype=dtype)
    expected = interpolate_embeddings(image_size, 16, OrderedDict({"encoder.pos_embedding": x}),
                                      interpolation_mode=mode)["encoder.pos_embedding"]
    g = image_size // 16
    assert_close(interpolate_pos_embed(x, (g, g), profile="torchvision", mode=mode), expected, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"antialias": False}, {"interpolation": "bilinear"},
                                    {"interpolation": "bicubic", "align_corners": True, "antialias": False},
                                    {"interpolation": "nearest", "antialias": False}])
@pytest.mark.parametrize("new, old, prefix", [((24, 20), (14, 14), 1), ((7, 9), (14, 14), 2),
                                              ((16, 16), (10, 18), 0)])
def test_timm_profile(dtype, kwargs, new, old, prefix):
    resample_abs_pos_embed = pytest.importorskip("timm.layers").resample_abs_pos_embed
    x = table(prefix + old[0] * old[1], dtype=dtype)
    expected = resample_abs_pos_embed(x, list(new), list(old), num_prefix_tokens=prefix, **kwargs)
    ours = dict(kwargs)
    if "interpolation" in ours:
        ours["mode"] = ours.pop("interpolation")
    assert_close(interpolate_pos_embed(x, new, old, prefix, profile="timm", **ours), expected, dtype, True)


def test_timm_profile_computes_float64_in_float32_and_keeps_the_prefix():
    x = table(2 + 14 * 14, dtype=torch.float64)
    out = interpolate_pos_embed(x, (20, 20), num_prefix_tokens=2, profile="timm")
    in_fp32 = interpolate_pos_embed(x.float(), (20, 20), num_prefix_tokens=2, antialias=True).double()
    assert torch.equal(out[:, 2:], in_fp32[:, 2:])  # the grid went through float32
    assert torch.equal(out[:, :2], x[:, :2])         # the prefix did not
    exact = interpolate_pos_embed(x, (20, 20), num_prefix_tokens=2, antialias=True)
    assert not torch.equal(out, exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("height, width", [(384, 384), (224, 320), (112, 112)])
def test_hf_profile(dtype, height, width):
    x = table(1 + 14 * 14, dtype=dtype)
    expected = hf_vit_interpolate_pos_encoding(x.float() if dtype == torch.float16 else x, 16, height, width)
    out = interpolate_pos_embed(x, (height // 16, width // 16), profile="hf")
    assert_close(out, expected.to(dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("extra, batch", [(1, 1), (2, 1), (1, 3)])
def test_mae_profile(dtype, extra, batch):
    x = table(extra + 14 * 14, dtype=dtype, batch=batch)
    model = SimpleNamespace(patch_embed=SimpleNamespace(num_patches=24 * 24),
                            pos_embed=torch.empty(1, extra + 24 * 24, x.shape[-1]))
    checkpoint = {"pos_embed": x}
    mae_interpolate_pos_embed(model, checkpoint)
    assert_close(interpolate_pos_embed(x, (24, 24), num_prefix_tokens=extra, profile="mae"),
                 checkpoint["pos_embed"], dtype)


@pytest.mark.parametrize("profile, offset, antialias", [("dinov2", 0.1, False), ("dinov2-reg", 0.0, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("h, w", [(518, 518), (224, 448), (700, 420), (112, 126), (518 + 14, 518)])
def test_dinov2_profiles(profile, offset, antialias, dtype, h, w):
    x = table(1 + 37 * 37, dtype=dtype)
    expected = dinov2_interpolate_pos_encoding(x, 14, h, w, offset, antialias, dtype)
    out = interpolate_pos_embed(x, (h // 14, w // 14), profile=profile)
    assert_close(out, expected, dtype, True)


def test_dinov2_offset_changes_the_numbers():
    # the +0.1 scale factor is a different coordinate mapping than size=
    x = table(1 + 37 * 37)
    legacy = interpolate_pos_embed(x, (40, 40), profile="dinov2")
    by_size = interpolate_pos_embed(x, (40, 40), profile="hf")
    assert (legacy - by_size).abs().max() > 1e-2


@pytest.mark.parametrize("old, new", [(14, 24), (24, 16), (7, 7 * 3), (16, 12)])
def test_big_vision_profile(old, new):
    pytest.importorskip("scipy")
    x = table(old * old, dtype=torch.float32)
    expected = torch.from_numpy(big_vision_resample_posemb(x.numpy(), new * new))
    assert_close(interpolate_pos_embed(x, (new, new), num_prefix_tokens=0, profile="big_vision"),
                 expected, torch.float32)


# -- argument handling ----------------------------------------------------------------------

def test_conflicting_arguments_raise():
    x = table(1 + 14 * 14)
    with pytest.raises(ValueError, match="profile 'hf' fixes antialias=False"):
        interpolate_pos_embed(x, (20, 20), profile="hf", antialias=True)
    with pytest.raises(ValueError, match="profile 'torchvision' fixes align_corners=True"):
        interpolate_pos_embed(x, (20, 20), profile="torchvision", align_corners=False)
    with pytest.raises(ValueError, match="accepts mode in"):
        interpolate_pos_embed(x, (20, 20), profile="torchvision", mode="nearest")
    with pytest.raises(ValueError, match="profile 'dinov2' fixes mode='bicubic'"):
        interpolate_pos_embed(x, (20, 20), profile="dinov2", mode="bilinear")
    with pytest.raises(ValueError, match="scale_factor"):
        interpolate_pos_embed(x, (20, 20), profile="timm", scale_factor=20 / 14)
    with pytest.raises(ValueError, match="unknown profile 'jax'"):
        interpolate_pos_embed(x, (20, 20), profile="jax")


def test_arguments_equal_to_the_profile_are_accepted():
    x = table(1 + 14 * 14)
    base = interpolate_pos_embed(x, (20, 20), profile="hf")
    same = interpolate_pos_embed(x, (20, 20), profile="hf", mode="bicubic", align_corners=False, antialias=False)
    assert torch.equal(base, same)


def test_profile_same_size_returns_the_table_and_2d_input_works():
    x = table(1 + 14 * 14, dtype=torch.float64)
    for name in PROFILES:
        out = interpolate_pos_embed(x, (14, 14), profile=name)
        assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    flat = interpolate_pos_embed(x[0], (20, 18), profile="dinov2")
    assert torch.equal(flat, interpolate_pos_embed(x, (20, 18), profile="dinov2")[0])


def test_profile_gradients_reach_the_table():
    x = table(1 + 14 * 14, dtype=torch.float64).requires_grad_()
    for name in PROFILES:
        x.grad = None
        interpolate_pos_embed(x, (9, 11), profile=name).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
