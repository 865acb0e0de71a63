"""Learning-rate warmup and decay that keep each param group's own learning rate.

Fine-tuning a resized ViT uses layer-wise groups (layer_decay_groups) whose
learning rates differ by up to layer_decay ** L, and often a slower (or
faster) position-table group. A schedule must scale every group by the same
factor at every step, or the ratios the groups were built with are lost
during warmup. These schedulers do exactly that:

    lr(group, step) = peak(group) * factor(step)

peak(group) is the group's lr when the scheduler is made (its "initial_lr",
as torch's schedulers read it), so groups that carry their own "lr" keep it,
whatever the optimizer. Groups that carry only a factor in "lr_scale" and
leave "lr" to the optimizer's default (timm's param_groups_layer_decay,
MAE's param_groups_lrd) get peak = default lr * lr_scale; see apply_lr_scale.

Steps count optimizer steps from 0: after the scheduler is made the
optimizer holds step 0's lr, and each scheduler.step() (called after
optimizer.step()) moves to the next. With W warmup steps and T total steps:

    step t < W        factor = (t + 1) / W        (linear; step 0 is not wasted at lr 0)
    W <= t < T        cosine: m + (1 - m) * (1 + cos(pi * (t - W) / (T - W))) / 2
                      constant: 1
    t >= T            cosine: m (the floor holds if training runs on)

so the peak is reached at step W - 1 and cosine reaches m * peak just after
the last step, T - 1 (m = min_lr_ratio).
"""
from __future__ import annotations

import math
import operator
from typing import List, Optional

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupSchedule", "warmup_cosine", "warmup_constant"]

_DECAYS = ("cosine", "constant")


def _steps(value, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        steps = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if steps < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {steps}")
    return steps


def _float(value) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _peak_lrs(optimizer: torch.optim.Optimizer, apply_lr_scale: Optional[bool]) -> List[float]:
    """Each group's peak lr: its initial lr, times its "lr_scale" when that applies."""
    groups = optimizer.param_groups
    own = [_float(g.get("initial_lr", g["lr"])) for g in groups]
    if apply_lr_scale is None:
        # The factor is meant for the optimizer's lr only when no group set an lr of its
        # own: vitpe's layer_decay_groups put the scaled lr in "lr" and the factor in
        # "lr_scale" too, and multiplying again would apply the decay twice.
        default = optimizer.defaults.get("lr")
        apply_lr_scale = (default is not None and any("lr_scale" in g for g in groups)
                          and all(lr == _float(default) for lr in own))
    elif not isinstance(apply_lr_scale, bool):
        raise ValueError(f"apply_lr_scale must be True, False or None (decide from the groups), "
                         f"got {apply_lr_scale!r}")
    if not apply_lr_scale:
        return own
    peaks = []
    for i, (group, lr) in enumerate(zip(groups, own)):
        scale = group.get("lr_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"param_groups[{i}]['lr_scale'] must be a non-negative finite number, got {scale!r}")
        peaks.append(lr * scale)
    return peaks


class WarmupSchedule(LRScheduler):
    """Linear warmup, then cosine decay to min_lr_ratio * peak or a constant
    peak, per group (see the module docstring for the exact curve).

    warmup_steps: W >= 0 (0: start at the peak).
    total_steps: T >= max(W, 1), required for decay="cosine"; None for "constant".
    min_lr_ratio: the cosine's floor as a fraction of each group's peak, in [0, 1].
    apply_lr_scale: multiply each group's lr by its "lr_scale" (missing: 1).
        None decides from the groups: yes when some group has "lr_scale" and
        none set an lr of its own (all equal the optimizer's default).
    Resumable: state_dict() holds the step and every group's peak; make the
    scheduler on a fresh optimizer, then load the optimizer's and the
    scheduler's state dicts.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int,
                 total_steps: Optional[int] = None, min_lr_ratio: float = 0.0, *,
                 decay: str = "cosine", apply_lr_scale: Optional[bool] = None) -> None:
        if decay not in _DECAYS:
            raise ValueError(f"decay must be one of {', '.join(_DECAYS)}, got {decay!r}")
        warmup_steps = _steps(warmup_steps, "warmup_steps", 0)
        if decay == "cosine":
            if total_steps is None:
                raise ValueError("total_steps is required for a cosine decay")
            total_steps = _steps(total_steps, "total_steps", 1)
            if warmup_steps > total_steps:
                raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps ({total_steps})")
        elif total_steps is not None:
            raise ValueError(f"a constant schedule has no total_steps (got {total_steps!r}); "
                             f"use a cosine decay to end at a given step")
        if isinstance(min_lr_ratio, bool) or not isinstance(min_lr_ratio, (int, float)) \
                or not 0.0 <= min_lr_ratio <= 1.0:  # NaN fails the comparison too
            raise ValueError(f"min_lr_ratio must be a number in [0, 1], got {min_lr_ratio!r}")
        if decay == "constant" and min_lr_ratio != 0.0:
            raise ValueError("min_lr_ratio applies to a cosine decay; a constant schedule stays at the peak")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = float(min_lr_ratio)
        self.decay = decay
        # Set before LRScheduler.__init__, which takes step 0 through get_lr().
        self.peak_lrs = _peak_lrs(optimizer, apply_lr_scale)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The multiplier of every group's peak lr at optimizer step `step` (from 0)."""
        w = self.warmup_steps
        if step < w:
            return (step + 1) / w
        if self.decay == "constant":
            return 1.0
        t, m = self.total_steps, self.min_lr_ratio
        if step >= t:
            return m
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * (step - w) / (t - w)))

    def get_lr(self) -> List[float]:
        if len(self.peak_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"the optimizer has {len(self.optimizer.param_groups)} param groups, but this "
                             f"schedule was made for {len(self.peak_lrs)}; make the scheduler after adding groups")
        f = self.factor(self.last_epoch)
        return [peak * f for peak in self.peak_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.0, *, apply_lr_scale: Optional[bool] = None) -> WarmupSchedule:
    """Linear warmup over warmup_steps, then cosine decay to min_lr_ratio * peak
    at total_steps, each group from its own peak lr (ratios between groups
    are kept exactly). Call .step() after every optimizer.step()."""
    return WarmupSchedule(optimizer, warmup_steps, total_steps, min_lr_ratio,
                          decay="cosine", apply_lr_scale=apply_lr_scale)


def warmup_constant(optimizer: torch.optim.Optimizer, warmup_steps: int, *,
                    apply_lr_scale: Optional[bool] = None) -> WarmupSchedule:
    """Linear warmup over warmup_steps, then each group's peak lr for good."""
    return WarmupSchedule(optimizer, warmup_steps, None, decay="constant", apply_lr_scale=apply_lr_scale)
