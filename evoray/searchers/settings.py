"""The settings every gradient search shares. Each searcher adds a section of its own options (its ``Options``
dataclass, registered with it), and :mod:`evoray.searchers.config` assembles the full ``SearchConfig``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from evoray.config import SEED_RANGE
from evoray.data import DataConfig
from evoray.errors import ConfigError
from evoray.nn.supernet import SupernetConfig
from evoray.optim import OptimConfig
from evoray.runtime import RuntimeConfig
from evoray.spaces import get_space

STEP_ORDERS = ("", "arch_first", "weights_first")


@dataclass
class ArchOptimConfig:
    optimizer: str = field(default="adam", metadata={"choices": ("adam", "sgd")})  # SNAS on one GPU: sgd
    lr: float = field(default=3e-4, metadata={"min": 0.0})
    beta1: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # adam
    beta2: float = field(default=0.999, metadata={"min": 0.0, "max": 1.0})  # adam
    weight_decay: float = field(default=1e-3, metadata={"min": 0.0})
    grad_clip: float = field(default=0.0, metadata={"min": 0.0})  # max norm of the alpha gradient (0 = off; SNAS 10)


@dataclass
class SearchSettings:
    """One gradient search. Defaults are the DARTS CIFAR-10 search settings; each searcher adds its paper's."""

    searcher: str = "darts"  # a name of evoray.searchers.SEARCHERS
    # seeds the weights, the alphas, the data split and order, and the Gumbel noise
    seed: int = field(default=0, metadata=SEED_RANGE)
    epochs: int = field(default=50, metadata={"min": 1})
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", root="data/cifar10"))
    optim: OptimConfig = field(default_factory=OptimConfig)  # the supernet weights' SGD
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    alpha_init_std: float = field(default=1e-3, metadata={"min": 0.0})  # alphas ~ N(0, std) (SNAS: its own init)
    eval_batches: int = field(default=0, metadata={"min": 0})  # validation batches of the epoch metrics (0 = all)
    # BatchNorm in the epoch's validation pass: "train" (batch statistics, as EvNAS fitness; robust to sampled and
    # wiped-out ops) or "eval" (running statistics, as DARTS' own code)
    eval_bn: str = field(default="train", metadata={"choices": ("train", "eval")})
    # bilevel searchers: which half of a step comes first ("" = the searcher's original order)
    step_order: str = field(default="", metadata={"choices": STEP_ORDERS})
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def section(self, name: str) -> Any:
        """The options section of searcher ``name``."""
        return getattr(self, name)

    def validate(self) -> None:
        from evoray.searchers.registry import SEARCHERS

        cls = SEARCHERS.get(self.searcher)
        self.supernet.validate()
        cls.check_space(self.supernet.space)
        space = get_space(self.supernet.space)
        if space.family.num_inputs == 2 and self.supernet.layers < 3:
            raise ConfigError(
                f"supernet.layers = {self.supernet.layers}: a DARTS-family supernet needs >= 3 cells "
                "(normal and reduction cells both)"
            )
        if self.runtime.precision == "fp16":
            raise ConfigError("runtime.precision=fp16 is not supported by the searchers (no loss scaling); use bf16")
        if self.step_order and not cls.bilevel:
            raise ConfigError(
                f"step_order = {self.step_order!r} does not apply to searcher {self.searcher}: it takes one step "
                "per batch (leave step_order empty)"
            )
        for name in SEARCHERS.names():  # options of another searcher are a mistake, not a no-op
            options = getattr(self, name, None)
            if name == self.searcher or options is None:
                continue
            default = type(options)()
            changed = [
                f.name for f in dataclasses.fields(options) if getattr(options, f.name) != getattr(default, f.name)
            ]
            if changed:
                raise ConfigError(
                    f"option {name}.{changed[0]} does not apply to searcher {self.searcher}; "
                    f"it is an option of {name} only"
                )
        cls.check(self)
