"""EvNAS's GA and regularized evolution against random search on the NAS-Bench-201 12-epoch table.

Every method gets the same budget of distinct cells evaluated (looked up), selects on a validation column, and is
judged by the test column of the cell it returns, over many seeds. Also measures the Ray-free search loop's speed.

    python bench/tabular.py                       # ../shared/data/nb201-12epoch.csv, 100 seeds, budget 150
    python bench/tabular.py --seeds 20 --budget 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from evoray.evolution.fitness import TabularBackend
from evoray.evolution.individual import Individual
from evoray.evolution.search import run_evolution
from evoray.evolution.strategies import EvolutionConfig, build_strategy
from evoray.spaces import get_space

DEFAULT_TABLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201-12epoch.csv"


def evolve(backend: TabularBackend, cfg: EvolutionConfig, seed: int) -> tuple[Individual, int]:
    """One search; returns the chosen individual and the number of individuals evaluated (repeats included)."""
    backend.load_state_dict({})  # count this run's distinct evaluations from zero
    strategy = build_strategy(cfg, get_space("nb201"), np.random.default_rng(seed))
    result = run_evolution(strategy, backend)
    assert backend.evaluations == cfg.max_evaluations, f"{backend.evaluations} != budget {cfg.max_evaluations}"
    return result.best, int(sum(h["evaluated"] for h in result.history))


def random_search(backend: TabularBackend, budget: int, seed: int) -> str:
    """The best-validation cell among ``budget`` distinct cells drawn uniformly."""
    archs = list(backend.values)
    picks = np.random.default_rng(seed).choice(len(archs), size=budget, replace=False)
    return max((archs[i] for i in picks), key=lambda a: backend.values[a])


def summary(name: str, valid: list[float], test: list[float]) -> str:
    sem = statistics.stdev(test) / len(test) ** 0.5
    return (
        f"{name:<34} test {statistics.mean(test):6.2f} +- {statistics.stdev(test):4.2f} (sem {sem:4.2f})   "
        f"valid {statistics.mean(valid):6.2f} +- {statistics.stdev(valid):4.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    p.add_argument("--metric", default="cifar10_valid_12ep", help="column searched on")
    p.add_argument("--report", default="cifar10_test_12ep", help="column the chosen cell is judged by")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--budget", type=int, default=150, help="distinct cells evaluated per search")
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--tournament", type=int, default=5, help="GA tournament size")
    p.add_argument("--sample-size", type=int, default=5, help="regularized evolution's sample")
    args = p.parse_args()

    t0 = time.perf_counter()
    backend = TabularBackend(args.table, args.metric, report=args.report)
    print(f"table {args.table}: {len(backend.values)} cells, loaded in {time.perf_counter() - t0:.2f} s")
    best_valid = max(backend.values, key=lambda a: backend.values[a])
    print(
        f"optimum: best {args.metric} {backend.values[best_valid]:.2f} (its {args.report} "
        f"{backend.reports[best_valid]:.2f}); best {args.report} {max(backend.reports.values()):.2f}"
    )
    common = {"population": args.population, "generations": 10**6, "max_evaluations": args.budget}
    configs = {
        "ga": EvolutionConfig(strategy="ga", tournament=args.tournament, **common),
        "regularized": EvolutionConfig(strategy="regularized", sample_size=args.sample_size, **common),
    }
    c = configs["ga"]
    print(
        f"budget {args.budget} distinct cells, {args.seeds} seeds; GA: population {c.population}, tournament "
        f"{c.tournament}, elites {c.elites}, crossover {c.crossover_prob} (rows {c.crossover_row_prob}), row reset "
        f"{c.mutation_rate}; regularized: population {args.population}, sample {args.sample_size}, one-edge mutation"
    )
    for name, cfg in configs.items():
        valid, test, looked_up = [], [], 0
        start = time.perf_counter()
        for seed in range(args.seeds):
            best, n = evolve(backend, cfg, seed)
            valid.append(backend.values[best.genotype])
            test.append(backend.reports[best.genotype])
            looked_up += n
        elapsed = time.perf_counter() - start
        print(summary(name, valid, test))
        print(
            f"{'':<34} {args.seeds * args.budget / elapsed:,.0f} distinct evaluations/s, "
            f"{looked_up / elapsed:,.0f} individuals evaluated/s ({looked_up / args.seeds:.0f} per search, repeats "
            f"included), {elapsed / args.seeds * 1e3:.1f} ms per search"
        )
    valid, test = [], []
    for seed in range(args.seeds):
        arch = random_search(backend, args.budget, seed)
        valid.append(backend.values[arch])
        test.append(backend.reports[arch])
    print(summary("random search", valid, test))
    archs = list(backend.values)
    start = time.perf_counter()
    for arch in archs:
        backend.lookup(arch)
    print(f"backend lookups alone: {len(archs) / (time.perf_counter() - start):,.0f}/s")


if __name__ == "__main__":
    main()
