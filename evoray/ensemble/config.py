"""The spec of a committee run: where the members come from, how they are trained, which committees are built from
them and how they are measured. Loaded from ``ensembles/*.yaml`` with ``--set`` overrides, saved beside the results.

Example::

    cfg = load_config(EnsembleConfig, "ensembles/default.yaml", ["train.optim.epochs=2"])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evoray.config import SEED_RANGE
from evoray.data import DataConfig
from evoray.errors import ConfigError
from evoray.runtime import ResourcesConfig
from evoray.training import Recipe

METRICS = ("nll", "accuracy")
CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast")
SUPERNET_BN = ("recalibrate", "batch", "running")


@dataclass
class MembersConfig:
    """The member pool. Genotypes (published, from archives) are trained from scratch; checkpoints and supernets are
    evaluated as they are."""

    published: list[str] = field(default_factory=list)  # published genotype names (DARTS_V2, EvNAS_A, ...)
    archives: list[str] = field(default_factory=list)  # population archives or run directories (evolve, search)
    top_k: int = field(default=3, metadata={"min": 1})  # genotypes taken from each archive: fittest, deduplicated
    archive_scope: str = field(default="last", metadata={"choices": ("last", "all")})  # last generation | every one
    latest_run: bool = False  # also the top_k of the newest run under runs_dir whose genotypes fit the network
    latest_supernet: bool = False  # also the supernet of the newest evolve run that has one
    checkpoints: list[str] = field(default_factory=list)  # trained networks: train runs or committee member dirs
    supernets: list[str] = field(default_factory=list)  # evolve run dirs: supernet + its best individual's decoding
    seeds: int = field(default=1, metadata={"min": 1})  # trained copies of each genotype, seeds seed, seed + 1, ...
    runs_dir: str = "runs"  # where latest_run and latest_supernet look


@dataclass
class SupernetEvalConfig:
    """How a supernet member is evaluated with its best individual's decoded weights."""

    bn: str = field(default="recalibrate", metadata={"choices": SUPERNET_BN})
    # recalibrate: reset BatchNorm statistics and re-estimate them for this individual on training batches;
    # batch: batch statistics at evaluation (the EvNAS fitness); running: the statistics stored in the checkpoint
    bn_batches: int = field(default=0, metadata={"min": 0})  # recalibration batches (0 = one pass over training)


@dataclass
class CommitteeConfig:
    """One committee: a combiner, how many members, and the validation metric that selects them."""

    name: str = ""  # label in the report ("" = the combiner's name, made unique)
    combiner: str = "prob_mean"  # logit_sum | prob_mean | vote | caruana | forward_select
    size: int = 0  # members (caruana: picks, with replacement, so it may exceed the pool); 0 = the whole pool
    metric: str = "nll"  # validation metric that ranks or greedily selects members: nll | accuracy
    members: list[str] = field(default_factory=list)  # restrict the library: names or globs (supernet-*); [] = all
    init_best: int = 0  # caruana: start from the n best members (sorted initialisation) instead of empty

    def check(self, where: str) -> None:
        from evoray.ensemble.combiners import COMBINERS

        COMBINERS.get(self.combiner)
        if self.metric not in METRICS:
            raise ConfigError(f"{where}.metric = {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.combiner == "forward_select" and self.metric != "nll":
            raise ConfigError(f"{where}: forward_select (NES) selects by validation NLL; metric must be nll")
        if self.size < 0 or self.init_best < 0:
            raise ConfigError(f"{where}: size and init_best must be >= 0, got {self.size} and {self.init_best}")
        if self.init_best and self.combiner != "caruana":
            raise ConfigError(f"{where}.init_best applies to the caruana combiner only, not {self.combiner}")
        if self.size and self.init_best > self.size:
            raise ConfigError(f"{where}.init_best = {self.init_best} exceeds its size {self.size}")


@dataclass
class ShiftConfig:
    """Shifted test sets: every corruption at every severity, generated locally from the clean test images."""

    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))  # [] = clean test data only
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={"min": 1, "max": 5})


def _default_committees() -> list[CommitteeConfig]:
    return [
        CommitteeConfig(combiner="logit_sum", size=3),
        CommitteeConfig(combiner="prob_mean"),
        CommitteeConfig(combiner="vote"),
        CommitteeConfig(combiner="caruana", size=10),
        CommitteeConfig(combiner="forward_select", size=3),
    ]


@dataclass
class EnsembleConfig:
    """A committee run. ``data.train_portion`` of the training set trains the members; the rest is the validation
    set from which committees are selected (the same for every member). The test set only measures."""

    name: str = ""  # run name: the run goes to runs/ensemble/<name> unless --out is given ("" = spec and time)
    seed: int = field(default=0, metadata=SEED_RANGE)  # validation split, member seeds, corruption noise
    data: DataConfig = field(
        default_factory=lambda: DataConfig(
            dataset="cifar10", root="data/cifar10", train_portion=0.9, batch_size=96, cutout=16
        )
    )
    members: MembersConfig = field(default_factory=MembersConfig)
    train: Recipe = field(default_factory=Recipe)  # how genotype members are trained (model.genotype: their own)
    supernet: SupernetEvalConfig = field(default_factory=SupernetEvalConfig)
    committees: list[CommitteeConfig] = field(default_factory=_default_committees)
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    executor: str = field(default="ray", metadata={"choices": ("ray", "local")})  # local: one member at a time here
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # what each member task reserves
    ece_bins: int = field(default=15, metadata={"min": 1})  # equal-width confidence bins of ECE and the diagram

    def validate(self) -> None:
        if not self.committees:
            raise ConfigError("committees is empty; give at least one, e.g. [{combiner: prob_mean}]")
        self.data.require_validation_half("the committees' selection")
        if self.seed + self.members.seeds - 1 > SEED_RANGE["max"]:
            raise ConfigError(
                f"seed = {self.seed} with members.seeds = {self.members.seeds} gives member seeds past "
                f"{SEED_RANGE['max']}; use a seed <= {SEED_RANGE['max'] - self.members.seeds + 1}"
            )
        for i, committee in enumerate(self.committees):
            committee.check(f"committees[{i}]")
        for name in self.shift.corruptions:
            if name not in CORRUPTIONS:
                raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
        if self.shift.corruptions and not self.shift.severities:
            raise ConfigError("shift.severities is empty; give severities in 1..5 or set shift.corruptions=[]")
        m = self.members
        if not (m.published or m.archives or m.checkpoints or m.supernets or m.latest_run or m.latest_supernet):
            raise ConfigError(
                "the member pool is empty; set members.published, archives, checkpoints, supernets or latest_run"
            )
