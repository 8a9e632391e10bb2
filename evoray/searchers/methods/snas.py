"""SNAS: stochastic neural architecture search (Xie et al., 2019, https://arxiv.org/abs/1812.09926).

Each forward draws one Gumbel-softmax sample ``Z = softmax((log_alpha + G) / tau)`` per cell type and runs every op
weighted by it. Single level: the weights and the alphas both step on the training loss (plus, optionally, the
resource penalty of ``evoray.searchers.resources``), and no validation batch is read; the paper's setting
(``data.train_portion: 1``) trains on every training image and reads the test set for the epoch's validation metrics,
as the original code does. The temperature falls linearly from ``tau_max`` to ``tau_min`` over ``tau_epochs`` (the
original code fixes that horizon at 150 epochs and steps it before each epoch: epoch e samples at
``tau_max - (tau_max - tau_min) (e + 1) / 150``). Every edge's output is dropped per sample with ``drop_path_prob``
(0.3, the README's commands). With ``pretrain_epochs`` the search first trains the weights alone on uniformly sampled
single paths (one op per edge, alphas unchanged), as the original's ``--random_sample_pretrain`` does.

The child: ``edge_all`` (every edge keeps its argmax op, ``none`` included; the child the original logs and
retrains), ``top2_with_none`` (the original's own ``genotype()``: the two edges with the highest weight of any op,
``none`` included, each with its argmax op) or DARTS' ``top2`` (``none`` excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import ConfigError
from evoray.nn.supernet import EdgeGroup, SearchCell
from evoray.nn.weighting import EdgeWeights, random_path
from evoray.searchers.base import Searcher
from evoray.searchers.methods.snas_resources import DEFAULT_LAMBDA, cell_costs, cell_type_penalty
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings


@dataclass
class SnasOptions:
    tau_max: float = field(default=1.0, metadata={"min": 0.0})  # the temperature the schedule starts from
    tau_min: float = field(default=0.03, metadata={"min": 0.0})  # temperature floor
    tau_epochs: int = field(default=150, metadata={"min": 0})  # linear-schedule horizon (original: 150; 0 = epochs)
    alpha_init_mean: float = 1.0  # log_alpha ~ N(mean, std)
    alpha_init_std: float = field(default=0.01, metadata={"min": 0.0})
    penalty: str = field(
        default="none", metadata={"choices": ("none", "reparametrization", "discrete", "policy_gradient")}
    )  # how the resource penalty is weighted
    resource_lambda: float = field(default=0.0, metadata={"min": 0.0})  # penalty weight (0 = the method's default)
    log_penalty: bool = False  # penalise the mean of the logs of the three resource sums
    separation: str = field(default="all", metadata={"choices": ("all", "size", "flops", "mac")})  # which resource
    ratio: float = field(default=1.0, metadata={"min": 0.0})  # weight of reduction cells against normal cells
    # how the child is derived: edge_all (the original's logged and retrained child), top2_with_none (the original's
    # genotype(): edges and ops ranked with none included) or top2 (DARTS': none excluded)
    child: str = field(default="edge_all", metadata={"choices": ("edge_all", "top2_with_none", "top2")})
    # per-sample drop-path on every edge's output during the search (the README's --drop_path_prob 3e-1)
    drop_path_prob: float = field(default=0.3, metadata={"min": 0.0, "max": 0.99})
    # epochs of weight-only warm-up before the Gumbel phase: each step runs one uniformly drawn op per edge and the
    # alphas stay put (the original's --random_sample_pretrain; 0 = off)
    pretrain_epochs: int = field(default=0, metadata={"min": 0})

    def validate(self) -> None:
        if not 0 < self.tau_min <= self.tau_max:
            raise ConfigError(
                f"snas temperatures need 0 < tau_min <= tau_max, got tau_min={self.tau_min}, tau_max={self.tau_max}"
            )
        if self.resource_lambda > 0 and self.penalty == "none":
            raise ConfigError("snas.resource_lambda is set but snas.penalty is none; choose a penalty method")


def snas_tau(options: SnasOptions, epoch: int, epochs: int) -> float:
    """The original's temperature of epoch ``epoch`` (0-based): stepped before the epoch, so epoch e samples at
    ``tau_max - (tau_max - tau_min) (e + 1) / horizon``, floored at ``tau_min`` (horizon ``tau_epochs``, or the run's
    epochs when 0)."""
    horizon = options.tau_epochs or epochs
    tau = options.tau_max - (options.tau_max - options.tau_min) * (epoch + 1) / horizon
    return max(tau, options.tau_min)


@SEARCHERS.register("snas")
class SNAS(Searcher):
    name = "snas"
    weighting = "gumbel-soft"
    bilevel = False  # the weights and the alphas step on the same training batch; no validation batch is read
    families = ("darts",)  # its children (top-2, edge_all) and its resource model are DARTS-cell constructs
    Options = SnasOptions
    # the original trains on the whole training set and validates on the test set, 150 epochs (its scheduler, stepped
    # before each epoch under PyTorch 0.4, trains epoch e at cosine(e): evoray's default)
    paper_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "darts": {
            "epochs": 150,
            "arch": {"optimizer": "sgd", "weight_decay": 0.0, "grad_clip": 10.0},
            "data": {"train_portion": 1.0},
        }
    }

    @classmethod
    def check(cls, cfg: SearchSettings) -> None:
        super().check(cfg)
        pretrain = cfg.section("snas").pretrain_epochs
        if pretrain >= cfg.epochs:
            raise ConfigError(
                f"snas.pretrain_epochs = {pretrain} leaves no search epoch; it must be < epochs = {cfg.epochs}"
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s: SnasOptions = self.cfg.section("snas")
        self.opts = s
        self.net.drop_path_prob = s.drop_path_prob
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
        self.net.tau = snas_tau(self.opts, self.epoch, self.cfg.epochs)

    def penalty(self, z: dict[str, Tensor]) -> Tensor:
        """The resource penalty of a forward whose samples are ``z``: normal cells plus ``ratio`` times reduction."""
        s = self.opts
        total = torch.zeros((), device=self.device)
        for ct, costs in self.costs.items():
            value = cell_type_penalty(
                costs, self.net.alphas[ct], z[ct], s.penalty, self.net.tau, s.separation, s.log_penalty
            )
            total = total + (s.ratio if ct == "reduce" else 1.0) * value
        return total

    def random_path(self) -> dict[str, EdgeWeights]:
        """Per cell type, one op per edge drawn uniformly from the edge's ops: a single path with weight 1."""
        return {ct: random_path(self.space, ct, self.device) for ct in self.space.cell_types}

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        if self.epoch < self.opts.pretrain_epochs:  # warm-up: weights only, on a random single path
            return self.weight_step(x, y, self.random_path())
        self.zero_weight_grads()
        assert self.a_optimizer is not None
        self.a_optimizer.zero_grad(set_to_none=True)
        weights = self.net.edge_weights()
        logits = self.forward(x, weights)
        loss = F.cross_entropy(logits, y)
        total = loss
        if self.resource_lambda > 0:
            total = total + self.resource_lambda * self.penalty({ct: w.weights for ct, w in weights.items()})
        total.backward()
        self.clip_weight_grads()
        if self.cfg.arch.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.arch_parameters(), self.cfg.arch.grad_clip)
        self.w_optimizer.step()
        self.a_optimizer.step()
        return self.loss_value(loss) * int(y.shape[0]), int((logits.argmax(1) == y).sum())

    def derive_method(self) -> str | None:
        return self.opts.child

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "tau": self.net.tau}
        if self.opts.penalty != "none":
            with torch.no_grad():
                probs = {ct: F.softmax(a, dim=-1) for ct, a in self.net.alphas.items()}
                s = self.opts
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
