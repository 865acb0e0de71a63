"""Layer-wise learning-rate decay groups for torchvision and timm ViTs.

Fine-tuning a ViT at a new resolution resizes its position table; the
resized table is the parameter furthest from what it was trained as, yet
layer-wise decay gives it the smallest learning rate of all. These groups
follow MAE's param_groups_lrd / timm's param_groups_layer_decay and add one
knob, pos_embed_lr (or pos_embed_lr_scale), to give the table a learning
rate of its own.

Layers: patch/position/class embeddings are layer 0, block i is layer i + 1,
everything after the blocks (final norm, head) is layer L = blocks + 1
(MAE's rule; timm's group_matcher puts the final norm with the last block).
Group lr = base_lr * layer_decay ** (L - layer); the "lr_scale" key holds
lr / base_lr for every group, the position table's too, so a scheduler that
sets lr = its_lr * lr_scale (MAE's adjust_learning_rate) gives the same
LRs. timm's schedulers instead multiply each group's own lr by lr_scale,
which would apply the decay twice: with these groups use
vitpe_ext.warmup_cosine / warmup_constant (or any torch scheduler).
No weight decay on 1-D parameters (biases, norms) and on the names in
no_weight_decay (position tables, class/dist/register tokens).
"""
from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Optional

from torch import nn

__all__ = ["layer_decay_groups", "layer_id", "DEFAULT_NO_WEIGHT_DECAY", "POS_EMBED_NAMES"]

POS_EMBED_NAMES = ("pos_embed", "encoder.pos_embedding")  # timm, torchvision
DEFAULT_NO_WEIGHT_DECAY = POS_EMBED_NAMES + ("cls_token", "dist_token", "reg_token", "class_token")

# name pattern -> layer: embeddings first, blocks numbered, the rest is the head.
_TIMM_EMBED = re.compile(r"^(cls_token|dist_token|reg_token|pos_embed|patch_embed\.|norm_pre\.)")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_TV_EMBED = re.compile(r"^(class_token|conv_proj\.|encoder\.pos_embedding)")
_TV_BLOCK = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.")


def _vit_kind(model: nn.Module):
    try:
        from torchvision.models.vision_transformer import VisionTransformer as TvViT
    except ImportError:  # torchvision is optional here
        TvViT = ()
    if TvViT and isinstance(model, TvViT):
        return "torchvision", len(model.encoder.layers)
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(model, "patch_embed"):
        return "timm", len(blocks)
    raise TypeError(f"layer_decay_groups knows torchvision VisionTransformer and timm-style ViTs "
                    f"(.patch_embed + .blocks), got {type(model).__name__}")


def layer_id(name: str, kind: str, num_blocks: int) -> int:
    """The layer of parameter `name`: 0 embeddings, i + 1 block i, num_blocks + 1 the rest."""
    embed, block = (_TIMM_EMBED, _TIMM_BLOCK) if kind == "timm" else (_TV_EMBED, _TV_BLOCK)
    if embed.match(name):
        return 0
    m = block.match(name)
    if m:
        return int(m.group(1)) + 1
    return num_blocks + 1


def _number(value, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        need = "a positive" if positive else "a non-negative"
        raise ValueError(f"layer_decay_groups: {name} must be {need} finite number, got {value!r}")
    return float(value)


def layer_decay_groups(
    model: nn.Module,
    base_lr: float,
    layer_decay: float = 0.75,
    weight_decay: float = 0.05,
    no_weight_decay: Optional[Iterable[str]] = DEFAULT_NO_WEIGHT_DECAY,
    pos_embed_lr_scale: Optional[float] = None,
    *,
    pos_embed_lr: Optional[float] = None,
) -> List[Dict]:
    """Optimizer parameter groups with layer-wise lr decay.

    Returns a list of dicts {"params", "lr", "lr_scale", "weight_decay",
    "layer", "name"} for torch.optim; every trainable parameter is in
    exactly one group (frozen ones are left out, as MAE does), and
    lr == base_lr * lr_scale in every group.
    no_weight_decay: parameter names without weight decay, in addition to
        1-D parameters and the model's own no_weight_decay() (timm).
    pos_embed_lr: the position table's learning rate, absolute (e.g. 5e-4);
        the table then gets a group of its own, "pos_embed", outside the
        layer-wise decay.
    pos_embed_lr_scale: the same as a multiple of base_lr: base_lr 1e-3 and
        0.5 give the table 5e-4, whatever layer_decay is. (vitpe 0.1.0
        multiplied layer 0's decayed lr by it, base_lr * layer_decay**L *
        scale, which nobody expected of a table meant to escape the decay.)
    With neither, the table shares layer 0's lr. Giving both is an error.
    """
    base_lr = _number(base_lr, "base_lr", positive=True)
    layer_decay = _number(layer_decay, "layer_decay", positive=True)
    weight_decay = _number(weight_decay, "weight_decay", positive=False)
    if pos_embed_lr is not None and pos_embed_lr_scale is not None:
        raise ValueError(f"layer_decay_groups: give pos_embed_lr (an lr) or pos_embed_lr_scale (a multiple of "
                         f"base_lr), not both (got {pos_embed_lr!r} and {pos_embed_lr_scale!r})")
    pos_scale = None  # the table's lr / base_lr, when it has a group of its own
    if pos_embed_lr is not None:
        pos_scale = _number(pos_embed_lr, "pos_embed_lr", positive=False) / base_lr
    elif pos_embed_lr_scale is not None:
        pos_scale = _number(pos_embed_lr_scale, "pos_embed_lr_scale", positive=False)

    kind, num_blocks = _vit_kind(model)
    last = num_blocks + 1
    skip = set(no_weight_decay or ())
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())

    groups: Dict[str, Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, kind, num_blocks)
        decay = not (param.ndim <= 1 or name in skip)
        scale = layer_decay ** (last - layer)
        group_name = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        if name in POS_EMBED_NAMES and pos_scale is not None:
            group_name, scale = "pos_embed", pos_scale
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = {
                "name": group_name, "layer": layer, "lr_scale": scale, "lr": base_lr * scale,
                "weight_decay": weight_decay if decay else 0.0, "params": [],
            }
        group["params"].append(param)
    if pos_scale is not None and "pos_embed" not in groups:
        given = "pos_embed_lr" if pos_embed_lr is not None else "pos_embed_lr_scale"
        raise ValueError(f"layer_decay_groups: {given} given, but the model has no trainable position table "
                         f"({' or '.join(POS_EMBED_NAMES)})")
    return list(groups.values())
