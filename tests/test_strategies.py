"""Strategies: EvNAS GA and regularized evolution, their driver, checkpoints and reproducibility."""

from __future__ import annotations

import copy
import hashlib
import math
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import numpy as np
import pytest

from evoray.errors import ConfigError
from evoray.evolution.fitness import FitnessBackend
from evoray.evolution.individual import Individual
from evoray.evolution.search import run_evolution, run_generation
from evoray.evolution.strategies import (
    STRATEGIES,
    EvolutionConfig,
    GeneticAlgorithm,
    RegularizedEvolution,
    Strategy,
    build_strategy,
    unread_settings_notes,
)
from evoray.spaces import get_space


class AlphaSum(FitnessBackend):
    """A deterministic fitness: the sum of an individual's alphas. Counts calls and distinct genotypes."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.genotypes: set[str] = set()

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        self.calls.append(len(individuals))
        self.genotypes.update(i.genotype for i in individuals)
        return [float(sum(a.sum() for a in i.alphas.values())) for i in individuals]


class GenotypeHash(AlphaSum):
    """A fitness that differs between genotypes (a one-edge mutation keeps the alpha sum: swaps)."""

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        super().evaluate(individuals, generation)
        return [zlib.crc32(i.genotype.encode()) / 2**32 for i in individuals]


def _cfg(strategy: str = "ga", **kw: Any) -> EvolutionConfig:
    base: dict[str, Any] = {"population": 8, "generations": 5, "tournament": 3, "sample_size": 3}
    return EvolutionConfig(strategy=strategy, **{**base, **kw})


def _run(strategy: Strategy, backend: FitnessBackend | None = None) -> list[Individual]:
    seen: list[Individual] = []
    run_evolution(strategy, backend or AlphaSum(), lambda g, inds, stats: seen.extend(inds))
    return seen


def _key(ind: Individual) -> tuple:
    alphas = tuple((ct, a.tobytes()) for ct, a in ind.alphas.items())
    return ind.id, ind.generation, alphas, ind.parents, ind.origin, ind.genotype, ind.fitness


def _same(a: list[Individual], b: list[Individual]) -> bool:
    return [_key(i) for i in a] == [_key(i) for i in b]


SPACES = ("nb201", "darts")


# -- GA -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space_name", SPACES)
def test_ga_elites_copied_unchanged(space_name: str) -> None:
    space = get_space(space_name)
    ga = GeneticAlgorithm(_cfg(elites=2), space, np.random.default_rng(0))
    _, gen0, _ = run_generation(ga, AlphaSum())
    ranked = sorted(gen0, key=lambda i: -(i.fitness or 0.0))
    nxt = ga.population()
    assert [i.origin for i in nxt[:2]] == ["elite", "elite"]
    assert all(i.origin in ("crossover", "mutation") for i in nxt[2:])
    for elite, parent in zip(nxt[:2], ranked[:2]):
        assert elite.parents == (parent.id,) and elite.genotype == parent.genotype
        assert elite.id > max(i.id for i in gen0) and elite.generation == 1 and elite.fitness is None
        for ct in parent.alphas:
            np.testing.assert_array_equal(elite.alphas[ct], parent.alphas[ct])
    # other children have two tournament parents from generation 0
    ids = {i.id for i in gen0}
    assert all(len(c.parents) == 2 and set(c.parents) <= ids for c in nxt[2:])


def test_ga_child_is_crossover_then_mutation_of_its_parents() -> None:
    space = get_space("darts")
    ga = GeneticAlgorithm(_cfg(mutation_rate=0.0), space, np.random.default_rng(3))
    _, gen0, _ = run_generation(ga, AlphaSum())
    by_id = {i.id: i for i in gen0}
    for child in ga.population()[1:]:
        p1, p2 = (by_id[p] for p in child.parents)
        for ct in child.alphas:  # without mutation every row is one of its parents' rows
            rows = child.alphas[ct]
            assert ((rows == p1.alphas[ct]).all(1) | (rows == p2.alphas[ct]).all(1)).all()


@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_ga_child_rows_are_its_parents_or_fresh_at_the_mutation_rate(rate: float) -> None:
    """After the crossover, each row is reset to a fresh U(0, 1) row with probability ``mutation_rate``: every row of
    a child is its parents' row at that position or a fresh one (equal to neither), and the fresh share is the rate
    (binomial bounds over the population's rows)."""
    space = get_space("darts")
    ga = GeneticAlgorithm(_cfg(population=40, mutation_rate=rate), space, np.random.default_rng(5))
    _, gen0, _ = run_generation(ga, AlphaSum())
    by_id = {i.id: i for i in gen0}
    fresh = total = 0
    for child in ga.population():
        if child.origin == "elite":
            continue
        parents = [by_id[p] for p in child.parents]
        for ct, rows in child.alphas.items():
            inherited = np.zeros(len(rows), dtype=bool)
            for parent in parents:
                inherited |= (rows == parent.alphas[ct]).all(1)
            assert ((rows >= 0) & (rows < 1)).all()
            fresh += int((~inherited).sum())
            total += len(rows)
    sd = (total * rate * (1 - rate)) ** 0.5
    assert abs(fresh - rate * total) <= 4 * sd + 1e-9, (fresh, total)


def test_ga_without_crossover_copies_parent_one() -> None:
    ga = GeneticAlgorithm(_cfg(crossover_prob=0.0, mutation_rate=0.0), get_space("nb201"), np.random.default_rng(1))
    _, gen0, _ = run_generation(ga, AlphaSum())
    by_id = {i.id: i for i in gen0}
    for child in ga.population()[1:]:
        assert child.origin == "mutation" and len(child.parents) == 1
        np.testing.assert_array_equal(child.alphas["cell"], by_id[child.parents[0]].alphas["cell"])


@pytest.mark.parametrize("space_name", SPACES)
def test_ga_breeds_as_replayed_by_hand(space_name: str) -> None:
    """One generation of breeding replayed draw by draw, as EvNAS' ga.py does it: the elites are the fittest (ties in
    population order); each other child takes two parents, each the fittest of ``tournament`` individuals drawn
    without replacement (ties: the first drawn), then with probability ``crossover_prob`` each row comes from parent
    1 with probability ``crossover_row_prob``, then each row is reset to fresh U(0, 1) with ``mutation_rate``."""
    space = get_space(space_name)
    cfg = _cfg(elites=2, tournament=3, crossover_prob=0.6, crossover_row_prob=0.3, mutation_rate=0.2)
    rng = np.random.default_rng(13)
    ga = GeneticAlgorithm(cfg, space, rng)
    replay = copy.deepcopy(rng)  # past the initial population's draws; evaluation draws nothing
    _, gen0, _ = run_generation(ga, AlphaSum())
    fitness = [i.fitness for i in gen0]

    def tournament() -> Individual:
        sample = replay.choice(8, size=3, replace=False)
        return gen0[max(sample, key=lambda i: fitness[i])]  # max keeps the first of equal maxima

    children = ga.population()
    elites = sorted(gen0, key=lambda i: -(i.fitness or 0.0))[:2]
    assert [(c.origin, c.parents) for c in children[:2]] == [("elite", (e.id,)) for e in elites]
    winners, resets = set(), 0
    for child in children[2:]:
        p1, p2 = tournament(), tournament()
        winners |= {p1.id, p2.id}
        crossed = replay.random() < 0.6
        expect = dict(p1.alphas)
        for ct in space.cell_types if crossed else ():
            rows = replay.random(space.alpha_shape(ct)[0]) < 0.3
            expect[ct] = np.where(rows[:, None], p1.alphas[ct], p2.alphas[ct])
        for ct in space.cell_types:
            reset = replay.random(space.alpha_shape(ct)[0]) < 0.2
            fresh = replay.random(space.alpha_shape(ct), dtype=np.float32)
            expect[ct] = np.where(reset[:, None], fresh, expect[ct])
            resets += int(reset.sum())
        assert (child.origin, child.parents) == (("crossover", (p1.id, p2.id)) if crossed else ("mutation", (p1.id,)))
        for ct in space.cell_types:
            np.testing.assert_array_equal(child.alphas[ct], expect[ct], err_msg=f"child {child.id}, {ct}")
    assert {c.origin for c in children[2:]} == {"crossover", "mutation"} and resets > 0
    assert len(winners) > 2  # the tournaments picked more than the fittest few: selection was exercised


class Scripted(FitnessBackend):
    """Each generation's fitness, in population order, from a table."""

    def __init__(self, table: list[list[float]]) -> None:
        self.table = table

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return self.table[generation][: len(individuals)]


def test_ga_answer_is_the_last_generations_fittest_first_of_ties_never_nan() -> None:
    """EvNAS' answer is the first of the last generation sorted by fitness (a stable sort: ties in population order),
    not the best ever: its fitness is read on the final shared weights. The elite is chosen alike. NaN never wins."""
    nan = float("nan")
    table = [[5.0, 9.0, 9.0, 1.0], [nan, 3.0, 7.0, 7.0], [nan, 2.0, 4.0, 4.0]]
    ga = GeneticAlgorithm(_cfg(population=4, generations=3, tournament=2), get_space("nb201"), np.random.default_rng(0))
    gens: list[list[Individual]] = []
    result = run_evolution(ga, Scripted(table), lambda g, inds, stats: gens.append(inds))
    assert gens[1][0].parents == (gens[0][1].id,) and gens[2][0].parents == (gens[1][2].id,)  # the elites
    assert result.best is gens[2][2] and result.best.fitness == 4.0
    assert [h["best_so_far"] for h in result.history] == [9.0, 7.0, 4.0]
    last = result.history[-1]  # the generation's statistics leave NaN out
    assert (last["evaluated"], last["best"], last["mean"], last["worst"]) == (4.0, 4.0, 10.0 / 3, 2.0)


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
def test_population_size_constant_and_ids_increase(strategy: str) -> None:
    s = build_strategy(_cfg(strategy, generations=6), get_space("nb201"), np.random.default_rng(0))
    sizes = []

    def record(g: int, inds: list[Individual], stats: dict[str, float]) -> None:
        sizes.append((len(inds), len(s.population())))

    seen = _run_with(s, record)
    assert sizes == [(8, 8)] * 6
    ids = [i.id for i in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [i.generation for i in seen] == [g for g in range(6) for _ in range(8)]
    assert all(i.fitness is not None for i in seen)


def _run_with(s: Strategy, callback: Any) -> list[Individual]:
    seen: list[Individual] = []

    def both(g: int, inds: list[Individual], stats: dict[str, float]) -> None:
        seen.extend(inds)
        callback(g, inds, stats)

    run_evolution(s, AlphaSum(), both)
    return seen


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
@pytest.mark.parametrize("space_name", SPACES)
def test_same_seed_same_run_other_seed_other_run(strategy: str, space_name: str) -> None:
    space = get_space(space_name)
    a = _run(build_strategy(_cfg(strategy), space, np.random.default_rng(5)))
    b = _run(build_strategy(_cfg(strategy), space, np.random.default_rng(5)))
    c = _run(build_strategy(_cfg(strategy), space, np.random.default_rng(6)))
    assert _same(a, b)
    assert not _same(a, c)
    assert a[0].alphas[space.cell_types[0]].tobytes() != c[0].alphas[space.cell_types[0]].tobytes()


def _plain(x: Any) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str, np.ndarray))


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
@pytest.mark.parametrize("space_name", SPACES)
def test_state_dict_round_trip_continues_bit_identically(strategy: str, space_name: str) -> None:
    space, cfg = get_space(space_name), _cfg(strategy, generations=6)
    uninterrupted = _run(build_strategy(cfg, space, np.random.default_rng(11)))
    first = build_strategy(cfg, space, np.random.default_rng(11))
    before: list[Individual] = []
    for _ in range(3):
        before.extend(run_generation(first, AlphaSum())[1])
    state = copy.deepcopy(first.state_dict())
    assert _plain(state)
    resumed = build_strategy(cfg, space, np.random.default_rng(999))  # another generator, then restored
    resumed.load_state_dict(state)
    assert resumed.generation == 3
    after = _run(resumed)
    assert _same(before + after, uninterrupted)
    assert _same(_run(first), after)  # saving did not disturb the original either


@pytest.mark.parametrize("cycles", [0, 13])
def test_regularized_checkpoint_mid_generation(cycles: int) -> None:
    space, cfg = get_space("darts"), _cfg("regularized", generations=3, cycles=cycles)
    uninterrupted = _run(build_strategy(cfg, space, np.random.default_rng(2)))
    s = build_strategy(cfg, space, np.random.default_rng(2))
    backend = AlphaSum()
    run_generation(s, backend)
    for _ in range(3):  # three cycles of generation 1
        s.tell(backend.evaluate(s.ask(), 1))
    resumed = build_strategy(cfg, space, np.random.default_rng(0))
    resumed.load_state_dict(copy.deepcopy(s.state_dict()))
    rest = _run(resumed)
    assert _same(rest, uninterrupted[8:])


def test_state_of_another_strategy_is_refused() -> None:
    space = get_space("nb201")
    ga = build_strategy(_cfg("ga"), space, np.random.default_rng(0))
    re = build_strategy(_cfg("regularized"), space, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="strategy state is for 'ga', not 'regularized'"):
        re.load_state_dict(ga.state_dict())


# -- regularized evolution ------------------------------------------------------------------------------------------


def test_regularized_removes_the_oldest_and_breeds_from_the_fittest() -> None:
    cfg = _cfg("regularized", sample_size=8)  # the sample is the whole population: the parent is the best
    s = RegularizedEvolution(cfg, get_space("darts"), np.random.default_rng(0))
    backend = GenotypeHash()
    run_generation(s, backend)
    for cycle in range(8):
        pop = s.population()
        best = max(pop, key=lambda i: i.fitness or 0.0)
        (child,) = s.ask()
        assert child.parents == (best.id,) and child.origin == "mutation" and child.generation == 1
        assert child.genotype != best.genotype  # one-edge mutation
        s.tell(backend.evaluate([child], 1))
        after = s.population()
        assert [i.id for i in after] == [i.id for i in pop[1:]] + [child.id], f"cycle {cycle}"
        assert after[-1].fitness is not None
    assert s.ask() == []  # a generation is `population` cycles


def test_regularized_batches_and_generation_boundaries() -> None:
    s = build_strategy(_cfg("regularized", batch=3, generations=3), get_space("nb201"), np.random.default_rng(0))
    backend = AlphaSum()
    run_generation(s, backend)
    assert backend.calls == [8]  # generation 0: the whole initial population at once
    backend.calls.clear()
    _, children, _ = run_generation(s, backend)
    assert backend.calls == [3, 3, 2] and len(children) == 8  # batches never cross a generation
    backend.calls.clear()
    run_generation(s, backend, batch_size=1)
    assert backend.calls == [1] * 8 and s.done


def test_regularized_cycles_limit() -> None:
    s = build_strategy(_cfg("regularized", generations=100, cycles=13), get_space("nb201"), np.random.default_rng(0))
    planned = s.planned_generations  # what a run's progress counts towards
    seen = _run(s)
    assert len(seen) == 8 + 13 and s.generation == 3 == planned and s.done
    short = build_strategy(_cfg("regularized", generations=2, cycles=13), get_space("nb201"), np.random.default_rng(0))
    assert short.planned_generations == 2  # the generations end it first


# -- budget, seeding, validation, errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
def test_max_evaluations_counts_distinct_genotypes(strategy: str) -> None:
    backend = AlphaSum()
    cfg = _cfg(strategy, generations=1000, max_evaluations=30)
    s = build_strategy(cfg, get_space("nb201"), np.random.default_rng(4))
    seen: list[Individual] = []
    result = run_evolution(s, backend, lambda g, inds, stats: seen.extend(inds))
    assert s.done and result.evaluations == 30 == len(backend.genotypes) == len({i.genotype for i in seen})
    assert result.best.fitness == max(i.fitness or 0.0 for i in seen)
    assert result.generations < 1000 and result.history[-1]["evaluations"] == 30


def test_seeding_from_given_alphas() -> None:
    space = get_space("darts")
    rng = np.random.default_rng(9)
    seeds = [{ct: rng.random(space.alpha_shape(ct)) for ct in space.cell_types} for _ in range(3)]  # float64 in
    for name in STRATEGIES.names():
        s = build_strategy(_cfg(name), space, np.random.default_rng(0), seeds)
        pop = s.population()
        assert [i.origin for i in pop] == ["seed"] * 3 + ["random"] * 5
        for ind, given in zip(pop, seeds):
            for ct in space.cell_types:
                assert ind.alphas[ct].dtype == np.float32
                np.testing.assert_array_equal(ind.alphas[ct], given[ct].astype(np.float32))
    unseeded = build_strategy(_cfg("ga"), space, np.random.default_rng(0)).population()
    seeded = build_strategy(_cfg("ga"), space, np.random.default_rng(0), seeds).population()
    assert seeded[3].genotype == unseeded[0].genotype  # seeds draw nothing from the generator
    with pytest.raises(ConfigError, match="9 seed individuals for a population of 8"):
        build_strategy(_cfg("ga"), space, np.random.default_rng(0), seeds * 3)
    with pytest.raises(ConfigError, match=r"seed alphas 0: normal has shape \(14, 5\)"):
        build_strategy(
            _cfg("ga"),
            space,
            np.random.default_rng(0),
            [{"normal": np.zeros((14, 5)), "reduce": np.zeros(space.alpha_shape("reduce"))}],
        )
    with pytest.raises(ConfigError, match="cell types"):
        build_strategy(_cfg("ga"), space, np.random.default_rng(0), [{"cell": np.zeros((6, 5))}])


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"tournament": 9}, "evolution.tournament=9 exceeds evolution.population=8"),
        ({"elites": 8}, "evolution.elites=8 must be below evolution.population=8"),
        ({"strategy": "regularized", "sample_size": 9}, "evolution.sample_size=9 exceeds"),
        ({"strategy": "regularized", "batch": 9}, "evolution.batch=9 exceeds evolution.population=8"),
        ({"strategy": "annealing"}, "unknown strategy 'annealing'; valid: ga, regularized"),
        ({"mutation": "flip"}, "unknown evolution.mutation 'flip'; valid: reset_rows, one_edge"),
        ({"crossover": "two_point"}, "unknown evolution.crossover 'two_point'; valid: uniform_rows"),
    ],
)
def test_config_validation(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(**kw).validate()


def test_settings_up_to_the_population_are_accepted() -> None:
    """A tournament (or regularized sample, or batch) may take the whole population, the elites all but one of it,
    and seed individuals may fill it."""
    _cfg(tournament=8, elites=7).validate()
    _cfg("regularized", sample_size=8, batch=8).validate()
    space = get_space("nb201")
    seeds = [{"cell": np.full((6, 5), i, dtype=np.float32)} for i in range(8)]
    ga = build_strategy(_cfg(tournament=8), space, np.random.default_rng(0), seeds)
    assert [i.origin for i in ga.population()] == ["seed"] * 8
    ga.tell([float(i) for i in range(8)][: len(ga.ask())])
    ga.end_generation()
    # a tournament of the whole population always picks the fittest: both parents of every child are individual 7
    assert {c.parents for c in ga.population()[1:]} == {(7, 7)}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("populaton=50", r"unknown config key 'populaton' \(did you mean 'population'\?\); valid keys"),
        ("generations=0", r"config key 'generations' = 0 is out of range \[1, inf\)"),
        ("mutation_rate=1.5", r"config key 'mutation_rate' = 1.5 is out of range \[0.0, 1.0\]"),
        ("crossover_prob=-0.1", r"config key 'crossover_prob' = -0.1 is out of range \[0.0, 1.0\]"),
        ("crossover_row_prob=2", r"config key 'crossover_row_prob' = 2.0 is out of range \[0.0, 1.0\]"),
        ("population=5", "evolution.tournament=10 exceeds evolution.population=5"),
        ("elites=50", "evolution.elites=50 must be below evolution.population=50"),
    ],
)
def test_bad_evolution_config_is_one_line(override: str, message: str) -> None:
    from evoray.config import load_config

    with pytest.raises(ConfigError, match=message) as err:
        load_config(EvolutionConfig, None, [override])
    assert "\n" not in str(err.value)


def test_defaults_are_evnas() -> None:
    c = EvolutionConfig()
    assert (c.strategy, c.population, c.generations, c.tournament, c.elites) == ("ga", 50, 50, 10, 1)
    assert (c.crossover_prob, c.crossover_row_prob, c.mutation_rate, c.max_evaluations) == (1.0, 0.5, 0.1, 0)
    c.validate()


def test_ask_tell_protocol_errors() -> None:
    s = build_strategy(_cfg("ga"), get_space("nb201"), np.random.default_rng(0))
    batch = s.ask(3)
    with pytest.raises(RuntimeError, match="tell the fitness of the 3 individuals"):
        s.ask()
    with pytest.raises(ValueError, match="tell got 2 fitness values for 3"):
        s.tell([1.0, 2.0])
    s.tell([1.0] * len(batch))
    with pytest.raises(RuntimeError, match="generation 0 is incomplete: 5 individuals left"):
        s.end_generation()


def test_generation_wise_api_matches_ask_tell() -> None:
    space = get_space("darts")
    backend = AlphaSum()
    for name in STRATEGIES.names():
        cfg = _cfg(name, generations=4, batch=8)
        reference = _run(build_strategy(cfg, space, np.random.default_rng(8)))
        s = build_strategy(cfg, space, np.random.default_rng(8))
        pop, seen = s.initial(), []
        for g in range(4):
            pop = [i.with_fitness(f) for i, f in zip(pop, backend.evaluate(pop, g))]
            seen.extend(pop)
            if g < 3:
                pop = s.next_generation(pop, g + 1)
        assert _same(seen, reference), name


def test_nan_fitness_never_selected_as_best() -> None:
    class Flaky(AlphaSum):
        def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
            return [float("nan") if i.id % 2 else f for i, f in zip(individuals, super().evaluate(individuals))]

    result = run_evolution(build_strategy(_cfg("regularized"), get_space("nb201"), np.random.default_rng(0)), Flaky())
    assert result.best.fitness is not None and not np.isnan(result.best.fitness)
    assert not math.isnan(result.history[0]["best"]) and result.history[0]["evaluated"] == 8


def test_reproducible_in_a_fresh_process() -> None:
    """Same seed, same run in another process: every individual of every generation (ids, lineage, alphas bit for
    bit, genotypes, fitness), not only the answer."""
    code = textwrap.dedent(
        """
        import hashlib
        import numpy as np
        from evoray.evolution.fitness import FitnessBackend
        from evoray.evolution.search import run_evolution
        from evoray.evolution.strategies import EvolutionConfig, build_strategy
        from evoray.spaces import get_space

        class AlphaSum(FitnessBackend):
            def evaluate(self, individuals, generation=0):
                return [float(sum(a.sum() for a in i.alphas.values())) for i in individuals]

        digest = hashlib.sha256()
        def record(g, inds, stats):
            for i in inds:
                digest.update(repr((i.id, i.generation, i.parents, i.origin, i.genotype, i.fitness)).encode())
                for a in i.alphas.values():
                    digest.update(a.tobytes())

        cfg = EvolutionConfig(population=8, generations=5, tournament=3)
        r = run_evolution(build_strategy(cfg, get_space("darts"), np.random.default_rng(21)), AlphaSum(), record)
        print(digest.hexdigest(), r.best.id, repr(r.best.fitness), r.best.genotype)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    cfg = EvolutionConfig(population=8, generations=5, tournament=3)
    seen: list[Individual] = []
    r = run_evolution(
        build_strategy(cfg, get_space("darts"), np.random.default_rng(21)),
        AlphaSum(),
        lambda g, inds, stats: seen.extend(inds),
    )
    digest = hashlib.sha256()
    for i in seen:
        digest.update(repr((i.id, i.generation, i.parents, i.origin, i.genotype, i.fitness)).encode())
        for a in i.alphas.values():
            digest.update(a.tobytes())
    assert len(seen) == 40
    assert out == f"{digest.hexdigest()} {r.best.id} {r.best.fitness!r} {r.best.genotype}"


# a value off the default for every strategy's own settings (within every bound of _cfg's population of 8)
_OFF_DEFAULT = {
    "tournament": 2,
    "elites": 2,
    "crossover_prob": 0.5,
    "crossover_row_prob": 0.3,
    "crossover": "uniform_rows",
    "sample_size": 2,
    "batch": 4,
    "cycles": 10,  # under the 16 children of 3 generations of 8
}


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_a_strategy_reads_none_of_the_other_strategies_settings(strategy: str) -> None:
    """Every key a strategy declares its own (``own_settings``) is an evolution key, no two strategies share one, and
    the other strategies' keys moved off their defaults leave this strategy's run identical; each gives one note."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(EvolutionConfig)}
    mine = STRATEGIES.get(strategy).own_settings
    others = [k for name in STRATEGIES.names() if name != strategy for k in STRATEGIES.get(name).own_settings]
    assert set(mine) <= fields and set(others) <= fields and not set(mine) & set(others)
    assert set(mine) | set(others) <= set(_OFF_DEFAULT)
    space = get_space("nb201")
    plain = _run(build_strategy(_cfg(strategy, generations=3), space, np.random.default_rng(0)))
    for key in others:
        cfg = _cfg(strategy, generations=3, **{key: _OFF_DEFAULT[key]})
        if getattr(cfg, key) == getattr(EvolutionConfig(), key):
            continue  # a value that is the default (crossover's single registered choice)
        assert _same(_run(build_strategy(cfg, space, np.random.default_rng(0))), plain), key
        owner = next(n for n in STRATEGIES.names() if key in STRATEGIES.get(n).own_settings)
        notes = unread_settings_notes(cfg)
        expected = f"note: evolution.{key}={getattr(cfg, key)} is read by strategy {owner} only; strategy {strategy}"
        assert [n for n in notes if f"evolution.{key}=" in n] == [expected + " ignores it"]
    for key in mine:  # its own settings change its run and give no note
        cfg = _cfg(strategy, generations=3, **{key: _OFF_DEFAULT[key]})
        if getattr(cfg, key) == getattr(_cfg(strategy), key):
            continue
        assert not any(f"evolution.{key}=" in n for n in unread_settings_notes(cfg))
        assert not _same(_run(build_strategy(cfg, space, np.random.default_rng(0))), plain), key
    assert unread_settings_notes(EvolutionConfig(strategy=strategy)) == []
