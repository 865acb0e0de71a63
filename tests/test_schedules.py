"""warmup_cosine / warmup_constant: the curve per group and step, kept ratios, resuming."""
from __future__ import annotations

import math

import pytest
import torch

from vitpe_ext.integrations.param_groups import layer_decay_groups
from vitpe_ext.integrations.schedules import WarmupSchedule, warmup_constant, warmup_cosine

tv_vit = pytest.importorskip("torchvision.models.vision_transformer")


def three_groups(optimizer_cls=torch.optim.SGD, **kwargs):
    """An optimizer whose groups carry their own lrs: 1e-3, 2.5e-4, 5e-5."""
    ps = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    groups = [{"params": [ps[0]], "lr": 1e-3}, {"params": [ps[1]], "lr": 2.5e-4}, {"params": [ps[2]], "lr": 5e-5}]
    return optimizer_cls(groups, **kwargs)


def run(optimizer, scheduler, steps):
    """The lr of every group at each of `steps` optimizer steps, as the optimizer saw it."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_curve_by_hand():
    # W = 2, T = 6, m = 0.1: steps 0..1 warm up (1/2, 2/2); steps 2..5 follow
    # 0.1 + 0.9 * (1 + cos(pi * k / 4)) / 2 for k = 0..3; steps 6.. hold 0.1
    half = 0.5 * (1 + math.cos(math.pi / 4))   # 0.853553...
    quarter = 0.5 * (1 + math.cos(math.pi * 3 / 4))  # 0.146446...
    expected = [0.5, 1.0, 1.0, 0.1 + 0.9 * half, 0.1 + 0.9 * 0.5, 0.1 + 0.9 * quarter, 0.1, 0.1]
    opt = three_groups()
    sched = warmup_cosine(opt, warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
    seen = run(opt, sched, len(expected))
    for step, (lrs, factor) in enumerate(zip(seen, expected)):
        for lr, peak in zip(lrs, (1e-3, 2.5e-4, 5e-5)):
            assert lr == pytest.approx(peak * factor, rel=1e-12, abs=0), (step, lr, peak)
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]


def test_constant_curve_and_no_warmup():
    opt = three_groups()
    seen = run(opt, warmup_constant(opt, warmup_steps=4), 7)
    assert [lrs[1] for lrs in seen] == pytest.approx([2.5e-4 * f for f in (0.25, 0.5, 0.75, 1, 1, 1, 1)], rel=1e-12)
    opt = three_groups()
    seen = run(opt, warmup_cosine(opt, warmup_steps=0, total_steps=2), 3)
    assert [lrs[0] for lrs in seen] == pytest.approx([1e-3, 5e-4, 0.0], rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("optimizer_cls, kwargs", [
    (torch.optim.SGD, {"momentum": 0.9}), (torch.optim.AdamW, {}), (torch.optim.Adam, {"lr": torch.tensor(0.01)}),
    (torch.optim.RMSprop, {}), (torch.optim.Adagrad, {}),
])
def test_layer_decay_ratios_survive_every_step(optimizer_cls, kwargs):
    # the resized table at 5e-4 (above most layers), layer 0 at 1e-3 * 0.75**4
    model = tv_vit.VisionTransformer(image_size=32, patch_size=16, num_layers=3, num_heads=2,
                                     hidden_dim=16, mlp_dim=32, num_classes=5)
    groups = layer_decay_groups(model, 1e-3, layer_decay=0.75, pos_embed_lr=5e-4)
    ratios = [g["lr"] / 1e-3 for g in groups]
    assert len(set(ratios)) >= 5
    opt = optimizer_cls(groups, **kwargs)
    sched = warmup_cosine(opt, warmup_steps=5, total_steps=12, min_lr_ratio=0.05)
    head = max(range(len(groups)), key=lambda i: ratios[i])
    for step in range(12):
        lrs = [float(g["lr"]) for g in opt.param_groups]
        for lr, ratio in zip(lrs, ratios):
            assert lr / lrs[head] == pytest.approx(ratio, rel=1e-12), step
        assert lrs[head] == pytest.approx(1e-3 * sched.factor(step), rel=1e-12)
        opt.zero_grad()
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        opt.step()
        sched.step()


def test_lr_scale_groups_from_timm_and_mae():
    # timm's param_groups_layer_decay leaves "lr" to the optimizer and puts the factor
    # in "lr_scale": the schedule applies it (a plain LambdaLR would give every group 1e-3)
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer
    from timm.optim import param_groups_layer_decay
    model = VisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=2, num_classes=5)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = warmup_cosine(opt, 2, 10)
    run(opt, sched, 1)  # now at step 1, the peak
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"], rel=1e-12)
    assert len({g["lr"] for g in opt.param_groups}) > 1
    # vitpe's groups carry both the scaled lr and the factor: applied once, not twice
    opt = torch.optim.AdamW(layer_decay_groups(model, 1e-3, layer_decay=0.5), lr=1e-3)
    warmup_cosine(opt, 0, 10)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"], rel=1e-12)
    # explicit choices override the guess
    opt = torch.optim.AdamW(param_groups_layer_decay(model, layer_decay=0.5), lr=1e-3)
    warmup_constant(opt, 0, apply_lr_scale=False)
    assert {g["lr"] for g in opt.param_groups} == {1e-3}


def test_resume_mid_warmup_from_state_dicts():
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.AdamW([{"params": [model.weight], "lr": 1e-2}, {"params": [model.bias], "lr": 1e-3}])
        return model, opt, warmup_cosine(opt, warmup_steps=6, total_steps=20, min_lr_ratio=0.1)

    def train(model, opt, sched, steps):
        lrs = []
        for i in range(steps):
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.zero_grad()
            model(torch.full((2, 4), float(i))).square().sum().backward()
            opt.step()
            sched.step()
        return lrs

    model, opt, sched = make()
    straight = train(model, opt, sched, 14)
    model, opt, sched = make()
    first = train(model, opt, sched, 3)  # stopped mid-warmup
    saved = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    saved = torch.load(_roundtrip(saved), weights_only=True)  # what a checkpoint file gives back
    model, opt, sched = make()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    assert first + train(model, opt, sched, 11) == straight


def _roundtrip(obj):
    import io
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_made_after_the_optimizer_resumed():
    # a scheduler made on an optimizer that already holds a mid-schedule lr takes the
    # peak from "initial_lr" (as torch's schedulers do), not from the current lr
    opt = three_groups()
    sched = warmup_cosine(opt, 4, 8)
    run(opt, sched, 2)
    state = opt.state_dict()
    opt = three_groups()
    opt.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 4)
    sched = warmup_cosine(opt, 4, 8)
    assert sched.peak_lrs == pytest.approx([1e-3, 2.5e-4, 5e-5])


@pytest.mark.parametrize("call, match", [
    (lambda o: warmup_cosine(o, 10, 5), r"warmup_steps \(10\) must not exceed total_steps \(5\)"),
    (lambda o: warmup_cosine(o, -1, 5), "warmup_steps must be >= 0, got -1"),
    (lambda o: warmup_cosine(o, 0, 0), "total_steps must be >= 1, got 0"),
    (lambda o: warmup_cosine(o, 2.5, 10), "warmup_steps must be an int, got float 2.5"),
    (lambda o: warmup_cosine(o, True, 10), "warmup_steps must be an int"),
    (lambda o: warmup_cosine(o, 1, None), "total_steps is required"),
    (lambda o: warmup_cosine(o, 1, 10, min_lr_ratio=1.5), r"min_lr_ratio must be a number in \[0, 1\], got 1.5"),
    (lambda o: warmup_cosine(o, 1, 10, min_lr_ratio=float("nan")), "min_lr_ratio must be"),
    (lambda o: warmup_cosine(o, 1, 10, apply_lr_scale="yes"), "apply_lr_scale must be True, False or None"),
    (lambda o: warmup_constant(o, -3), "warmup_steps must be >= 0"),
    (lambda o: WarmupSchedule(o, 1, 10, decay="linear"), "decay must be one of cosine, constant"),
    (lambda o: WarmupSchedule(o, 1, 10, decay="constant"), "a constant schedule has no total_steps"),
    (lambda o: warmup_cosine(None, 1, 10), "optimizer must be a torch.optim.Optimizer, got NoneType"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(three_groups())


def test_bad_lr_scale_and_added_group():
    opt = three_groups()
    opt.param_groups[1]["lr_scale"] = -0.5
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr_scale'\] must be a non-negative finite number"):
        warmup_cosine(opt, 1, 10, apply_lr_scale=True)
    opt = three_groups()
    sched = warmup_cosine(opt, 1, 10)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    opt.step()
    with pytest.raises(ValueError, match="has 4 param groups, but this schedule was made for 3"):
        sched.step()
