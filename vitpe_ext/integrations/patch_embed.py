"""Changing a ViT's patch size: the patch-embedding kernel and the position
table, resized together so that the token grid and the table agree.

A ViT cuts an S x S image into (S/p) x (S/p) patches and projects each with a
conv kernel (out, in, p, p). Moving to patch p2 changes both: the kernel must
take p2 x p2 patches, and the table must have one row per cell of the new
(S/p2) x (S/p2) grid. Resizing only one of them gives a model that either
does not load or silently sees misplaced positions (the article's §6).

resample_patch_embed is FlexiViT's kernel resize (Beyer et al. 2023,
big_vision's flexi/vit.py; timm.layers.resample_patch_embed): with R the
linear map that resizes a p x p patch to p2 x p2 (bicubic, antialiased), the
new kernel w2 solves <x, w> = <R x, w2> for every patch x in the least-squares
sense, w2 = pinv(R)^T w. Upsampling the kernel (p2 > p) keeps the identity
exact: a model fed images upsampled by p2/p produces the same tokens.

change_patch_size does both halves for a torchvision or timm state dict.
"""
from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Tuple

import torch

from ..op import MODES, interpolate_pos_embed

__all__ = ["resample_patch_embed", "change_patch_size"]

Pair = Tuple[int, int]


def _pair(value, name: str) -> Pair:
    """An int or (height, width) of positive ints; anything else ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be positive ints (height, width), got {value!r}")
    return (h, w)


@functools.lru_cache(maxsize=16)
def _pinv_resize(old: Pair, new: Pair, interpolation: str, antialias: bool) -> torch.Tensor:
    """pinv(R), (old_h*old_w, new_h*new_w) float64 on the CPU, R resizing an
    old-sized patch to new (as F.interpolate(size=new, mode=interpolation,
    antialias=antialias)). The op builds R: a table whose token t holds the
    t-th basis patch in channel t resizes to R's columns, channels intact.
    Computed in float64 (timm: float32), so the kernel loses nothing to pinv."""
    n_old = old[0] * old[1]
    basis = torch.eye(n_old, dtype=torch.float64).unsqueeze(0)           # (1, n_old tokens, n_old channels)
    resize = interpolate_pos_embed(basis, new, old, 0, mode=interpolation,
                                   antialias=antialias)[0]                 # (n_new, n_old) = R
    return torch.linalg.pinv(resize)


def resample_patch_embed(patch_embed: torch.Tensor, new_size, interpolation: str = "bicubic",
                         antialias: bool = True) -> torch.Tensor:
    """timm.layers.resample_patch_embed: a patch-embedding kernel
    (out, in, ph, pw) resampled to new_size (ph2, pw2), FlexiViT's way.

    interpolation/antialias: the patch resize the kernel inverts (timm's
    defaults, bicubic with antialias); any vitpe mode. Returns the kernel
    itself when the size already matches, else a new tensor in the kernel's
    dtype and device, differentiable with respect to it. The matrix and the
    product are computed in float64 (timm: float32), so a float32 kernel
    agrees with timm's to float32 rounding.
    """
    if not isinstance(patch_embed, torch.Tensor):
        raise ValueError(f"patch_embed must be a torch.Tensor, got {type(patch_embed).__name__}")
    if patch_embed.dim() != 4 or not patch_embed.is_floating_point():
        raise ValueError(f"patch_embed must be a floating-point conv kernel (out, in, ph, pw), got "
                         f"{tuple(patch_embed.shape)} {str(patch_embed.dtype).replace('torch.', '')}")
    new = _pair(new_size, "new_size")
    old = (int(patch_embed.shape[-2]), int(patch_embed.shape[-1]))
    if min(old) == 0:
        raise ValueError(f"patch_embed has an empty patch {old}, nothing to resample")
    if interpolation not in MODES:
        raise ValueError(f"interpolation must be one of {list(MODES)}, got {interpolation!r}")
    if not isinstance(antialias, bool):
        raise ValueError(f"antialias must be True or False, got {antialias!r}")
    if new == old:
        return patch_embed
    pinv = _pinv_resize(old, new, interpolation, antialias).to(patch_embed.device)
    c_out, c_in = patch_embed.shape[:2]
    flat = patch_embed.reshape(c_out, c_in, old[0] * old[1]).to(torch.float64)
    return (flat @ pinv).reshape(c_out, c_in, *new).to(patch_embed.dtype)


# -- both halves of a checkpoint ---------------------------------------------------

# (kernel key, table key, the library's table profile), per state-dict layout
_LAYOUTS = {
    "torchvision": ("conv_proj.weight", "encoder.pos_embedding", "torchvision"),
    "timm": ("patch_embed.proj.weight", "pos_embed", "timm"),
}


def _find_layout(state_dict: Mapping) -> Tuple[str, str, str, str]:
    """(layout, kernel key, table key, model prefix such as "module."): the
    one layout whose two keys the state dict holds."""
    found = []
    for layout, (kernel, table, _) in _LAYOUTS.items():
        for key in state_dict:
            if isinstance(key, str) and (key == table or key.endswith("." + table)):
                prefix = key[: len(key) - len(table)]
                if prefix + kernel in state_dict:
                    found.append((layout, prefix + kernel, key, prefix))
    if len(found) != 1:
        looked = "; ".join(f"{k} + {t} ({name})" for name, (k, t, _) in _LAYOUTS.items())
        what = "no" if not found else f"{len(found)}"
        raise ValueError(f"state_dict has {what} patch-kernel/position-table pairs of a known layout (looked for "
                         f"{looked}); pass patch_key= and pos_key=")
    return found[0]


def _prefix_counts(state_dict: Mapping, layout: Optional[str], model_prefix: str) -> Tuple[int, ...]:
    """The class/distillation/register rows the table may have, likeliest
    first: torchvision 1; timm the tokens beside it, or 0 when they are kept
    out of the table (no_embed_class); named keys 1 or 0."""
    if layout == "torchvision":
        return (1,)
    if layout != "timm":
        return (1, 0)
    count = sum(model_prefix + name in state_dict for name in ("cls_token", "dist_token"))
    reg = state_dict.get(model_prefix + "reg_token")
    if isinstance(reg, torch.Tensor) and reg.dim() == 3:
        count += reg.shape[1]
    return (count, 0) if count else (0,)


def _table_layout(tokens: int, counts: Sequence[int], old_grid, num_prefix_tokens: Optional[int],
                  pos_key: str) -> Tuple[int, Pair]:
    """(prefix tokens, grid) of a table of `tokens` rows."""
    if old_grid is not None:
        old_grid = _pair(old_grid, "old_grid")
        prefix = tokens - old_grid[0] * old_grid[1]
        if num_prefix_tokens is None and prefix not in counts:
            raise ValueError(f"old_grid {old_grid} leaves {prefix} prefix tokens in {pos_key} ({tokens} tokens), "
                             f"but this table has {' or '.join(map(str, counts))}; check old_grid (or pass "
                             f"num_prefix_tokens={prefix} if it really has that many)")
        if num_prefix_tokens is not None and prefix != num_prefix_tokens:
            raise ValueError(f"old_grid {old_grid} with {num_prefix_tokens} prefix tokens needs "
                             f"{num_prefix_tokens + old_grid[0] * old_grid[1]} tokens, {pos_key} has {tokens}")
        return prefix, old_grid
    for prefix in ((num_prefix_tokens,) if num_prefix_tokens is not None else counts):
        side = math.isqrt(max(tokens - prefix, 0))
        if side and side * side == tokens - prefix:
            return prefix, (side, side)
    tried = num_prefix_tokens if num_prefix_tokens is not None else " or ".join(map(str, counts))
    raise ValueError(f"{pos_key} has {tokens} tokens; after {tried} prefix tokens they are not a square grid: "
                     f"pass old_grid=(h, w)")


def change_patch_size(state_dict: Mapping, new_patch_size, image_size=None, *, old_grid=None,
                      num_prefix_tokens: Optional[int] = None, patch_key: Optional[str] = None,
                      pos_key: Optional[str] = None, profile: Optional[str] = None, mode: Optional[str] = None,
                      align_corners: Optional[bool] = None, antialias: Optional[bool] = None,
                      kernel_interpolation: str = "bicubic", kernel_antialias: bool = True) -> "OrderedDict":
    """A state dict for patch size new_patch_size: the patch-embedding kernel
    resampled (resample_patch_embed) and the position table resized to the new
    grid image_size / new_patch_size, so a model built with the new patch size
    loads it strictly.

    state_dict: a torchvision (conv_proj.weight, encoder.pos_embedding) or timm
        (patch_embed.proj.weight, pos_embed) ViT's, "module."-style prefixes
        allowed; other layouts name both keys with patch_key= and pos_key=.
    image_size: int or (h, w); None keeps the checkpoint's own (its grid times
        its patch size).
    old_grid, num_prefix_tokens: the table's layout where it cannot be read
        off the state dict (a non-square grid; prefix rows).
    profile/mode/align_corners/antialias: how the table is resized, as
        vitpe_ext.interpolate_pos_embed; unset, the checkpoint library's own
        profile (torchvision, timm), or plain bicubic for named keys.
    kernel_interpolation/kernel_antialias: the patch resize the kernel
        inverts (FlexiViT's bicubic with antialias).

    Returns a new OrderedDict (other entries are the same tensors; the
    state dict's _metadata is kept); the argument is not changed. Raises
    ValueError naming the problem: keys not found, a kernel that is not
    (out, in, ph, pw), an image size that is not a multiple of the new patch.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}")
    if (patch_key is None) != (pos_key is None):
        raise ValueError("pass both patch_key= and pos_key=, or neither (to detect a torchvision/timm layout)")
    if patch_key is None:
        layout, patch_key, pos_key, model_prefix = _find_layout(state_dict)
    else:
        layout, model_prefix = None, ""
        for name, key in (("patch_key", patch_key), ("pos_key", pos_key)):
            if not isinstance(state_dict.get(key), torch.Tensor):
                raise ValueError(f"{name} {key!r}: no such tensor in state_dict")
    kernel, table = state_dict[patch_key], state_dict[pos_key]
    if kernel.dim() != 4 or not kernel.is_floating_point():
        raise ValueError(f"{patch_key} has shape {tuple(kernel.shape)} {str(kernel.dtype).replace('torch.', '')}, "
                         f"not a conv kernel (out, in, ph, pw)")
    if table.dim() not in (2, 3):
        raise ValueError(f"{pos_key} has shape {tuple(table.shape)}, not a (1, tokens, dim) position table")
    if kernel.shape[0] != table.shape[-1]:
        raise ValueError(f"{patch_key} {tuple(kernel.shape)} makes {kernel.shape[0]}-wide tokens but {pos_key} "
                         f"{tuple(table.shape)} is {table.shape[-1]} wide: not one model's pair")

    old_patch = (int(kernel.shape[-2]), int(kernel.shape[-1]))
    new_patch = _pair(new_patch_size, "new_patch_size")
    num_prefix_tokens, old_grid = _table_layout(table.shape[-2], _prefix_counts(state_dict, layout, model_prefix),
                                                old_grid, num_prefix_tokens, pos_key)
    image = (_pair(image_size, "image_size") if image_size is not None
             else (old_grid[0] * old_patch[0], old_grid[1] * old_patch[1]))
    for axis, size, patch in (("height", image[0], new_patch[0]), ("width", image[1], new_patch[1])):
        if size % patch:
            whose = "image" if image_size is not None else f"the checkpoint's image (grid {old_grid} x patch {old_patch})"
            raise ValueError(f"{whose} {axis} {size} is not a multiple of the new patch size {patch}; "
                             f"pass an image_size that is")
    new_grid = (image[0] // new_patch[0], image[1] // new_patch[1])

    if profile is None and mode is None and align_corners is None and antialias is None and layout is not None:
        profile = _LAYOUTS[layout][2]
    out = OrderedDict(state_dict)
    if hasattr(state_dict, "_metadata"):
        out._metadata = state_dict._metadata  # type: ignore[attr-defined]
    out[patch_key] = resample_patch_embed(kernel, new_patch, kernel_interpolation, kernel_antialias)
    if new_grid != old_grid:
        out[pos_key] = interpolate_pos_embed(table, new_grid, old_grid, num_prefix_tokens, mode=mode,
                                             align_corners=align_corners, antialias=antialias, profile=profile)
    return out
