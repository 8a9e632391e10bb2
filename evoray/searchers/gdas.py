"""GDAS: searching for a robust neural architecture in four GPU hours (Dong & Yang, 2019,
https://arxiv.org/abs/1910.04465).

Every forward draws one hard Gumbel sample per edge (straight-through gradients) and computes only the sampled op
``k``; a DARTS-family edge outputs ``w[k] * op_k(x)`` and a NAS-Bench-201 edge adds the other ops' zero-valued
weights, as the original's two cell types do (``evoray.nn.weighting``). tau falls linearly from ``tau_max`` to
``tau_min`` over the epochs. Alternating first-order steps: SGD (Nesterov) on the weights with a training batch, then
Adam on the alphas with a validation batch, each with a fresh sample. The child of a DARTS-family space keeps, per
node, the two strongest (op, input) pairs (``gdas.child: top2_pairs``, the original's rule; ``top2`` for DARTS'
edges).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.searchers.base import Searcher, linear_schedule
from evoray.searchers.registry import SEARCHERS


@SEARCHERS.register("gdas")
class GDAS(Searcher):
    name = "gdas"
    weighting = "gumbel-hard"
    paper_defaults: ClassVar[dict[str, Any]] = {"optim": {"nesterov": True, "weight_decay": 5e-4}}

    def begin_epoch(self) -> None:
        g = self.cfg.gdas
        self.net.tau = linear_schedule(g.tau_max, g.tau_min, self.epoch, self.cfg.epochs)

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        out = self.weight_step(x, y)
        arch = self.net.arch_parameters()
        self.arch_step(list(torch.autograd.grad(F.cross_entropy(self.forward(xv), yv), arch)))
        return out

    def derive_method(self) -> str | None:
        return self.cfg.gdas.child if self.space.family == "darts" else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tau": self.net.tau}

    def extra_state(self) -> dict[str, Any]:
        return {"tau": self.net.tau}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.net.tau = float(state["tau"])
