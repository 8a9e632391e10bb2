"""The Ray-free generation loop: train (if the backend does), evaluate in batches, tell, report.

Resumable by construction: the loop keeps no state of its own. After each generation the strategy sits cleanly
between generations, so a caller that saves ``strategy.state_dict()`` (and ``backend.state_dict()``) in
``on_generation`` can later load both into fresh objects and call :func:`run_evolution` again to continue exactly
where it stopped. Archives, checkpoints and Ray live around this loop, not in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from evoray.evolution.fitness import FitnessBackend
from evoray.evolution.individual import Individual
from evoray.evolution.strategies import Strategy

OnGeneration = Callable[[int, list[Individual], dict[str, float]], None]


@dataclass
class EvolutionResult:
    best: Individual  # the strategy's answer (see Strategy.best)
    generations: int  # generations ended so far, over every call that ran this strategy
    evaluations: int  # distinct genotypes evaluated
    report: dict[str, float] = field(default_factory=dict)  # the backend's extra figures for best
    history: list[dict[str, float]] = field(default_factory=list)  # per-generation stats of this call


def run_generation(
    strategy: Strategy, backend: FitnessBackend, batch_size: int | None = None
) -> tuple[int, list[Individual], dict[str, float]]:
    """One generation: ``backend.train_generation`` on the population, then ask/evaluate/tell until the generation
    is complete (``batch_size`` individuals per ``evaluate`` call at most; ``None``: the strategy's batch, the whole
    generation for the GA). Returns the generation's index, its evaluated individuals and statistics."""
    g = strategy.generation
    t0 = time.perf_counter()
    train_stats = backend.train_generation(strategy.population(), g)
    t1 = time.perf_counter()
    while batch := strategy.ask(batch_size):
        fitness = backend.evaluate(batch, g)
        assert len(fitness) == len(batch), f"backend returned {len(fitness)} fitness values for {len(batch)}"
        strategy.tell(fitness)
    individuals = strategy.end_generation()
    t2 = time.perf_counter()
    scores = [f for f in (i.fitness for i in individuals) if f is not None and not math.isnan(f)]
    best = strategy.best
    stats = {
        "generation": float(g),
        "evaluated": float(len(individuals)),
        "best": max(scores, default=math.nan),
        "mean": sum(scores) / len(scores) if scores else math.nan,
        "worst": min(scores, default=math.nan),
        "best_so_far": math.nan if best is None or best.fitness is None else best.fitness,
        "evaluations": float(strategy.evaluations),
        "train_s": t1 - t0,
        "fitness_s": t2 - t1,
        **train_stats,
    }
    return g, individuals, stats


def run_evolution(
    strategy: Strategy,
    backend: FitnessBackend,
    on_generation: OnGeneration | None = None,
    batch_size: int | None = None,
) -> EvolutionResult:
    """Run generations until the strategy is done (``cfg.generations``, ``cfg.cycles`` or ``cfg.max_evaluations``);
    after each, ``on_generation(generation, individuals, stats)`` may archive and checkpoint. Starts wherever the
    strategy stands, so a strategy loaded from a checkpoint at generation ``g`` continues from ``g``.

    >>> import numpy as np
    >>> from evoray.evolution.strategies import EvolutionConfig, GeneticAlgorithm
    >>> from evoray.spaces import get_space
    >>> class SumOfAlphas(FitnessBackend):
    ...     def evaluate(self, individuals, generation=0):
    ...         return [float(sum(a.sum() for a in i.alphas.values())) for i in individuals]
    >>> cfg = EvolutionConfig(population=8, generations=3, tournament=3)
    >>> ga = GeneticAlgorithm(cfg, get_space("nb201"), np.random.default_rng(0))
    >>> result = run_evolution(ga, SumOfAlphas())
    >>> result.generations, len(result.history)
    (3, 3)
    """
    history: list[dict[str, float]] = []
    while not strategy.done:
        g, individuals, stats = run_generation(strategy, backend, batch_size)
        history.append(stats)
        if on_generation is not None:
            on_generation(g, individuals, stats)
    best = strategy.best
    if best is None:
        raise RuntimeError("the search ended without evaluating any individual")
    return EvolutionResult(best, strategy.generation, strategy.evaluations, backend.report(best), history)
