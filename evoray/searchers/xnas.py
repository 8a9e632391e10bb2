"""XNAS: neural architecture search with expert advice (Nayman et al., 2019, https://arxiv.org/abs/1906.09607).

Each edge is a forecaster whose experts are its ops, weighted ``softmax(alpha)`` over the experts still alive. After
each weight step on a training batch, a validation batch gives every expert the reward ``r_k = -dL/dw_k`` (the
inner product of the loss gradient at the edge output with the expert's output), clipped to ``[-L, L]``, and the
exponentiated-gradient update ``alpha_k += eta r_k``. An expert whose gap to the leader exceeds ``2 eta L (T - t)``
can no longer lead within the ``T`` updates and is wiped out for good; it is never computed again. ``eta`` is
``sqrt(2 ln N / T) / L`` for ``N`` experts, per cell type unless set.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.nn.weighting import EdgeWeights, WeightingContext, expert_weights
from evoray.searchers.base import Searcher
from evoray.searchers.registry import SEARCHERS


def wipeout(alpha: Tensor, wiped: Tensor, eta: float, bound: float, total: int, t: int) -> Tensor:
    """The experts wiped out after update ``t`` of ``total``: those already gone, and those whose gap to the best
    living expert of their edge exceeds ``2 eta L (T - t)``. The leader is never wiped out."""
    alive = alpha.masked_fill(wiped, float("-inf"))
    leader = alive.max(dim=-1, keepdim=True).values
    threshold = 2.0 * eta * bound * max(total - t, 0)
    return wiped | ((leader - alpha) > threshold)


def theory_eta(num_experts: int, total: int, bound: float) -> float:
    """The learning rate of XNAS' regret bound: ``sqrt(2 ln N / T) / L``."""
    return math.sqrt(2.0 * math.log(max(num_experts, 2)) / max(total, 1)) / max(bound, 1e-12)


@SEARCHERS.register("xnas")
class XNAS(Searcher):
    name = "xnas"
    weighting = "expert"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates = 0  # t: architecture updates so far
        self.total = self.cfg.epochs * self.steps_per_epoch()  # T
        x = self.cfg.xnas  # cell types and values checked by SearchConfig.validate
        self.eta = {
            ct: x.eta[ct] if ct in x.eta else theory_eta(self.space.num_ops(ct), self.total, x.reward_bound)
            for ct in self.space.cell_types
        }

    def build_arch_optimizer(self) -> torch.optim.Optimizer | None:
        return None  # exponentiated gradient, applied by hand

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        out = self.weight_step(x, y)
        self.expert_update(xv, yv)
        return out

    def leaf_weights(self) -> dict[str, EdgeWeights]:
        """The expert weights as leaves, so the validation backward yields ``dL/dw`` directly."""
        out = {}
        for ct, alpha in self.net.alphas.items():
            ew = expert_weights(alpha.detach(), WeightingContext(self.space, ct, wiped=self.net.wiped(ct)))
            ew.weights = ew.weights.detach().requires_grad_(True)
            out[ct] = ew
        return out

    def expert_update(self, xv: Tensor, yv: Tensor) -> None:
        weights = self.leaf_weights()
        loss = F.cross_entropy(self.forward(xv, weights), yv)
        cts = list(weights)
        grads = torch.autograd.grad(loss, [weights[ct].weights for ct in cts], allow_unused=True)
        self.updates += 1
        bound = self.cfg.xnas.reward_bound
        with torch.no_grad():
            for ct, g in zip(cts, grads):
                alpha, wiped = self.net.alphas[ct], self.net.wiped(ct)
                reward = torch.zeros_like(alpha) if g is None else (-g).clamp(-bound, bound)
                alpha.add_(self.eta[ct] * reward.masked_fill(wiped, 0.0))
                if self.cfg.xnas.wipeout:
                    wiped.copy_(wipeout(alpha, wiped, self.eta[ct], bound, self.total, self.updates))

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        for ct in self.space.cell_types:
            out[f"wiped_{ct}"] = int(self.net.wiped(ct).sum())
            out[f"eta_{ct}"] = self.eta[ct]
        return out

    def extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
