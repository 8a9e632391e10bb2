"""XNAS: neural architecture search with expert advice (Nayman et al., 2019, https://arxiv.org/abs/1906.09607).

Each edge is a forecaster whose experts are its ops, weighted ``softmax(alpha)`` over the experts still alive. After
each weight step on a training batch, a validation batch gives every expert the reward ``r_k = -dL/dw_k`` (the
inner product of the loss gradient at the edge output with the expert's output), clipped to ``[-L, L]``, and the
exponentiated-gradient update ``alpha_k += eta r_k``. An expert whose gap to the leader exceeds ``2 eta L (T - t)``
can no longer lead within the ``T`` updates and is wiped out for good; it is never computed again. ``eta`` is
``sqrt(2 ln N / T) / L`` for ``N`` experts, per cell type unless set. The threshold reaches zero at the last update
(``t = T``), which leaves each edge its leader alone: the last epoch is measured on that single path, with weights
trained as a mixture, and its ``valid_acc`` can fall far below the epoch before (``valid_acc_best`` keeps the best).

No official search code exists. ``configs/search-xnas-archai.yaml`` is archai's reimplementation as a preset: one
update per validation example (``xnas.update: example``, ``T`` counted in examples x epochs x cells of the type),
rewards not clipped, ``L = 1``, plain SGD on the weights (no momentum or weight decay, gradient clip 1), the alphas
stepped before the weights and edges ranked by ``exp(alpha)`` (``xnas.edge_rank: exp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import ConfigError
from evoray.nn.weighting import EdgeWeights, WeightingContext, expert_weights
from evoray.searchers.base import Searcher
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings
from evoray.spaces import Genotype, derive_genotype


@dataclass
class XnasOptions:
    reward_bound: float = field(default=5.0, metadata={"min": 0.0})  # L: the rewards' bound in the wipeout and eta
    clip_rewards: bool = True  # clip the rewards to [-L, L] (the paper's bound; archai does not clip)
    eta: dict[str, float] = field(default_factory=dict)  # per cell type learning rate (absent: sqrt(2 ln N / T) / L)
    wipeout: bool = True  # remove experts that can no longer lead
    # one update per validation batch (its mean loss) or per validation example (archai's reimplementation)
    update: str = field(default="batch", metadata={"choices": ("batch", "example")})
    # how the child ranks the edges of a node: by softmax(alpha) per edge (DARTS' rule) or by exp(alpha) (archai)
    edge_rank: str = field(default="softmax", metadata={"choices": ("softmax", "exp")})

    def validate(self) -> None:
        if self.reward_bound <= 0:
            raise ConfigError(f"xnas.reward_bound = {self.reward_bound} must be > 0")
        for ct, eta in self.eta.items():
            if not eta > 0:
                raise ConfigError(f"xnas.eta.{ct} = {eta} must be > 0 (leave it out for sqrt(2 ln N / T) / L)")


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
    step_order = "weights_first"
    Options = XnasOptions

    @classmethod
    def check(cls, cfg: SearchSettings) -> None:
        super().check(cfg)
        from evoray.spaces import get_space

        cell_types = get_space(cfg.supernet.space).cell_types
        unknown = sorted(set(cfg.section("xnas").eta) - set(cell_types))
        if unknown:
            raise ConfigError(
                f"xnas.eta names cell type {unknown[0]!r}; cell types of {cfg.supernet.space}: {', '.join(cell_types)}"
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts: XnasOptions = self.cfg.section("xnas")
        x = self.opts
        per_example = x.update == "example"
        updates_per_step = self.cfg.data.batch_size if per_example else 1
        cells = {ct: sum(getattr(c, "cell_type", None) == ct for c in self.net.cells) for ct in self.space.cell_types}
        # what one update adds to t: 1, or (archai) the cells of the type, each counted as an update of its own
        self.per_update = {ct: cells[ct] if per_example else 1 for ct in cells}
        steps = self.cfg.epochs * self.steps_per_epoch()
        self.total = {ct: steps * updates_per_step * self.per_update[ct] for ct in cells}  # T
        self.updates = dict.fromkeys(cells, 0)  # t
        self.eta = {
            ct: x.eta[ct] if ct in x.eta else theory_eta(self.space.num_ops(ct), self.total[ct], x.reward_bound)
            for ct in self.space.cell_types
        }

    def build_arch_optimizer(self) -> torch.optim.Optimizer | None:
        return None  # exponentiated gradient, applied by hand

    def arch_update(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> None:
        if self.opts.update == "batch":
            self.expert_update(xv, yv)
            return
        for i in range(int(yv.shape[0])):  # archai: one update per validation example
            self.expert_update(xv[i : i + 1], yv[i : i + 1])

    def leaf_weights(self) -> dict[str, EdgeWeights]:
        """The expert weights as leaves, so the validation backward yields ``dL/dw`` directly."""
        out = {}
        for ct, alpha in self.net.alphas.items():
            ew = expert_weights(alpha.detach(), WeightingContext(self.space, ct, wiped=self.net.wiped(ct)))
            ew.weights = ew.weights.detach().requires_grad_(True)
            out[ct] = ew
        return out

    def expert_update(self, xv: Tensor, yv: Tensor) -> None:
        """One exponentiated-gradient update of every expert from the loss on ``(xv, yv)``. The alphas of a cell
        type are shared by its cells, so ``-dL/dw`` sums the rewards of the cells (archai applies them cell by cell,
        counting ``t`` per cell: ``per_update``)."""
        weights = self.leaf_weights()
        loss = F.cross_entropy(self.forward(xv, weights), yv)
        cts = list(weights)
        grads = torch.autograd.grad(loss, [weights[ct].weights for ct in cts], allow_unused=True)
        bound = self.opts.reward_bound
        with torch.no_grad():
            for ct, g in zip(cts, grads):
                self.updates[ct] += self.per_update[ct]
                alpha, wiped = self.net.alphas[ct], self.net.wiped(ct)
                reward = torch.zeros_like(alpha) if g is None else -g
                if self.opts.clip_rewards:
                    reward = reward.clamp(-bound, bound)
                alpha.add_(self.eta[ct] * reward.masked_fill(wiped, 0.0))
                if self.opts.wipeout:
                    wiped.copy_(wipeout(alpha, wiped, self.eta[ct], bound, self.total[ct], self.updates[ct]))

    def genotype(self) -> Genotype:
        if self.opts.edge_rank == "softmax":
            return super().genotype()
        weights = {}  # archai ranks by the experts' weights exp(alpha), not normalised per edge
        for ct, alpha in self.net.alphas.items():
            wiped = self.net.wiped(ct)
            a = alpha.detach().double().cpu()
            w = (a - a.max()).exp().masked_fill(wiped.cpu(), -1.0)
            weights[ct] = w.numpy().astype(np.float64)
        return derive_genotype(self.space, weights, self.derive_method())

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        for ct in self.space.cell_types:
            out[f"wiped_{ct}"] = int(self.net.wiped(ct).sum())
            out[f"eta_{ct}"] = self.eta[ct]
        return out

    def extra_state(self) -> dict[str, Any]:
        return {"updates": dict(self.updates)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = {str(ct): int(t) for ct, t in state["updates"].items()}
