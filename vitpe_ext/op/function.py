"""The public function and the Python half of the op registration: fake
kernels (torch.compile, export) and autograd. The schemas and the CPU/CUDA
kernels are registered in C++ (csrc/shim.cpp), and so is every check of the
op's arguments: the fake kernels ask C++ (vitpe::check_call) rather than
repeat the rules."""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos3")

_forward = torch.ops.vitpe.interpolate_pos_embed.default
_backward = torch.ops.vitpe.interpolate_pos_embed_backward.default
_check_call = torch.ops.vitpe.check_call.default


# -- argument types --------------------------------------------------------------
# The schema takes plain ints, floats, str and bool. Python's duck typing would
# let True pass as 1, a dict as its keys and "12" as two scale factors, so each
# argument is checked for what it is; NumPy scalars and 0-d tensors are numbers.

def _is_numpy_bool(value) -> bool:
    kind = type(value)  # numpy.bool_ (named "bool" from NumPy 2 on); not an int, but truth-valued
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def _size(value, name: str):
    """One grid size: an int, SymInt, NumPy integer or 0-d integer tensor."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and not (value.dtype.is_floating_point or value.dtype.is_complex
                                     or value.dtype == torch.bool):
            return int(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return int(value)
    raise ValueError(f"{name} must be ints (height, width), got {value!r} of type {type(value).__name__}")


def _factor(value, name: str) -> float:
    """One scale factor: a real number (not a bool), NumPy scalar or 0-d tensor."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and not (value.dtype.is_complex or value.dtype == torch.bool):
            return float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return float(value)
    raise ValueError(f"{name} must be one or two floats (height, width), got {value!r} of type "
                     f"{type(value).__name__}")


def _pair(value, name: str, kind: str = "ints") -> list:
    """One number or a pair of them (list, tuple, torch.Size, 1-D tensor or
    array) -> a two-element list; anything else ValueError."""
    if kind == "ints":  # the common call, (h, w) or h as plain ints, without the checks below
        if type(value) is int:
            return [value, value]
        if type(value) in (tuple, list) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
            return [value[0], value[1]]
    one = _size if kind == "ints" else _factor
    if isinstance(value, (list, tuple)) or (getattr(value, "ndim", None) == 1
                                            and type(value).__name__ in ("Tensor", "Parameter", "ndarray")):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{name} must be one or two {kind} (height, width), got {len(items)} values: "
                             f"{value!r}")
        return [one(v, name) for v in items]
    if isinstance(value, (torch.Tensor, numbers.Number, torch.SymInt)) or _is_numpy_bool(value):
        v = one(value, name)
        return [v, v]
    raise ValueError(f"{name} must be one or two {kind} (height, width), got {value!r} "
                     f"of type {type(value).__name__}")


def _flag(value, name: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise ValueError(f"{name} must be True, False or None, got {value!r} of type {type(value).__name__}")


def _count(value, name: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_numpy_bool(value):
        return int(value)
    raise ValueError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")


def _check_table(pos_embed) -> None:
    if not isinstance(pos_embed, torch.Tensor):
        raise ValueError(f"interpolate_pos_embed: pos_embed must be a torch.Tensor, got "
                         f"{type(pos_embed).__name__}")
    if pos_embed.layout != torch.strided or pos_embed.is_nested or pos_embed.is_quantized:
        kind = ("nested" if pos_embed.is_nested else "quantized" if pos_embed.is_quantized
                else str(pos_embed.layout).replace("torch.", ""))
        raise ValueError(f"interpolate_pos_embed: pos_embed must be a dense strided tensor, got a {kind} "
                         f"tensor; convert it first (.to_dense(), .dequantize(), ...)")


def _op_args(new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor) -> Tuple:
    """The caller's arguments in the op's types, defaults filled in."""
    if mode is None:
        mode = "bicubic"
    elif not isinstance(mode, str):
        raise ValueError(f"mode must be a str, one of {list(MODES)}, got {mode!r} of type {type(mode).__name__}")
    return (
        _pair(new_size, "new_size"),
        None if old_size is None else _pair(old_size, "old_size"),
        _count(num_prefix_tokens, "num_prefix_tokens"),
        mode,
        _flag(align_corners, "align_corners"),
        bool(_flag(antialias, "antialias")),
        None if scale_factor is None else _pair(scale_factor, "scale_factor", "floats"),
    )


# -- the public function ------------------------------------------------------------

def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Union[int, List[int]],
    old_size: Optional[Union[int, List[int]]] = None,
    num_prefix_tokens: int = 1,
    mode: Optional[str] = None,
    align_corners: Optional[bool] = None,
    antialias: Optional[bool] = None,
    scale_factor: Optional[Union[float, List[float]]] = None,
    profile: Optional[str] = None,
) -> torch.Tensor:
    """Resize a ViT position-embedding table to a new patch grid.

    pos_embed: (B, P + Hin*Win, C) or (P + Hin*Win, C); the first P =
        num_prefix_tokens tokens (class, distillation, registers) are copied
        unchanged, the rest is a row-major Hin x Win grid.
    new_size: the new grid (Hout, Wout), or one int for a square grid.
    old_size: the old grid; None infers a square one.
    mode, align_corners, antialias, scale_factor: as F.interpolate on the grid
        (scale_factor as with recompute_scale_factor=False; it must give
        floor(old * scale) == new_size). mode also takes "lanczos3".
        Unset (None): mode "bicubic", antialias False, or the profile's.
    profile: reproduce one library's resize exactly: "torchvision", "timm",
        "hf", "mae", "dinov2", "dinov2-reg", "big_vision" (vitpe_ext.profiles).
        It sets mode/align_corners/antialias/coordinate mapping/compute dtype;
        an explicit argument contradicting it raises ValueError.

    Returns (B, P + Hout*Wout, C) (or 2-D if given 2-D), contiguous, same
    dtype and device; differentiable to any order.

    Bad arguments raise ValueError naming the argument (README, Errors).
    TorchScript: torch.jit.script compiles callers of this function; there
    it takes ints/lists for sizes and no profile (pass the settings).
    """
    if torch.jit.is_scripting():
        return _interpolate_scripted(pos_embed, new_size, old_size, num_prefix_tokens, mode, align_corners,
                                     antialias, scale_factor, profile)
    else:
        return _interpolate(pos_embed, new_size, old_size, num_prefix_tokens, mode, align_corners,
                            antialias, scale_factor, profile)


@torch.jit.unused
def _interpolate(pos_embed: torch.Tensor, new_size: Union[int, List[int]],
                 old_size: Optional[Union[int, List[int]]], num_prefix_tokens: int, mode: Optional[str],
                 align_corners: Optional[bool], antialias: Optional[bool],
                 scale_factor: Optional[Union[float, List[float]]], profile: Optional[str]) -> torch.Tensor:
    _check_table(pos_embed)
    if profile is not None:
        if not isinstance(profile, str):
            raise ValueError(f"profile must be a str, got {profile!r} of type {type(profile).__name__}")
        from . import profiles  # lazy: profiles calls back into this function
        resolved = profiles.resolve(profile, mode, _flag(align_corners, "align_corners"),
                                    _flag(antialias, "antialias"), scale_factor)
        squeeze = pos_embed.dim() == 2
        table = pos_embed.unsqueeze(0) if squeeze else pos_embed
        out = profiles.interpolate_with_profile(table, new_size, old_size, num_prefix_tokens, resolved)
        return out.squeeze(0) if squeeze else out
    args = _op_args(new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor)
    squeeze = pos_embed.dim() == 2
    if squeeze:
        pos_embed = pos_embed.unsqueeze(0)
    out = _forward(pos_embed, *args)
    return out.squeeze(0) if squeeze else out


def _interpolate_scripted(pos_embed: torch.Tensor, new_size: Union[int, List[int]],
                          old_size: Optional[Union[int, List[int]]], num_prefix_tokens: int,
                          mode: Optional[str], align_corners: Optional[bool], antialias: Optional[bool],
                          scale_factor: Optional[Union[float, List[float]]],
                          profile: Optional[str]) -> torch.Tensor:
    """The public function as TorchScript compiles it: the types are the
    annotations' (the compiler checks them), the op checks the rest, and
    autograd is the op's own registration."""
    if profile is not None:
        raise ValueError("interpolate_pos_embed: profile= is not available in TorchScript; pass mode, "
                         "align_corners and antialias (vitpe_ext.PROFILES lists each profile's)")
    squeeze = pos_embed.dim() == 2
    table = pos_embed.unsqueeze(0) if squeeze else pos_embed
    new: List[int] = [new_size, new_size] if isinstance(new_size, int) else new_size
    old: Optional[List[int]] = None
    if old_size is not None:
        old = [old_size, old_size] if isinstance(old_size, int) else old_size
    factors: Optional[List[float]] = None
    if scale_factor is not None:
        factors = [scale_factor, scale_factor] if isinstance(scale_factor, float) else scale_factor
    out = torch.ops.vitpe.interpolate_pos_embed(table, new, old, num_prefix_tokens,
                                                "bicubic" if mode is None else mode, align_corners,
                                                False if antialias is None else antialias, factors)
    return out.squeeze(0) if squeeze else out


# -- fake kernels: shapes, after the op's own checks ----------------------------

def _concrete(value):
    """A traced size as a plain int (its example value), or None if unknown."""
    if isinstance(value, torch.SymInt):
        node = value.node  # an unbacked size (data-dependent) has no example value
        return int(node.hint) if node.has_hint() else None
    return int(value)


def check_call(shape: Sequence[int], dtype: torch.dtype, device, new_size, old_size=None,
               num_prefix_tokens: int = 1, mode: str = "bicubic", align_corners: Optional[bool] = None,
               antialias: bool = False, scale_factor=None, input_tokens=None) -> None:
    """Raise exactly what the op would raise for a table of this shape, dtype
    and device, without the table: for a dry run, and for the fake kernels
    (sizes traced as symbols are checked at their example values; unbacked
    ones are left to the op at run time). With input_tokens: a call of the
    backward op, `shape` being grad_output's."""
    sizes = [_concrete(v) for v in shape]
    new = [_concrete(v) for v in new_size]
    old = None if old_size is None else [_concrete(v) for v in old_size]
    tokens = None if input_tokens is None else _concrete(input_tokens)
    if None in sizes or None in new or (old is not None and None in old) \
            or (input_tokens is not None and tokens is None):
        return
    # Straight to the C++ kernel: inside a fake kernel the tracer's modes
    # would intercept the call (and log each expected error as a failure).
    from torch.utils._python_dispatch import _disable_current_modes
    with _disable_current_modes():
        _check_call(sizes, dtype, torch.device(device), tokens, new, old, num_prefix_tokens, mode,
                    align_corners, antialias, None if scale_factor is None else list(scale_factor))


@torch.library.register_fake("vitpe::interpolate_pos_embed")
def _forward_fake(pos_embed, new_size, old_size=None, num_prefix_tokens=1, mode="bicubic",
                  align_corners=None, antialias=False, scale_factor=None):
    check_call(pos_embed.shape, pos_embed.dtype, pos_embed.device, new_size, old_size, num_prefix_tokens,
               mode, align_corners, antialias, scale_factor)
    batch, _, channels = pos_embed.shape
    return pos_embed.new_empty((batch, num_prefix_tokens + new_size[0] * new_size[1], channels))


@torch.library.register_fake("vitpe::interpolate_pos_embed_backward")
def _backward_fake(grad_output, input_tokens, new_size, old_size=None, num_prefix_tokens=1,
                   mode="bicubic", align_corners=None, antialias=False, scale_factor=None):
    check_call(grad_output.shape, grad_output.dtype, grad_output.device, new_size, old_size,
               num_prefix_tokens, mode, align_corners, antialias, scale_factor, input_tokens=input_tokens)
    batch, _, channels = grad_output.shape
    return grad_output.new_empty((batch, input_tokens, channels))


# -- autograd: the map is linear, so each op's derivative is the other op -------
# Registered as the ops' Autograd kernels, so torch.ops.vitpe.* and the public
# function take the same path. Not torch.library.register_autograd: its
# generic wrapper (setup_context, output wrapping) cost 40-45 us per
# forward+backward on this CPU, more than the kernels of a ViT-B table.

class _Resize(torch.autograd.Function):
    """interpolate_pos_embed with its derivative, the backward op."""

    @staticmethod
    def forward(ctx, pos_embed, *resize):
        ctx.input_tokens = pos_embed.shape[1]
        ctx.resize = resize  # new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor
        with torch._C._AutoDispatchBelowAutograd():
            return _forward(pos_embed, *resize)

    @staticmethod
    def backward(ctx, grad):
        return (_backward_autograd(grad, ctx.input_tokens, *ctx.resize),) + (None,) * len(ctx.resize)


class _ResizeAdjoint(torch.autograd.Function):
    """interpolate_pos_embed_backward with its derivative, the forward op."""

    @staticmethod
    def forward(ctx, grad_output, input_tokens, *resize):
        ctx.resize = resize
        with torch._C._AutoDispatchBelowAutograd():
            return _backward(grad_output, input_tokens, *resize)

    @staticmethod
    def backward(ctx, grad):
        return (_forward_autograd(grad, *ctx.resize), None) + (None,) * len(ctx.resize)


# The Autograd kernels. Called directly by the Functions' backward (a
# dispatcher round trip costs ~10 us): under create_graph they record the
# other op's Function (double backward), otherwise they run below autograd.
def _forward_autograd(pos_embed, *resize):
    if torch.is_grad_enabled() and pos_embed.requires_grad:
        return _Resize.apply(pos_embed, *resize)
    with torch._C._AutoDispatchBelowAutograd():
        return _forward(pos_embed, *resize)


def _backward_autograd(grad_output, input_tokens, *resize):
    if torch.is_grad_enabled() and grad_output.requires_grad:
        return _ResizeAdjoint.apply(grad_output, input_tokens, *resize)
    with torch._C._AutoDispatchBelowAutograd():
        return _backward(grad_output, input_tokens, *resize)


_library = torch.library.Library("vitpe", "IMPL")
_library.impl("interpolate_pos_embed", _forward_autograd, "Autograd")
_library.impl("interpolate_pos_embed_backward", _backward_autograd, "Autograd")
