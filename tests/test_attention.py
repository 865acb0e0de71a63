"""vitpe_ext.integrations.attention: class-token attention maps and rollout.

Oracles: models whose attention is known by construction (q and k zeroed:
uniform attention, so the maps and the rollout have closed forms; keys built
so the class token attends to one chosen patch, which also pins the map's
row/column orientation on a non-square grid), the rollout against a product
written out by hand, and the model left exactly as it was."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torchvision.models import VisionTransformer

from vitpe_ext.integrations.attention import (attention_rollout, class_token_attention, record_attention,
                                              token_layout)
from vitpe_ext.integrations.torchvision import make_dynamic

E = 16  # model width of the toys


def tv_vit(image=32, patch=8, layers=2, heads=2, seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(image_size=image, patch_size=patch, num_layers=layers, num_heads=heads,
                             hidden_dim=E, mlp_dim=32, num_classes=5).eval()


def timm_vit(img_size=(32, 32), depth=2, heads=2, reg_tokens=0, seed=0, **kw):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=8,
                             embed_dim=E, depth=depth, num_heads=heads, reg_tokens=reg_tokens, num_classes=3,
                             **kw).eval()


def images(h, w, batch=2, seed=1):
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def zero_qk_torchvision(model):
    with torch.no_grad():
        for layer in model.encoder.layers:
            mha = layer.self_attention
            mha.in_proj_weight[:2 * E] = 0
            mha.in_proj_bias[:2 * E] = 0


def zero_qk_timm(model):
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[:2 * E] = 0
            block.attn.qkv.bias[:2 * E] = 0


def uniform_expectation(layers, tokens, grid):
    """A' = (U + I) / 2 with U = 11^T / N idempotent, so A'^L = I / 2^L + (1 - 2^-L) U:
    the class row at a grid token is (1 - 2^-L) / N."""
    last = torch.full(grid, 1.0 / tokens)
    rollout = torch.full(grid, (1 - 0.5 ** layers) / tokens)
    return last, rollout


# -- known attention ----------------------------------------------------------------

@pytest.mark.parametrize("layers", [1, 3])
def test_zeroed_queries_and_keys_give_uniform_attention_torchvision(layers):
    model = tv_vit(layers=layers)
    zero_qk_torchvision(model)
    maps = class_token_attention(model, images(32, 32))
    last, rollout = uniform_expectation(layers, 17, (4, 4))
    assert maps.grid == (4, 4) and maps.num_prefix_tokens == 1 and maps.layers == layers
    assert maps.last.shape == (2, 4, 4) and maps.last_heads.shape == (2, 2, 4, 4)
    torch.testing.assert_close(maps.last, last.expand(2, 4, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(maps.rollout, rollout.expand(2, 4, 4), rtol=0, atol=1e-6)


def test_zeroed_queries_and_keys_with_registers_timm_non_square():
    model = timm_vit(img_size=(24, 40), depth=3, reg_tokens=2)  # grid 3x5, prefix: class + 2 registers
    zero_qk_timm(model)
    maps = class_token_attention(model, images(24, 40))
    last, rollout = uniform_expectation(3, 3 + 15, (3, 5))
    assert maps.grid == (3, 5) and maps.num_prefix_tokens == 3
    torch.testing.assert_close(maps.last, last.expand(2, 3, 5), rtol=0, atol=1e-6)
    torch.testing.assert_close(maps.rollout, rollout.expand(2, 3, 5), rtol=0, atol=1e-6)
    # what the grid does not get went to the 3 prefix tokens
    torch.testing.assert_close(maps.last.sum(dim=(1, 2)), torch.full((2,), 15 / 18), rtol=0, atol=1e-6)


def _spike(table: torch.Tensor, token: int) -> None:
    """Zero table except token: a large zero-mean vector that survives the pre-attention LayerNorm."""
    table.zero_()
    table[0, token, 0], table[0, token, 1] = 100.0, -100.0


def test_class_token_attends_to_one_patch_timm_non_square():
    """Only patch (2, 3) of a 3x5 grid has a non-zero input (through its
    position embedding); keys map it onto the query every token shares, so the
    class token looks at that patch alone: the map is one-hot there."""
    model = timm_vit(img_size=(24, 40), depth=1, heads=2, reg_tokens=1)
    row, col = 2, 3
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.cls_token.zero_()
        model.reg_token.zero_()
        _spike(model.pos_embed, 2 + row * 5 + col)
        qkv = model.blocks[0].attn.qkv
        qkv.weight[:E] = 0
        qkv.bias[:E] = 1.0                        # q = 1 for every token
        qkv.weight[E:2 * E] = 0
        qkv.weight[E:2 * E, 0] = 20.0             # k = 20 * (normalised spike) along 1
        qkv.bias[E:2 * E] = 0
    maps = class_token_attention(model, images(24, 40))
    expected = torch.zeros(2, 3, 5)
    expected[:, row, col] = 1.0
    torch.testing.assert_close(maps.last, expected, rtol=0, atol=1e-4)
    assert maps.last_heads[:, :, row, col].min() > 0.9999


def test_class_token_attends_to_one_patch_torchvision():
    model = tv_vit(layers=1)
    row, col = 1, 3
    with torch.no_grad():
        model.conv_proj.weight.zero_()
        model.conv_proj.bias.zero_()
        model.class_token.zero_()
        _spike(model.encoder.pos_embedding, 1 + row * 4 + col)
        mha = model.encoder.layers[0].self_attention
        mha.in_proj_weight[:2 * E] = 0
        mha.in_proj_bias[:E] = 1.0
        mha.in_proj_bias[E:2 * E] = 0
        mha.in_proj_weight[E:2 * E, 0] = 20.0
    maps = class_token_attention(model, images(32, 32))
    assert maps.last[0].argmax() == row * 4 + col
    assert float(maps.last[:, row, col].min()) > 0.9999


# -- rollout ----------------------------------------------------------------------

def test_rollout_matches_a_hand_computed_product():
    # one head each, N = 3; A' = (A + I) / 2 because each row of A sums to 1
    a1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    a2 = torch.tensor([[0.0, 0.0, 1.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    p1 = [[0.75, 0.25, 0.0], [0.0, 1.0, 0.0], [0.1, 0.15, 0.75]]
    p2 = [[0.5, 0.0, 0.5], [0.125, 0.625, 0.25], [0.5, 0.0, 0.5]]
    expected = [[sum(p2[i][k] * p1[k][j] for k in range(3)) for j in range(3)] for i in range(3)]  # p2 @ p1
    got = attention_rollout([a1[None, None], a2[None, None]])
    torch.testing.assert_close(got[0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert expected[0] == pytest.approx([0.425, 0.2, 0.375])


def test_rollout_averages_heads_and_normalises_rows():
    g = torch.Generator().manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g), dim=-1) for _ in range(3)]
    rollout = attention_rollout(layers)
    expected = torch.eye(5, dtype=torch.float64).expand(2, 5, 5)
    for layer in layers:
        mean = layer.double().mean(dim=1)
        expected = ((mean + torch.eye(5, dtype=torch.float64)) / 2) @ expected
    torch.testing.assert_close(rollout, expected)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 5, dtype=torch.float64))


def test_map_rollout_is_the_class_row_of_the_full_rollout():
    model = tv_vit(layers=3)
    x = images(32, 32)
    with torch.no_grad(), record_attention(model) as layers:
        model(x)
    full = attention_rollout(layers)
    maps = class_token_attention(model, x)
    torch.testing.assert_close(maps.rollout, full[:, 0, 1:].float().reshape(2, 4, 4), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps.last, layers[-1][:, :, 0, 1:].mean(dim=1).reshape(2, 4, 4))


def test_rollout_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        attention_rollout([])
    with pytest.raises(ValueError, match="disagree"):
        attention_rollout([torch.ones(1, 1, 3, 3) / 3, torch.ones(1, 1, 4, 4) / 4])
    with pytest.raises(ValueError, match=r"\(B, heads, N, N\)"):
        attention_rollout([torch.ones(1, 3, 3) / 3])


# -- the model is left as it was ------------------------------------------------------

def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", ["torchvision", "timm"])
def test_model_state_is_unchanged(kind):
    model = tv_vit() if kind == "torchvision" else timm_vit()
    x = images(32, 32)
    if kind == "timm":
        for block in model.blocks:
            block.attn.fused_attn = True  # whatever this machine's default, the fused path must come back
    model.train()
    model.encoder.layers[1].eval() if kind == "torchvision" else model.blocks[1].eval()  # mixed flags
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_count(model)
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    model.encoder.layers[1].eval() if kind == "torchvision" else model.blocks[1].eval()

    maps = class_token_attention(model, x)
    # it ran in eval mode (timm's unfused path rounds differently from the fused one)
    torch.testing.assert_close(maps.output, before, rtol=1e-5, atol=1e-6)
    assert [m.training for m in model.modules()] == flags
    assert _hook_count(model) == hooks
    if kind == "timm":
        assert all(block.attn.fused_attn is True for block in model.blocks)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_record_attention_restores_after_an_exception():
    model = timm_vit()
    for block in model.blocks:
        block.attn.fused_attn = True
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention(model):
            assert all(block.attn.fused_attn is False for block in model.blocks)
            raise RuntimeError("boom")
    assert all(block.attn.fused_attn is True for block in model.blocks)
    assert _hook_count(model) == 0


def test_multihead_attention_callers_get_what_they_asked_for():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        plain_avg = mha(x, x, x)
        plain_heads = mha(x, x, x, need_weights=True, average_attn_weights=False)
        with record_attention(mha) as layers:
            none = mha(x, x, x, need_weights=False)
            avg = mha(x, x, x)
            heads = mha(x, x, x, None, True, None, False)  # flags by position
    assert none[1] is None
    torch.testing.assert_close(avg[1], plain_avg[1])
    torch.testing.assert_close(heads[1], plain_heads[1])
    assert len(layers) == 3 and all(layer.shape == (2, 2, 5, 5) for layer in layers)
    torch.testing.assert_close(layers[0], plain_heads[1])


def test_record_attention_keeps_the_graph():
    model = tv_vit(layers=1)
    x = images(32, 32, batch=1)
    with record_attention(model) as layers:
        model(x)
    layers[0][0, :, 0, 1:].sum().backward()
    assert model.encoder.layers[0].self_attention.in_proj_weight.grad.abs().sum() > 0


# -- layouts --------------------------------------------------------------------------

def test_dynamic_torchvision_non_square_grid():
    model = make_dynamic(tv_vit(), profile=None, mode="bicubic")
    zero_qk_torchvision(model)
    maps = class_token_attention(model, images(24, 48))
    assert maps.grid == (3, 6)
    torch.testing.assert_close(maps.last, torch.full((2, 3, 6), 1 / 19), rtol=0, atol=1e-6)


def test_padded_timm_grid_rounds_up():
    model = timm_vit(img_size=32, dynamic_img_size=True, dynamic_img_pad=True)
    assert token_layout(model, (30, 41)) == (1, [(3, 5), (4, 6)])
    maps = class_token_attention(model, images(30, 41))
    assert maps.grid == (4, 6)


def test_explicit_layout_and_errors():
    model = tv_vit()
    with pytest.raises(ValueError, match="17 tokens, but 1 prefix token.*3x5"):
        class_token_attention(model, images(32, 32), grid=(3, 5), num_prefix_tokens=1)
    maps = class_token_attention(model, images(32, 32), grid=(2, 8), num_prefix_tokens=1)
    assert maps.last.shape == (2, 2, 8)
    with pytest.raises(ValueError, match="no class token"):
        class_token_attention(timm_vit(class_token=False, global_pool="avg"), images(32, 32))
    with pytest.raises(ValueError, match="no attention layer"):
        with record_attention(nn.Linear(3, 3)):
            pass
    with pytest.raises(ValueError, match="token layout of Sequential"):
        class_token_attention(nn.Sequential(nn.MultiheadAttention(8, 2)), images(32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        class_token_attention(model, torch.randn(3, 32, 32))
