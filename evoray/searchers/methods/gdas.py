"""GDAS: searching for a robust neural architecture in four GPU hours (Dong & Yang, 2019,
https://arxiv.org/abs/1910.04465).

Every forward draws one hard Gumbel sample per edge (straight-through gradients) and computes only the sampled op
``k``; a DARTS-family edge outputs ``w[k] * op_k(x)`` and a NAS-Bench-201 edge adds the other ops' zero-valued
weights, as the original's two cell types do (``evoray.nn.weighting``). tau falls linearly from ``tau_max`` to
``tau_min`` over the epochs. Alternating first-order steps: SGD (Nesterov) on the weights with a training batch, then
Adam on the alphas with a validation batch, each with a fresh sample.

As AutoDL-Projects' code runs it: the gradients are zeroed, not freed, between steps (``zero_grad()`` under the
PyTorch 1.x it was published with), so every op sampled once keeps getting weight decay and momentum at every step;
the gradient norm is clipped over every parameter, alphas included. On the DARTS space the original's search network
(GDAS-NASNet-CIFAR: N=2, i.e. 6 cells; ops without BN after the pools, with conv biases where BN is not affine;
BN-ReLU before the pool; batch 256, 250 epochs). The child of a DARTS-family space keeps, per node, the two strongest
(op, input) pairs (``gdas.child: top2_pairs``, the original's rule; ``top2`` for DARTS' edges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import ConfigError
from evoray.searchers.base import Searcher, linear_schedule
from evoray.searchers.registry import SEARCHERS

_AUTODL_OPTIM = {"nesterov": True, "weight_decay": 5e-4, "keep_zero_grads": True, "clip_all": True}


@dataclass
class GdasOptions:
    tau_max: float = field(default=10.0, metadata={"min": 0.0})  # tau at the first epoch
    tau_min: float = field(default=0.1, metadata={"min": 0.0})  # tau at the last epoch
    # how a DARTS-family child is derived: the two strongest (op, input) pairs per node (the original) or DARTS' top-2
    # edges; NAS-Bench-201 children take every edge's argmax
    child: str = field(default="top2_pairs", metadata={"choices": ("top2_pairs", "top2")})

    def validate(self) -> None:
        if not 0 < self.tau_min <= self.tau_max:
            raise ConfigError(
                f"gdas temperatures need 0 < tau_min <= tau_max, got tau_min={self.tau_min}, tau_max={self.tau_max}"
            )


@SEARCHERS.register("gdas")
class GDAS(Searcher):
    name = "gdas"
    weighting = "gumbel-hard"
    autotune = False  # as AutoDL's script sets it; a sampled path per step
    step_order = "weights_first"
    Options = GdasOptions
    paper_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "darts": {  # GDAS-NASNet-CIFAR (NASNet-space-search-by-GDAS.sh)
            "epochs": 250,
            "optim": _AUTODL_OPTIM,
            "supernet": {"style": "autodl", "layers": 6},
            "data": {"batch_size": 256},
        },
        "nb201": {"epochs": 250, "optim": _AUTODL_OPTIM},  # NAS-Bench-201-algos/GDAS.sh
    }

    def begin_epoch(self) -> None:
        g = self.cfg.section("gdas")
        self.net.tau = linear_schedule(g.tau_max, g.tau_min, self.epoch, self.cfg.epochs)

    def arch_update(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> None:
        arch = self.net.arch_parameters()
        self.arch_step(list(torch.autograd.grad(F.cross_entropy(self.forward(xv), yv), arch)))

    def derive_method(self) -> str | None:
        return str(self.cfg.section("gdas").child) if self.space.family.edges_per_node else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tau": self.net.tau}

    def extra_state(self) -> dict[str, Any]:
        return {"tau": self.net.tau}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.net.tau = float(state["tau"])
