"""The recipe every library uses, in plain PyTorch: split the prefix tokens,
permute the grid to (B, C, H, W) (rank 1: (B, C, L); rank 3: (B, C, T, H, W)),
F.interpolate, permute back, concatenate.
It is the op's executable spec, kept beside it: tests hold the op to it (in
float64 for the half types), the benchmark and the demo time the op against
it. The op itself never calls it."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .modes import ALIASES, DEFAULT_MODE, mode_info

# The op's modes that F.interpolate knows under another name; it knows the
# others by theirs. lanczos3 is its lanczos, which is always antialiased.
_TORCH_NAMES = {"lanczos3": "lanczos"}


def torch_has_lanczos() -> bool:
    """F.interpolate(mode="lanczos") exists from torch 2.14 on."""
    return "lanczos" in (F.interpolate.__doc__ or "")


# The op's modes F.interpolate has at ranks 1 and 3 (bilinear there as
# "linear"/"trilinear", without antialias); its bicubic and lanczos are 2-D only.
_TORCH_ANY_RANK = ("nearest", "nearest-exact", "area", "bilinear")


def torch_mode(mode: str, rank: int = 2) -> str:
    """F.interpolate's name for the op's mode on a grid of `rank` axes."""
    for alias, (alias_rank, op_mode) in ALIASES.items():
        if (alias_rank, op_mode) == (rank, mode):
            return alias
    return _TORCH_NAMES.get(mode, mode)


def has_recipe(mode: str, rank: int = 2, antialias: bool = False) -> bool:
    """Whether this torch's F.interpolate can run the recipe for `mode` on a
    grid of `rank` axes."""
    if rank != 2:
        return mode in _TORCH_ANY_RANK and not antialias
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
    """F.interpolate on the grid of a (B, P + H*W, C) table, the anchors' way;
    new_size of 1 or 3 sides: a (B, P + L, C) or (B, P + T*H*W, C) table.

    compute_dtype: run F.interpolate in this dtype (e.g. torch.float64 for a
    slow exact reference) and return that dtype.
    """
    batch, tokens, channels = pos_embed.shape
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    rank = len(new_size)
    if old_size is None:  # a square (rank 1: the whole grid; rank 3: a cube)
        side = int(round((tokens - num_prefix_tokens) ** (1 / rank)))
        old_size = (side,) * rank
    # (B, *grid, C) -> (B, C, *grid)
    grid = grid.reshape(batch, *old_size, channels).permute(0, rank + 1, *range(1, rank + 1))
    if compute_dtype is not None:
        grid, prefix = grid.to(compute_dtype), prefix.to(compute_dtype)
    info = mode_info(mode)
    kwargs = {}
    if info.antialias == "always":  # F.interpolate(mode="lanczos") takes only antialias=True
        kwargs = {"align_corners": False, "antialias": True}
    elif info.align_corners:  # F.interpolate takes both flags for exactly these modes
        kwargs = {"align_corners": bool(align_corners), "antialias": antialias}
    if scale_factor is not None:
        out = F.interpolate(grid, scale_factor=tuple(scale_factor), mode=torch_mode(mode, rank),
                            recompute_scale_factor=False, **kwargs)
    else:
        out = F.interpolate(grid, size=tuple(new_size), mode=torch_mode(mode, rank), **kwargs)
    out = out.permute(0, *range(2, rank + 2), 1).reshape(batch, -1, channels)
    return torch.cat([prefix, out], dim=1)


def _axis_weights(in_size: int, positions: Sequence[float], mode: str) -> torch.Tensor:
    """(out, in) float64 weights of one axis sampled at `positions`: F.grid_sample
    (padding_mode="border", align_corners=True, where -1 and 1 are the first and
    last token) of an identity, one column per input token."""
    eye = torch.eye(in_size, dtype=torch.float64).view(1, in_size, 1, in_size)
    p = torch.tensor([float(v) for v in positions], dtype=torch.float64)
    x = 2 * p / (in_size - 1) - 1 if in_size > 1 else torch.zeros_like(p)
    grid = torch.stack([x, torch.zeros_like(x)], dim=-1).view(1, 1, -1, 2)
    sample_mode = "nearest" if mode in ("nearest", "nearest-exact") else torch_mode(mode, 2)
    return F.grid_sample(eye, grid, mode=sample_mode, padding_mode="border", align_corners=True)[0, :, 0].T


def sampled_interpolate(pos_embed: torch.Tensor, new_size: Sequence[int], old_size: Sequence[int],
                        sample_positions: Sequence[Sequence[float]], num_prefix_tokens: int = 1,
                        mode: str = DEFAULT_MODE, num_suffix_tokens: int = 0) -> torch.Tensor:
    """What the op computes with sample_positions, in float64: per axis the
    weights F.grid_sample takes at those positions, applied as one dense
    product over the grid (no separable passes), the prefix and suffix tokens
    copied. A (B, P + grid + S, C) table; the result is float64."""
    table = pos_embed.double()
    batch, tokens, channels = table.shape
    grid = table[:, num_prefix_tokens:tokens - num_suffix_tokens].reshape(batch, *old_size, channels)
    letters = "tuvw"[:len(old_size)]
    for axis, (size, positions) in enumerate(zip(old_size, sample_positions)):
        weights = _axis_weights(size, positions, mode)
        other = "".join(c if i != axis else "z" for i, c in enumerate(letters))
        grid = torch.einsum(f"oz,b{other}c->b{letters.replace(letters[axis], 'o')}c", weights, grid)
    grid = grid.reshape(batch, -1, channels)
    return torch.cat([table[:, :num_prefix_tokens], grid, table[:, tokens - num_suffix_tokens:]], dim=1)
