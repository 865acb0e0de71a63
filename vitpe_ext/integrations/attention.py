"""Where a ViT's class token looks: attention maps on the token grid.

After resizing the position table, a model's attention is the first thing
to check (the article's §6): a good resize keeps the class token looking
at the object, a poor one smears its attention or pins it to the grid.

    maps = class_token_attention(model, images)      # torchvision or timm ViT
    maps.last      # (B, H, W): last layer, class token -> grid tokens, mean over heads
    maps.rollout   # (B, H, W): attention rollout through every layer

record_attention(model) is the lower level: a context manager that collects
every attention layer's probabilities (B, heads, N, N), in the order the
layers run, for any model built from nn.MultiheadAttention (torchvision) or
timm's attention modules. The model is changed only inside the block:

- nn.MultiheadAttention: a forward pre-hook asks it for the per-head weights
  (need_weights=True, average_attn_weights=False) and a forward hook hands
  its caller exactly what the caller asked for (torchvision's encoder asks
  for no weights and gets None).
- timm (Attention and every module with a `fused_attn` switch and an
  `attn_drop`): fused attention (F.scaled_dot_product_attention, which never
  materialises the probabilities) is switched off, and a hook on attn_drop
  reads its input, which is softmax(q k^T * scale + mask): the probabilities
  themselves, before dropout.

On exit every hook is removed and every fused_attn flag is set back, so the
model computes what it computed before, bit for bit.

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
Transformers", arXiv:2005.00928): per layer the heads are averaged, the
identity is added for the residual connection and rows are normalised to
sum 1 (A' = (A + I) / 2 for rows that sum to 1), and the layers are
multiplied, last layer on the left: R = A'_L ... A'_1. Row c of R is how
much of what token c holds at the end came from each input token. The maps
here read the class token's row at the grid tokens; prefix tokens (class,
distillation, registers) take part in the product but not in the map, so a
map sums to less than 1: the rest went to the prefix tokens.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["record_attention", "attention_rollout", "class_token_attention", "ClassTokenAttention",
           "token_layout"]

Pair = Tuple[int, int]

# nn.MultiheadAttention.forward(query, key, value, key_padding_mask, need_weights, attn_mask,
# average_attn_weights, is_causal): where the two flags sit when passed by position
_NEED_WEIGHTS, _AVERAGE = 4, 6


def _is_timm_attention(module: nn.Module) -> bool:
    return isinstance(getattr(module, "fused_attn", None), bool) and isinstance(
        getattr(module, "attn_drop", None), nn.Module)


def _get_flag(args: list, kwargs: dict, position: int, name: str) -> bool:
    return args[position] if len(args) > position else kwargs.get(name, True)


def _set_flag(args: list, kwargs: dict, position: int, name: str, value: bool) -> None:
    if len(args) > position:
        args[position] = value
    else:
        kwargs[name] = value


def _hook_mha(module: nn.MultiheadAttention, store: Callable[[torch.Tensor], None]) -> list:
    asked: List[Tuple[bool, bool]] = []  # what each running call asked for (a stack: calls may nest)

    def before(mod, args, kwargs):
        args = list(args)
        asked.append((bool(_get_flag(args, kwargs, _NEED_WEIGHTS, "need_weights")),
                      bool(_get_flag(args, kwargs, _AVERAGE, "average_attn_weights"))))
        _set_flag(args, kwargs, _NEED_WEIGHTS, "need_weights", True)
        _set_flag(args, kwargs, _AVERAGE, "average_attn_weights", False)
        return tuple(args), kwargs

    def after(mod, args, kwargs, output):
        need, average = asked.pop()
        out, weights = output
        store(weights if weights.dim() == 4 else weights.unsqueeze(0))  # unbatched: (heads, L, S)
        if not need:
            return out, None
        return out, (weights.mean(dim=-3) if average else weights)

    return [module.register_forward_pre_hook(before, with_kwargs=True),
            module.register_forward_hook(after, with_kwargs=True)]


@contextmanager
def record_attention(model: nn.Module, transform: Optional[Callable[[torch.Tensor], object]] = None
                     ) -> Iterator[list]:
    """Collect the attention probabilities of every attention layer of model.

    Yields a list that each forward pass inside the block appends to: one
    (B, heads, N, N) tensor per attention layer, in the order the layers ran
    (rows: queries, columns: keys; each row sums to 1). The tensors are part
    of the autograd graph when the forward records one. transform, if given,
    is applied to each tensor and its result stored instead (to keep less:
    the layers of a large model at a high resolution take L * heads * N^2
    values).

    Raises ValueError when the model has neither nn.MultiheadAttention nor a
    timm attention module. Hooks and fused-attention flags are restored on
    exit, also after an exception.
    """
    store: list = []
    keep = store.append if transform is None else (lambda attention: store.append(transform(attention)))
    handles: list = []
    fused: List[Tuple[nn.Module, bool]] = []
    try:
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):
                handles += _hook_mha(module, keep)
            elif _is_timm_attention(module):
                fused.append((module, module.fused_attn))
                module.fused_attn = False
                handles.append(module.attn_drop.register_forward_hook(
                    lambda mod, inputs, output: keep(inputs[0])))
        if not handles:
            raise ValueError(f"{type(model).__name__} has no attention layer vitpe can read: neither "
                             f"nn.MultiheadAttention (torchvision) nor a timm attention module (fused_attn + "
                             f"attn_drop)")
        yield store
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in fused:
            module.fused_attn = flag


def _mean_heads(attention: torch.Tensor) -> torch.Tensor:
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"attention must be (B, heads, N, N), got shape {tuple(attention.shape)}")
    return attention.double().mean(dim=1)


def _with_residual(mean: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
    mixed = mean + eye
    return mixed / mixed.sum(dim=-1, keepdim=True)


def _check_layers(attentions: Sequence[torch.Tensor]) -> None:
    if not attentions:
        raise ValueError("no attention layers: the list is empty")
    shapes = {(a.shape[0], a.shape[-1]) for a in attentions}
    if len(shapes) != 1:
        raise ValueError(f"attention layers disagree in batch or token count: "
                         f"{sorted({tuple(a.shape) for a in attentions})}")


def attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, N, N): A'_L @ ... @ A'_1 for the layers' (B, heads, N, N)
    probabilities in the order they ran (A' = heads averaged, identity added,
    rows normalised). Computed in float64."""
    _check_layers(attentions)
    result = None
    for attention in attentions:
        layer = _with_residual(_mean_heads(attention))
        result = layer if result is None else layer @ result
    return result


def _rollout_row(head_means: Sequence[torch.Tensor], token: int) -> torch.Tensor:
    """(B, N): row `token` of attention_rollout, from the layers' head means
    (B, N, N), as a row vector times the layers from the last down: O(L N^2)
    instead of the O(L N^3) product."""
    row = None
    for mean in reversed(head_means):
        layer = _with_residual(mean.double())
        row = layer[:, token] if row is None else (row.unsqueeze(1) @ layer).squeeze(1)
    return row


# -- which tokens form the grid ------------------------------------------------------

def _pair(value, name: str) -> Pair:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or (height, width), got {value!r}") from None
    return (h, w)


def token_layout(model: nn.Module, image_size) -> Tuple[int, List[Pair]]:
    """(prefix tokens, candidate grids) of a torchvision or timm ViT for an
    input of image_size (h, w): the floor and, for padding models, ceil of
    size / patch. ValueError for other models or one without a class token."""
    h, w = _pair(image_size, "image_size")
    try:
        from torchvision.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is optional
        VisionTransformer = ()
    if isinstance(model, VisionTransformer):
        prefix, patch = 1, _pair(model.patch_size, "patch_size")
    elif hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens"):  # timm's ViTs
        if getattr(model, "cls_token", None) is None:
            raise ValueError(f"{type(model).__name__} has no class token (timm class_token=False), so there is "
                             f"no class-token attention to map")
        prefix, patch = int(model.num_prefix_tokens), _pair(model.patch_embed.patch_size, "patch_size")
    else:
        raise ValueError(f"cannot tell the token layout of {type(model).__name__}: pass grid= and "
                         f"num_prefix_tokens= (the class token must be token 0)")
    grids = [(h // patch[0], w // patch[1]), (-(-h // patch[0]), -(-w // patch[1]))]
    return prefix, list(dict.fromkeys(grids))


@dataclass
class ClassTokenAttention:
    """The class token's attention to the grid tokens, per image.

    last: (B, H, W), the last attention layer, averaged over heads.
    last_heads: (B, heads, H, W), the same per head.
    rollout: (B, H, W), attention rollout through all layers.
    grid: (H, W); num_prefix_tokens: tokens before the grid (class first);
    layers: attention layers seen; output: the model's output.
    Each map's sum over the grid is below 1: the rest is attention to the
    prefix tokens (the class token itself, registers, distillation).
    """
    last: torch.Tensor
    last_heads: torch.Tensor
    rollout: torch.Tensor
    grid: Pair
    num_prefix_tokens: int
    layers: int
    output: object


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """eval() inside the block (dropout would make the maps random), each
    module's own training flag back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def class_token_attention(model: nn.Module, images: torch.Tensor, *, grid=None,
                          num_prefix_tokens: Optional[int] = None) -> ClassTokenAttention:
    """Run model on images (B, C, h, w) once, without gradients and in eval
    mode, and map where its class token (token 0) attends: the last layer and
    the rollout, on the token grid.

    grid, num_prefix_tokens: the layout of the tokens after the prefix;
    detected for torchvision (VisionTransformer, also made dynamic) and timm
    ViTs from the image size and the patch size, needed for other models.
    The model is left as it was: hooks removed, fused attention and training
    flags restored.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if grid is None or num_prefix_tokens is None:
        prefix, grids = token_layout(model, images.shape[-2:])
        prefix = prefix if num_prefix_tokens is None else int(num_prefix_tokens)
        grids = grids if grid is None else [_pair(grid, "grid")]
    else:
        prefix, grids = int(num_prefix_tokens), [_pair(grid, "grid")]
    if prefix < 1:
        raise ValueError(f"num_prefix_tokens must be >= 1 (the class token is token 0), got {prefix}")

    with _eval_mode(model), torch.no_grad(), record_attention(model, _reduce) as store:
        output = model(images)
    if not store:
        raise ValueError(f"{type(model).__name__}'s forward ran no attention layer that vitpe hooks")
    means = [mean for mean, _ in store]
    _check_layers(means)
    tokens = means[-1].shape[-1]
    fits = [g for g in grids if prefix + g[0] * g[1] == tokens]
    if not fits:
        raise ValueError(f"the model's attention has {tokens} tokens, but {prefix} prefix token(s) + grid "
                         f"{' or '.join(f'{g[0]}x{g[1]}' for g in grids)} give "
                         f"{' or '.join(str(prefix + g[0] * g[1]) for g in grids)}; pass grid= and "
                         f"num_prefix_tokens=")
    gh, gw = fits[0]
    class_rows = store[-1][1]  # (B, heads, N), the last layer's
    # A hooked tensor that is not a probability distribution means a module
    # computes attention in a way this file does not know: refuse, never plot it.
    sums = class_rows.double().sum(dim=-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=2e-2 if class_rows.element_size() < 4 else 1e-3):
        raise ValueError(f"the captured attention rows of {type(model).__name__} do not sum to 1 (sums "
                         f"{sums.min().item():.4g}..{sums.max().item():.4g}): not softmax probabilities")
    batch = class_rows.shape[0]
    dtype = torch.promote_types(class_rows.dtype, torch.float32)
    heads = class_rows[:, :, prefix:].to(dtype).reshape(batch, -1, gh, gw)
    rollout = _rollout_row(means, 0)[:, prefix:].to(dtype).reshape(batch, gh, gw)
    return ClassTokenAttention(last=heads.double().mean(dim=1).to(dtype), last_heads=heads, rollout=rollout,
                               grid=(gh, gw), num_prefix_tokens=prefix, layers=len(means), output=output)


def _reduce(attention: torch.Tensor):
    """What class_token_attention keeps of a layer: the head mean (B, N, N)
    for the rollout and the class token's row per head (B, heads, N)."""
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(f"captured attention of shape {tuple(attention.shape)}, not (B, heads, N, N)")
    return attention.float().mean(dim=1), attention[:, :, 0, :].clone()
