"""The tabular fitness backend on the NAS-Bench-201 12-epoch table in ../shared/data (skipped when absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evoray.errors import ConfigError
from evoray.evolution.fitness import BACKENDS, TabularBackend
from evoray.evolution.individual import Individual, make_individual
from evoray.evolution.search import run_evolution
from evoray.evolution.strategies import EvolutionConfig, build_strategy
from evoray.spaces import get_space, one_hot, parse_arch
from tests.conftest import shared_file

TABLE = "nb201-12epoch.csv"


@pytest.fixture(scope="module")
def table() -> Path:
    return shared_file(TABLE)


@pytest.fixture(scope="module")
def rows(table: Path) -> dict[int, dict[str, str]]:
    with table.open(newline="") as fh:
        return {int(r["index"]): r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def loaded(table: Path) -> TabularBackend:
    return TabularBackend(table, "cifar10_valid_12ep", report="cifar10_test_12ep")


@pytest.fixture()
def backend(loaded: TabularBackend) -> TabularBackend:
    loaded.load_state_dict({})  # a fresh count for every test
    return loaded


def _individual(arch: str, ident: int = 0) -> Individual:
    """An individual whose alphas derive to ``arch`` (the one-hot of the cell)."""
    space = get_space("nb201")
    return make_individual(space, one_hot(space, parse_arch(arch)), ident, 0)


@pytest.mark.parametrize("index", [0, 1, 7777, 15624])
def test_lookups_match_the_csv(backend: TabularBackend, rows: dict[int, dict[str, str]], index: int) -> None:
    row = rows[index]
    ind = _individual(row["arch"])
    assert ind.genotype == row["arch"]
    assert backend.evaluate([ind]) == [pytest.approx(float(row["cifar10_valid_12ep"]), abs=1e-9)]
    assert backend.report(ind) == {"cifar10_test_12ep": pytest.approx(float(row["cifar10_test_12ep"]), abs=1e-9)}


def test_known_row_values(backend: TabularBackend) -> None:
    arch = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert backend.lookup(arch) == pytest.approx(63.364)
    assert backend.reports[arch] == pytest.approx(69.55)


def test_counts_distinct_genotypes(backend: TabularBackend, rows: dict[int, dict[str, str]]) -> None:
    a, b = _individual(rows[0]["arch"], 0), _individual(rows[1]["arch"], 1)
    backend.evaluate([a, b, a])
    backend.evaluate([_individual(rows[0]["arch"], 2)])
    assert backend.evaluations == 2
    state = backend.state_dict()
    backend.load_state_dict({})
    assert backend.evaluations == 0
    backend.load_state_dict(state)
    assert backend.evaluations == 2


def test_errors_name_what_is_wrong(table: Path, backend: TabularBackend, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=f"fitness table '{missing}' does not exist"):
        TabularBackend(missing, "cifar10_valid_12ep")
    wanted = r"no column 'cifar10_valid_200ep' \(fitness\.metric\); columns: index, arch, cifar10_valid_12ep"
    with pytest.raises(ConfigError, match=wanted):
        TabularBackend(table, "cifar10_valid_200ep")
    with pytest.raises(ConfigError, match=r"no column 'test' \(fitness\.report\)"):
        TabularBackend(table, "cifar10_valid_12ep", report="test")
    with pytest.raises(ConfigError, match=r"no column 'cell' \(fitness\.arch_column\)"):
        TabularBackend(table, "cifar10_valid_12ep", arch_column="cell")
    darts = make_individual(get_space("darts"), {"normal": np.eye(14, 8), "reduce": np.eye(14, 8)}, 0, 0)
    with pytest.raises(ConfigError, match=r"genotype .Genotype\(normal=.* is not in fitness table"):
        backend.evaluate([darts])
    with pytest.raises(ConfigError, match=r"genotype '\|bogus~0\|' is not in") as err:
        backend.lookup("|bogus~0|")
    assert "\n" not in str(err.value)
    assert backend.evaluations == 0
    assert BACKENDS.get("tabular") is TabularBackend


def test_parquet_table(tmp_path: Path, rows: dict[int, dict[str, str]]) -> None:
    import pandas as pd

    subset = pd.DataFrame([rows[i] for i in (3, 4)])
    subset["cifar10_valid_12ep"] = subset["cifar10_valid_12ep"].astype(float)
    subset.to_parquet(tmp_path / "t.parquet")
    backend = TabularBackend(tmp_path / "t.parquet", "cifar10_valid_12ep")
    assert backend.evaluate([_individual(rows[4]["arch"])]) == [pytest.approx(float(rows[4]["cifar10_valid_12ep"]))]
    assert backend.report(_individual(rows[4]["arch"])) == {}


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
def test_search_on_the_table_improves_within_budget(backend: TabularBackend, strategy: str) -> None:
    cfg = EvolutionConfig(
        strategy=strategy, population=10, generations=100, tournament=3, sample_size=3, max_evaluations=60
    )
    history: list[list[Individual]] = []
    result = run_evolution(
        build_strategy(cfg, get_space("nb201"), np.random.default_rng(0)),
        backend,
        lambda g, inds, stats: history.append(inds),
    )
    first_best = max(i.fitness or 0.0 for i in history[0])
    assert result.best.fitness is not None and result.best.fitness > first_best
    assert backend.evaluations == result.evaluations == 60
    assert len({i.genotype for gen in history for i in gen}) == 60
    assert result.report["cifar10_test_12ep"] == backend.reports[result.best.genotype]


def test_a_table_gap_is_nan_and_a_repeated_arch_is_refused(tmp_path: Path, rows: dict[int, dict[str, str]]) -> None:
    """An empty metric cell is a missing score (NaN), not a score of 0; an arch listed twice is refused."""
    a, b = rows[5]["arch"], rows[6]["arch"]
    gap = tmp_path / "gap.csv"
    gap.write_text(f"arch,acc\n{a},\n{b},71.5\n")
    backend = TabularBackend(gap, "acc")
    assert np.isnan(backend.evaluate([_individual(a)])[0]) and backend.evaluate([_individual(b)]) == [71.5]
    twice = tmp_path / "twice.csv"
    twice.write_text(f"arch,acc\n{a},70.0\n{b},71.5\n{a},72.0\n")
    with pytest.raises(ConfigError, match="repeats 1 architectures"):
        TabularBackend(twice, "acc")


def test_the_arch_column_is_read_by_its_name(tmp_path: Path, rows: dict[int, dict[str, str]]) -> None:
    """fitness.arch_column=cell: the arch strings are read from that column wherever it stands."""
    path = tmp_path / "t.csv"
    path.write_text(f"n,acc,cell\n0,70.0,{rows[5]['arch']}\n1,71.5,{rows[6]['arch']}\n")
    backend = TabularBackend(path, "acc", arch_column="cell")
    assert backend.evaluate([_individual(rows[6]["arch"]), _individual(rows[5]["arch"])]) == [71.5, 70.0]


def test_a_table_search_selects_on_validation_accuracy_and_reports_test_accuracy() -> None:
    """NAS-Bench-201's protocol: the search never sees a test column; the test accuracy is only reported."""
    from evoray.config import load_config
    from evoray.evolution.config import EvolveConfig
    from evoray.evolution.fitness import FitnessConfig

    preset = load_config(EvolveConfig, Path(__file__).resolve().parents[1] / "configs/nb201-tabular.yaml").fitness
    for cfg in (FitnessConfig(), preset):
        assert (cfg.metric, cfg.report) == ("cifar10_valid_12ep", "cifar10_test_12ep")
