"""Relative-position-bias tables resized through the op.

A relative-position-bias table holds one learned value per head for each
offset (dy, dx) between two tokens of an attention window. Its offsets form a
row-major grid, so a (positions, heads) table IS a position table with no
prefix tokens and the heads as channels — the op resizes it as it stands:

    Swin-v1, vit_relpos   (2Wh-1)(2Ww-1) x heads          signed offsets, flat
    BEiT, BEiT-v2, Data2Vec  (2Wh-1)(2Ww-1) + 3 x heads   the 3 class-token rows at the END
    TF MaxViT             (heads, 2Wh-1, 2Ww-1)           signed offsets, heads first
    LeViT, TinyViT, EfficientViT-MSRA  (heads, Wh*Ww)      absolute offsets |dy|, |dx|

resize_rel_pos_bias() is the general function. resize_rel_pos_bias_table_simple(),
resize_rel_pos_bias_table_levit() and resize_rel_pos_bias_table() are timm
1.0.31's functions of those names, same signatures and numbers, which
vitpe_ext.timm.patch() puts in timm's place (route_in_timm/restore_in_timm).

The third, resize_rel_pos_bias_table (BEiT's, which Swin, MaxViT and BEiT's
checkpoint filters call), does not sample the offsets evenly: it spreads the
old offsets out along a geometric progression that reaches the new window's
edge and interpolates the table there at the new integer offsets
(beit_sample_positions). The op takes those positions as sample_positions, so
it is one op call, bilinear as timm's default RegularGridInterpolator (BEiT's
original code used scipy's cubic spline instead; README, "Relative-position-
bias tables", measures that difference).
"""
from __future__ import annotations

import functools
import math
import numbers
import sys
from typing import List, Optional, Sequence, Tuple, Union

import torch

from ..op import interpolate_pos_embed

__all__ = ["resize_rel_pos_bias", "resize_rel_pos_bias_table_simple", "resize_rel_pos_bias_table_levit",
           "resize_rel_pos_bias_table", "beit_sample_positions"]

Pair = Union[int, Sequence[int]]
LAYOUTS = ("flat", "heads_first")
OFFSETS = ("signed", "absolute")


def _resize(table: torch.Tensor, layout: str, old_grid: Optional[Tuple[int, int]], new_grid: Tuple[int, int],
            num_extra_tokens: int, settings: dict, sample_positions=None) -> torch.Tensor:
    """The table's offset grid old_grid -> new_grid (old_grid None: inferred),
    in the layout it came in. The table is viewed as the op's (B, tokens, C):
    flat (positions, heads) as (1, positions, heads); heads first as
    (heads, positions, 1) — each head its own batch entry, so nothing is
    transposed."""
    if layout == "flat":
        if table.dim() != 2:
            raise ValueError(f"resize_rel_pos_bias: a flat table is (positions, heads), got shape {tuple(table.shape)}")
        tokens = table.unsqueeze(0)
    elif table.dim() == 3:
        if num_extra_tokens:
            raise ValueError(f"resize_rel_pos_bias: a (heads, H, W) table has no room for extra tokens, got "
                             f"num_extra_tokens={num_extra_tokens}")
        if old_grid is not None and tuple(old_grid) != tuple(table.shape[1:]):
            raise ValueError(f"resize_rel_pos_bias: the window gives a {old_grid[0]}x{old_grid[1]} offset grid, "
                             f"the table is {tuple(table.shape)} (heads, H, W)")
        old_grid = (table.shape[1], table.shape[2])
        tokens = table.flatten(1).unsqueeze(-1)
    elif table.dim() == 2:
        tokens = table.unsqueeze(-1)
    else:
        raise ValueError(f"resize_rel_pos_bias: a heads-first table is (heads, H, W) or (heads, positions), got "
                         f"shape {tuple(table.shape)}")

    positions = tokens.shape[1] - num_extra_tokens
    if positions < 0:
        raise ValueError(f"resize_rel_pos_bias: num_extra_tokens={num_extra_tokens} exceeds the table's "
                         f"{tokens.shape[1]} rows")
    if old_grid is None:
        side = math.isqrt(positions)
        if side * side != positions:
            raise ValueError(f"resize_rel_pos_bias: {positions} offsets are not a square grid; pass old_window")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != positions:
        raise ValueError(f"resize_rel_pos_bias: a {old_grid[0]}x{old_grid[1]} offset grid has "
                         f"{old_grid[0] * old_grid[1]} rows, the table has {positions} (+{num_extra_tokens} extra)")

    # the extra rows (BEiT's class-token biases) follow the grid: the op's suffix tokens, copied
    out = interpolate_pos_embed(tokens, new_grid, old_grid, 0, num_suffix_tokens=num_extra_tokens,
                                sample_positions=sample_positions, **settings)
    if layout == "flat":
        return out[0]
    if table.dim() == 3:
        return out.view(table.shape[0], new_grid[0], new_grid[1])
    return out[..., 0]


def _window(value, name: str) -> Tuple[int, int]:
    """An attention window: one int (square) or (height, width), positive."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list, torch.Size)) or len(value) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"resize_rel_pos_bias: {name} must be a positive int or (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def _grid(window: Tuple[int, int], offsets: str) -> Tuple[int, int]:
    # signed offsets dy in [-(Wh-1), Wh-1]: 2Wh-1 rows; absolute |dy| in [0, Wh-1]: Wh rows
    return (2 * window[0] - 1, 2 * window[1] - 1) if offsets == "signed" else window


# -- the general function --------------------------------------------------------------------

def resize_rel_pos_bias(
    table: torch.Tensor,
    old_window: Optional[Pair],
    new_window: Pair,
    *,
    layout: str = "flat",
    offsets: str = "signed",
    num_extra_tokens: int = 0,
    mode: Optional[str] = None,
    align_corners: Optional[bool] = None,
    antialias: Optional[bool] = None,
) -> torch.Tensor:
    """Resize a relative-position-bias table for a new attention window.

    table: layout="flat": (positions + num_extra_tokens, heads) (Swin, BEiT);
        layout="heads_first": (heads, H, W) (TF MaxViT) or (heads, positions
        + num_extra_tokens) (LeViT-style attention_biases).
    old_window, new_window: the attention window (Wh, Ww), or one int for a
        square one; old_window None: taken from a (heads, H, W) table's shape,
        else a square offset grid is assumed.
    offsets: "signed": the rows are offsets dy in [-(Wh-1), Wh-1], dx in
        [-(Ww-1), Ww-1], a (2Wh-1) x (2Ww-1) grid (Swin, BEiT, MaxViT);
        "absolute": |dy|, |dx|, a Wh x Ww grid (LeViT, TinyViT, EfficientViT).
    num_extra_tokens: rows after the grid, copied unchanged (3 for BEiT's
        class-token biases).
    mode, align_corners, antialias: as vitpe_ext.interpolate_pos_embed (unset:
        bicubic, align_corners=False, no antialias: timm's "simple" resize).

    The offset grid is resized as F.interpolate resizes an image (evenly
    spaced samples), in the table's dtype (float32 accumulation for half
    tables); differentiable. Returns a new table in the same layout and dtype.
    """
    if not isinstance(table, torch.Tensor):
        raise ValueError(f"resize_rel_pos_bias: table must be a torch.Tensor, got {type(table).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"resize_rel_pos_bias: layout must be one of {LAYOUTS}, got {layout!r}")
    if offsets not in OFFSETS:
        raise ValueError(f"resize_rel_pos_bias: offsets must be one of {OFFSETS}, got {offsets!r}")
    if not isinstance(num_extra_tokens, int) or isinstance(num_extra_tokens, bool) or num_extra_tokens < 0:
        raise ValueError(f"resize_rel_pos_bias: num_extra_tokens must be an int >= 0, got {num_extra_tokens!r}")
    new_grid = _grid(_window(new_window, "new_window"), offsets)
    old_grid = None if old_window is None else _grid(_window(old_window, "old_window"), offsets)
    settings = dict(mode=mode, align_corners=align_corners, antialias=antialias)
    return _resize(table, layout, old_grid, new_grid, num_extra_tokens, settings)


# -- timm 1.0.31's functions, computed by the op -------------------------------------------

def _timm_grids(who: str, rel_pos_bias: torch.Tensor, new_window_size, new_bias_shape,
                old_window_size) -> Tuple[str, Tuple[int, int], Tuple[int, int], int]:
    """What timm's resizers read from their arguments: (layout, the source
    offset grid, the destination's, the extra rows at the end). A flat
    table's source window is old_window_size, else a square, else (its rows
    not a square) the destination's, as timm's resize_rel_pos_bias_table."""
    dst = _grid(_window(new_window_size, "new_window_size"), "signed")
    if rel_pos_bias.ndim == 3:
        if tuple(new_bias_shape[1:]) != dst:
            raise ValueError(f"{who}: new_bias_shape {tuple(new_bias_shape)} does not hold a {dst[0]}x{dst[1]} grid "
                             f"for window {tuple(new_window_size)}")
        return "heads_first", tuple(rel_pos_bias.shape[1:]), dst, 0
    if rel_pos_bias.ndim != 2:
        raise ValueError(f"{who}: rel_pos_bias must be (heads, H, W) or (positions, heads), got shape "
                         f"{tuple(rel_pos_bias.shape)}")
    num_extra_tokens = new_bias_shape[0] - dst[0] * dst[1]
    if num_extra_tokens < 0:
        raise ValueError(f"{who}: new_bias_shape {tuple(new_bias_shape)} has fewer rows than a {dst[0]}x{dst[1]} grid")
    positions = rel_pos_bias.shape[0] - num_extra_tokens
    if old_window_size is not None:
        src = _grid(_window(old_window_size, "old_window_size"), "signed")
    elif math.isqrt(max(positions, 0)) ** 2 == positions:
        src = (math.isqrt(positions),) * 2
    elif positions == dst[0] * dst[1]:
        src = dst
    else:
        raise ValueError(f"{who}: {positions} offsets are not a square grid; pass old_window_size")
    return "flat", src, dst, num_extra_tokens


def resize_rel_pos_bias_table_simple(
    rel_pos_bias: torch.Tensor,
    new_window_size: Tuple[int, int],
    new_bias_shape: Tuple[int, ...],
    *,
    old_window_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """timm.layers.resize_rel_pos_bias_table_simple, computed by the op.

    rel_pos_bias: (heads, 2Wh-1, 2Ww-1) (new_bias_shape (heads, h, w)) or
    (positions + extra, heads) (new_bias_shape (new positions + extra,
    heads); the extra rows, e.g. BEiT's 3, stay at the end unchanged).
    Bicubic, align_corners=False, in the table's dtype, as timm. Returns
    rel_pos_bias itself when the grid does not change.

    Beyond timm: old_window_size= gives a non-square source window of a flat
    table (timm assumes a square one); without it a flat table whose rows
    are not a square grid but equal the destination's is taken as that
    window, as timm's resize_rel_pos_bias_table does.
    """
    layout, src, dst, num_extra_tokens = _timm_grids("resize_rel_pos_bias_table_simple", rel_pos_bias,
                                                     new_window_size, new_bias_shape, old_window_size)
    if src == dst:
        return rel_pos_bias
    return _resize(rel_pos_bias, layout, src, dst, num_extra_tokens, dict(mode="bicubic", align_corners=False))


def resize_rel_pos_bias_table_levit(
    position_bias_table: torch.Tensor,
    new_size,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """timm.layers.resize_rel_pos_bias_table_levit, computed by the op.

    position_bias_table: (L, heads), L = S*S absolute offsets; new_size: (L',
    heads). F.interpolate's `interpolation` mode with `antialias`, computed in
    float32 and cast back, as timm. Returns the table itself when L' == L.
    timm's callers (TinyViT, EfficientViT-MSRA) pass attention_biases.T.
    """
    if position_bias_table.ndim != 2:
        raise ValueError(f"resize_rel_pos_bias_table_levit: position_bias_table must be (L, heads), got shape "
                         f"{tuple(position_bias_table.shape)}")
    (old_len, heads), (new_len, new_heads) = position_bias_table.shape, tuple(new_size)
    if heads != new_heads:
        raise ValueError(f"resize_rel_pos_bias_table_levit: the table has {heads} heads, new_size {tuple(new_size)} "
                         f"asks for {new_heads}")
    if old_len == new_len:
        return position_bias_table
    old_side, new_side = math.isqrt(old_len), math.isqrt(new_len)
    if old_side * old_side != old_len or new_side * new_side != new_len:
        raise ValueError(f"resize_rel_pos_bias_table_levit: {old_len} -> {new_len} offsets are not square grids")
    settings = dict(mode=interpolation, antialias=antialias)
    out = _resize(position_bias_table.float(), "flat", (old_side, old_side), (new_side, new_side), 0, settings)
    return out.to(position_bias_table.dtype)


def _beit_offsets(src: int, dst: int) -> List[float]:
    """Where BEiT puts the src old offsets so that they span dst new ones:
    spacing growing as q, q^2, ... outwards from 0, with q found by
    bisection so the outermost lands just past dst // 2. timm's (and
    unilm's) _calc, step for step: the same q to the last bit."""
    def geometric_progression(a, r, n):
        return a * (1.0 - r ** n) / (1.0 - r)
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if geometric_progression(1, q, src // 2) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0] + dis


def beit_sample_positions(src: int, dst: int) -> List[float]:
    """The sample positions BEiT's resize reads an axis of src offsets at to
    make dst (old-grid units): see _beit_sample_positions. Cached: a model's
    layers share a few (src, dst) pairs."""
    return list(_beit_sample_positions(int(src), int(dst)))


@functools.lru_cache(maxsize=64)
def _beit_sample_positions(src: int, dst: int) -> Tuple[float, ...]:
    """The sample positions (old-grid units, old offset i at i) at which
    BEiT's resize reads an axis of src offsets to make dst: for each new
    integer offset in [-(dst // 2), dst // 2], its place between the two old
    offsets around it on the geometric-progression axis (_beit_offsets),
    linearly. Computed from the float32 coordinates timm builds
    (torch.tensor of the offsets, torch.arange of the targets), so bilinear
    sampling at these positions is timm's RegularGridInterpolator up to the
    rounding of its last float32 operations. Outside the old offsets the
    position is past the end, where the op repeats the edge, as timm does.
    One old offset (a window of 1, e.g. a Swin stage on a 1x1 feature map)
    is read everywhere, as timm does."""
    if src == 1:
        return (0.0,) * dst
    coords = torch.tensor(_beit_offsets(src, dst)).double()         # float32 values, as timm's
    half = dst // 2.0
    targets = torch.arange(-half, half + 0.1, 1.0).double()         # float32 arange, as timm's
    right = torch.bucketize(targets, coords).clamp(1, src - 1)
    left = right - 1
    frac = (targets - coords[left]) / (coords[right] - coords[left])
    return tuple((left.double() + frac).tolist())


def resize_rel_pos_bias_table(
    rel_pos_bias: torch.Tensor,
    new_window_size: Tuple[int, int],
    new_bias_shape: Tuple[int, ...],
    old_window_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """timm.layers.resize_rel_pos_bias_table, computed by the op.

    rel_pos_bias: (heads, 2Wh-1, 2Ww-1) (new_bias_shape (heads, h, w)) or
    (positions + extra, heads) (new_bias_shape (new positions + extra,
    heads); the extra rows, e.g. BEiT's 3, stay at the end unchanged).
    old_window_size: the source window of a flat table, as timm (else a
    square one, or the destination's where the rows cannot be a square).
    Each axis is sampled at beit_sample_positions, bilinear, in float32 and
    cast back, as timm without TIMM_USE_SCIPY_INTERP; the table stays on its
    device. Returns rel_pos_bias itself when the grid does not change.
    """
    layout, src, dst, num_extra_tokens = _timm_grids("resize_rel_pos_bias_table", rel_pos_bias, new_window_size,
                                                     new_bias_shape, old_window_size)
    if src == dst:
        return rel_pos_bias
    if rel_pos_bias.is_meta:  # as timm: only the shape is known
        return rel_pos_bias.new_empty(new_bias_shape)
    sample_positions = [beit_sample_positions(src[0], dst[0]), beit_sample_positions(src[1], dst[1])]
    out = _resize(rel_pos_bias.float(), layout, src, dst, num_extra_tokens, dict(mode="bilinear"),
                  sample_positions)
    out = out.to(rel_pos_bias.dtype)
    if num_extra_tokens and rel_pos_bias.dtype == torch.float64:
        # timm never rounds them; the op copied their float32 values (exact for the half types)
        out[-num_extra_tokens:] = rel_pos_bias[-num_extra_tokens:]
    return out


# -- routing timm's names (called by vitpe_ext.timm.patch / unpatch) ----------------------

ROUTED = {"resize_rel_pos_bias_table_simple": resize_rel_pos_bias_table_simple,
          "resize_rel_pos_bias_table_levit": resize_rel_pos_bias_table_levit,
          "resize_rel_pos_bias_table": resize_rel_pos_bias_table}
_timm_originals = {}  # name -> timm's own function, once seen


def _rebind_in_timm(name: str, old, new) -> int:
    # timm's models import these names into their own globals (tiny_vit,
    # efficientvit_msra), so every loaded timm module holding `old` is rebound.
    count = 0
    for module_name, module in list(sys.modules.items()):
        if module is not None and (module_name == "timm" or module_name.startswith("timm.")) \
                and getattr(module, name, None) is old:
            setattr(module, name, new)
            count += 1
    return count


def route_in_timm() -> int:
    """Bind vitpe's resizers wherever timm's are bound; returns how many
    module globals changed. Under TIMM_USE_SCIPY_INTERP=1 timm's
    resize_rel_pos_bias_table interpolates with scipy's cubic spline, which
    the op does not compute, so it is left alone then."""
    import timm.layers.pos_embed_rel as timm_rel
    count = 0
    for name, ours in ROUTED.items():
        if name == "resize_rel_pos_bias_table" and getattr(timm_rel, "_USE_SCIPY", False):
            continue
        current = getattr(timm_rel, name)
        if current is not ours:
            _timm_originals[name] = current
        count += _rebind_in_timm(name, _timm_originals[name], ours)
    return count


def restore_in_timm() -> None:
    """Give every timm module its own resizers back."""
    for name, original in _timm_originals.items():
        _rebind_in_timm(name, ROUTED[name], original)
