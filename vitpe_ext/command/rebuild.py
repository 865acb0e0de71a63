"""A runnable model from a checkpoint's weights (torchvision or timm ViTs),
and the same model at another image size with the table resized one way.

State dicts hold weights, not the architecture. The architecture comes from
--arch (a torchvision vit_* name or a timm model name, built without
weights at the checkpoint's image size and class count), or is read off
the weights' shapes: width, depth, MLP width, patch size, class count,
biases, layer scale, class/register tokens. The head count leaves no trace in
the weights and changes every attention map, so it comes from --num-heads,
a num_heads entry stored in the checkpoint, or the standard count for the
width (stated as an assumption); otherwise the command asks for it.

Every build loads the weights strictly: a state dict that does not fit is
refused with the first mismatch, never run half-initialised.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from .checkpoint import FAMILY_BY_NAME, Checkpoint, CheckpointError, Embedding, Pair, format_pair
from .demo import known_num_heads
from .resizing import Method

# standard head counts by width: torchvision vit_b/l/h; timm/DeiT tiny, small, base, large, huge, giant
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24, 1664: 16}
TIMM_FAMILIES = ("timm", "mae", "dinov2", "dinov2-reg")
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Rebuilt:
    """model: at the checkpoint's image size, weights loaded, eval mode.
    resized(grid, method): the model for that token grid, its table resized
    from the checkpoint's with method (the same object, reconfigured)."""
    library: str
    description: str
    model: nn.Module
    image_size: Pair
    mean_std: Tuple[Tuple[float, ...], Tuple[float, ...]]
    resized: Callable[[Pair, Method], nn.Module]


def require(module: str):
    """The module, or a one-line CheckpointError naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise CheckpointError(f"this needs {package}, which is not installed (pip install {package})") from None


def torchvision_arch_names():
    tvm = require("torchvision.models")
    return sorted(n for n in tvm.list_models(module=tvm) if n.startswith("vit_"))


def check_arch(name: str) -> str:
    """The library an --arch name belongs to ('torchvision' or 'timm'); ValueError otherwise."""
    if name in torchvision_arch_names():
        return "torchvision"
    timm = require("timm")
    if timm.is_model(name):
        return "timm"
    close = sorted(set(torchvision_arch_names() + timm.list_models(f"*{name}*")))[:6]
    hint = f"; close: {', '.join(close)}" if close else ""
    raise ValueError(f"unknown architecture {name!r}: neither a torchvision vit_* model nor a timm model{hint}")


def model_prefix(emb: Embedding) -> str:
    """The key prefix (module., model.) the table carries before the model's own name."""
    family = FAMILY_BY_NAME.get("timm" if emb.family in TIMM_FAMILIES else emb.family)
    name = emb.key[-1]
    return name[:len(name) - len(family.table_suffix)] if family else ""


def model_state(ckpt: Checkpoint, emb: Embedding) -> Dict[str, torch.Tensor]:
    """The model's own state dict: the table's dict, without the key prefix
    (module., model.) the table carries."""
    prefix = model_prefix(emb)
    return {k[len(prefix):]: v for k, v in ckpt.container(emb.key).items()
            if isinstance(k, str) and k.startswith(prefix) and isinstance(v, torch.Tensor)}


def _heads(ckpt: Checkpoint, width: int, option: Optional[int], notes: list) -> int:
    known = known_num_heads(ckpt, width, option)
    if known is not None:
        heads, source = known
        if option is None:
            notes.append(f"{heads} heads ({source})")
        return heads
    if width in STANDARD_HEADS:
        notes.append(f"{STANDARD_HEADS[width]} heads (assumed: the standard count for width {width}; "
                     f"--num-heads if it differs)")
        return STANDARD_HEADS[width]
    raise CheckpointError(f"{ckpt.path}: the head count is not in the weights nor recorded in the checkpoint, "
                          f"and width {width} has no standard one; pass --num-heads")


def _mismatch(model: nn.Module, state: Dict[str, torch.Tensor]) -> str:
    """What keeps state from loading into model, counted, with the first example of each kind."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    parts = [f"{len(found)} {what} (e.g. {found[0]})" for what, found in
             (("missing", missing), ("unexpected", unexpected), ("of another shape, checkpoint vs model", shaped))
             if found]
    return ", ".join(parts)


def _load(model: nn.Module, state: Dict[str, torch.Tensor], ckpt: Checkpoint, built: str) -> None:
    problem = _mismatch(model, state)
    if not problem:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if problem:
        raise CheckpointError(f"{ckpt.path}: the weights do not fit {built}: {problem}; pass the right --arch "
                              f"(or --num-heads)")


def _square(emb: Embedding, ckpt: Checkpoint) -> int:
    if emb.grid[0] != emb.grid[1] or emb.patch[0] != emb.patch[1]:
        raise CheckpointError(f"{ckpt.path}: torchvision's VisionTransformer takes square images and patches; "
                              f"this table has grid {format_pair(emb.grid)}, patch {format_pair(emb.patch)}")
    return emb.grid[0] * emb.patch[0]


def _torchvision_model(ckpt: Checkpoint, emb: Embedding, state, arch: Optional[str], num_heads: Optional[int],
                       image: Optional[Pair], notes: list) -> Tuple[nn.Module, str]:
    tvm = require("torchvision.models")
    VisionTransformer, get_model = tvm.VisionTransformer, tvm.get_model
    size = _square(emb, ckpt)
    if image is not None:
        if image[0] != image[1]:
            raise CheckpointError(f"torchvision's VisionTransformer takes square images; got {format_pair(image)}")
        size = image[0]
    classes = state["heads.head.weight"].shape[0] if "heads.head.weight" in state else 1000
    if arch is not None:
        if num_heads is not None:
            raise CheckpointError(f"--num-heads: {arch} has its own head count; give one or the other")
        model = get_model(arch, weights=None, image_size=size, num_classes=classes)
        built = f"torchvision {arch}(image_size={size}, num_classes={classes})"
    else:
        layers = {k.split(".")[2] for k in state if k.startswith("encoder.layers.encoder_layer_")}
        if "conv_proj.weight" not in state or not layers or "encoder.layers.encoder_layer_0.mlp.0.weight" not in state:
            raise CheckpointError(f"{ckpt.path}: not a bare torchvision VisionTransformer state dict; pass --arch")
        hidden = state["conv_proj.weight"].shape[0]
        kwargs = dict(image_size=size, patch_size=emb.patch[0], num_layers=len(layers),
                      num_heads=_heads(ckpt, hidden, num_heads, notes), hidden_dim=hidden,
                      mlp_dim=state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0], num_classes=classes)
        if "heads.pre_logits.weight" in state:
            kwargs["representation_size"] = state["heads.pre_logits.weight"].shape[0]
        model = VisionTransformer(**kwargs)
        built = f"torchvision VisionTransformer({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    return model, built


def _torchvision(ckpt: Checkpoint, emb: Embedding, state, arch: Optional[str], num_heads: Optional[int]) -> Rebuilt:
    from ..integrations.torchvision import make_dynamic
    notes: list = []
    model, built = _torchvision_model(ckpt, emb, state, arch, num_heads, None, notes)
    size = model.image_size
    _load(model, state, ckpt, built)
    model.eval()

    def resized(grid: Pair, method: Method) -> nn.Module:
        # make_dynamic resizes the table per forward through the op with these settings: the same
        # numbers `vitpe resize` writes, and torchvision then also runs non-square grids
        return make_dynamic(model, profile=method.profile, mode=method.mode, align_corners=method.align_corners,
                            antialias=method.antialias, cache=False)

    return Rebuilt("torchvision", "; ".join([built] + notes), model, (size, size), IMAGENET_MEAN_STD, resized)


def _timm_kwargs(ckpt: Checkpoint, emb: Embedding, state, num_heads: Optional[int], notes: list,
                 image: Optional[Pair] = None) -> dict:
    depth = len({int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
    if "patch_embed.proj.weight" not in state or not depth or "blocks.0.mlp.fc1.weight" not in state:
        raise CheckpointError(f"{ckpt.path}: not a timm VisionTransformer state dict (patch_embed.proj, "
                              f"blocks.N.mlp.fc1); pass --arch with the timm model name")
    width = state["patch_embed.proj.weight"].shape[0]
    reg = state["reg_token"].shape[1] if "reg_token" in state else 0
    has_cls = "cls_token" in state
    fc_norm = "fc_norm.weight" in state
    return dict(
        img_size=image or (emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1]), patch_size=emb.patch,
        in_chans=state["patch_embed.proj.weight"].shape[1],
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
        global_pool="token" if has_cls and not fc_norm else "avg", embed_dim=width, depth=depth,
        num_heads=_heads(ckpt, width, num_heads, notes),
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width,
        qkv_bias="blocks.0.attn.qkv.bias" in state, qk_norm="blocks.0.attn.q_norm.weight" in state,
        init_values=1e-5 if "blocks.0.ls1.gamma" in state else None,  # any value: the weights replace it
        class_token=has_cls, reg_tokens=reg,
        no_embed_class=emb.prefix_tokens == 0 and (has_cls or reg > 0),
        pre_norm="norm_pre.weight" in state, final_norm=fc_norm or "norm.weight" in state, fc_norm=fc_norm)


def _timm_model(ckpt: Checkpoint, emb: Embedding, state, arch: Optional[str], num_heads: Optional[int],
                image: Optional[Pair], notes: list) -> Tuple[nn.Module, str]:
    timm = require("timm")
    VisionTransformer = require("timm.models.vision_transformer").VisionTransformer
    image = image or (emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])
    if arch is not None:
        if num_heads is not None:
            raise CheckpointError(f"--num-heads: {arch} has its own head count; give one or the other")
        classes = state["head.weight"].shape[0] if "head.weight" in state else 0
        extra = {"in_chans": state["patch_embed.proj.weight"].shape[1]} if "patch_embed.proj.weight" in state else {}
        try:
            model = timm.create_model(arch, pretrained=False, img_size=image, num_classes=classes, **extra)
        except (TypeError, ValueError, AssertionError) as exc:
            raise CheckpointError(f"timm {arch} cannot be built for image size {format_pair(image)}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        built = f"timm {arch}(img_size={format_pair(image)}, num_classes={classes})"
    else:
        kwargs = _timm_kwargs(ckpt, emb, state, num_heads, notes, image)
        model = VisionTransformer(**kwargs)
        shown = {k: v for k, v in kwargs.items() if v not in (False, None, 0) or k == "num_classes"}
        built = f"timm VisionTransformer({', '.join(f'{k}={v}' for k, v in shown.items())})"
    if not hasattr(model, "set_input_size") or getattr(model, "pos_embed", None) is None:
        raise CheckpointError(f"{built} has no absolute position table to resize (not a ViT?); pass a timm ViT --arch")
    return model, built


def _timm(ckpt: Checkpoint, emb: Embedding, state, arch: Optional[str], num_heads: Optional[int]) -> Rebuilt:
    notes: list = []
    model, built = _timm_model(ckpt, emb, state, arch, num_heads, None, notes)
    image = (emb.grid[0] * emb.patch[0], emb.grid[1] * emb.patch[1])
    _load(model, state, ckpt, built)
    model.eval()
    table = ckpt.get(emb.key)

    def resized(grid: Pair, method: Method) -> nn.Module:
        model.set_input_size(img_size=(grid[0] * emb.patch[0], grid[1] * emb.patch[1]))
        new = method.apply(table.reshape(model.pos_embed.shape[0], -1, table.shape[-1]), grid, emb.grid,
                           emb.prefix_tokens)
        with torch.no_grad():  # timm resized the table its own way; ours replaces it
            model.pos_embed.copy_(new)
        return model

    config = getattr(model, "pretrained_cfg", None) or {}
    mean_std = (tuple(config.get("mean", IMAGENET_MEAN_STD[0])), tuple(config.get("std", IMAGENET_MEAN_STD[1])))
    return Rebuilt("timm", "; ".join([built] + notes), model, image, mean_std, resized)


def library_for(ckpt: Checkpoint, emb: Embedding, arch: Optional[str]) -> str:
    """'torchvision' or 'timm': --arch's library, else the table's family's."""
    if emb.patch is None:
        raise CheckpointError(f"{ckpt.path}: no patch-embedding weight beside {emb.name}; not a ViT state dict "
                              f"vitpe can run")
    library = check_arch(arch) if arch is not None else None
    if library is None:
        if emb.family == "torchvision":
            library = "torchvision"
        elif emb.family in TIMM_FAMILIES:
            library = "timm"
        else:
            raise CheckpointError(f"{ckpt.path}: {emb.name} is a {emb.family} table; vitpe runs torchvision and "
                                  f"timm ViTs only (pass --arch for a checkpoint in their layout)")
    return library


def build_model(ckpt: Checkpoint, emb: Embedding, state, arch: Optional[str], num_heads: Optional[int],
                image: Pair) -> Tuple[str, nn.Module, str]:
    """(library, the model for image size `image` without the checkpoint's
    weights, how it was built): the architecture rebuild() runs, at another
    size (vitpe compare loads each resized table into it)."""
    library = library_for(ckpt, emb, arch)
    notes: list = []
    make = _torchvision_model if library == "torchvision" else _timm_model
    model, built = make(ckpt, emb, state, arch, num_heads, tuple(image), notes)
    return library, model, "; ".join([built] + notes)


def rebuild(ckpt: Checkpoint, emb: Embedding, arch: Optional[str], num_heads: Optional[int]) -> Rebuilt:
    """A torchvision or timm ViT that the checkpoint's weights load into strictly."""
    library = library_for(ckpt, emb, arch)
    state = model_state(ckpt, emb)
    return (_torchvision if library == "torchvision" else _timm)(ckpt, emb, state, arch, num_heads)
