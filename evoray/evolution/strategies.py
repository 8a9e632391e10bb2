"""Search strategies over individuals: the EvNAS genetic algorithm and regularized (aging) evolution.

A strategy is an ask/tell object, free of Ray and of global random state (everything random comes from its own
``np.random.Generator``, saved and restored by ``state_dict``). A driver runs it a generation at a time::

    while not strategy.done:
        backend.train_generation(strategy.population(), strategy.generation)  # EvNAS: shared weights
        while batch := strategy.ask():          # or ask(n): at most n individuals at a time
            strategy.tell(backend.evaluate(batch, strategy.generation))
        evaluated = strategy.end_generation()   # this generation's individuals, with fitness
        # archive `evaluated`, checkpoint strategy.state_dict() here: a clean state between generations

(:func:`evoray.evolution.search.run_generation` is exactly this loop.) ``ask`` returns ``[]`` when the generation is
complete or the search is done. A generation is ``population`` individuals: the GA's whole population, or, for
regularized evolution, the initial population (generation 0) and then ``population`` children (cycles) per
generation. The budget ``max_evaluations`` counts distinct genotypes: ``ask`` never hands out a new genotype beyond
it (individuals whose genotype was evaluated before are free), so the last generation may be partial.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from evoray.errors import ConfigError
from evoray.evolution.individual import Alphas, Individual, check_alphas, from_record, make_individual, to_record
from evoray.evolution.operators import CROSSOVERS, INITS, MUTATIONS, SELECTIONS
from evoray.registry import Registry
from evoray.spaces import SearchSpace


@dataclass
class EvolutionConfig:
    """The search: strategy, population and budget. Defaults are the EvNAS paper's (https://arxiv.org/abs/2012.06400)."""

    strategy: str = "ga"  # a registered strategy: ga (EvNAS) | regularized (aging evolution, Real et al. 2019)
    population: int = field(default=50, metadata={"min": 2})  # individuals per generation (regularized: alive)
    generations: int = field(default=50, metadata={"min": 1})  # generations, the initial one included
    tournament: int = field(default=10, metadata={"min": 1})  # ga: individuals per tournament; two pick the parents
    elites: int = field(default=1, metadata={"min": 0})  # ga: the fittest, copied unchanged into the next generation
    crossover_prob: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})  # ga: per child; else copy parent 1
    crossover_row_prob: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # ga: a row from parent 1
    mutation_rate: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})  # ga: per-row reset probability
    sample_size: int = field(default=10, metadata={"min": 1})  # regularized: sampled individuals; the fittest breeds
    batch: int = field(default=1, metadata={"min": 1})  # regularized: children bred per ask from one population
    # (1 = Real et al.'s sequential cycles; n = n parallel workers that do not see each other's children)
    cycles: int = field(default=0, metadata={"min": 0})  # regularized: stop after this many children (0 = off)
    max_evaluations: int = field(default=0, metadata={"min": 0})  # stop after this many distinct genotypes (0 = off)
    init: str = "uniform"  # a registered initialisation (operators.INITS)
    selection: str = "tournament"  # a registered selection (operators.SELECTIONS)
    crossover: str = "uniform_rows"  # ga: a registered crossover (operators.CROSSOVERS)
    mutation: str = ""  # a registered mutation (operators.MUTATIONS); "" = ga: reset_rows, regularized: one_edge

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES.names())}")
        for key, registry in (("init", INITS), ("selection", SELECTIONS), ("crossover", CROSSOVERS)):
            if getattr(self, key) not in registry:
                raise ConfigError(
                    f"unknown evolution.{key} {getattr(self, key)!r}; valid: {', '.join(registry.names())}"
                )
        if self.mutation and self.mutation not in MUTATIONS:
            raise ConfigError(f"unknown evolution.mutation {self.mutation!r}; valid: {', '.join(MUTATIONS.names())}")
        p = self.population
        if self.strategy == "ga":
            if self.tournament > p:
                raise ConfigError(f"evolution.tournament={self.tournament} exceeds evolution.population={p}")
            if self.elites >= p:
                raise ConfigError(f"evolution.elites={self.elites} must be below evolution.population={p}")
        if self.strategy == "regularized":
            if self.sample_size > p:
                raise ConfigError(f"evolution.sample_size={self.sample_size} exceeds evolution.population={p}")
            if self.batch > p:
                raise ConfigError(f"evolution.batch={self.batch} exceeds evolution.population={p}")


class Strategy(ABC):
    """Ask/tell search over a population of :class:`Individual`; see the module docstring for the driver loop.

    ``seed_alphas`` (e.g. read from a population file) become the first individuals of generation 0, with origin
    ``"seed"``; the rest are drawn by ``cfg.init``.
    """

    name: ClassVar[str]
    default_mutation: ClassVar[str]
    best_of_latest: ClassVar[bool] = False  # best(): the latest generation's best, else the best ever evaluated
    own_settings: ClassVar[tuple[str, ...]] = ()  # EvolutionConfig keys that only this strategy reads

    def __init__(
        self,
        cfg: EvolutionConfig,
        space: SearchSpace,
        rng: np.random.Generator,
        seed_alphas: Sequence[Mapping[str, np.ndarray]] = (),
    ) -> None:
        cfg.validate()
        self.cfg, self.space, self.rng = cfg, space, rng
        self.select = SELECTIONS.get(cfg.selection)
        self.mutate = MUTATIONS.get(cfg.mutation or self.default_mutation)
        self.generation = 0  # the generation being evaluated
        self.next_id = 0
        self._cursor = 0  # individuals of this generation handed out by ask so far
        self._batch: list[Individual] = []  # asked, awaiting tell
        self._evaluated: list[Individual] = []  # this generation's individuals with fitness
        self._seen: dict[str, None] = {}  # distinct genotypes evaluated, in order
        self._best: Individual | None = None
        self._children = 0  # individuals bred after generation 0 and evaluated
        if len(seed_alphas) > cfg.population:
            raise ConfigError(f"{len(seed_alphas)} seed individuals for a population of {cfg.population}")
        init = INITS.get(cfg.init)
        pop = [self._new(check_alphas(space, a, f"seed alphas {i}"), (), "seed") for i, a in enumerate(seed_alphas)]
        while len(pop) < cfg.population:
            pop.append(self._new(init(space, rng), (), "random"))
        self._pop = pop  # GA: this generation; regularized: the alive population, oldest first

    # -- the driver's interface ----------------------------------------------------------------------------------
    @property
    def evaluations(self) -> int:
        """Distinct genotypes evaluated so far (the budget of a tabular study)."""
        return len(self._seen)

    @property
    def planned_generations(self) -> int:
        """The generations the run has, unless its budget of distinct genotypes (``max_evaluations``) ends it
        first: what its progress counts towards."""
        return self.cfg.generations

    @property
    def done(self) -> bool:
        c = self.cfg
        return (
            self.generation >= c.generations
            or (c.max_evaluations > 0 and self.evaluations >= c.max_evaluations)
            or (c.cycles > 0 and self._children >= c.cycles)
        )

    @property
    def best(self) -> Individual | None:
        """The answer so far: the GA's is the best of the latest evaluated generation (EvNAS: fitness on the final
        shared weights; with elites and a fixed fitness also the best ever), regularized evolution's the best ever."""
        return self._best

    def population(self) -> list[Individual]:
        """GA: the current generation (unevaluated at its start); regularized: the alive population."""
        return list(self._pop)

    def ask(self, n: int | None = None) -> list[Individual]:
        """Up to ``n`` individuals of this generation to evaluate (``None``: GA the whole rest of the generation,
        regularized ``cfg.batch`` children); ``[]`` when the generation is complete or the search is done."""
        return self._ask(n, budget=True)

    def tell(self, fitness: Sequence[float]) -> None:
        """The fitness of the individuals of the last ``ask``, in order."""
        batch = self._batch
        if len(fitness) != len(batch):
            raise ValueError(f"tell got {len(fitness)} fitness values for {len(batch)} individuals asked")
        told = [ind.with_fitness(f) for ind, f in zip(batch, fitness)]
        self._batch = []
        for ind in told:
            self._seen[ind.genotype] = None
            self._note_best(ind)
        self._evaluated.extend(told)
        self._record(told)

    def end_generation(self) -> list[Individual]:
        """Close the generation (complete, or partial once the search is done) and return its evaluated
        individuals; then breed the next one unless the search is done."""
        if self._batch:
            raise RuntimeError(f"tell the fitness of the {len(self._batch)} individuals asked before ending")
        if self._cursor < self.cfg.population and not self.done:
            raise RuntimeError(
                f"generation {self.generation} is incomplete: {self.cfg.population - self._cursor} individuals left"
            )
        out, self._evaluated = self._evaluated, []
        self.generation += 1
        self._cursor = 0
        if not self.done:
            self._breed()
        return out

    # -- generation-wise use -------------------------------------------------------------------------------------
    def initial(self) -> list[Individual]:
        """For a driver that evaluates whole generations itself: generation 0, all asked at once. Pass it back
        evaluated to :meth:`next_generation`. (No budget truncation: such a driver enforces its own.)"""
        if self.generation != 0 or self._cursor:
            raise RuntimeError("initial() is only for a fresh strategy")
        return self._ask(self.cfg.population, budget=False)

    def next_generation(self, evaluated: Sequence[Individual], generation: int) -> list[Individual]:
        """Generation-wise use: record the fitness of ``evaluated`` (the last list returned, fitness filled in),
        end the generation and return the next one (``generation``) to evaluate, all asked at once (regularized
        evolution then breeds the whole generation from one population, like ``batch = population``)."""
        by_id = {ind.id: ind.fitness for ind in evaluated}
        values = [by_id.get(ind.id) for ind in self._batch]
        missing = [ind.id for ind, v in zip(self._batch, values) if v is None]
        if missing:
            raise ValueError(f"next_generation needs the fitness of individuals {missing}")
        self.tell([float(v) for v in values if v is not None])
        self.end_generation()
        if generation != self.generation:
            raise ValueError(f"next_generation({generation}) after generation {self.generation - 1}")
        return [] if self.done else self._ask(self.cfg.population, budget=False)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able plain data (numbers, strings, lists, dicts): everything needed to continue bit-identically."""
        return {
            "strategy": self.name,
            "generation": self.generation,
            "next_id": self.next_id,
            "cursor": self._cursor,
            "children": self._children,
            "population": [to_record(i) for i in self._pop],
            "batch": [to_record(i) for i in self._batch],
            "evaluated": [to_record(i) for i in self._evaluated],
            "seen": list(self._seen),
            "best": None if self._best is None else to_record(self._best),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
        }

    def load_state_dict(self, state: Mapping[str, Any], population: Sequence[Individual] = ()) -> None:
        """Restore :meth:`state_dict`'s output (``population`` is unused: the state holds the population)."""
        if state.get("strategy") != self.name:
            raise ConfigError(f"strategy state is for {state.get('strategy')!r}, not {self.name!r}")
        self.generation = int(state["generation"])
        self.next_id = int(state["next_id"])
        self._cursor = int(state["cursor"])
        self._children = int(state["children"])
        self._pop = [from_record(s) for s in state["population"]]
        self._batch = [from_record(s) for s in state["batch"]]
        self._evaluated = [from_record(s) for s in state["evaluated"]]
        self._seen = dict.fromkeys(str(g) for g in state["seen"])
        self._best = None if state["best"] is None else from_record(state["best"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])

    # -- for subclasses ------------------------------------------------------------------------------------------
    def _ask(self, n: int | None, budget: bool) -> list[Individual]:
        if self._batch:
            raise RuntimeError(f"tell the fitness of the {len(self._batch)} individuals asked before asking again")
        if n is not None and n < 1:
            raise ValueError(f"ask(n={n}): n must be at least 1")
        if self.done:
            return []
        batch = self._propose(n, budget)
        self._cursor += len(batch)
        self._batch = batch
        return list(batch)

    def _propose(self, n: int | None, budget: bool) -> list[Individual]:
        """The next individuals of a generation that was fixed in advance (``_pop``), budget permitting."""
        rest = self._pop[self._cursor :]
        if n is not None:
            rest = rest[:n]
        if not budget:
            return rest
        out: list[Individual] = []
        new: set[str] = set()
        for ind in rest:
            if not self._affordable(ind.genotype, new):
                break
            out.append(ind)
        return out

    def _affordable(self, genotype: str, new: set[str]) -> bool:
        """Whether a batch that already holds the unseen genotypes ``new`` can take ``genotype``; adds it if so."""
        if self.cfg.max_evaluations <= 0 or genotype in self._seen or genotype in new:
            return True
        if self.evaluations + len(new) >= self.cfg.max_evaluations:
            return False
        new.add(genotype)
        return True

    def _record(self, told: list[Individual]) -> None:
        """Store evaluated individuals (default: back into their places in ``_pop``)."""
        start = self._cursor - len(told)
        self._pop[start : self._cursor] = told

    def _note_best(self, ind: Individual) -> None:
        b = self._best
        f = _score(ind.fitness)
        if b is None or f > _score(b.fitness) or (self.best_of_latest and ind.generation > b.generation):
            self._best = ind

    def _new(self, alphas: Alphas, parents: tuple[int, ...], origin: str) -> Individual:
        ind = make_individual(self.space, alphas, self.next_id, self.generation, parents, origin)
        self.next_id += 1
        return ind

    def _fitness(self, individuals: Sequence[Individual]) -> np.ndarray:
        return np.array([_score(i.fitness) for i in individuals], dtype=np.float64)  # (P,)

    @abstractmethod
    def _breed(self) -> None:
        """Prepare generation ``self.generation`` after the previous one ended."""


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@STRATEGIES.register("ga")
class GeneticAlgorithm(Strategy):
    """The EvNAS genetic algorithm (Sinha & Chen, 2021, https://arxiv.org/abs/2012.06400).

    Each generation: the ``elites`` fittest are copied unchanged (origin ``elite``, same alphas, no mutation); every
    other child has two parents, each the winner of a tournament of ``tournament`` individuals sampled without
    replacement; with probability ``crossover_prob`` the child is a uniform row crossover of them (origin
    ``crossover``), else a copy of parent 1 (origin ``mutation``); then each of its rows is reset to fresh U(0, 1)
    with probability ``mutation_rate``.

    >>> from evoray.spaces import get_space
    >>> ga = GeneticAlgorithm(EvolutionConfig(population=4, tournament=2), get_space("nb201"), np.random.default_rng(0))
    >>> batch = ga.ask()
    >>> ga.tell([float(i) for i in range(len(batch))])
    >>> [ind.fitness for ind in ga.end_generation()], [ind.origin for ind in ga.population()]
    ([0.0, 1.0, 2.0, 3.0], ['elite', 'crossover', 'crossover', 'crossover'])
    """

    name = "ga"
    default_mutation = "reset_rows"
    best_of_latest = True
    own_settings = ("tournament", "elites", "crossover_prob", "crossover_row_prob", "crossover")

    def _breed(self) -> None:
        cfg, rng, parents = self.cfg, self.rng, self._pop
        crossover = CROSSOVERS.get(cfg.crossover)
        fitness = self._fitness(parents)  # (P,)
        order = np.argsort(-fitness, kind="stable")  # fittest first; ties keep population order
        children = [self._new(parents[i].alphas, (parents[i].id,), "elite") for i in order[: cfg.elites]]
        lineage: tuple[int, ...]
        while len(children) < cfg.population:
            p1 = parents[self.select(fitness, cfg.tournament, rng)]
            p2 = parents[self.select(fitness, cfg.tournament, rng)]
            if rng.random() < cfg.crossover_prob:
                alphas = crossover(p1.alphas, p2.alphas, rng, cfg.crossover_row_prob)
                lineage, origin = (p1.id, p2.id), "crossover"
            else:
                alphas, lineage, origin = dict(p1.alphas), (p1.id,), "mutation"
            alphas = self.mutate(alphas, self.space, cfg.mutation_rate, rng)
            children.append(self._new(alphas, lineage, origin))
        self._pop = children


@STRATEGIES.register("regularized")
class RegularizedEvolution(Strategy):
    """Regularized (aging) evolution (Real et al., 2019, https://arxiv.org/abs/1802.01548).

    Generation 0 is ``population`` random individuals. Then each cycle samples ``sample_size`` individuals of the
    population without replacement; the fittest is the parent; its child (:func:`mut_one_edge` by default) is
    evaluated, joins the population, and the oldest individual leaves. A generation is ``population`` cycles;
    ``ask()`` breeds ``batch`` children at a time from the population as it stands.

    >>> from evoray.spaces import get_space
    >>> cfg = EvolutionConfig(strategy="regularized", population=4, sample_size=2)
    >>> evo = RegularizedEvolution(cfg, get_space("nb201"), np.random.default_rng(0))
    >>> evo.tell([1.0, 2.0, 3.0, 4.0][: len(evo.ask())])
    >>> _ = evo.end_generation()
    >>> child = evo.ask()[0]
    >>> evo.tell([0.5])
    >>> [ind.id for ind in evo.population()] == [1, 2, 3, child.id]
    True
    """

    name = "regularized"
    default_mutation = "one_edge"
    own_settings = ("sample_size", "batch", "cycles")

    @property
    def planned_generations(self) -> int:
        """Generation 0, then a generation per ``population`` children until ``cycles`` of them (if set)."""
        c = self.cfg
        if c.cycles <= 0:
            return c.generations
        return min(c.generations, 1 + -(-c.cycles // c.population))

    def _propose(self, n: int | None, budget: bool) -> list[Individual]:
        if self.generation == 0:
            return super()._propose(n, budget)
        cfg = self.cfg
        k = min(n or cfg.batch, cfg.population - self._cursor)
        if cfg.cycles > 0:
            k = min(k, cfg.cycles - self._children)
        fitness = self._fitness(self._pop)  # (P,)
        out: list[Individual] = []
        new: set[str] = set()
        for _ in range(k):
            parent = self._pop[self.select(fitness, cfg.sample_size, self.rng)]
            alphas = self.mutate(parent.alphas, self.space, cfg.mutation_rate, self.rng)
            child = make_individual(self.space, alphas, self.next_id, self.generation, (parent.id,), "mutation")
            if budget and not self._affordable(child.genotype, new):
                break  # the budget ends the search with this batch
            self.next_id += 1
            out.append(child)
        return out

    def _record(self, told: list[Individual]) -> None:
        if self.generation == 0:
            super()._record(told)
            return
        for ind in told:
            self._pop.append(ind)
            self._pop.pop(0)  # the oldest dies
        self._children += len(told)

    def _breed(self) -> None:
        return None  # children are bred cycle by cycle in ask()


def unread_settings_notes(cfg: EvolutionConfig) -> list[str]:
    """A note for each setting of another strategy that ``cfg`` moves off its default (the run's strategy does not
    read it: a config written for one strategy run with ``--set evolution.strategy=`` another)."""
    mine = set(STRATEGIES.get(cfg.strategy).own_settings)
    defaults = EvolutionConfig()
    notes = []
    for name in STRATEGIES.names():
        for key in STRATEGIES.get(name).own_settings:
            value = getattr(cfg, key)
            if name != cfg.strategy and key not in mine and value != getattr(defaults, key):
                notes.append(
                    f"note: evolution.{key}={value} is read by strategy {name} only; strategy {cfg.strategy} ignores it"
                )
    return notes


def build_strategy(
    cfg: EvolutionConfig,
    space: SearchSpace,
    rng: np.random.Generator,
    seed_alphas: Sequence[Mapping[str, np.ndarray]] = (),
) -> Strategy:
    """The strategy named by ``cfg.strategy``."""
    cfg.validate()
    return STRATEGIES.get(cfg.strategy)(cfg, space, rng, seed_alphas)


def _score(fitness: float | None) -> float:
    """Fitness for comparisons: a missing or NaN fitness ranks below every number."""
    return -math.inf if fitness is None or math.isnan(fitness) else float(fitness)
