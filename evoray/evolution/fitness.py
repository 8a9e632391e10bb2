"""Fitness backends behind one small interface: a tabular benchmark, NATS-Bench, or a shared supernet (EvNAS).

A backend answers ``evaluate(individuals, generation) -> fitness`` (higher is better). One that trains shared
weights does it in ``train_generation``, which the driver calls once at the start of every generation with the
population (EvNAS: step ``s`` trains with individual ``s mod P``, then every individual is evaluated on the shared
weights). Everything else has a do-nothing default, so a table needs only ``evaluate``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoray.errors import ConfigError
from evoray.evolution.individual import Individual
from evoray.registry import Registry


@dataclass
class FitnessConfig:
    backend: str = "supernet"  # supernet (EvNAS shared weights) | tabular (a benchmark table) | nats-bench
    table: str = ""  # tabular: CSV or Parquet file with an arch column and metric columns
    metric: str = "cifar10_valid_12ep"  # tabular: the column maximised
    report: str = "cifar10_test_12ep"  # tabular: a column reported for the best individual ("" = none)
    arch_column: str = "arch"  # tabular: the column of NAS-Bench-201 arch strings
    bn_mode: str = field(default="train", metadata={"choices": ("train", "eval")})  # supernet: BN during fitness
    max_batches: int = field(default=0, metadata={"min": 0})  # supernet: validation batches per fitness (0 = all)
    # supernet: score on the validation half augmented as in training (the original EvNAS code draws its validation
    # batches from the augmented training set); False scores it plain, a less noisy fitness
    augment: bool = False
    # supernet: the fitness batch (0 = data.batch_size). With batch statistics (bn_mode train) it sets the BN
    # estimate's noise; the original EvNAS code scores batches of 1024
    batch_size: int = field(default=0, metadata={"min": 0})


class FitnessBackend(ABC):
    """What the generation loop asks of a fitness source.

    >>> class Ones(FitnessBackend):
    ...     def evaluate(self, individuals, generation=0):
    ...         return [1.0] * len(individuals)
    >>> Ones().train_generation([], 0)
    {}
    """

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        """Train shared weights with this generation's population; returns statistics to log (default: nothing)."""
        return {}

    @abstractmethod
    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        """The fitness of each individual, in order."""

    def report(self, individual: Individual) -> dict[str, float]:
        """Extra figures for a chosen individual, e.g. a benchmark's test accuracy (default: none)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The backend's state for a checkpoint: tensors and plain containers only (read back with weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def supernet_state(self) -> dict[str, Any] | None:
        """The shared supernet's weights after the run, for committees of its architectures (None: no supernet)."""
        return None

    def close(self) -> None:
        return None


BACKENDS: Registry[Callable[..., FitnessBackend]] = Registry("fitness backend")


@BACKENDS.register("tabular")
class TabularBackend(FitnessBackend):
    """Fitness looked up in a table (CSV or Parquet): one row per architecture, its arch string in ``arch_column``
    (NAS-Bench-201 strings ``|op~0|+|op~0|op~1|+|...|``, as individuals of the ``nb201`` space derive), the fitness
    in ``metric`` and, optionally, a figure reported for the chosen individual in ``report``.

    ``evaluations`` counts the distinct genotypes looked up: the budget of a tabular study.

    >>> backend = TabularBackend("../shared/data/nb201-12epoch.csv", "cifar10_valid_12ep",
    ...                          report="cifar10_test_12ep")  # doctest: +SKIP
    """

    def __init__(
        self, table: str | Path, metric: str = "cifar10_valid_12ep", report: str = "", arch_column: str = "arch"
    ) -> None:
        import pandas as pd

        path = Path(table)
        if not str(table) or not path.is_file():
            raise ConfigError(f"fitness table {str(table)!r} does not exist; give a CSV or Parquet file")
        try:
            df = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
        except Exception as err:  # any parse failure means the file is not a table
            raise ConfigError(f"fitness table {str(path)!r} does not read as a table ({type(err).__name__})") from None
        for column, key in ((arch_column, "arch_column"), (metric, "metric"), (report, "report")):
            if column and column not in df.columns:
                raise ConfigError(
                    f"fitness table {str(path)!r} has no column {column!r} (fitness.{key}); columns: "
                    f"{', '.join(map(str, df.columns))}"
                )
        duplicated = df[arch_column].duplicated()
        if duplicated.any():
            raise ConfigError(
                f"fitness table {str(path)!r}: column {arch_column!r} repeats {int(duplicated.sum())} architectures, "
                f"e.g. {df[arch_column][duplicated].iloc[0]!r}"
            )
        self.path, self.metric, self.report_column, self.arch_column = path, metric, report, arch_column
        archs = [str(a) for a in df[arch_column]]
        self.values: dict[str, float] = dict(zip(archs, _numbers(df, metric, path)))
        self.reports: dict[str, float] = dict(zip(archs, _numbers(df, report, path))) if report else {}
        self.seen: dict[str, None] = {}  # distinct genotypes looked up, in order

    @property
    def evaluations(self) -> int:
        return len(self.seen)

    def lookup(self, genotype: str) -> float:
        try:
            value = self.values[genotype]
        except KeyError:
            example = next(iter(self.values), "")
            raise ConfigError(
                f"genotype {genotype!r} is not in fitness table {str(self.path)!r} (column {self.arch_column!r}, "
                f"e.g. {example!r})"
            ) from None
        self.seen[genotype] = None
        return value

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return [self.lookup(ind.genotype) for ind in individuals]

    def report(self, individual: Individual) -> dict[str, float]:
        if not self.report_column:
            return {}
        if individual.genotype not in self.reports:
            raise ConfigError(f"genotype {individual.genotype!r} is not in fitness table {str(self.path)!r}")
        return {self.report_column: self.reports[individual.genotype]}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = dict.fromkeys(str(g) for g in state.get("seen", []))


def _numbers(df: Any, column: str, path: Path) -> list[float]:
    import pandas as pd

    values = pd.to_numeric(df[column], errors="coerce")
    if values.isna().all():
        raise ConfigError(f"fitness table {str(path)!r}: column {column!r} holds no numbers")
    return [float(v) for v in values]


@BACKENDS.register("nats-bench")
class NatsBenchBackend(FitnessBackend):
    """Fitness from the official NATS-Bench API (topology search space, https://github.com/D-X-Y/NATS-Bench), for
    users who have the ``nats_bench`` package and its benchmark files.

    ``metric`` and ``report`` read ``DATASET:KEY:HP``, e.g. ``cifar10-valid:valid-accuracy:12`` (the search
    signal) and ``cifar10:test-accuracy:200`` (reported for the chosen individual).
    """

    def __init__(
        self,
        table: str | Path,
        metric: str = "cifar10-valid:valid-accuracy:12",
        report: str = "cifar10:test-accuracy:200",
        arch_column: str = "arch",  # unused: NATS-Bench is queried by arch string
    ) -> None:
        try:
            from nats_bench import create
        except ImportError:
            raise ConfigError(
                "fitness backend 'nats-bench' needs the nats_bench package (pip install nats_bench) and its files"
            ) from None
        if not str(table) or not Path(table).exists():
            raise ConfigError(f"NATS-Bench file or folder {str(table)!r} does not exist")
        self.api = create(str(table), "tss", fast_mode=True, verbose=False)
        self.metric, self.report_spec = _nats_spec(metric), _nats_spec(report) if report else None
        self.seen: dict[str, None] = {}

    @property
    def evaluations(self) -> int:
        return len(self.seen)

    def _query(self, arch: str, spec: tuple[str, str, str]) -> float:
        dataset, key, hp = spec
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            raise ConfigError(f"genotype {arch!r} is not in NATS-Bench's topology search space")
        return float(self.api.get_more_info(index, dataset, hp=hp, is_random=False)[key])

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        out = [self._query(ind.genotype, self.metric) for ind in individuals]
        self.seen.update(dict.fromkeys(ind.genotype for ind in individuals))
        return out

    def report(self, individual: Individual) -> dict[str, float]:
        if self.report_spec is None:
            return {}
        return {":".join(self.report_spec): self._query(individual.genotype, self.report_spec)}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = dict.fromkeys(str(g) for g in state.get("seen", []))


def _nats_spec(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"NATS-Bench metric {text!r} must read DATASET:KEY:HP, e.g. cifar10-valid:valid-accuracy:12")
    return parts[0], parts[1], parts[2]
