"""layer_decay_groups on small torchvision and timm ViTs."""
from __future__ import annotations

import pytest
import torch

from vitpe_ext.integrations.param_groups import layer_decay_groups

tv_vit = pytest.importorskip("torchvision.models.vision_transformer")


def torchvision_vit(layers=3):
    return tv_vit.VisionTransformer(image_size=32, patch_size=16, num_layers=layers, num_heads=2,
                                    hidden_dim=16, mlp_dim=32, num_classes=5)


def timm_vit(layers=3, **kwargs):
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=layers, num_heads=2,
                             num_classes=5, **kwargs)


def by_name(model, groups):
    """parameter name -> its group; asserts each trainable parameter is in exactly one."""
    owner = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in owner, "a parameter is in two groups"
            owner[id(p)] = group
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(owner) == len(named)
    return {n: owner[id(p)] for n, p in named.items()}


@pytest.mark.parametrize("make, pos_name, block_param, head_params, cls_name", [
    (torchvision_vit, "encoder.pos_embedding", "encoder.layers.encoder_layer_{}.mlp.0.weight",
     ("heads.head.weight", "encoder.ln.weight"), "class_token"),
    (timm_vit, "pos_embed", "blocks.{}.mlp.fc1.weight", ("head.weight", "norm.weight"), "cls_token"),
])
def test_layers_lrs_and_weight_decay(make, pos_name, block_param, head_params, cls_name):
    layers, base_lr, decay = 3, 1e-3, 0.65
    model = make(layers)
    groups = layer_decay_groups(model, base_lr, layer_decay=decay, weight_decay=0.05)
    group_of = by_name(model, groups)
    last = layers + 1
    for g in groups:
        assert g["lr"] == pytest.approx(base_lr * decay ** (last - g["layer"]))
        assert g["lr"] == pytest.approx(base_lr * g["lr_scale"])
    assert group_of[pos_name]["layer"] == 0 and group_of[cls_name]["layer"] == 0
    for i in range(layers):
        assert group_of[block_param.format(i)]["layer"] == i + 1
        assert group_of[block_param.format(i)]["weight_decay"] == 0.05
    for name in head_params:
        assert group_of[name]["layer"] == last
    for name, param in model.named_parameters():
        no_decay = param.ndim <= 1 or name in (pos_name, cls_name)
        assert group_of[name]["weight_decay"] == (0.0 if no_decay else 0.05), name


@pytest.mark.parametrize("make, pos_name", [(torchvision_vit, "encoder.pos_embedding"), (timm_vit, "pos_embed")])
@pytest.mark.parametrize("kwargs", [{"pos_embed_lr": 5e-4}, {"pos_embed_lr_scale": 0.5}])
def test_pos_embed_lr_is_what_the_user_asked_for(make, pos_name, kwargs):
    # the numbers: base 1e-3, decay 0.75, scale 0.5 on a 4-block ViT gave
    # the table 1e-3 * 0.75**5 * 0.5 = 1.19e-4 (layer 0's lr times the scale), not 5e-4
    model = make(4)
    groups = layer_decay_groups(model, 1e-3, layer_decay=0.75, **kwargs)
    group_of = by_name(model, groups)
    pos_group = group_of[pos_name]
    assert pos_group["name"] == "pos_embed" and len(pos_group["params"]) == 1
    assert pos_group["lr"] == pytest.approx(5e-4, rel=1e-12)
    assert pos_group["lr_scale"] == pytest.approx(0.5, rel=1e-12)
    assert pos_group["weight_decay"] == 0.0 and pos_group["layer"] == 0
    for g in groups:  # the invariant MAE-style schedulers rely on: lr = base * lr_scale
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"], rel=1e-12)
        if g["name"] != "pos_embed":
            assert g["lr"] == pytest.approx(1e-3 * 0.75 ** (5 - g["layer"]), rel=1e-12)
    # the rest of layer 0 (patch embedding, class token) keeps the decayed lr
    assert group_of["class_token" if make is torchvision_vit else "cls_token"]["lr"] == pytest.approx(1e-3 * 0.75 ** 5)
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_pos_embed_lr_default_and_zero():
    model = torchvision_vit(2)
    group_of = by_name(model, layer_decay_groups(model, 1e-3, layer_decay=0.5))
    assert group_of["encoder.pos_embedding"] is group_of["class_token"]  # no group of its own
    group_of = by_name(model, layer_decay_groups(model, 1e-3, layer_decay=0.5, pos_embed_lr_scale=1.0))
    assert group_of["encoder.pos_embedding"]["lr"] == pytest.approx(1e-3)  # 1.0 is base_lr, not layer 0's
    group_of = by_name(model, layer_decay_groups(model, 1e-3, pos_embed_lr=0.0))
    assert group_of["encoder.pos_embedding"]["lr"] == 0.0  # a table held still, still in the optimizer


@pytest.mark.parametrize("kwargs, match", [
    ({"pos_embed_lr": 5e-4, "pos_embed_lr_scale": 0.5}, "not both"),
    ({"pos_embed_lr": -1e-4}, "pos_embed_lr must be a non-negative finite number, got -0.0001"),
    ({"pos_embed_lr_scale": float("nan")}, "pos_embed_lr_scale must be"),
    ({"pos_embed_lr": "5e-4"}, "pos_embed_lr must be"),
    ({"base_lr": 0.0}, "base_lr must be a positive finite number, got 0.0"),
    ({"base_lr": float("inf")}, "base_lr must be"),
    ({"layer_decay": 0}, "layer_decay must be a positive"),
    ({"layer_decay": True}, "layer_decay must be"),
    ({"weight_decay": -0.05}, "weight_decay must be a non-negative"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {"base_lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=match):
        layer_decay_groups(torchvision_vit(1), **kwargs)


def test_pos_embed_lr_without_a_trainable_table():
    model = torchvision_vit(1)
    model.encoder.pos_embedding.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable position table"):
        layer_decay_groups(model, 1e-3, pos_embed_lr=5e-4)
    layer_decay_groups(model, 1e-3)  # without the knob a frozen table is simply left out


def mae_param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=[], layer_decay=.75):
    """MAE util/lr_decay.py param_groups_lrd + get_layer_id_for_vit, transcribed
    (MAE's models are timm ViTs)."""
    param_groups = {}
    num_layers = len(model.blocks) + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay, this_decay = "no_decay", 0.
        else:
            g_decay, this_decay = "decay", weight_decay
        if n in ["cls_token", "pos_embed"]:
            layer_id = 0
        elif n.startswith("patch_embed"):
            layer_id = 0
        elif n.startswith("blocks"):
            layer_id = int(n.split(".")[1]) + 1
        else:
            layer_id = num_layers
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_groups:
            param_groups[group_name] = {"lr_scale": layer_scales[layer_id], "weight_decay": this_decay,
                                        "params": []}
        param_groups[group_name]["params"].append(p)
    return list(param_groups.values())


def scales(groups):
    return {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_same_groups_as_mae_and_timm():
    timm = pytest.importorskip("timm")
    from timm.optim import param_groups_layer_decay
    model = timm_vit(4)
    ours = by_name(model, layer_decay_groups(model, 1.0, layer_decay=0.7, weight_decay=0.05))
    mae = scales(mae_param_groups_lrd(model, 0.05, model.no_weight_decay(), 0.7))
    timms = scales(param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(),
                                            layer_decay=0.7))
    for name, param in model.named_parameters():
        got = (ours[name]["lr_scale"], ours[name]["weight_decay"])
        assert got == pytest.approx(mae[id(param)]), name
        if name.startswith("norm."):
            # timm's group_matcher puts the final norm with the last block; MAE (and we) with the head
            assert timms[id(param)][0] == pytest.approx(got[0] * 0.7)
        else:
            assert got == pytest.approx(timms[id(param)]), name


def test_frozen_parameters_are_left_out_and_unknown_models_rejected():
    model = torchvision_vit(2)
    model.conv_proj.requires_grad_(False)
    groups = layer_decay_groups(model, 1e-3)
    by_name(model, groups)
    assert all(p.requires_grad for g in groups for p in g["params"])
    with pytest.raises(TypeError, match="VisionTransformer"):
        layer_decay_groups(torch.nn.Linear(2, 2), 1e-3)
