"""The weights' optimiser: one SGD config for retraining, gradient search and EvNAS, and the steps it shares.

Example::

    cfg = OptimConfig(lr=0.025, nesterov=True)
    optimizer = build_sgd(model.parameters(), cfg)
    scheduler = build_schedule(optimizer, cfg, epochs=50)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

SCHEDULES = ("cosine", "exponential")


@dataclass
class OptimConfig:
    """SGD with momentum on a network's weights, a per-epoch learning-rate schedule and gradient clipping."""

    lr: float = field(default=0.025, metadata={"min": 0.0})  # initial learning rate
    lr_min: float = field(default=0.001, metadata={"min": 0.0})  # cosine schedule's end
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})  # per-epoch decay
    lr_gamma: float = field(default=0.97, metadata={"min": 0.0, "max": 1.0})  # exponential: factor per epoch
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    nesterov: bool = False
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})
    grad_clip: float = field(default=5.0, metadata={"min": 0.0})  # max gradient norm (0 = off)
    # Step the schedule at the start of each epoch, so epoch e trains at the rate of e + 1 and the last one at lr_min:
    # what the DARTS and SNAS code (scheduler.step() before each epoch) do under PyTorch >= 1.1. Under the PyTorch
    # they were published with (0.3.1, 0.4) that first step() gives epoch 0 the initial rate: epoch e at cosine(e),
    # this option's default.
    lr_step_at_start: bool = False
    # Zero the gradients instead of freeing them between steps (PyTorch 1.x's zero_grad): a parameter that had a
    # gradient once keeps getting weight decay and momentum at every step although its op was not sampled (GDAS, RSPS)
    keep_zero_grads: bool = False
    # Search: clip the norm over the weights' and the alphas' gradients together (AutoDL's code clips all parameters)
    clip_all: bool = False


def build_sgd(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over ``params`` with the multi-tensor update on every device (PyTorch picks it only for CUDA tensors; on
    the CPU it replaces a Python loop over the parameters, the same arithmetic)."""
    return torch.optim.SGD(
        list(params), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, foreach=True
    )


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``lr_min`` over ``epochs``, or exponential decay by ``lr_gamma`` per epoch."""
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.lr_gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1), eta_min=cfg.lr_min)


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """Clip the gradients of ``params`` to a total norm of ``max_norm`` (0: no clipping)."""
    if max_norm > 0:
        nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


def step_schedule_first(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Step ``scheduler`` before the epoch's optimiser steps, on purpose (``lr_step_at_start``: the DARTS and SNAS
    code's order, which PyTorch now warns about)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        scheduler.step()
