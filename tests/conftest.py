"""Shared helpers for the op tests: table layouts, scale factors and the
half-precision accuracy bound. Everything here builds inputs or checks
outputs; the expected values always come from vitpe_ext.op.reference."""
from __future__ import annotations

import math

import pytest
import torch

import vitpe_ext  # noqa: F401  (loads torch.ops.vitpe.*)
from vitpe_ext.op import MODES, mode_info
from vitpe_ext.op.reference import has_recipe, recipe_interpolate, torch_has_lanczos

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def flag_combos(mode):
    """Every (align_corners, antialias) the op accepts for `mode`."""
    info = mode_info(mode)
    corners = (None, False, True) if info.align_corners else (None, False)
    antialias = (False, True) if info.antialias != "never" else (False,)
    return [(ac, aa) for ac in corners for aa in antialias]


def skip_if_no_lanczos(mode):
    if not has_recipe(mode):
        pytest.skip("this torch has no F.interpolate(mode='lanczos') to compare lanczos3 with")


# -- inputs ---------------------------------------------------------------------

LAYOUTS = ("contiguous", "channel_slice", "token_slice", "transposed", "expanded_batch", "batch_major_last")


def make_table(batch, tokens, channels, dtype, layout="contiguous", generator=None):
    """A (batch, tokens, channels) table of N(0,1) values stored as `layout`:

    contiguous       plain row-major
    channel_slice    channels [3:3+C] of a wider tensor (token stride C+5)
    token_slice      tokens [2:2+L] of a longer table (batch stride != L*C)
    transposed       storage (B, C, L) seen as (B, L, C): channel stride L != 1
    expanded_batch   one table expanded over the batch (batch stride 0)
    batch_major_last storage (L, B, C) seen as (B, L, C)
    """
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    if layout == "contiguous":
        t = randn(batch, tokens, channels)
    elif layout == "channel_slice":
        t = randn(batch, tokens, channels + 5)[:, :, 3:3 + channels]
    elif layout == "token_slice":
        t = randn(batch, tokens + 3, channels)[:, 2:2 + tokens]
    elif layout == "transposed":
        t = randn(batch, channels, tokens).transpose(1, 2)
    elif layout == "expanded_batch":
        t = randn(1, tokens, channels).expand(batch, tokens, channels)
    elif layout == "batch_major_last":
        t = randn(tokens, batch, channels).transpose(0, 1)
    else:
        raise ValueError(layout)
    assert t.shape == (batch, tokens, channels)
    if layout != "contiguous" and batch > 1 and tokens > 1 and channels > 1:
        assert not t.is_contiguous(), layout
    return t


def exact_scale_factor(old, new):
    """new/old nudged up until floor(old * s) == new, as F.interpolate needs."""
    s = new / old
    while math.floor(old * s) < new:
        s = math.nextafter(s, math.inf)
    assert math.floor(old * s) == new
    return s


def dinov2_scale_factor(old, new):
    """DINOv2's factor: (new + 0.1) / old, so that floor(old * s) == new."""
    s = (new + 0.1) / old
    assert math.floor(old * s) == new
    return s


# -- the half-precision bound -----------------------------------------------------

_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23}
_MIN_NORMAL_EXP = {torch.float16: -14, torch.bfloat16: -126, torch.float32: -126}


def ulp(ref64, dtype):
    """Spacing of `dtype` numbers at each value of the float64 tensor ref64
    (the subnormal spacing near zero)."""
    mant, emin = _MANTISSA_BITS[dtype], _MIN_NORMAL_EXP[dtype]
    _, e = torch.frexp(ref64.abs())  # |v| = m * 2**e, m in [0.5, 1)
    exponent = torch.clamp(e.to(torch.float64) - 1, min=emin)
    return torch.exp2(exponent - mant)


def assert_within_half_ulp(ours, ref64, inputs64, what=""):
    """ours (fp16/bf16) may differ from the float64 reference by at most one
    rounding to its dtype: 0.5 ulp, plus a slack for the fp32 accumulation
    (a few fp32 ulps of the largest input) that can move a value sitting on a
    rounding midpoint to the other side."""
    assert ours.dtype in HALF_DTYPES
    ours64 = ours.to(torch.float64)
    finite = torch.isfinite(ref64)
    assert torch.equal(torch.isfinite(ours64), finite), f"{what}: non-finite pattern differs"
    scale = inputs64.abs().max().item() if inputs64.numel() else 0.0
    slack = 64 * 2.0 ** -24 * max(scale, 1.0)
    bound = 0.5 * ulp(ref64, ours.dtype) + slack
    err = (ours64 - ref64).abs()
    bad = finite & (err > bound)
    if bad.any():
        i = bad.nonzero()[0].tolist()
        ratio = (err / ulp(ref64, ours.dtype))[finite].max().item()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {ref64.numel()} elements exceed 0.5 ulp of {ours.dtype}; "
            f"first at {i}: ours={ours64[tuple(i)].item()!r} ref64={ref64[tuple(i)].item()!r} "
            f"(max error {ratio:.3f} ulp)")


@pytest.fixture
def num_threads():
    """Restores torch's intra-op thread count after a test changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def count_op_calls(monkeypatch, module):
    """Routes `module.interpolate_pos_embed` through a counter; returns the
    list of new sizes the op was called with."""
    calls = []
    real = module.interpolate_pos_embed

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "interpolate_pos_embed", counting)
    return calls


__all__ = [
    "MODES", "FLOAT_DTYPES", "HALF_DTYPES", "LAYOUTS", "flag_combos",
    "skip_if_no_lanczos", "make_table", "exact_scale_factor", "dinov2_scale_factor", "ulp",
    "assert_within_half_ulp", "recipe_interpolate", "has_recipe", "torch_has_lanczos", "count_op_calls",
]
