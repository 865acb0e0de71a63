"""The Python half of the op's registration: fake kernels (torch.compile,
export) and the one autograd path. The schemas and the CPU/CUDA kernels are
registered in C++ (csrc/shim.cpp), and so is every check of the op's
arguments: the fake kernels ask C++ (vitpe::check_call) rather than repeat
the rules."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import _C  # noqa: F401  (registers torch.ops.vitpe.* before the handles below)
from . import backends  # noqa: F401  (the CUDA kernels where torch has CUDA)
from .modes import DEFAULT_MODE

_forward = torch.ops.vitpe.interpolate_pos_embed.default
_backward = torch.ops.vitpe.interpolate_pos_embed_backward.default
_check_call = torch.ops.vitpe.check_call.default


# -- fake kernels: shapes, after the op's own checks ----------------------------

def _concrete(value):
    """A traced size as a plain int (its example value), or None if unknown."""
    if isinstance(value, torch.SymInt):
        node = value.node  # an unbacked size (data-dependent) has no example value
        return int(node.hint) if node.has_hint() else None
    return int(value)


def check_call(shape: Sequence[int], dtype: torch.dtype, device, new_size, old_size=None,
               num_prefix_tokens: int = 1, mode: str = DEFAULT_MODE, align_corners: Optional[bool] = None,
               antialias: bool = False, scale_factor=None, input_tokens=None, num_suffix_tokens: int = 0,
               sample_positions=None) -> None:
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
                    align_corners, antialias, None if scale_factor is None else list(scale_factor),
                    num_suffix_tokens, None if sample_positions is None else list(sample_positions))


def _grid_tokens(sizes):
    """The tokens of a grid of these sides (1, 2 or 3 of them)."""
    tokens = sizes[0]
    for side in sizes[1:]:
        tokens = tokens * side
    return tokens


@torch.library.register_fake("vitpe::interpolate_pos_embed")
def _forward_fake(pos_embed, new_size, old_size=None, num_prefix_tokens=1, mode=DEFAULT_MODE,
                  align_corners=None, antialias=False, scale_factor=None, num_suffix_tokens=0,
                  sample_positions=None):
    check_call(pos_embed.shape, pos_embed.dtype, pos_embed.device, new_size, old_size, num_prefix_tokens,
               mode, align_corners, antialias, scale_factor, num_suffix_tokens=num_suffix_tokens,
               sample_positions=sample_positions)
    batch, _, channels = pos_embed.shape
    tokens = num_prefix_tokens + _grid_tokens(new_size) + num_suffix_tokens
    return pos_embed.new_empty((batch, tokens, channels))


@torch.library.register_fake("vitpe::interpolate_pos_embed_backward")
def _backward_fake(grad_output, input_tokens, new_size, old_size=None, num_prefix_tokens=1,
                   mode=DEFAULT_MODE, align_corners=None, antialias=False, scale_factor=None,
                   num_suffix_tokens=0, sample_positions=None):
    check_call(grad_output.shape, grad_output.dtype, grad_output.device, new_size, old_size,
               num_prefix_tokens, mode, align_corners, antialias, scale_factor, input_tokens=input_tokens,
               num_suffix_tokens=num_suffix_tokens, sample_positions=sample_positions)
    batch, _, channels = grad_output.shape
    return grad_output.new_empty((batch, input_tokens, channels))


# -- autograd: the map is linear, so each op's derivative is the other op -------
# Registered as the ops' Autograd kernels, so torch.ops.vitpe.* and the public
# function take the same path. Python, because torch's stable C ABI has no
# autograd API; kept lean because every op call passes through it: not
# torch.library.register_autograd (its generic setup_context and output
# wrapping cost more than a ViT-B table's kernels), the resize arguments
# travel as one tuple, and the ops are called through their C++ handles
# (OpOverload._op), not the Python OpOverload.__call__. bench/host_overhead.py
# measures what is left against native ATen ops (docs/performance.md).

_below_autograd = torch._C._AutoDispatchBelowAutograd
_grad_enabled = torch._C.is_grad_enabled
_forward_op = _forward._op
_backward_op = _backward._op


class _Resize(torch.autograd.Function):
    """interpolate_pos_embed with its derivative, the backward op.
    resize = (new_size, old_size, num_prefix_tokens, mode, align_corners,
    antialias, scale_factor, num_suffix_tokens, sample_positions)."""

    @staticmethod
    def forward(ctx, pos_embed, resize):
        ctx.input_tokens = pos_embed.shape[1]
        ctx.resize = resize
        with _below_autograd():
            return _forward_op(pos_embed, *resize)

    @staticmethod
    def backward(ctx, grad):
        return _backward_autograd(grad, ctx.input_tokens, *ctx.resize), None


class _ResizeAdjoint(torch.autograd.Function):
    """interpolate_pos_embed_backward with its derivative, the forward op."""

    @staticmethod
    def forward(ctx, grad_output, input_tokens, resize):
        ctx.resize = resize
        with _below_autograd():
            return _backward_op(grad_output, input_tokens, *resize)

    @staticmethod
    def backward(ctx, grad):
        return _forward_autograd(grad, *ctx.resize), None, None


# The Autograd kernels. Called directly by the Functions' backward (a
# dispatcher round trip would redo the argument conversions): under create_graph they record the
# other op's Function (double backward), otherwise they run below autograd.
# requires_grad is tested first: it is False for most calls and cheaper to read.
def _forward_autograd(pos_embed, *resize):
    if pos_embed.requires_grad and _grad_enabled():
        return _Resize.apply(pos_embed, resize)
    with _below_autograd():
        return _forward_op(pos_embed, *resize)


def _backward_autograd(grad_output, input_tokens, *resize):
    if grad_output.requires_grad and _grad_enabled():
        return _ResizeAdjoint.apply(grad_output, input_tokens, resize)
    with _below_autograd():
        return _backward_op(grad_output, input_tokens, *resize)


_library = torch.library.Library("vitpe", "IMPL")
_library.impl("interpolate_pos_embed", _forward_autograd, "Autograd")
_library.impl("interpolate_pos_embed_backward", _backward_autograd, "Autograd")
