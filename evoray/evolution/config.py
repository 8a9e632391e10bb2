"""The config of an evolve run: the search, the supernet, its optimiser, the fitness, the data, and how the run uses a
Ray cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evoray.config import SEED_RANGE
from evoray.data import DataConfig
from evoray.errors import ConfigError
from evoray.evolution.fitness import BACKENDS, FitnessConfig
from evoray.evolution.strategies import EvolutionConfig
from evoray.evolution.supernet_fitness import SupernetBackend  # noqa: F401  (registers the supernet backend)
from evoray.nn.supernet import SupernetConfig
from evoray.optim import OptimConfig
from evoray.runtime import ResourcesConfig, RuntimeConfig


@dataclass
class DistributedConfig:
    """How the supernet is spread over Ray actors (``resources`` says what each actor reserves)."""

    num_actors: int = field(default=1, metadata={"min": 0})  # supernet replicas on Ray actors; 0 = in-process, no Ray
    batch_shards: int = field(default=0, metadata={"min": 0})  # BN shards of each batch; 0 = num_actors (>= 1)
    max_restarts: int = field(default=3, metadata={"min": 0})  # fleet rebuilds after actor failures
    group_timeout_s: int = field(default=600, metadata={"min": 10})  # collective timeout (a dead peer's limit)

    @property
    def shards(self) -> int:
        return self.batch_shards or max(self.num_actors, 1)


@dataclass
class EvolveConfig:
    """An EvNAS search. Defaults are the paper's CIFAR-10 settings."""

    seed: int = field(default=0, metadata=SEED_RANGE)  # the root of every random generator of the run
    name: str = ""  # run name: the run goes to runs/evolve/<name> unless --out is given
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", root="data/cifar10"))
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    initial_population: str = ""  # seed the first generation: a run directory / archive, or published names (a,b)
    params_channels: int = field(default=36, metadata={"min": 2})  # archive's params_m: evaluation network C
    params_layers: int = field(default=20, metadata={"min": 1})  # and cells (NB201: N is taken as 5)

    def validate(self) -> None:
        if self.fitness.backend not in BACKENDS:
            raise ConfigError(f"unknown fitness backend {self.fitness.backend!r}; valid: {', '.join(BACKENDS.names())}")
        if self.fitness.backend == "supernet":
            self.data.require_validation_half("the EvNAS fitness")
            if self.runtime.precision == "fp16":
                raise ConfigError(
                    "runtime.precision=fp16 is not supported by the EvNAS supernet (no loss scaling); use bf16 or fp32"
                )
        d = self.distributed
        if self.fitness.backend == "supernet" and d.num_actors > 0 and d.shards % d.num_actors:
            raise ConfigError(f"distributed.batch_shards={d.shards} must be a multiple of num_actors={d.num_actors}")

    def trainer_kwargs(self) -> dict[str, Any]:
        """The settings of this run's EvNAS supernet trainer (``SupernetTrainer``), all but its device and place
        among the replicas."""
        return {
            "net_cfg": self.supernet,
            "optim_cfg": self.optim,
            "fitness_cfg": self.fitness,
            "data_cfg": self.data,
            "generations": self.evolution.generations,
            "seed": self.seed,
            "precision": self.runtime.precision,
            "channels_last": self.runtime.channels_last,
            "shards": self.distributed.shards,
            "reuse_memory": self.runtime.reuse_memory,
        }

    def default_name(self) -> str:
        import time

        return f"{self.supernet.space}-{self.evolution.strategy}-s{self.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
