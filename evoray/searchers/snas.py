"""SNAS: stochastic neural architecture search (Xie et al., 2019, https://arxiv.org/abs/1812.09926).

Each forward draws one Gumbel-softmax sample ``Z = softmax((log_alpha + G) / tau)`` per cell type and runs every op
weighted by it. Single level: the weights and the alphas both step on the training loss (plus, optionally, the
resource penalty of ``evoray.searchers.resources``), and no validation batch is read; the paper's setting
(``data.train_portion: 1``) trains on every training image and reads the test set for the epoch's validation metrics,
as the original code does. The temperature falls linearly from ``tau_max`` to ``tau_min`` over ``tau_epochs`` (the
original code fixes that horizon at 150 epochs). With ``pretrain_epochs`` the search first trains the weights alone on
uniformly sampled single paths (one op per edge, alphas unchanged), as the original's ``--random_sample_pretrain``
does. The child keeps the top-2 edges of each node or, with ``child: edge_all``, every edge with its argmax op.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.nn.supernet import EdgeGroup, SearchCell
from evoray.nn.weighting import EdgeWeights
from evoray.searchers.base import Searcher, linear_schedule
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.resources import DEFAULT_LAMBDA, cell_costs, cell_type_penalty


@SEARCHERS.register("snas")
class SNAS(Searcher):
    name = "snas"
    weighting = "gumbel-soft"
    bilevel = False  # the weights and the alphas step on the same training batch; no validation batch is read
    families = ("darts",)  # its children (top-2, edge_all) and its resource model are DARTS-cell constructs
    # the original trains on the whole training set and validates on the test set
    paper_defaults: ClassVar[dict[str, Any]] = {
        "arch": {"optimizer": "sgd", "weight_decay": 0.0, "grad_clip": 10.0},
        "data": {"train_portion": 1.0},
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.cfg.snas
        with torch.no_grad():
            for alpha in self.net.arch_parameters():
                alpha.normal_(s.alpha_init_mean, s.alpha_init_std)
        self.costs = self.resource_costs()
        self.resource_lambda = s.resource_lambda or (
            DEFAULT_LAMBDA[s.penalty][int(s.log_penalty)] if s.penalty != "none" else 0.0
        )

    def resource_costs(self) -> dict[str, Tensor]:
        """Per cell type, the (cells, E, K, 3) resources of the supernet's cells of that type."""
        side = self.data.image_size
        per_type: dict[str, list[Tensor]] = {ct: [] for ct in self.space.cell_types}
        for cell in self.net.cells:
            assert isinstance(cell, SearchCell)
            group = cell.groups[0]
            assert isinstance(group, EdgeGroup)
            per_type[cell.cell_type].append(cell_costs(self.space, cell.cell_type, group.C, side, cell.reduction))
            if cell.reduction:
                side = (side + 1) // 2
        return {ct: torch.stack(v).to(self.device) for ct, v in per_type.items() if v}

    def begin_epoch(self) -> None:
        s = self.cfg.snas
        horizon = s.tau_epochs + 1 if s.tau_epochs else self.cfg.epochs  # tau_min reached at epoch tau_epochs
        self.net.tau = linear_schedule(s.tau_max, s.tau_min, self.epoch, horizon)

    def penalty(self, z: dict[str, Tensor]) -> Tensor:
        """The resource penalty of a forward whose samples are ``z``: normal cells plus ``ratio`` times reduction."""
        s = self.cfg.snas
        total = torch.zeros((), device=self.device)
        for ct, costs in self.costs.items():
            value = cell_type_penalty(
                costs, self.net.alphas[ct], z[ct], s.penalty, self.net.tau, s.separation, s.log_penalty
            )
            total = total + (s.ratio if ct == "reduce" else 1.0) * value
        return total

    def random_path(self) -> dict[str, EdgeWeights]:
        """Per cell type, one op per edge drawn uniformly from the edge's ops: a single path with weight 1."""
        out = {}
        for ct, alpha in self.net.alphas.items():
            sizes = [len(self.space.edge_ops(ct, e)) for e in range(alpha.shape[0])]
            index = [int(torch.randint(n, ())) for n in sizes]
            weights = torch.zeros(alpha.shape, device=alpha.device)
            weights[range(len(index)), index] = 1.0
            out[ct] = EdgeWeights(weights, active=[[k] for k in index])
        return out

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        if self.epoch < self.cfg.snas.pretrain_epochs:  # warm-up: weights only, on a random single path
            return self.weight_step(x, y, self.random_path())
        self.w_optimizer.zero_grad(set_to_none=True)
        assert self.a_optimizer is not None
        self.a_optimizer.zero_grad(set_to_none=True)
        weights = self.net.edge_weights()
        logits = self.forward(x, weights)
        loss = F.cross_entropy(logits, y)
        total = loss
        if self.resource_lambda > 0:
            total = total + self.resource_lambda * self.penalty({ct: w.weights for ct, w in weights.items()})
        total.backward()
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.cfg.optim.grad_clip)
        if self.cfg.arch.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.net.arch_parameters(), self.cfg.arch.grad_clip)
        self.w_optimizer.step()
        self.a_optimizer.step()
        return float(loss.item()) * int(y.shape[0]), int((logits.argmax(1) == y).sum())

    def derive_method(self) -> str | None:
        return self.cfg.snas.child

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "tau": self.net.tau}
        if self.cfg.snas.penalty != "none":
            with torch.no_grad():
                probs = {ct: F.softmax(a, dim=-1) for ct, a in self.net.alphas.items()}
                s = self.cfg.snas
                out["resource_penalty"] = float(
                    sum(
                        (s.ratio if ct == "reduce" else 1.0)
                        * cell_type_penalty(
                            c, self.net.alphas[ct], probs[ct], "discrete", 1.0, s.separation, s.log_penalty
                        )
                        for ct, c in self.costs.items()
                    )
                )
        return out

    def extra_state(self) -> dict[str, Any]:
        return {"tau": self.net.tau}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.net.tau = float(state["tau"])
