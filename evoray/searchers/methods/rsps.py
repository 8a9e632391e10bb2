"""RSPS: random search with parameter sharing (Li & Talwalkar, 2019, https://arxiv.org/abs/1902.07638), the
weight-sharing baseline of NAS-Bench-201 (AutoDL-Projects' RANDOM-NAS).

Each step trains the shared weights on one architecture drawn uniformly (a single path: only its ops run, with weight
1); after every epoch, ``candidates`` further random cells are scored by their accuracy with the shared weights on
``candidate_batches`` validation batches each (the original: one batch of 512 per cell), and the best is the child.
There are no architecture parameters to learn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from evoray.data.sources import derive_seed, with_batch_size
from evoray.errors import ConfigError
from evoray.nn.weighting import EdgeWeights, path_weights
from evoray.searchers.base import Searcher
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings
from evoray.spaces import Genotype, one_hot, parse_genotype
from evoray.spaces.derive import random_genotype

_AUTODL_OPTIM = {"nesterov": True, "weight_decay": 5e-4, "keep_zero_grads": True, "clip_all": True}
CANDIDATE_STREAM = 7  # the generator stream of the candidates, apart from the data's streams


@dataclass
class RspsOptions:
    candidates: int = field(default=100, metadata={"min": 1})  # random cells scored after each epoch (select_num)
    candidate_batches: int = field(default=1, metadata={"min": 1})  # validation batches that score one candidate
    candidate_batch_size: int = field(default=512, metadata={"min": 1})  # their size (the original's test batch)
    # when the candidates are scored: after every epoch (the original, which logs each epoch's choice) or only after
    # the last one (the same child, without the per-epoch cost)
    select: str = field(default="every_epoch", metadata={"choices": ("every_epoch", "last_epoch")})


@SEARCHERS.register("rsps")
class RSPS(Searcher):
    name = "rsps"
    weighting = "softmax"  # unused: every forward gets a single path
    autotune = False  # as AutoDL's script sets it; a sampled path per step
    bilevel = False  # no architecture step; the validation half only scores candidates
    Options = RspsOptions
    paper_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "darts": {"epochs": 250, "optim": _AUTODL_OPTIM},
        "nb201": {"epochs": 250, "optim": _AUTODL_OPTIM},  # NAS-Bench-201-algos/RANDOM-NAS.sh
    }

    @classmethod
    def check(cls, cfg: SearchSettings) -> None:
        super().check(cfg)
        cfg.data.require_validation_half("RSPS' choice among its candidates")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opts: RspsOptions = self.cfg.section("rsps")
        self.rng = np.random.default_rng(derive_seed(self.cfg.seed, CANDIDATE_STREAM))  # the training paths
        self.chosen: Genotype = random_genotype(self.space, np.random.default_rng(self.cfg.seed))
        self.chosen_acc: float | None = None

    def build_arch_optimizer(self) -> torch.optim.Optimizer | None:
        return None

    def sample_path(self) -> dict[str, EdgeWeights]:
        """The single path of a uniformly drawn cell, for every cell type."""
        cell = random_genotype(self.space, self.rng)
        return {ct: path_weights(self.space, ct, cell.cell(ct), self.device) for ct in self.space.cell_types}

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        return self.weight_step(x, y, self.sample_path())

    def end_epoch(self) -> None:
        """Score ``candidates`` random cells (drawn from (seed, epoch)) and keep the best as the child."""
        if self.opts.select == "last_epoch" and not self.done():
            return
        rng = np.random.default_rng(derive_seed(self.cfg.seed, CANDIDATE_STREAM, self.epoch))
        cells = [random_genotype(self.space, rng) for _ in range(self.opts.candidates)]
        assert self.data.valid is not None
        source = with_batch_size(self.data.valid, self.opts.candidate_batch_size)
        per, scores, k = self.opts.candidate_batches, [], 0
        batches: Iterator[tuple[Tensor, Tensor]] = iter(())
        for cell in cells:
            mine: list[tuple[Tensor, Tensor]] = []
            while len(mine) < per:  # each candidate reads the next batches of the validation half, cycling
                batch = next(batches, None)
                if batch is None:
                    source.set_epoch(self.epoch, k)
                    batches, k = iter(source), k + 1
                    continue
                mine.append(batch)
            scores.extend(self.score_cells([cell], mine))
        best = int(np.argmax(scores))
        self.chosen, self.chosen_acc = cells[best], float(scores[best])

    def evaluate(self) -> dict[str, float]:
        """The chosen cell's single path on the validation half."""
        weights = {ct: path_weights(self.space, ct, self.chosen.cell(ct), self.device) for ct in self.space.cell_types}
        return self.accuracy(weights)

    def genotype(self) -> Genotype:
        return self.chosen

    def alphas(self) -> dict[str, np.ndarray]:
        """The chosen cell's one-hot matrix: alphas whose derived genotype is that cell."""
        return one_hot(self.space, self.chosen)

    def op_distributions(self) -> dict[str, Tensor]:
        return {ct: torch.from_numpy(a) for ct, a in self.alphas().items()}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.chosen_acc is not None:
            out["chosen_acc"] = self.chosen_acc
        return out

    def extra_state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "chosen": str(self.chosen),
            "chosen_acc": self.chosen_acc,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.chosen = parse_genotype(str(state["chosen"]))
        self.chosen_acc = None if state["chosen_acc"] is None else float(state["chosen_acc"])
        if set(self.chosen.cell_types) != set(self.space.cell_types):
            raise ConfigError(f"RSPS state holds a cell of another space than {self.space.name}")
