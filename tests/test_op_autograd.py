"""Autograd of the op: gradcheck / gradgradcheck in float64, gradients equal to
the F.interpolate recipe's, torch.library.opcheck on both registered ops, and
a training step through an nn.Parameter."""
from __future__ import annotations

import pytest
import torch

from conftest import (FLOAT_DTYPES, HALF_DTYPES, MODES, assert_within_half_ulp, dinov2_scale_factor,
                      flag_combos, make_table, recipe_interpolate, skip_if_no_lanczos)
from vitpe_ext import interpolate_pos_embed

forward_op = torch.ops.vitpe.interpolate_pos_embed.default
backward_op = torch.ops.vitpe.interpolate_pos_embed_backward.default

# (mode, align_corners, antialias, scale_factor kind): each mode plainly, with a
# DINOv2 scale factor, and every flag it accepts.
VARIANTS = []
for _mode in MODES:
    for _ac, _aa in flag_combos(_mode):
        if _ac is not False:  # False is None
            VARIANTS.append((_mode, _ac, _aa, None))
    VARIANTS.append((_mode, None, False, "dinov2"))
VARIANTS += [("bicubic", True, False, "dinov2"), ("bilinear", None, True, "dinov2")]
VARIANT_IDS = [f"{m}-ac{ac}-aa{int(aa)}-sf{k}" for m, ac, aa, k in VARIANTS]

# (old, new): height up and width down in one call, so both adjoint
# directions (scatter and gather) are exercised; a square down-scale; and an
# unchanged size, where a scale_factor != 1 still moves the samples.
SMALL_GRIDS = [((3, 4), (5, 2)), ((4, 4), (3, 3)), ((3, 3), (3, 3))]


def resize_args(mode, ac, aa, kind, old, new, prefix=1):
    sf = None if kind is None else [dinov2_scale_factor(o, n) for o, n in zip(old, new)]
    return dict(new_size=new, old_size=old, num_prefix_tokens=prefix, mode=mode, align_corners=ac,
                antialias=aa, scale_factor=sf)


@pytest.mark.parametrize("mode,align_corners,antialias,scale_kind", VARIANTS, ids=VARIANT_IDS)
def test_gradcheck_and_gradgradcheck(mode, align_corners, antialias, scale_kind):
    gen = torch.Generator().manual_seed(0)
    for old, new in SMALL_GRIDS:
        kw = resize_args(mode, align_corners, antialias, scale_kind, old, new)
        x = make_table(2, 1 + old[0] * old[1], 2, torch.float64, "contiguous", gen).requires_grad_()

        def fn(t):
            return interpolate_pos_embed(t, **kw)

        assert torch.autograd.gradcheck(fn, (x,)), f"{old}->{new}"
        assert torch.autograd.gradgradcheck(fn, (x,)), f"{old}->{new}"


def recipe_grad(x, grad_out, compute_dtype=None, **kw):
    """x.grad of the recipe, by ATen's autograd."""
    leaf = x.detach().to(compute_dtype or x.dtype).requires_grad_()
    recipe_interpolate(leaf, **kw).backward(grad_out.to(leaf.dtype))
    return leaf.grad


def recipe_adjoint(grad_out, tokens, absolute=False, **kw):
    """The gradient of the recipe's *forward* map, in float64: the map is
    linear and the same for every channel, so build its matrix J from the
    recipe applied to basis vectors and return J^T grad_out (|J|^T |grad_out|
    with absolute=True, the magnitude the accumulation sees)."""
    prefix = kw["num_prefix_tokens"]
    old, new = kw["old_size"], kw["new_size"]
    grid = tokens - prefix
    basis = torch.eye(grid, dtype=torch.float64).unsqueeze(-1)  # (grid, grid, 1): table k = e_k
    J = recipe_interpolate(basis, **{**kw, "num_prefix_tokens": 0})[:, :, 0].T  # (new grid, old grid)
    assert J.shape == (new[0] * new[1], old[0] * old[1])
    g = grad_out.to(torch.float64)
    if absolute:
        J, g = J.abs(), g.abs()
    return torch.cat([g[:, :prefix], torch.einsum("oi,boc->bic", J, g[:, prefix:])], dim=1)


def expected_grad(x, grad_out, **kw):
    """The recipe's gradient (float64). ATen's autograd is used as such, except
    where ATen's own backward is not the adjoint of its forward: with a
    scale_factor != 1 at an unchanged grid size, upsample_bicubic2d_backward
    (and the antialiased backwards) take a same-size copy shortcut that their
    forwards do not (or the other way round). There the gradient of the
    recipe's forward is the right target, and that is what the op must give.
    Returns (gradient, whether ATen's autograd agreed with it)."""
    adjoint = recipe_adjoint(grad_out, x.shape[1], **kw)
    aten = recipe_grad(x, grad_out.to(torch.float64), torch.float64, **kw)
    if torch.allclose(aten, adjoint, rtol=1e-10, atol=1e-12):
        return aten, True
    assert kw["new_size"] == kw["old_size"] and kw["scale_factor"] is not None, (
        "ATen's backward disagrees with its forward outside the known same-size case: "
        f"{kw}")
    return adjoint, False


GRAD_GRIDS = [((7, 7), (12, 12)), ((12, 12), (5, 5)), ((6, 6), (6, 6)), ((1, 1), (3, 5)), ((5, 4), (1, 1)),
              ((4, 6), (9, 5))]


@pytest.mark.parametrize("mode,align_corners,antialias,scale_kind", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d)[6:])
def test_gradients_match_recipe(dtype, mode, align_corners, antialias, scale_kind):
    """x.grad through the op equals x.grad through the recipe (fp32/fp64); for
    fp16/bf16 it is within one rounding of the float64 recipe's gradient."""
    skip_if_no_lanczos(mode)
    gen = torch.Generator().manual_seed(1)
    for i, (old, new) in enumerate(GRAD_GRIDS):
        prefix = (0, 1, 5)[i % 3]
        kw = resize_args(mode, align_corners, antialias, scale_kind, old, new, prefix)
        layout = ("contiguous", "transposed", "channel_slice")[i % 3]
        x = make_table(2, prefix + old[0] * old[1], 6, dtype, layout, gen).requires_grad_()
        grad_out = make_table(2, prefix + new[0] * new[1], 6, dtype, "contiguous", gen)
        out = interpolate_pos_embed(x, **kw)
        out.backward(grad_out)
        assert x.grad.dtype == dtype and x.grad.shape == x.shape
        # the prefix's gradient is the prefix of grad_out, untouched
        assert torch.equal(x.grad[:, :prefix], grad_out[:, :prefix])
        what = f"{old}->{new} P={prefix} {layout}"
        ref64, aten_is_consistent = expected_grad(x, grad_out, **kw)
        if dtype in HALF_DTYPES:
            magnitude = recipe_adjoint(grad_out, x.shape[1], absolute=True, **kw)
            assert_within_half_ulp(x.grad, ref64, magnitude, what)
        else:
            tol = {} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
            torch.testing.assert_close(x.grad, ref64.to(dtype), **tol, msg=lambda m: f"{what}: {m}")
            if dtype == torch.float32 and aten_is_consistent:
                # and ATen's own float32 gradient, within float32 rounding
                torch.testing.assert_close(x.grad, recipe_grad(x, grad_out, **kw), msg=lambda m: f"{what}: {m}")


OPCHECK_CASES = [
    ("bicubic", None, False, None, (3, 4), (5, 2)),
    ("bilinear", True, False, None, (4, 4), (6, 6)),
    ("bilinear", None, True, "dinov2", (6, 5), (3, 7)),
    ("nearest", None, False, None, (3, 3), (5, 4)),
    ("nearest-exact", None, False, "dinov2", (5, 5), (3, 3)),
    ("area", None, False, None, (6, 4), (4, 3)),
    ("lanczos3", None, True, None, (5, 5), (3, 8)),
]


@pytest.mark.parametrize("requires_grad", (True, False))
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=[f"{c[0]}-ac{c[1]}-aa{int(c[2])}-sf{c[3]}" for c in OPCHECK_CASES])
def test_opcheck_both_ops(case, requires_grad):
    """torch.library.opcheck with its default test_utils (schema, autograd
    registration, fake tensor, AOT dispatch with dynamic shapes)."""
    mode, ac, aa, kind, old, new = case
    kw = resize_args(mode, ac, aa, kind, old, new, prefix=1)
    resize = [list(new), list(old), 1, mode, ac, aa, kw["scale_factor"]]
    gen = torch.Generator().manual_seed(2)
    x = make_table(2, 1 + old[0] * old[1], 3, torch.float64, "contiguous", gen).requires_grad_(requires_grad)
    grad = make_table(2, 1 + new[0] * new[1], 3, torch.float64, "contiguous", gen)
    grad.requires_grad_(requires_grad)
    torch.library.opcheck(forward_op, (x, *resize))
    torch.library.opcheck(backward_op, (grad, x.shape[1], *resize))
    # an inferred square grid (old_size=None) through the same checks
    if old[0] == old[1]:
        torch.library.opcheck(forward_op, (x, list(new), None, *resize[2:]))


def test_training_step_updates_parameter():
    """Gradients reach an nn.Parameter through the public function, and an
    optimizer step moves it by -lr * grad with its own param group's lr."""
    gen = torch.Generator().manual_seed(3)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = torch.nn.Parameter(make_table(1, 1 + 4 * 4, 8, torch.float32, "contiguous", gen))
            self.head = torch.nn.Linear(8, 1)

        def forward(self, tokens):  # tokens: (B, 1 + 6*6, 8)
            pe = interpolate_pos_embed(self.pos_embed, (6, 6), mode="bicubic", antialias=True)
            return self.head(tokens + pe).mean()

    model = Model()
    opt = torch.optim.SGD([{"params": [model.pos_embed], "lr": 0.5},
                           {"params": model.head.parameters(), "lr": 0.0}])
    tokens = torch.randn(3, 1 + 6 * 6, 8, generator=gen)
    before = model.pos_embed.detach().clone()
    head_before = model.head.weight.detach().clone()
    model(tokens).backward()
    grad = model.pos_embed.grad.detach().clone()
    assert grad.abs().sum() > 0

    # the same gradient through the recipe
    leaf = before.clone().requires_grad_()
    pe = recipe_interpolate(leaf, (6, 6), None, 1, "bicubic", None, True)
    model.head(tokens + pe).mean().backward()
    torch.testing.assert_close(grad, leaf.grad)

    opt.step()
    torch.testing.assert_close(model.pos_embed.detach(), before - 0.5 * grad)
    assert torch.equal(model.head.weight.detach(), head_before), "lr=0 group moved"
