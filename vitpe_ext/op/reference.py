"""The recipe every library uses, in plain PyTorch: split the prefix tokens,
permute the grid to (B, C, H, W), F.interpolate, permute back, concatenate.
Tests hold the op to it (in float64 for the half types) and benchmarks time
the op against it. Not used by the op itself."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def torch_has_lanczos() -> bool:
    """F.interpolate(mode="lanczos") exists from torch 2.14 on."""
    return "lanczos" in (F.interpolate.__doc__ or "")


def recipe_interpolate(
    pos_embed: torch.Tensor,
    new_size: Sequence[int],
    old_size: Optional[Sequence[int]] = None,
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
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
    kwargs = {}
    if mode in ("bilinear", "bicubic"):
        kwargs = {"align_corners": bool(align_corners), "antialias": antialias}
    elif mode == "lanczos3":  # torch >= 2.14: Pillow's Lanczos-3 with antialias
        mode, kwargs = "lanczos", {"align_corners": False, "antialias": True}
    if scale_factor is not None:
        out = F.interpolate(grid, scale_factor=tuple(scale_factor), mode=mode,
                            recompute_scale_factor=False, **kwargs)
    else:
        out = F.interpolate(grid, size=tuple(new_size), mode=mode, **kwargs)
    out = out.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    return torch.cat([prefix, out], dim=1)
