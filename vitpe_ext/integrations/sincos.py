"""Fixed 2-D sin-cos position embeddings: MAE's `get_2d_sincos_pos_embed`
(facebookresearch/mae util/pos_embed.py) and big_vision's `posemb_sincos_2d`,
rewritten without `np.float` (gone in NumPy >= 1.24, mae#202) and for
non-square grids.

A sin-cos table is not learned, so resizing it needs no interpolation: the
table at the new grid can be regenerated exactly (`vitpe resize --sincos`).
It also gives the demo a ground truth: the same field evaluated at the new
patch centres (`sincos_2d_at`) is what a perfect resampler would return.

Layout of both variants, row-major tokens, C = embed_dim:
    channels [0, C/4)     sin(x * omega)     x = column index ("w goes first" in MAE)
    channels [C/4, C/2)   cos(x * omega)
    channels [C/2, 3C/4)  sin(y * omega)     y = row index
    channels [3C/4, C)    cos(y * omega)
    omega_k = 1 / temperature ** (k / D4)    MAE:        D4 = C/4
                                             big_vision: D4 = C/4 - 1
(MAE names its halves emb_h/emb_w the wrong way round, mae#18; the values
above are what its code computes.)
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

VARIANTS = ("mae", "big_vision")

Grid = Union[int, Sequence[int]]


def _grid_pair(grid_size: Grid) -> Tuple[int, int]:
    if isinstance(grid_size, (int, np.integer)):
        return int(grid_size), int(grid_size)
    height, width = (int(v) for v in grid_size)
    return height, width


def _omega(embed_dim: int, variant: str, temperature: float) -> np.ndarray:
    if embed_dim % 4 != 0:
        raise ValueError(f"a 2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown sin-cos variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    quarter = embed_dim // 4
    denominator = quarter if variant == "mae" else quarter - 1
    if denominator <= 0:
        raise ValueError(f"embed_dim {embed_dim} is too small for the {variant} sin-cos variant")
    omega = np.arange(quarter, dtype=np.float64) / denominator
    return 1.0 / temperature ** omega  # (C/4,)


def sincos_2d_at(embed_dim: int, ys: np.ndarray, xs: np.ndarray, variant: str = "mae",
                 temperature: float = 10000.0) -> np.ndarray:
    """The sin-cos field at arbitrary (fractional) grid coordinates.

    ys, xs: (N,) row and column coordinates in units of patches.
    Returns (N, embed_dim) float64.
    """
    omega = _omega(embed_dim, variant, temperature)
    # (N, C/4) each; MAE computes the outer product in float64 as well
    # (float32 positions times a float64 omega).
    out_x = np.outer(np.asarray(xs, dtype=np.float64), omega)
    out_y = np.outer(np.asarray(ys, dtype=np.float64), omega)
    return np.concatenate([np.sin(out_x), np.cos(out_x), np.sin(out_y), np.cos(out_y)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: Grid, cls_token: bool = False,
                            variant: str = "mae", temperature: float = 10000.0) -> np.ndarray:
    """MAE's table: integer positions 0..H-1, 0..W-1, row-major.

    grid_size: int (square) or (H, W).
    cls_token: prepend one zeros row, as MAE does for its class token.
    Returns (H*W, embed_dim) or (1 + H*W, embed_dim), float64; MAE copies it
    into a float32 parameter with `.float()`.
    """
    height, width = _grid_pair(grid_size)
    # MAE: meshgrid(grid_w, grid_h) on float32 aranges; the coordinates are
    # small integers, exact in float32, so float64 here gives identical values.
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                         indexing="ij")
    table = sincos_2d_at(embed_dim, ys.reshape(-1), xs.reshape(-1), variant, temperature)
    if cls_token:
        table = np.concatenate([np.zeros((1, embed_dim)), table], axis=0)
    return table


def sincos_2d_resampled(embed_dim: int, old_grid: Grid, new_grid: Grid, variant: str = "mae",
                        temperature: float = 10000.0) -> np.ndarray:
    """The old grid's sin-cos field sampled at the new grid's patch centres.

    Patch i of an n-patch axis covers [i, i+1) / n of the image, centre
    (i + 0.5) / n. Expressed in old-grid units the new centre j sits at
    (j + 0.5) * n_old / n_new - 0.5: the half-pixel convention of
    F.interpolate(align_corners=False). This is what a perfect resampler of
    the table would return; it is *not* the regenerated table at the new grid
    (`get_2d_sincos_pos_embed(C, new_grid)`), whose positions are integers.
    Returns (H_new * W_new, embed_dim) float64.
    """
    old_h, old_w = _grid_pair(old_grid)
    new_h, new_w = _grid_pair(new_grid)
    ys = (np.arange(new_h, dtype=np.float64) + 0.5) * (old_h / new_h) - 0.5
    xs = (np.arange(new_w, dtype=np.float64) + 0.5) * (old_w / new_w) - 0.5
    ys, xs = np.meshgrid(ys, xs, indexing="ij")
    return sincos_2d_at(embed_dim, ys.reshape(-1), xs.reshape(-1), variant, temperature)


def match_sincos(grid_table: np.ndarray, grid_size: Grid) -> Tuple[Optional[str], float]:
    """Which sin-cos variant a (H*W, C) grid table is, if any.

    Returns (variant or None, max abs difference to the closest variant).
    The tolerance allows a float16/bfloat16 copy of the table (bf16 keeps 8
    bits: values in [-1, 1] round by at most 2**-8).
    """
    grid_table = np.asarray(grid_table, dtype=np.float64)
    embed_dim = grid_table.shape[-1]
    best: Tuple[Optional[str], float] = (None, float("inf"))
    if embed_dim % 4 != 0 or not np.isfinite(grid_table).all():
        return best
    for variant in VARIANTS:
        try:
            reference = get_2d_sincos_pos_embed(embed_dim, grid_size, variant=variant)
        except ValueError:
            continue
        if reference.shape != grid_table.shape:
            continue
        diff = float(np.abs(reference - grid_table).max()) if grid_table.size else 0.0
        if diff < best[1]:
            best = (variant, diff)
    variant, diff = best
    return (variant if diff <= 2.0 ** -7 else None), diff
