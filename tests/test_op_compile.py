"""torch.compile over the op: no graph break with fullgraph=True, one graph
for many sizes with dynamic=True, and the same values and gradients as eager.
Kept small: compiling is slow on 2 cores. aot_eager exercises dynamo, the
fake kernels and AOTAutograd; one case goes through inductor."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo

from conftest import make_table
from vitpe_ext import interpolate_pos_embed


class TwoResolutions(torch.nn.Module):
    """A ViT-ish module that needs its table at two grid sizes."""

    def __init__(self, gen):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(make_table(1, 1 + 6 * 6, 8, torch.float32, "contiguous", gen))

    def forward(self, tokens_a, tokens_b):  # (B, 1 + 9*9, 8), (B, 1 + 4*5, 8)
        pe_a = interpolate_pos_embed(self.pos_embed, (9, 9), mode="bicubic", antialias=False)
        pe_b = interpolate_pos_embed(self.pos_embed, (4, 5), mode="bilinear", antialias=True)
        return (tokens_a + pe_a).square().mean() + (tokens_b * pe_b).sum()


def eager_and_grads(module, *inputs):
    module.zero_grad()
    out = module(*inputs)
    out.backward()
    return out.detach(), module.pos_embed.grad.detach().clone()


class CountingBackend:
    """A torch.compile backend that counts the graphs it is handed and runs
    them through aot_eager (so the fake kernels and autograd are traced)."""

    def __init__(self):
        self.graphs = 0
        self.aot_eager = torch._dynamo.lookup_backend("aot_eager")

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.aot_eager(gm, example_inputs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_fullgraph_two_resolutions_matches_eager():
    gen = torch.Generator().manual_seed(0)
    module = TwoResolutions(gen)
    tokens_a = torch.randn(2, 1 + 81, 8, generator=gen)
    tokens_b = torch.randn(2, 1 + 20, 8, generator=gen)
    want_out, want_grad = eager_and_grads(module, tokens_a, tokens_b)

    backend = CountingBackend()
    compiled = torch.compile(module, fullgraph=True, backend=backend)  # a graph break raises
    got_out, got_grad = eager_and_grads(compiled, tokens_a, tokens_b)
    assert backend.graphs == 1
    torch.testing.assert_close(got_out, want_out)
    torch.testing.assert_close(got_grad, want_grad)


def test_dynamic_sizes_compile_once_and_match_eager():
    """new_size comes from the input's shape (a ViT given images of several
    sizes): with dynamic=True, one graph serves every size."""
    gen = torch.Generator().manual_seed(1)
    pos_embed = make_table(1, 1 + 7 * 7, 8, torch.float64, "contiguous", gen).requires_grad_()

    def add_pos_embed(tokens_2d, pe):  # tokens_2d: (B, H, W, C)
        batch, h, w, c = tokens_2d.shape
        resized = interpolate_pos_embed(pe, (h, w), mode="bicubic")
        return tokens_2d.reshape(batch, h * w, c) + resized[:, 1:]

    backend = CountingBackend()
    compiled = torch.compile(add_pos_embed, dynamic=True, fullgraph=True, backend=backend)
    # the first size is non-square and shares no value with the other dims:
    # dynamo's duck sizing would otherwise guard on h == w (or h == C) and
    # recompile on the first size that breaks that, whatever the op does
    for h, w in ((5, 7), (9, 9), (12, 6), (3, 11), (16, 16)):
        tokens = torch.randn(2, h, w, 8, generator=gen, dtype=torch.float64)
        grad = torch.randn(2, h * w, 8, generator=gen, dtype=torch.float64)
        got = compiled(tokens, pos_embed)
        (got_grad,) = torch.autograd.grad(got, pos_embed, grad)
        want = add_pos_embed(tokens, pos_embed)
        (want_grad,) = torch.autograd.grad(want, pos_embed, grad)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
    assert backend.graphs == 1, f"compiled {backend.graphs} graphs for 5 sizes"


def test_dynamic_int_arguments_do_not_recompile():
    """new_size passed as plain Python ints, varying per call."""
    gen = torch.Generator().manual_seed(2)
    pos_embed = make_table(2, 1 + 6 * 6, 4, torch.float32, "contiguous", gen)

    def resize(pe, h, w):
        return interpolate_pos_embed(pe, (h, w), mode="bilinear", antialias=True) * 2

    backend = CountingBackend()
    compiled = torch.compile(resize, dynamic=True, backend=backend)
    for h, w in ((3, 5), (7, 9), (10, 10), (6, 13)):
        torch.testing.assert_close(compiled(pos_embed, h, w), resize(pos_embed, h, w))
    assert backend.graphs == 1, f"compiled {backend.graphs} graphs for 4 sizes"


def test_inductor_forward_and_backward():
    gen = torch.Generator().manual_seed(3)
    pos_embed = make_table(1, 1 + 5 * 5, 8, torch.float32, "contiguous", gen).requires_grad_()
    tokens = torch.randn(3, 1 + 8 * 8, 8, generator=gen)

    def fn(pe, tok):
        return (tok + interpolate_pos_embed(pe, (8, 8), mode="lanczos3")).square().mean()

    compiled = torch.compile(fn, backend="inductor", fullgraph=True)
    got = compiled(pos_embed, tokens)
    (got_grad,) = torch.autograd.grad(got, pos_embed)
    want = fn(pos_embed, tokens)
    (want_grad,) = torch.autograd.grad(want, pos_embed)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


class ResizeTo(torch.nn.Module):
    def forward(self, table, tokens):  # the new grid comes from the tokens' shape
        return interpolate_pos_embed(table, (tokens.shape[1], tokens.shape[2]), mode="bicubic",
                                     antialias=True)


def test_export_dynamic_sizes_runs_at_other_sizes():
    gen = torch.Generator().manual_seed(3)
    table = make_table(1, 1 + 6 * 6, 8, torch.float32, "contiguous", gen)
    grid_h, grid_w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    program = torch.export.export(ResizeTo(), (table, torch.empty(1, 9, 7)),
                                  dynamic_shapes=(None, {1: grid_h, 2: grid_w}))
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.vitpe.interpolate_pos_embed.default in targets
    assert torch.ops.vitpe.check_call.default not in targets  # validation runs at trace time only
    for h, w in [(9, 7), (12, 4), (3, 30)]:
        got = program.module()(table, torch.empty(1, h, w))
        assert torch.equal(got, interpolate_pos_embed(table, (h, w), mode="bicubic", antialias=True))


class ScriptedResize(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 5 * 5, 8))

    def forward(self, h: int, w: int) -> torch.Tensor:
        a = interpolate_pos_embed(self.pos_embed, [h, w], mode="bilinear", align_corners=True)
        b = interpolate_pos_embed(self.pos_embed[0], h, 5, antialias=True, scale_factor=float(h) / 5.0 + 1e-6)
        return a.sum() + b.sum()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated, still used
def test_torchscript_of_a_module_calling_the_function():
    module = ScriptedResize()
    scripted = torch.jit.script(module)
    for h, w in [(7, 9), (3, 3)]:
        want = module(h, w)
        want.backward()
        want_grad, module.pos_embed.grad = module.pos_embed.grad.clone(), None
        got = scripted(h, w)
        got.backward()
        assert torch.equal(got, want) and torch.equal(module.pos_embed.grad, want_grad)
        module.pos_embed.grad = None
    with pytest.raises(Exception, match="profile= is not available in TorchScript"):
        torch.jit.script(_resize_with_profile)(torch.randn(1, 17, 4))


def _resize_with_profile(table: torch.Tensor) -> torch.Tensor:
    return interpolate_pos_embed(table, 6, profile="timm")
