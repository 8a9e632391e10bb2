"""Search strategies over individuals: the EvNAS genetic algorithm and regularized (aging) evolution.

A strategy proposes one generation at a time and learns the fitness of the last one:
``population = s.initial()``, then for each generation ``population = s.next_generation(evaluated, g)``, where
``evaluated`` is the previous generation with fitness filled in. No Ray and no global random state: everything
random comes from the strategy's own ``np.random.Generator``, saved and restored by ``state_dict``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evoray.errors import ConfigError
from evoray.evolution.individual import Alphas, Individual, make_individual
from evoray.evolution.operators import (
    cx_uniform_rows,
    init_uniform,
    mut_one_edge,
    mut_reset_rows,
    sel_tournament,
)
from evoray.registry import Registry
from evoray.spaces import SearchSpace


@dataclass
class EvolutionConfig:
    strategy: str = "ga"  # ga (EvNAS) | regularized (aging evolution)
    population: int = field(default=50, metadata={"min": 2})  # individuals per generation
    generations: int = field(default=50, metadata={"min": 1})  # generations, the initial one included
    tournament: int = field(default=10, metadata={"min": 1})  # ga: individuals per tournament (two pick the parents)
    elites: int = field(default=1, metadata={"min": 0})  # ga: the fittest, copied unchanged to the next generation
    crossover_prob: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})  # ga: else child = parent 1
    mutation_rate: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})  # ga: per-row reset probability
    sample_size: int = field(default=10, metadata={"min": 1})  # regularized: tournament sample from the population
    max_evaluations: int = field(default=0, metadata={"min": 0})  # stop after this many distinct genotypes (0 = off)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES.names())}")
        if self.strategy == "ga" and self.tournament > self.population:
            raise ConfigError(f"evolution.tournament={self.tournament} exceeds evolution.population={self.population}")
        if self.strategy == "regularized" and self.sample_size > self.population:
            raise ConfigError(
                f"evolution.sample_size={self.sample_size} exceeds evolution.population={self.population}"
            )
        if self.elites >= self.population:
            raise ConfigError(f"evolution.elites={self.elites} must be below evolution.population={self.population}")


class Strategy:
    """Base: ids, the generator, seeding from given alphas, state."""

    def __init__(
        self, cfg: EvolutionConfig, space: SearchSpace, rng: np.random.Generator, seed_alphas: Sequence[Alphas] = ()
    ) -> None:
        self.cfg, self.space, self.rng = cfg, space, rng
        self.seed_alphas = list(seed_alphas)[: cfg.population]
        self.next_id = 0

    def _new(self, alphas: Alphas, generation: int, parents: tuple[int, ...], origin: str) -> Individual:
        ind = make_individual(self.space, alphas, self.next_id, generation, parents, origin)
        self.next_id += 1
        return ind

    def initial(self) -> list[Individual]:
        out = [self._new(a, 0, (), "seed") for a in self.seed_alphas]
        while len(out) < self.cfg.population:
            out.append(self._new(init_uniform(self.space, self.rng), 0, (), "random"))
        return out

    def next_generation(self, evaluated: list[Individual], generation: int) -> list[Individual]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"next_id": self.next_id, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any], population: Sequence[Individual] = ()) -> None:
        self.next_id = int(state["next_id"])
        self.rng.bit_generator.state = state["rng"]


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@STRATEGIES.register("ga")
class GeneticAlgorithm(Strategy):
    """EvNAS (https://arxiv.org/abs/2012.06400): elitism, two tournaments, uniform row crossover, row-reset mutation.

    >>> from evoray.spaces import get_space
    >>> ga = GeneticAlgorithm(EvolutionConfig(population=4, tournament=2), get_space("nb201"), np.random.default_rng(0))
    >>> len(ga.initial())
    4
    """

    def next_generation(self, evaluated: list[Individual], generation: int) -> list[Individual]:
        cfg = self.cfg
        fitness = np.array([ind.fitness for ind in evaluated], dtype=np.float64)  # (P,)
        assert not np.isnan(fitness).any(), "every individual needs a fitness"
        order = np.argsort(-fitness, kind="stable")
        out = [self._new(evaluated[i].alphas, generation, (evaluated[i].id,), "elite") for i in order[: cfg.elites]]
        while len(out) < cfg.population:
            p1 = evaluated[sel_tournament(fitness, cfg.tournament, self.rng)]
            p2 = evaluated[sel_tournament(fitness, cfg.tournament, self.rng)]
            parents: tuple[int, ...]
            if self.rng.random() < cfg.crossover_prob:
                child, parents, origin = cx_uniform_rows(p1.alphas, p2.alphas, self.rng), (p1.id, p2.id), "crossover"
            else:
                child, parents, origin = p1.alphas, (p1.id,), "mutation"
            child = mut_reset_rows(child, cfg.mutation_rate, self.rng)
            out.append(self._new(child, generation, parents, origin))
        return out


@STRATEGIES.register("regularized")
class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al., 2019, https://arxiv.org/abs/1802.01548) run a generation at a time.

    The population is the ``population`` most recent individuals. A generation proposes ``population`` children,
    each from the fittest of ``sample_size`` individuals sampled from the population as it stood at the start of the
    generation, changed by :func:`mut_one_edge`; once evaluated, each child joins and the oldest leaves.
    """

    def __init__(
        self, cfg: EvolutionConfig, space: SearchSpace, rng: np.random.Generator, seed_alphas: Sequence[Alphas] = ()
    ) -> None:
        super().__init__(cfg, space, rng, seed_alphas)
        self.alive: deque[Individual] = deque()

    def next_generation(self, evaluated: list[Individual], generation: int) -> list[Individual]:
        for ind in evaluated:
            self.alive.append(ind)
            if len(self.alive) > self.cfg.population:
                self.alive.popleft()  # the oldest dies
        alive = list(self.alive)
        fitness = np.array([ind.fitness for ind in alive], dtype=np.float64)
        out = []
        for _ in range(self.cfg.population):
            parent = alive[sel_tournament(fitness, self.cfg.sample_size, self.rng)]
            child = mut_one_edge(parent.alphas, self.space, self.rng)
            out.append(self._new(child, generation, (parent.id,), "mutation"))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alive": [ind.id for ind in self.alive]}

    def load_state_dict(self, state: dict[str, Any], population: Sequence[Individual] = ()) -> None:
        super().load_state_dict(state)
        by_id = {ind.id: ind for ind in population}
        self.alive = deque(by_id[i] for i in state.get("alive", []) if i in by_id)
