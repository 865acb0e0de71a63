"""DynamicPosEmbed / PosEmbedResizer: autograd when training, a cache when not,
and the cache never serving a table made from old weights."""
from __future__ import annotations

import pytest
import torch

import vitpe_ext
import vitpe_ext.integrations.dynamic as dynamic
from vitpe_ext import DynamicPosEmbed

from conftest import count_op_calls


@pytest.fixture
def op_calls(monkeypatch):
    """Count the resizes that reach the op."""
    return count_op_calls(monkeypatch, dynamic)


def make(cache=True, **kwargs):
    torch.manual_seed(0)
    return DynamicPosEmbed(torch.randn(1, 1 + 8 * 8, 16), (8, 8), **kwargs, cache=cache)


def test_values_are_the_ops():
    pe = make(profile="timm")
    with torch.no_grad():
        out = pe((12, 10))
    assert torch.equal(out, vitpe_ext.interpolate_pos_embed(pe.pos_embed.detach(), (12, 10), (8, 8),
                                                            profile="timm"))
    assert pe((8, 8)) is pe.pos_embed and pe() is pe.pos_embed


def test_cache_hit_skips_the_op(op_calls):
    pe = make()
    with torch.no_grad():
        a = pe((12, 12))
        b = pe((12, 12))
        c = pe((6, 10))
        d = pe((12, 12))
    assert len(op_calls) == 2 and a is b is d and c.shape == (1, 61, 16)
    with torch.inference_mode():
        pe((12, 12))  # inference mode: the parameter is a normal tensor, so the cache serves it
        fresh = pe((5, 5))  # but keeps nothing made here: an inference tensor breaks autograd later
    assert len(op_calls) == 3 and fresh.is_inference()
    with torch.no_grad():
        assert not pe((5, 5)).is_inference()
    assert len(op_calls) == 4


def test_no_cache_while_training(op_calls):
    pe = make()
    a, b = pe((12, 12)), pe((12, 12))
    assert len(op_calls) == 2 and a.grad_fn is not None and a is not b
    frozen = make().requires_grad_(False)
    frozen((12, 12)), frozen((12, 12))  # nothing to differentiate: cached even with grad mode on
    assert len(op_calls) == 3


def test_cache_off(op_calls):
    pe = make(cache=False)
    with torch.no_grad():
        pe((12, 12)), pe((12, 12))
    assert len(op_calls) == 2


def test_training_step_at_two_resolutions_updates_the_one_parameter():
    pe = make()
    opt = torch.optim.AdamW(pe.parameters(), lr=1e-2)
    before = pe.pos_embed.detach().clone()
    target = {g: torch.randn(1, 1 + g[0] * g[1], 16) for g in ((12, 12), (6, 10))}
    for grid in target:
        opt.zero_grad()
        loss = (pe(grid) - target[grid]).square().mean()
        loss.backward()
        assert pe.pos_embed.grad.abs().sum() > 0
        opt.step()
    assert list(dict(pe.named_parameters())) == ["pos_embed"]
    assert not torch.equal(pe.pos_embed.detach(), before)


def updates():
    """Ways a parameter changes; each must drop the cache."""
    def sgd_step(pe):
        pe.pos_embed.grad = torch.ones_like(pe.pos_embed)
        torch.optim.SGD(pe.parameters(), lr=0.5).step()

    def sgd_foreach_step(pe):
        pe.pos_embed.grad = torch.ones_like(pe.pos_embed)
        torch.optim.SGD(pe.parameters(), lr=0.5, foreach=True).step()

    def in_place(pe):
        with torch.no_grad():
            pe.pos_embed[0, 5] += 1.0

    def load(pe):
        pe.load_state_dict({"pos_embed": torch.randn_like(pe.pos_embed)})

    def load_assign(pe):
        pe.load_state_dict({"pos_embed": torch.randn_like(pe.pos_embed)}, assign=True)

    def to_double(pe):
        pe.double()

    return [sgd_step, sgd_foreach_step, in_place, load, load_assign, to_double]


@pytest.mark.parametrize("update", updates(), ids=lambda f: f.__name__)
def test_cache_is_invalidated(update, op_calls):
    pe = make()
    with torch.no_grad():
        stale = pe((12, 12)).clone()
    update(pe)
    with torch.no_grad():
        fresh = pe((12, 12))
    assert len(op_calls) == 2
    expected = vitpe_ext.interpolate_pos_embed(pe.pos_embed.detach(), (12, 12), (8, 8))
    assert torch.equal(fresh, expected) and not torch.equal(fresh.to(stale.dtype), stale)


def test_data_writes_need_clear_cache(op_calls):
    # .data has its own version counter: documented, and clear_cache() is the way out
    pe = make()
    with torch.no_grad():
        pe((12, 12))
        pe.pos_embed.data.add_(1.0)
        pe.clear_cache()
        fresh = pe((12, 12))
    assert len(op_calls) == 2
    assert torch.equal(fresh, vitpe_ext.interpolate_pos_embed(pe.pos_embed.detach(), (12, 12), (8, 8)))


def test_lru_limit(op_calls):
    pe = make(max_entries=2)
    with torch.no_grad():
        pe(9), pe(10), pe(11), pe(10), pe(9)
    assert [tuple(c) for c in op_calls] == [(9, 9), (10, 10), (11, 11), (9, 9)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="needs 65"):
        DynamicPosEmbed(torch.randn(1, 60, 8), (8, 8))
    with pytest.raises(ValueError, match="unknown profile"):
        DynamicPosEmbed(torch.randn(1, 65, 8), (8, 8), profile="nope")
    with pytest.raises(ValueError, match="fixes antialias"):
        DynamicPosEmbed(torch.randn(1, 65, 8), (8, 8), profile="hf", antialias=True)
    assert "grid_size=(8, 8)" in repr(make(profile="timm"))
