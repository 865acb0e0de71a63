"""The op in ONNX: torch.ops.vitpe.interpolate_pos_embed as standard ONNX ops.

torch.onnx.export(..., dynamo=True) asks a translation table how to write each
op of the captured graph in ONNX. This module is vitpe's entry:

    torch.onnx.export(model, args, dynamo=True,
                      custom_translation_table=vitpe_ext.onnx.translation_table())

(the supported-API path), or with no argument once register() has added the
entry to torch's own table (importing vitpe_ext does that lazily, see
op/onnx_hook.py; importing vitpe_ext.onnx does it at once).

The translation writes the op's contract: the first P tokens copied (Slice,
Concat), the rest a row-major grid resized like F.interpolate. How, per mode:

    nearest, nearest-exact   Gather with ATen's own index arithmetic (Range, Mul,
                             Floor in float32), bit-exact. Resize's nearest
                             computes x / (out/in), which picks another row
                             where ATen's x * (in/out) rounds to an integer
                             (14 -> 2 rows: row 6 where ATen takes row 7).
    bilinear, bicubic        Resize: linear / cubic (cubic_coeff_a -0.75, edge
                             taps clamped), half_pixel or align_corners.
    ... with antialias       Resize antialias=1, exclude_outside=1 (ATen drops
                             taps outside the grid and renormalises), bicubic
                             with cubic_coeff_a -0.5 (ATen's antialiased cubic
                             is Pillow's). With align_corners=True ATen keeps
                             half-pixel centres and only changes the scale,
                             which Resize cannot state: constant matrices below.
    scale_factor             Resize with `scales` (its mapping uses the given
                             scale, as recompute_scale_factor=False does); the
                             cases onnxruntime computes otherwise take the
                             matrices (_resize_scales says which).
    area                     two MatMuls by constant averaging matrices: exactly
                             adaptive average pooling, but only for sizes known
                             at export.
    lanczos3                 refused: Resize has no Lanczos filter.
    rank 1 or 3, suffix      refused: grids of rank 2 without suffix tokens only.

Resize and MatMul run in float32 on float16/bfloat16 tables, cast back once,
as the op computes them (ATen's opmath). Float64 tables: MatMul in float64,
Resize in float32 (onnxruntime has no double Resize), so they match the op
to float32 precision only. Gather moves values in any dtype. Sizes traced as
symbols (torch.export dynamic_shapes) arrive here as ONNX int64 scalars and
stay symbolic in the graph.

Everything here runs at export time only and imports onnxscript; importing
vitpe_ext does not import this module.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18 as op

from .modes import DEFAULT_MODE, mode_info
from .registration import _forward

__all__ = ["interpolate_pos_embed_onnx", "translation_table", "register", "OnnxExportError"]

_INT64_MAX = 2 ** 63 - 1

# A size as the exporter hands it over: a Python int when fixed at export,
# an ONNX int64 scalar (ir.Value) when torch.export traced it as a symbol.
Size = Union[int, ir.Value]


class OnnxExportError(ValueError):
    """A call of the op that ONNX cannot express; raised while exporting."""


def translation_table() -> Dict[Callable, Callable]:
    """{op: translation} for torch.onnx.export(custom_translation_table=...)."""
    return {_forward: interpolate_pos_embed_onnx}


# -- the translation -----------------------------------------------------------------

def interpolate_pos_embed_onnx(pos_embed, new_size, old_size=None, num_prefix_tokens=1, mode=DEFAULT_MODE,
                               align_corners=None, antialias=False, scale_factor=None, num_suffix_tokens=0,
                               sample_positions=None):
    """The op's ONNX graph, built by the exporter's tracer. Arguments as the
    op's schema, as the exporter hands them over: pos_embed an ir.Value,
    sizes ints or int64 scalars (Size), the rest Python values. The op's
    checks already ran on them while torch.export traced the model.
    Unannotated: the exporter would read annotations as ONNX types.
    Grids of rank 2 without suffix tokens only: others are refused."""
    if len(new_size) != 2:
        raise OnnxExportError(f"vitpe ONNX export: grids of rank {len(new_size)} (new_size {list(new_size)}) "
                              f"are not translated, only rank 2 (height, width); resize the table before "
                              f"export or keep that call in PyTorch")
    if int(num_suffix_tokens) != 0:
        raise OnnxExportError(f"vitpe ONNX export: num_suffix_tokens={int(num_suffix_tokens)} is not "
                              f"translated, only tables without suffix tokens; resize the table before export "
                              f"or keep that call in PyTorch")
    prefix = int(num_prefix_tokens)
    align_corners = bool(align_corners)
    in_size = _old_size(pos_embed, old_size, prefix)
    out_size = (new_size[0], new_size[1])
    scales = None if scale_factor is None else (float(scale_factor[0]), float(scale_factor[1]))
    positions = None
    if sample_positions is not None:
        # given positions are constants: the weights too, as matrices
        if not all(isinstance(s, int) for s in (*in_size, *out_size)):
            raise OnnxExportError("vitpe ONNX export: sample_positions need grid sizes fixed at export (the "
                                  "positions are one per output); export at a fixed size")
        flat = [float(p) for p in sample_positions]
        positions = (flat[:out_size[0]], flat[out_size[0]:])
    route = "matrices" if positions is not None else _route(mode, align_corners, antialias, in_size, out_size,
                                                            scales)

    grid = op.Slice(pos_embed, _ints(prefix), _ints(_INT64_MAX), _ints(1))   # (B, H*W, C)
    dtype = pos_embed.dtype
    # Gather moves values and is exact in any dtype; onnxruntime's MatMul has double
    compute = dtype if route == "gather" or (route == "matrices" and dtype == ir.DataType.DOUBLE) \
        else ir.DataType.FLOAT
    if compute != dtype:
        grid = op.Cast(grid, to=compute)
    if route == "gather":
        out = _gather(grid, mode, in_size, out_size, scales)
    elif route == "resize":
        out = _resize(grid, mode, align_corners, antialias, in_size, out_size, scales)
    else:
        out = _matrices(grid, mode, align_corners, antialias, in_size, out_size, scales, compute, positions)
    if compute != dtype:
        out = op.Cast(out, to=dtype)
    if prefix == 0:
        return out
    # the prefix tokens straight from the input: never cast, never resized
    return op.Concat(op.Slice(pos_embed, _ints(0), _ints(prefix), _ints(1)), out, axis=1)


def _route(mode: str, align_corners: bool, antialias: bool, in_size, out_size, scales) -> str:
    """How the grid is resized: "gather", "resize" or "matrices"; or
    OnnxExportError naming what ONNX cannot express."""
    mode_info(mode)  # an unknown mode: the op's own ValueError
    static = all(isinstance(s, int) for s in (*in_size, *out_size))
    where = f"vitpe ONNX export: mode {mode!r}"
    if mode in ("nearest", "nearest-exact"):
        return "gather"
    if mode in ("bilinear", "bicubic"):
        if antialias and align_corners:
            if static:
                return "matrices"
            raise OnnxExportError(
                f"{where} with antialias=True and align_corners=True has no ONNX Resize equivalent at grid sizes "
                f"traced as symbols (ATen keeps half-pixel filter centres and only changes the scale); export "
                f"with fixed sizes, or drop align_corners or antialias")
        if scales is not None and static and not _resize_scales(mode, antialias, in_size, out_size, scales):
            return "matrices"
        return "resize"
    if mode == "area":
        if static:
            return "matrices"
        raise OnnxExportError(
            f"{where} is adaptive average pooling, which ONNX expresses only for fixed sizes; this export "
            f"traces the grid size as a symbol: export with fixed sizes, or use mode='bilinear' with antialias=True "
            f"(the closest Resize filter)")
    if mode == "lanczos3":
        raise OnnxExportError(
            f"{where} has no ONNX equivalent: Resize has no Lanczos filter; export with mode='bicubic' and "
            f"antialias=True (the closest Resize filter), or resize the table to its final grid before export "
            f"(vitpe resize) so that the graph holds the resized table")
    raise OnnxExportError(f"{where} has no ONNX translation in vitpe; export with mode='bicubic' or 'bilinear'")


def _old_size(pos_embed: ir.Value, old_size, prefix: int) -> Tuple[Size, Size]:
    if old_size is not None:
        return (old_size[0], old_size[1])
    tokens = pos_embed.shape[1] if pos_embed.shape is not None else None
    if not isinstance(tokens, int):
        raise OnnxExportError("vitpe ONNX export: the table's token count is not fixed, so its square grid "
                              "cannot be inferred; pass old_size")
    side = math.isqrt(tokens - prefix)  # the op checked side * side == tokens - prefix
    return (side, side)


# -- nearest modes: Gather ------------------------------------------------------------

def _gather(grid: ir.Value, mode: str, in_size, out_size, scales) -> ir.Value:
    # (B, H*W, C) -> (B, H, W, C): each axis a Gather over its own index table
    grid = op.Reshape(grid, _ints(0, in_size[0], in_size[1], -1))
    for axis in (0, 1):
        index = _nearest_index(mode, in_size[axis], out_size[axis], None if scales is None else scales[axis])
        if index is not None:
            grid = op.Gather(grid, index, axis=axis + 1)
    return op.Reshape(grid, op.Concat(_ints(0, -1), op.Shape(grid, start=3), axis=0))  # (B, h*w, C)


def _nearest_index(mode: str, in_size: Size, out_size: Size, scale_factor: Optional[float]):
    """ATen's source row of every output row (UpSample.h nearest_idx and
    nearest_exact_idx), in its float32 arithmetic; None for an axis that
    stays as it is."""
    if isinstance(in_size, int) and isinstance(out_size, int):
        if mode == "nearest" and in_size == out_size:
            return None  # nearest_idx: an unchanged size is a copy, whatever scale_factor says
        if mode == "nearest" and out_size == 2 * in_size:
            scale_factor = None  # nearest_idx: output 2x input is o >> 1, whatever scale_factor says
    if scale_factor is not None:
        scale = op.Constant(value_float=float(np.float32(1.0 / scale_factor)))  # compute_scales_value
    elif isinstance(in_size, int) and isinstance(out_size, int):
        scale = op.Constant(value_float=float(np.float32(in_size) / np.float32(out_size)))
    else:
        scale = op.Div(_float(in_size), _float(out_size))  # float32 division, as (float)in / out
    rows = op.Cast(op.Range(_scalar(0), _scalar(out_size), _scalar(1)), to=ir.DataType.FLOAT)
    if mode == "nearest-exact":
        rows = op.Add(rows, op.Constant(value_float=0.5))  # floorf((o + 0.5) * scale): o + 0.5 is exact
    source = op.Cast(op.Floor(op.Mul(rows, scale)), to=ir.DataType.INT64)
    return op.Min(source, op.Sub(_scalar(in_size), _scalar(1)))


# -- bilinear and bicubic: Resize -------------------------------------------------------

def _resize_scales(mode: str, antialias: bool, in_size, out_size, scales) -> bool:
    """Whether onnxruntime's Resize with `scales` gives the op's result for
    this scale_factor. Two cases it computes otherwise: the output size it
    derives, floor(in * scale) in float32, can fall one short of the op's
    (11 * float32(13/11) < 13); and an output of the input's own shape is a
    copy of the input there, where ATen's bicubic still shifts the grid by
    the scale."""
    for size_in, size_out, scale in zip(in_size, out_size, scales):
        if math.floor(np.float32(size_in) * np.float32(scale)) != size_out:
            return False
    same = all(a == b for a, b in zip(in_size, out_size))
    copies = mode == "bilinear" or antialias  # where the op copies an unchanged axis, see _axis_scales
    return not (same and not copies and any(s != 1.0 for s in scales))


def _axis_scales(mode: str, antialias: bool, in_size, out_size, scales) -> List[float]:
    # ATen copies an axis of unchanged size in bilinear (any scale) and in the
    # antialiased kernels: scale 1 says the same to Resize
    copies = mode == "bilinear" or antialias
    return [1.0 if copies and a == b else s for a, b, s in zip(in_size, out_size, scales)]


def _resize(grid: ir.Value, mode: str, align_corners: bool, antialias: bool, in_size, out_size, scales):
    # (B, H*W, C) -> (B, C, H, W): Resize works on the last two axes
    grid = op.Reshape(op.Transpose(grid, perm=[0, 2, 1]), _ints(0, 0, in_size[0], in_size[1]))
    attributes = {
        "mode": "linear" if mode == "bilinear" else "cubic",
        # ATen's half-pixel mapping clamps a negative linear source to 0, as
        # Resize's linear mode clamps it; "pytorch_half_pixel" would differ
        # (it maps a 1-wide output to 0, ATen to the centre)
        "coordinate_transformation_mode": "align_corners" if align_corners else "half_pixel",
        "cubic_coeff_a": -0.5 if antialias else -0.75,
        "antialias": int(antialias),
        "exclude_outside": int(antialias),
    }
    if scales is not None:
        factors = _axis_scales(mode, antialias, in_size, out_size, scales)
        out = op.Resize(grid, None, op.Constant(value_floats=[1.0, 1.0, *factors]), **attributes)
    else:
        sizes = op.Concat(op.Shape(grid, start=0, end=2), _ints(out_size[0], out_size[1]), axis=0)
        out = op.Resize(grid, None, None, sizes, **attributes)
    return op.Transpose(op.Reshape(out, _ints(0, 0, -1)), perm=[0, 2, 1])  # (B, h*w, C)


# -- fixed sizes: constant matrices ------------------------------------------------------

def _matrices(grid: ir.Value, mode: str, align_corners: bool, antialias: bool, in_size, out_size, scales,
              compute: ir.DataType, positions=None) -> ir.Value:
    """The resize as out = A_h X A_w^T, each A the op's own weights for one
    axis: the op applied to an identity table (its passes are separable, H
    then W), in the dtype the grid is computed in (float64 or float32, the
    op's opmath)."""
    weights = np.float64 if compute == ir.DataType.DOUBLE else np.float32
    channels = op.Shape(grid, start=2)
    for axis in (0, 1):
        matrix = _axis_matrix(mode, align_corners, antialias, in_size[axis], out_size[axis],
                              None if scales is None else scales[axis], weights,
                              None if positions is None else positions[axis])
        if matrix is None:
            continue
        if axis == 0:   # (B, H*W, C) as (B, H, W*C): A_h @ that
            grid = op.Reshape(grid, _ints(0, in_size[0], -1))
        else:           # (B, h*W, C) as (B*h, W, C): A_w @ that
            grid = op.Reshape(grid, op.Concat(_ints(-1, in_size[1]), channels, axis=0))
        grid = op.MatMul(op.Constant(value=ir.tensor(matrix)), grid)
    return op.Reshape(grid, op.Concat(_ints(-1, out_size[0] * out_size[1]), channels, axis=0))


def _axis_matrix(mode: str, align_corners: bool, antialias: bool, in_size: int, out_size: int,
                 scale_factor: Optional[float], dtype, positions=None) -> Optional[np.ndarray]:
    """(out, in) weights of one axis, from the op itself; None where the
    axis is the identity."""
    eye = torch.eye(in_size, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    factors = None if scale_factor is None else [scale_factor, 1.0]
    rows = _forward(eye.reshape(1, in_size, in_size), [out_size, 1], [in_size, 1], 0, mode,
                    align_corners if mode_info(mode).align_corners else None, antialias, factors, 0,
                    None if positions is None else [*positions, 0.0])  # the unit axis samples its one token
    matrix = rows[0].numpy()
    if out_size == in_size and np.array_equal(matrix, np.eye(in_size)):
        return None
    return matrix.astype(dtype)


# -- small helpers ------------------------------------------------------------------------

def _ints(*values: Size) -> ir.Value:
    """A 1-D int64 tensor of ints and traced scalars."""
    if all(isinstance(v, int) for v in values):
        return op.Constant(value_ints=list(values))
    parts = [op.Constant(value_ints=[v]) if isinstance(v, int) else op.Reshape(v, op.Constant(value_ints=[1]))
             for v in values]
    return parts[0] if len(parts) == 1 else op.Concat(*parts, axis=0)


def _scalar(value: Size) -> ir.Value:
    return op.Constant(value_int=value) if isinstance(value, int) else value


def _float(value: Size) -> ir.Value:
    return op.Constant(value_float=float(value)) if isinstance(value, int) else op.Cast(value, to=ir.DataType.FLOAT)


# -- making torch.onnx.export use it -------------------------------------------------------

def register() -> bool:
    """Add the translation to the table torch.onnx.export starts every export
    from, so that no custom_translation_table is needed. Returns False (and
    warns) where this torch keeps that table elsewhere: the list is private
    (torch.onnx._internal.exporter._torchlib._torchlib_registry._registry,
    read by ONNXRegistry.from_torchlib), so its presence and shape are checked
    rather than assumed. Registering twice adds one entry."""
    try:
        from torch.onnx._internal.exporter import _registration
        from torch.onnx._internal.exporter._torchlib import _torchlib_registry
        entries = _torchlib_registry._registry
        if not isinstance(entries, list):
            raise TypeError(f"its translation list is a {type(entries).__name__}")
        if any(getattr(e, "onnx_function", None) is interpolate_pos_embed_onnx for e in entries):
            return True
        entry = _registration.OnnxDecompMeta(onnx_function=interpolate_pos_embed_onnx, fx_target=_forward,
                                             signature=None, is_custom=True)
    except (ImportError, AttributeError, TypeError) as exc:
        warnings.warn(f"vitpe: cannot add its op to this torch's ONNX exporter ({exc}); pass "
                      f"custom_translation_table=vitpe_ext.onnx.translation_table() to torch.onnx.export",
                      RuntimeWarning, stacklevel=2)
        return False
    entries.append(entry)
    return True
