"""The public function and the Python half of the op registration: fake
kernels (torch.compile, export) and autograd. The schemas and the CPU/CUDA
kernels are registered in C++ (csrc/shim.cpp)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos3")

_forward = torch.ops.vitpe.interpolate_pos_embed.default
_backward = torch.ops.vitpe.interpolate_pos_embed_backward.default

Size2 = Union[int, Sequence[int]]


def _pair(value, name, kind="ints"):
    """An int (float) or a pair of them -> a two-element list; else ValueError."""
    scalar = (int, torch.SymInt) if kind == "ints" else (int, float)
    if isinstance(value, scalar) and not isinstance(value, bool):
        return [value, value]
    try:
        pair = list(value)
    except TypeError:
        pair = None
    if pair is None or len(pair) != 2:
        raise ValueError(f"{name} must be one or two {kind} (height, width), got {value!r}")
    return pair


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    new_size: Size2,
    old_size: Optional[Size2] = None,
    num_prefix_tokens: int = 1,
    mode: Optional[str] = None,
    align_corners: Optional[bool] = None,
    antialias: Optional[bool] = None,
    scale_factor: Optional[Union[float, Sequence[float]]] = None,
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
    """
    squeeze = pos_embed.dim() == 2
    if squeeze:
        pos_embed = pos_embed.unsqueeze(0)
    if profile is not None:
        from . import profiles  # lazy: profiles calls back into this function
        resolved = profiles.resolve(profile, mode, align_corners, antialias, scale_factor)
        out = profiles.interpolate_with_profile(pos_embed, new_size, old_size, num_prefix_tokens, resolved)
        return out.squeeze(0) if squeeze else out
    mode = "bicubic" if mode is None else mode
    antialias = False if antialias is None else antialias
    if scale_factor is not None:
        scale_factor = [float(s) for s in _pair(scale_factor, "scale_factor", "floats")]
    args = (
        _pair(new_size, "new_size"),
        None if old_size is None else _pair(old_size, "old_size"),
        num_prefix_tokens,
        mode,
        align_corners,
        antialias,
        scale_factor,
    )
    if torch.compiler.is_compiling():
        out = _forward(pos_embed, *args)
    elif torch.is_grad_enabled() and pos_embed.requires_grad:
        out = _EagerResize.apply(pos_embed, *args)
    else:  # nothing to record: skip torch.library's Python autograd layer (~8 µs a call)
        with torch._C._AutoDispatchBelowAutograd():
            out = _forward(pos_embed, *args)
    return out.squeeze(0) if squeeze else out


class _EagerResize(torch.autograd.Function):
    """The same autograd as the op's register_autograd below, for eager calls
    that need gradients: a plain Function skips torch.library's generic Python
    autograd wrapper, which cost 85 µs (CPU) to 230 µs (GPU host) per
    forward+backward, more than the kernels. Compiled code uses the op's own
    registration (dynamo traces it through the fake kernel)."""

    @staticmethod
    def forward(ctx, pos_embed, *resize):
        ctx.input_tokens = pos_embed.shape[1]
        ctx.resize = resize
        with torch._C._AutoDispatchBelowAutograd():
            return _forward(pos_embed, *resize)

    @staticmethod
    def backward(ctx, grad):
        if torch.is_grad_enabled() and grad.requires_grad:
            # create_graph: through the backward op's own autograd (double backward)
            dinp = _backward(grad, ctx.input_tokens, *ctx.resize)
        else:
            with torch._C._AutoDispatchBelowAutograd():
                dinp = _backward(grad, ctx.input_tokens, *ctx.resize)
        return (dinp,) + (None,) * len(ctx.resize)


# -- fake kernels: shapes only -------------------------------------------------

@torch.library.register_fake("vitpe::interpolate_pos_embed")
def _forward_fake(pos_embed, new_size, old_size=None, num_prefix_tokens=1, mode="bicubic",
                  align_corners=None, antialias=False, scale_factor=None):
    torch._check(pos_embed.dim() == 3, lambda: "interpolate_pos_embed: pos_embed must be 3-D")
    batch, _, channels = pos_embed.shape
    return pos_embed.new_empty((batch, num_prefix_tokens + new_size[0] * new_size[1], channels))


@torch.library.register_fake("vitpe::interpolate_pos_embed_backward")
def _backward_fake(grad_output, input_tokens, new_size, old_size=None, num_prefix_tokens=1,
                   mode="bicubic", align_corners=None, antialias=False, scale_factor=None):
    torch._check(grad_output.dim() == 3, lambda: "interpolate_pos_embed_backward: grad_output must be 3-D")
    batch, _, channels = grad_output.shape
    return grad_output.new_empty((batch, input_tokens, channels))


# -- autograd: the map is linear, so each op's derivative is the other op -------

def _forward_setup(ctx, inputs, output):
    pos_embed, *resize = inputs
    ctx.input_tokens = pos_embed.shape[1]
    ctx.resize = resize  # new_size, old_size, num_prefix_tokens, mode, align_corners, antialias, scale_factor


def _forward_grad(ctx, grad):
    return (_backward(grad, ctx.input_tokens, *ctx.resize),) + (None,) * len(ctx.resize)


def _backward_setup(ctx, inputs, output):
    _, _, *resize = inputs
    ctx.resize = resize


def _backward_grad(ctx, grad):
    return (_forward(grad, *ctx.resize), None) + (None,) * len(ctx.resize)


torch.library.register_autograd("vitpe::interpolate_pos_embed", _forward_grad, setup_context=_forward_setup)
torch.library.register_autograd("vitpe::interpolate_pos_embed_backward", _backward_grad,
                                setup_context=_backward_setup)
