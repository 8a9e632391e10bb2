"""The weights' optimiser: one SGD config for retraining, gradient search and EvNAS, and the steps it shares.

Example::

    cfg = OptimConfig(lr=0.025, nesterov=True)
    optimizer = build_sgd(model.parameters(), cfg)
    scheduler = build_schedule(optimizer, cfg, epochs=50)
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

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


def build_sgd(params: Iterable[nn.Parameter], cfg: OptimConfig, flat: bool = False) -> torch.optim.SGD:
    """SGD over ``params`` with the multi-tensor update on every device (PyTorch picks it only for CUDA tensors; on
    the CPU it replaces a Python loop over the parameters, the same arithmetic). ``flat``: a :class:`FlatSGD` where
    the gradients are zeroed, not freed (``keep_zero_grads``), for a caller whose state dicts are written by
    ``torch.save`` (which stores the flat buffers once; pickling each parameter's view would copy them whole)."""
    kind = FlatSGD if flat and cfg.keep_zero_grads else torch.optim.SGD
    return kind(
        list(params), cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov, foreach=True
    )


class _Flat:
    """One buffer each for the parameters, gradients and momentum buffers of one SGD parameter group: every
    parameter's data, ``.grad`` and momentum buffer are views of them, laid out as the parameter is."""

    def __init__(self, params: list[nn.Parameter], buffers: list[Tensor] | None) -> None:
        total = sum(p.numel() for p in params)
        like = params[0]
        self.data = torch.empty(total, device=like.device, dtype=like.dtype)
        self.grad = torch.empty_like(self.data)
        self.momentum = None if buffers is None else torch.empty_like(self.data)
        self.params = params
        self.views: list[Tensor] = []  # the gradients' views, to tell whether a parameter's .grad is still one
        offset = 0
        for i, p in enumerate(params):
            n = p.numel()
            shape, stride = p.shape, p.stride()
            data = self.data.as_strided(shape, stride, offset)
            grad = self.grad.as_strided(shape, stride, offset)
            assert p.grad is not None
            data.copy_(p.detach())
            grad.copy_(p.grad)
            p.data = data
            p.grad = grad
            if buffers is not None and self.momentum is not None:
                buffers[i] = self.momentum.as_strided(shape, stride, offset).copy_(buffers[i])
            self.views.append(grad)
            offset += n
        self.pointers = [p.data_ptr() for p in params]

    def intact(self) -> bool:
        """Whether every parameter still holds its views (nothing replaced a gradient or a parameter's data)."""
        grads = map(operator.attrgetter("grad"), self.params)
        return all(map(operator.is_, grads, self.views)) and list(map(Tensor.data_ptr, self.params)) == self.pointers


def _dense(t: Tensor) -> bool:
    """Whether ``t`` covers its memory without gaps or overlaps in some order of its dimensions (as a contiguous or
    channels-last tensor does), so that a flat buffer's ``as_strided`` view can hold it."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a: Tensor, b: Tensor) -> bool:
    """Same shape, and the same strides wherever a dimension has more than one element."""
    return a.shape == b.shape and all(n == 1 or s == t for n, s, t in zip(a.shape, a.stride(), b.stride()))


class FlatSGD(torch.optim.SGD):
    """``torch.optim.SGD`` (multi-tensor, one parameter group) for gradients that are zeroed, not freed, between steps
    (``optim.keep_zero_grads``). Once every parameter has a gradient and a momentum buffer, they and the parameters
    move into one flat buffer each (views laid out as each parameter is), and the update, the zeroing and the
    gradient norm (:func:`weight_gradients`) run as a few ops over one tensor instead of a few per parameter: the same
    elementwise arithmetic as ``torch.optim.SGD``, in the same order. On a search supernet of hundreds of small
    tensors that is the difference between ~0.1 ms and several ms per step. The state dict stays SGD's, per
    parameter. Loading a state dict rebuilds the flat buffers at the next step; freeing the gradients
    (``zero_grad(set_to_none=True)``) or anything else replacing a parameter's data or gradient (checked at each
    use) returns it to the per-parameter update for good."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flat: _Flat | None = None
        # per parameter for good: the gradients are freed (zero_grad(set_to_none=True)), or something else replaces
        # the parameters' tensors (an all-reduce assigning gradients)
        self._off = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        if set_to_none:
            self._off, self._flat = True, None
        elif self._ready():
            assert self._flat is not None
            self._flat.grad.zero_()
            return
        super().zero_grad(set_to_none)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._flat = None
        super().load_state_dict(state_dict)

    def flatten(self) -> None:
        """Move into the flat buffers now, where every parameter has a gradient and a momentum buffer (else at a
        later step, as before): after a loaded state dict and restored gradients, so that the next steps (their
        gradient norm among them, whose rounding differs between one flat buffer and the tensors one by one) compute
        as an uninterrupted run's do."""
        if self._flat is None:
            self._flatten()

    def flat_gradient(self) -> Tensor | None:
        """The flat buffer holding every parameter's gradient, or None while they are per parameter."""
        return self._flat.grad if self._ready() and self._flat is not None else None

    def _ready(self) -> bool:
        if self._flat is not None and not self._flat.intact():
            self._flat, self._off = None, True
        return self._flat is not None

    def _flatten(self) -> None:
        """Move parameters, gradients and momentum buffers into flat buffers, where every one has them."""
        if self._off or len(self.param_groups) != 1:
            return
        group = self.param_groups[0]
        params: list[nn.Parameter] = group["params"]
        if (
            not params
            or group["maximize"]
            or group["differentiable"]
            or group["fused"]
            or any(p.grad is None or p.grad.is_sparse for p in params)
            or len({(p.device, p.dtype) for p in params}) != 1
            or not all(_dense(p) and p.grad is not None and _same_layout(p.grad, p) for p in params)
            or len({p.data_ptr() for p in params}) != len(params)
        ):
            return
        buffers = None
        if group["momentum"] != 0:
            found = [self.state[p].get("momentum_buffer") for p in params]
            if any(b is None or not _same_layout(b, p) for b, p in zip(found, params, strict=True)):
                return
            buffers = [b for b in found if b is not None]
        self._flat = _Flat(params, buffers)
        if buffers is not None:
            for p, b in zip(params, buffers, strict=True):
                self.state[p]["momentum_buffer"] = b

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is not None or not self._ready():
            loss = super().step(closure)
            self._flatten()
            return loss
        flat, group = self._flat, self.param_groups[0]
        assert flat is not None
        lr, momentum, decay = float(group["lr"]), group["momentum"], group["weight_decay"]
        # torch.optim.sgd._multi_tensor_sgd, on one tensor
        d_p = torch.add(flat.grad, flat.data, alpha=decay) if decay != 0 else flat.grad
        if momentum != 0:
            assert flat.momentum is not None
            flat.momentum.mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
            if group["nesterov"]:
                d_p.add_(flat.momentum, alpha=momentum)
            else:
                d_p = flat.momentum
        flat.data.add_(d_p, alpha=-lr)
        return None


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine from ``lr`` to ``lr_min`` over ``epochs``, or exponential decay by ``lr_gamma`` per epoch."""
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.lr_gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1), eta_min=cfg.lr_min)


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """Clip the gradients of ``params`` to a total norm of ``max_norm`` (0: no clipping)."""
    clip_gradient_tensors([p.grad for p in params if p.grad is not None], max_norm)


def clip_gradient_tensors(grads: list[Tensor], max_norm: float) -> None:
    """Clip gradient tensors (a :class:`FlatSGD`'s flat buffer among them) to a total norm of ``max_norm`` (0: no
    clipping), as ``nn.utils.clip_grad_norm_`` does: the norm of the tensors' norms, and a factor
    ``max_norm / (norm + 1e-6)`` where that is below one."""
    if max_norm > 0 and grads:
        total = nn.utils.get_total_norm(grads, 2.0, foreach=True)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        # a factor of one leaves them as they are: on the CPU, where reading it costs no synchronisation, the
        # multiplication (a pass over every gradient) is skipped
        if coef.device.type != "cpu" or float(coef) < 1.0:
            torch._foreach_mul_(grads, coef)


def weight_gradients(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> list[Tensor]:
    """The gradients of ``params``, ``optimizer``'s parameters, as tensors to clip: a :class:`FlatSGD`'s flat buffer
    where it holds them."""
    flat = optimizer.flat_gradient() if isinstance(optimizer, FlatSGD) else None
    return [flat] if flat is not None else [p.grad for p in params if p.grad is not None]


def step_schedule_first(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Step ``scheduler`` before the epoch's optimiser steps, on purpose (``lr_step_at_start``: the DARTS and SNAS
    code's order, which PyTorch now warns about)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        scheduler.step()
