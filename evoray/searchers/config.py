"""The config of one gradient search: shared sections plus one section of options per searcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from evoray.data import DataConfig
from evoray.errors import ConfigError
from evoray.evolution.supernet_fitness import SupernetConfig
from evoray.runtime import RuntimeConfig
from evoray.spaces import get_space


@dataclass
class WeightOptimConfig:
    lr: float = field(default=0.025, metadata={"min": 0.0})  # SGD learning rate of the supernet weights
    lr_min: float = field(default=0.001, metadata={"min": 0.0})  # cosine schedule's end, over the epochs
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    nesterov: bool = False  # GDAS: true
    weight_decay: float = field(default=3e-4, metadata={"min": 0.0})  # GDAS: 5e-4
    grad_clip: float = field(default=5.0, metadata={"min": 0.0})  # max gradient norm (0 = off)


@dataclass
class ArchOptimConfig:
    optimizer: str = field(default="adam", metadata={"choices": ("adam", "sgd")})  # SNAS on one GPU: sgd
    lr: float = field(default=3e-4, metadata={"min": 0.0})
    beta1: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # adam
    beta2: float = field(default=0.999, metadata={"min": 0.0, "max": 1.0})  # adam
    weight_decay: float = field(default=1e-3, metadata={"min": 0.0})
    grad_clip: float = field(default=0.0, metadata={"min": 0.0})  # max norm of the alpha gradient (0 = off; SNAS 10)


@dataclass
class DartsOptions:
    order: int = field(default=1, metadata={"choices": (1, 2)})  # 2: the unrolled (second-order) gradient


@dataclass
class SnasOptions:
    tau_max: float = field(default=1.0, metadata={"min": 0.0})  # temperature at epoch 0
    tau_min: float = field(default=0.03, metadata={"min": 0.0})  # temperature floor
    tau_epochs: int = field(default=150, metadata={"min": 0})  # linear-schedule horizon (original: 150; 0 = epochs)
    alpha_init_mean: float = 1.0  # log_alpha ~ N(mean, std)
    alpha_init_std: float = field(default=0.01, metadata={"min": 0.0})
    penalty: str = field(
        default="none", metadata={"choices": ("none", "reparametrization", "discrete", "policy_gradient")}
    )  # how the resource penalty is weighted
    resource_lambda: float = field(default=0.0, metadata={"min": 0.0})  # penalty weight (0 = the method's default)
    log_penalty: bool = False  # penalise the mean of the logs of the three resource sums
    separation: str = field(default="all", metadata={"choices": ("all", "size", "flops", "mac")})  # which resource
    ratio: float = field(default=1.0, metadata={"min": 0.0})  # weight of reduction cells against normal cells
    child: str = field(default="top2", metadata={"choices": ("top2", "edge_all")})  # how the child is derived
    # epochs of weight-only warm-up before the Gumbel phase: each step runs one uniformly drawn op per edge and the
    # alphas stay put (the original's --random_sample_pretrain; 0 = off)
    pretrain_epochs: int = field(default=0, metadata={"min": 0})

    def validate(self) -> None:
        _check_tau("snas", self.tau_max, self.tau_min)
        if self.resource_lambda > 0 and self.penalty == "none":
            raise ConfigError("snas.resource_lambda is set but snas.penalty is none; choose a penalty method")


@dataclass
class GdasOptions:
    tau_max: float = field(default=10.0, metadata={"min": 0.0})  # tau at the first epoch
    tau_min: float = field(default=0.1, metadata={"min": 0.0})  # tau at the last epoch
    # how a DARTS-family child is derived: the two strongest (op, input) pairs per node (the original) or DARTS' top-2
    # edges; NAS-Bench-201 children take every edge's argmax
    child: str = field(default="top2_pairs", metadata={"choices": ("top2_pairs", "top2")})

    def validate(self) -> None:
        _check_tau("gdas", self.tau_max, self.tau_min)


@dataclass
class XnasOptions:
    reward_bound: float = field(default=5.0, metadata={"min": 0.0})  # L: rewards are clipped to [-L, L]
    eta: dict[str, float] = field(default_factory=dict)  # per cell type learning rate (absent: sqrt(2 ln N / T) / L)
    wipeout: bool = True  # remove experts that can no longer lead

    def validate(self) -> None:
        if self.reward_bound <= 0:
            raise ConfigError(f"xnas.reward_bound = {self.reward_bound} must be > 0")
        for ct, eta in self.eta.items():
            if not eta > 0:
                raise ConfigError(f"xnas.eta.{ct} = {eta} must be > 0 (leave it out for sqrt(2 ln N / T) / L)")


def _check_tau(name: str, tau_max: float, tau_min: float) -> None:
    if not 0 < tau_min <= tau_max:
        raise ConfigError(f"{name} temperatures need 0 < tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")


@dataclass
class SearchConfig:
    """One gradient search. Defaults are the DARTS CIFAR-10 search settings; each searcher adds its paper's."""

    searcher: str = "darts"  # a name of evoray.searchers.SEARCHERS
    seed: int = 0  # seeds the weights, the alphas, the data split and order, and the Gumbel noise
    epochs: int = field(default=50, metadata={"min": 1})
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", root="data/cifar10"))
    optim: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    alpha_init_std: float = field(default=1e-3, metadata={"min": 0.0})  # alphas ~ N(0, std) (SNAS: its own init)
    eval_batches: int = field(default=0, metadata={"min": 0})  # validation batches of the epoch metrics (0 = all)
    # BatchNorm in the epoch's validation pass: "train" (batch statistics, as EvNAS fitness; robust to sampled and
    # wiped-out ops) or "eval" (running statistics, as DARTS' own code)
    eval_bn: str = field(default="train", metadata={"choices": ("train", "eval")})
    darts: DartsOptions = field(default_factory=DartsOptions)
    snas: SnasOptions = field(default_factory=SnasOptions)
    gdas: GdasOptions = field(default_factory=GdasOptions)
    xnas: XnasOptions = field(default_factory=XnasOptions)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        from evoray.searchers.registry import SEARCHERS

        cls = SEARCHERS.get(self.searcher)
        if cls.bilevel:
            self.data.require_validation_half(f"the alphas of {self.searcher}")
        self.supernet.validate()
        cls.check_space(self.supernet.space)
        space = get_space(self.supernet.space)
        if space.family == "darts" and self.supernet.layers < 3:
            raise ConfigError(
                f"supernet.layers = {self.supernet.layers}: a DARTS-family supernet needs >= 3 cells "
                "(normal and reduction cells both)"
            )
        if self.runtime.precision == "fp16":
            raise ConfigError("runtime.precision=fp16 is not supported by the searchers (no loss scaling); use bf16")
        unknown = sorted(set(self.xnas.eta) - set(space.cell_types))
        if unknown:
            raise ConfigError(
                f"xnas.eta names cell type {unknown[0]!r}; cell types of {space.name}: {', '.join(space.cell_types)}"
            )
        if self.snas.pretrain_epochs >= self.epochs:
            raise ConfigError(
                f"snas.pretrain_epochs = {self.snas.pretrain_epochs} leaves no search epoch; it must be < epochs = "
                f"{self.epochs}"
            )
        for name in SEARCHERS.names():
            if name == self.searcher:
                continue
            options, default = getattr(self, name), type(getattr(self, name))()
            changed = [k for k in vars(default) if getattr(options, k) != getattr(default, k)]
            if changed:
                raise ConfigError(
                    f"option {name}.{changed[0]} does not apply to searcher {self.searcher}; "
                    f"it is an option of {name} only"
                )
