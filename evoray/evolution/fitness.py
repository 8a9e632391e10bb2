"""Fitness backends behind one interface: a shared supernet (EvNAS), a tabular benchmark, or NATS-Bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoray.errors import ConfigError
from evoray.evolution.individual import Individual
from evoray.registry import Registry


class FitnessBackend:
    """What a generation loop asks of a fitness source. Defaults do nothing, so a table needs only ``evaluate``."""

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        """Train shared weights with this generation's individuals (EvNAS); returns statistics to log."""
        return {}

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        raise NotImplementedError

    def report(self, individual: Individual) -> dict[str, float]:
        """Extra figures for a chosen individual (e.g. a benchmark's test accuracy)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None


BACKENDS: Registry[Any] = Registry("fitness backend")


@BACKENDS.register("tabular")
class TabularBackend(FitnessBackend):
    """Fitness looked up in a table (CSV or Parquet) of NAS-Bench-201 arch strings and metric columns.

    ``evaluations`` counts the distinct genotypes looked up: the budget of a tabular study.
    """

    def __init__(self, table: str, metric: str, report: str = "", arch_column: str = "arch") -> None:
        import pandas as pd

        path = Path(table)
        if not table or not path.is_file():
            raise ConfigError(f"fitness table {table!r} does not exist; set fitness.table to a CSV or Parquet file")
        df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
        for col, key in ((arch_column, "arch_column"), (metric, "metric"), (report, "report")):
            if col and col not in df.columns:
                raise ConfigError(
                    f"fitness table {table!r} has no column {col!r} (fitness.{key}); columns: {', '.join(df.columns)}"
                )
        self.metric, self.report_column = metric, report
        self.values: dict[str, float] = dict(zip(df[arch_column], df[metric].astype(float)))
        self.reports: dict[str, float] = dict(zip(df[arch_column], df[report].astype(float))) if report else {}
        self.seen: set[str] = set()

    @property
    def evaluations(self) -> int:
        return len(self.seen)

    def lookup(self, genotype: str) -> float:
        try:
            value = self.values[genotype]
        except KeyError:
            raise ConfigError(f"genotype {genotype!r} is not in the fitness table") from None
        self.seen.add(genotype)
        return value

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return [self.lookup(ind.genotype) for ind in individuals]

    def report(self, individual: Individual) -> dict[str, float]:
        return {self.report_column: self.reports[individual.genotype]} if self.report_column else {}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": sorted(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = set(state.get("seen", []))


@BACKENDS.register("nats-bench")
class NatsBenchBackend(FitnessBackend):
    """Fitness from the official NATS-Bench API (topology search space), when the user has it and its files."""

    def __init__(self, table: str, metric: str, report: str = "", arch_column: str = "arch") -> None:
        try:
            from nats_bench import create  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                "fitness.backend=nats-bench needs the nats_bench package: pip install nats_bench"
            ) from None
        if not table or not Path(table).exists():
            raise ConfigError(f"NATS-Bench file {table!r} does not exist; set fitness.table to it")
        self.api = create(table, "tss", fast_mode=True, verbose=False)
        dataset, _, setting = metric.partition(":")  # e.g. "cifar10-valid:12"
        self.dataset, self.hp = dataset or "cifar10-valid", setting or "12"

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        out = []
        for ind in individuals:
            index = self.api.query_index_by_arch(ind.genotype)
            info = self.api.get_more_info(index, self.dataset, hp=self.hp, is_random=False)
            out.append(float(info["valid-accuracy"]))
        return out
