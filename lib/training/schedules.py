"""Learning-rate schedules, the optimizer of a TrainConfig, and the planned LR curve.

Every schedule is a function of the optimizer's step counter and is planned over
``epochs × steps_per_epoch`` steps, where ``steps_per_epoch`` is the number of
batches the training pipeline really yields per epoch (lib.training.run makes the
pipeline yield exactly that many). A decaying schedule reaches its floor at the
last step of the last epoch, not before; ``lr_plan.json`` samples the same
schedule for the Train page's LR chart, so the plan and the learning rates
logged in history.csv agree.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from lib.config import TrainConfig

LR_PLAN_POINTS = 200  # samples of the planned curve in lr_plan.json


@keras.saving.register_keras_serializable(package="kestrel")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle policy: cosine warm-up to ``max_lr``, then cosine annealing.

    Starts at ``max_lr / div_factor``, peaks after ``pct_start`` of the steps and
    ends at ``max_lr / (div_factor * final_div_factor)`` (Smith, 2018; fastai's defaults).
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = max(1.0, self.pct_start * self.total_steps)
        rest = max(1.0, self.total_steps - warm)
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        up = start + (self.max_lr - start) * (1.0 - ops.cos(math.pi * step / warm)) / 2.0
        t = ops.clip((step - warm) / rest, 0.0, 1.0)
        down = end + (self.max_lr - end) * (1.0 + ops.cos(math.pi * t)) / 2.0
        return ops.where(step < warm, up, down)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the whole run: what every decaying schedule is planned over."""
    return max(1, cfg.epochs * steps_per_epoch)


def make_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """The learning rate of ``cfg``: a float, or a schedule over optimizer steps.

    Args:
        cfg: the training settings.
        steps_per_epoch: batches the training pipeline yields per epoch.
    """
    lr = cfg.learning_rate
    total = total_steps(cfg, steps_per_epoch)
    schedules = keras.optimizers.schedules
    if cfg.schedule in ("constant", "reduce_on_plateau"):
        return lr  # plateau reduction is a callback acting on this value
    if cfg.schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=total)
    if cfg.schedule == "warmup_cosine":
        warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
        if warmup <= 0:
            return schedules.CosineDecay(lr, decay_steps=total)
        return schedules.CosineDecay(
            lr / 100.0, decay_steps=total - warmup, warmup_target=lr, warmup_steps=warmup
        )
    if cfg.schedule == "one_cycle":
        return OneCycle(lr, total)
    if cfg.schedule == "step":
        return schedules.ExponentialDecay(
            lr,
            decay_steps=cfg.step_epochs * steps_per_epoch,
            decay_rate=cfg.step_factor,
            staircase=True,
        )
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer of ``cfg`` with its schedule and decoupled weight decay.

    Weight decay leaves biases and normalisation parameters alone, as is usual.
    """
    lr = make_schedule(cfg, steps_per_epoch)
    wd = cfg.weight_decay or None
    if cfg.optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd
        )
    elif cfg.optimizer == "rmsprop":
        opt = keras.optimizers.RMSprop(learning_rate=lr, momentum=cfg.momentum, weight_decay=wd)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    if cfg.weight_decay:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


def lr_plan(cfg: TrainConfig, steps_per_epoch: int, points: int = LR_PLAN_POINTS) -> dict:
    """The planned learning rate over training, sampled for the LR chart (lr_plan.json).

    Returns:
        ``step`` (optimizer steps, from 0 to ``total_steps``), ``epoch`` (the same
        in epochs), ``learning_rate`` (the rate the schedule gives at each step),
        ``steps_per_epoch``, ``total_steps``, and ``adaptive`` (plateau reduction:
        the curve is only the starting rate).
    """
    schedule = make_schedule(cfg, steps_per_epoch)
    total = total_steps(cfg, steps_per_epoch)
    steps = np.unique(np.linspace(0, total, min(points, total + 1)).astype(int))
    if callable(schedule):
        lrs = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    else:
        lrs = [float(schedule)] * len(steps)
    return {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "step": [int(s) for s in steps],
        "epoch": [float(s) / steps_per_epoch for s in steps],
        "learning_rate": lrs,
        "adaptive": cfg.schedule == "reduce_on_plateau",
    }


def inner_optimizer(optimizer):
    """The optimizer that holds the schedule (a LossScaleOptimizer wraps one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_lr(optimizer) -> float:
    """The optimizer's learning rate right now (schedules evaluated at its step)."""
    return float(keras.ops.convert_to_numpy(inner_optimizer(optimizer).learning_rate))
