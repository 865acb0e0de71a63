"""The recipe every library uses, in plain PyTorch: split the prefix tokens,
permute the grid to (B, C, H, W), F.interpolate, permute back, concatenate.
It is the op's executable spec, kept beside it: tests hold the op to it (in
float64 for the half types), the benchmark and the demo time the op against
it. The op itself never calls it."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .modes import DEFAULT_MODE, mode_info

# The op's modes that F.interpolate knows under another name; it knows the
# others by theirs. lanczos3 is its lanczos, which is always antialiased.
_TORCH_NAMES = {"lanczos3": "lanczos"}


def torch_has_lanczos() -> bool:
    """F.interpolate(mode="lanczos") exists from torch 2.14 on."""
    return "lanczos" in (F.interpolate.__doc__ or "")


def torch_mode(mode: str) -> str:
    """F.interpolate's name for the op's mode."""
    return _TORCH_NAMES.get(mode, mode)


def has_recipe(mode: str) -> bool:
    """Whether this torch's F.interpolate can run the recipe for `mode`."""
    return torch_mode(mode) != "lanczos" or torch_has_lanczos()


def recipe_interpolate(
    pos_embed: torch.Tensor,
    new_size: Sequence[int],
    old_size: Optional[Sequence[int]] = None,
    num_prefix_tokens: int = 1,
    mode: str = DEFAULT_MODE,
    align_corners: Optional[bool] = None,
    antialias: bool = False,
    scale_factor: Optional[Sequence[float]] = None,
    compute_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """F.interpolate on the grid of a (B, P + H*W, C) table, the anchors' way.

    compute_dtype: run F.interpolate in this dtype (e.g. torch.float64 for a
    slow exact reference) and return that dtype.
    """
    batch, tokens, channels = pos_embed.shape
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_size is None:
        side = int(round((tokens - num_prefix_tokens) ** 0.5))
        old_size = (side, side)
    grid = grid.reshape(batch, old_size[0], old_size[1], channels).permute(0, 3, 1, 2)
    if compute_dtype is not None:
        grid, prefix = grid.to(compute_dtype), prefix.to(compute_dtype)
    info = mode_info(mode)
    kwargs = {}
    if info.antialias == "always":  # F.interpolate(mode="lanczos") takes only antialias=True
        kwargs = {"align_corners": False, "antialias": True}
    elif info.align_corners:  # F.interpolate takes both flags for exactly these modes
        kwargs = {"align_corners": bool(align_corners), "antialias": antialias}
    if scale_factor is not None:
        out = F.interpolate(grid, scale_factor=tuple(scale_factor), mode=torch_mode(mode),
                            recompute_scale_factor=False, **kwargs)
    else:
        out = F.interpolate(grid, size=tuple(new_size), mode=torch_mode(mode), **kwargs)
    out = out.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    return torch.cat([prefix, out], dim=1)
