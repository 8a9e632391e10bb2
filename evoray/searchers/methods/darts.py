"""DARTS: differentiable architecture search (Liu et al., 2019, https://arxiv.org/abs/1806.09055).

Bilevel: before each SGD step of the weights ``w`` on a training batch, one Adam step of the alphas ``a`` on a
validation batch (on NAS-Bench-201, first order, after it: AutoDL's DARTS-V1 baseline, which also uses Nesterov,
weight decay 5e-4 and clips the gradient norm over every parameter). First order: the gradient of ``L_val(w, a)``.
Second order: the gradient of the unrolled objective
``L_val(w', a)`` with ``w' = w - xi (m buf + grad_w L_train(w, a) + wd w)`` (the weight optimiser's next step, ``xi``
its current learning rate):

    grad_a L_val(w', a) - xi (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),
    w+- = w +- eps grad_w' L_val(w', a),  eps = 0.01 / ||grad_w' L_val(w', a)||.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from evoray.searchers.base import Searcher, lr_now
from evoray.searchers.registry import SEARCHERS

LossFn = Callable[[Tensor, Tensor], Tensor]


def _weights(net: nn.Module, arch: list[nn.Parameter]) -> tuple[list[str], list[Tensor]]:
    """Names and tensors of the trainable parameters that are not architecture parameters."""
    arch_ids = {id(a) for a in arch}
    named = [(n, p) for n, p in net.named_parameters() if id(p) not in arch_ids and p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def unrolled_arch_grad(
    net: nn.Module,
    arch: list[nn.Parameter],
    train: tuple[Tensor, Tensor],
    valid: tuple[Tensor, Tensor],
    xi: float,
    momentum: float,
    weight_decay: float,
    momentum_buffers: dict[str, Tensor],
    loss_fn: LossFn = F.cross_entropy,
) -> list[Tensor]:
    """DARTS' second-order architecture gradient (one tensor per alpha in ``arch``).

    ``momentum_buffers`` maps weight names to the optimiser's momentum buffers (absent: zero). BatchNorm running
    statistics are left as they were: the virtual forwards run on copies of the buffers.
    """
    names, weights = _weights(net, arch)
    buffers = {n: b.clone() for n, b in net.named_buffers()}

    def loss_at(values: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        out = functional_call(net, {**dict(zip(names, values)), **buffers}, (batch[0],))
        return loss_fn(out, batch[1])

    grads_w = torch.autograd.grad(loss_at(weights, train), weights)
    with torch.no_grad():
        unrolled = []
        for name, w, g in zip(names, weights, grads_w):
            buf = momentum_buffers.get(name)
            step = g + weight_decay * w if buf is None else momentum * buf + g + weight_decay * w
            unrolled.append((w - xi * step).requires_grad_(True))
    grads = torch.autograd.grad(loss_at(unrolled, valid), [*arch, *unrolled])
    d_alpha, d_w = list(grads[: len(arch)]), list(grads[len(arch) :])
    norm = torch.cat([g.reshape(-1) for g in d_w]).norm()
    eps = 0.01 / float(norm.clamp_min(1e-12))

    def alpha_grad_at(sign: float) -> tuple[Tensor, ...]:
        with torch.no_grad():
            shifted = [w + sign * eps * v for w, v in zip(weights, d_w)]
        return torch.autograd.grad(loss_at(shifted, train), arch)

    plus, minus = alpha_grad_at(1.0), alpha_grad_at(-1.0)
    return [da - xi * (p - m) / (2 * eps) for da, p, m in zip(d_alpha, plus, minus)]


@dataclass
class DartsOptions:
    order: int = field(default=1, metadata={"choices": (1, 2)})  # 2: the unrolled (second-order) gradient


@SEARCHERS.register("darts")
class DARTS(Searcher):
    """DARTS, first or second order (``darts.order``)."""

    name = "darts"
    weighting = "softmax"
    Options = DartsOptions
    paper_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "nb201": {"optim": {"nesterov": True, "weight_decay": 5e-4, "clip_all": True}},  # AutoDL's DARTS baselines
    }

    def order(self) -> str:
        """The alphas first (quark0/darts; AutoDL's DARTS-V2), except first order on NAS-Bench-201, where AutoDL's
        DARTS-V1 steps the weights first."""
        if self.cfg.step_order:
            return self.cfg.step_order
        nb201_v1 = self.space.family.style == "autodl" and self.cfg.section("darts").order == 1  # AutoDL DARTS-V1
        return "weights_first" if nb201_v1 else "arch_first"

    def arch_update(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> None:
        arch = self.net.arch_parameters()
        if self.cfg.section("darts").order == 2:
            state = self.w_optimizer.state
            buffers = {
                name: state[p]["momentum_buffer"]
                for name, p in self.net.named_parameters()
                if state.get(p, {}).get("momentum_buffer") is not None
            }
            o = self.cfg.optim
            grads = unrolled_arch_grad(
                self.net, arch, (x, y), (xv, yv), lr_now(self), o.momentum, o.weight_decay, buffers
            )
        else:
            grads = list(torch.autograd.grad(F.cross_entropy(self.forward(xv), yv), arch))
        self.arch_step(grads)
