"""A search experiment: searchers x seeds x a hyperparameter grid, each point one fully resolved ``SearchConfig``.

A trial's config is built in layers: ``SearchConfig`` defaults, then the searcher's paper settings
(``Searcher.paper_defaults``), then the experiment's ``base``, then ``per_searcher[<name>]``, then the grid point,
then the searcher name and the seed. Every trial is validated before anything runs, so a bad option fails at once
with one line.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evoray.config import SEED_RANGE, config_from_dict, config_to_dict
from evoray.errors import ConfigError
from evoray.runtime import ResourcesConfig
from evoray.searchers.config import SearchConfig
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings
from evoray.spaces import get_space

OWN_KEYS = ("searcher", "seed")  # set per trial from the experiment's searchers and seeds, never by base/grid


@dataclass
class SchedulerConfig:
    kind: str = field(default="none", metadata={"choices": ("none", "asha")})  # Tune trial scheduler
    grace_period: int = field(default=1, metadata={"min": 1})  # ASHA: epochs before a trial may be stopped
    reduction_factor: float = field(default=2.0, metadata={"min": 1.01})  # ASHA: keep 1/factor at each rung


@dataclass
class ExperimentConfig:
    """An experiment of gradient searches run as Ray Tune trials."""

    name: str = ""  # run name: the run goes to runs/search/<name> unless --out is given ("" = search-<time>)
    searchers: list[str] = field(default_factory=lambda: ["darts", "snas", "gdas", "xnas"])
    seeds: list[int] = field(default_factory=lambda: [0], metadata=SEED_RANGE)  # each trial's seed, one by one
    base: dict[str, Any] = field(default_factory=dict)  # SearchConfig keys shared by every trial
    per_searcher: dict[str, dict[str, Any]] = field(default_factory=dict)  # SearchConfig keys of one searcher
    # dotted SearchConfig key -> values (a grid search); --set grid.optim.lr=[0.1, 0.01] sets the key "optim.lr"
    grid: dict[str, list[Any]] = field(default_factory=dict, metadata={"dotted_keys": True})
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # what each trial reserves
    max_concurrent: int = field(default=0, metadata={"min": 0})  # trials at once (0 = as resources allow)
    max_failures: int = field(default=2, metadata={"min": 0})  # retries of a failed trial from its last checkpoint
    # Tune's storage: "" keeps Tune's files in the run directory (<run>/tune); a pyarrow URI (s3://...) or a shared
    # directory puts them there for a cluster (<storage>/<run name>)
    storage: str = ""

    def default_name(self) -> str:
        import time

        return f"search-{time.strftime('%Y%m%d-%H%M%S')}"

    def validate(self) -> None:
        if not self.searchers:
            raise ConfigError("searchers is empty; name at least one of: " + ", ".join(SEARCHERS.names()))
        for name in self.searchers:
            SEARCHERS.get(name)
        for name in self.per_searcher:  # settings of searchers not in this run are kept, unused
            if name not in SEARCHERS:
                raise ConfigError(
                    f"per_searcher names unknown searcher {name!r}; valid: {', '.join(SEARCHERS.names())}"
                )
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed")
        layers = {"base": self.base, **{f"per_searcher.{s}": v for s, v in self.per_searcher.items()}}
        for where, keys in {**layers, "grid": self.grid}.items():
            for key in keys:
                if key in OWN_KEYS:
                    raise ConfigError(
                        f"{where}.{key} cannot be set: each trial's {key} comes from the experiment's {key}s list; "
                        f"use {key}s: [...] instead"
                    )
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list of values")
        scheme = self.storage.partition("://")[0].lower() if "://" in self.storage else ""
        if scheme and scheme not in STORAGE_SCHEMES:
            raise ConfigError(
                f"storage {self.storage!r}: unknown file system {scheme!r}; give a directory, or a URI of "
                f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}"
            )


# the URI schemes of the file systems pyarrow (Tune's storage layer) opens
STORAGE_SCHEMES = ("file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "mock")


def _merge(into: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _dotted(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def trial_config(exp: ExperimentConfig, searcher: str, seed: int, point: Mapping[str, Any]) -> SearchSettings:
    """The resolved config of one trial: defaults, the searcher's paper settings for the trial's space family, then
    the user's layers (base, per_searcher, the grid point)."""
    user: dict[str, Any] = {}
    _merge(user, exp.base)
    _merge(user, exp.per_searcher.get(searcher, {}))
    for key, value in point.items():
        _merge(user, _dotted(key, value))
    data = config_to_dict(SearchConfig())
    section = user.get("supernet")
    space = section.get("space") if isinstance(section, Mapping) and "space" in section else data["supernet"]["space"]
    _merge(data, SEARCHERS.get(searcher).paper_defaults.get(get_space(str(space)).family.name, {}))
    _merge(data, user)
    data["searcher"], data["seed"] = searcher, seed
    return config_from_dict(SearchConfig, data)


def expand(exp: ExperimentConfig) -> list[SearchSettings]:
    """Every trial of the experiment, in a stable order: searcher, then grid point, then seed."""
    keys = list(exp.grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(exp.grid[k] for k in keys))] or [{}]
    trials = []
    for searcher in exp.searchers:
        for point in points:
            for seed in exp.seeds:
                try:
                    trials.append(trial_config(exp, searcher, seed, point))
                except ConfigError as err:
                    where = f"trial {searcher} seed {seed}" + (f" {point}" if point else "")
                    raise ConfigError(f"{where}: {err}") from None
    longest = max(t.epochs for t in trials)
    if exp.scheduler.kind == "asha" and exp.scheduler.grace_period > longest:
        raise ConfigError(
            f"scheduler.grace_period = {exp.scheduler.grace_period} exceeds the longest trial ({longest} epochs)"
        )
    on_test = [t for t in trials if t.data.whole_train]
    if exp.scheduler.kind == "asha" and on_test:
        raise ConfigError(
            f"scheduler.kind=asha stops trials by their validation accuracy, but trial {trial_label(on_test[0])} "
            "validates on the test set (data.train_portion = 1, a single-level search on the whole training set): "
            "hold out a split (data.train_portion < 1) or use scheduler.kind=none"
        )
    return trials


def lookup(layer: Mapping[str, Any], parts: list[str]) -> tuple[bool, Any]:
    """(found, value) of the dotted path ``parts`` in a nested mapping."""
    node: Any = layer
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def shadowed_base_key(exp: ExperimentConfig, key: str) -> list[str]:
    """Where the base key ``key`` (dotted, without ``base.``) does not reach every trial: the later layers that set the
    same key (or a value above it) to something else for a searcher of this run, as ``layer = value``, and the grid
    keys under it, on it, or over it where some value of theirs sets it (a grid's sections merge into base's)."""
    parts = key.split(".")
    out = []
    for name in exp.searchers:
        for depth in range(1, len(parts) + 1):
            found, value = lookup(exp.per_searcher.get(name, {}), parts[:depth])
            if found and (depth == len(parts) or not isinstance(value, Mapping)):
                if value != lookup(exp.base, parts[:depth])[1]:  # the same value set twice shadows nothing
                    out.append(f"per_searcher.{name}.{'.'.join(parts[:depth])} = {value!r}")
                break
    for grid_key, values in exp.grid.items():
        rest = parts[grid_key.count(".") + 1 :]  # a grid over a section above the key merges into base's section
        above = key.startswith(grid_key + ".") and any(_replaces(value, rest) for value in values)
        if grid_key == key or grid_key.startswith(key + ".") or above:
            out.append(f"grid.{grid_key}")
    return out


def _replaces(value: Any, parts: list[str]) -> bool:
    """Whether merging ``value`` replaces what lies at the path ``parts`` under it: it holds that path, or a value that
    is not a section stands in the way."""
    for part in parts:
        if not isinstance(value, Mapping):
            return True
        if part not in value:
            return False
        value = value[part]
    return True


def trial_label(cfg: SearchSettings, point: Mapping[str, Any] | None = None) -> str:
    extra = "".join(f"-{k.rsplit('.', 1)[-1]}={v}" for k, v in (point or {}).items())
    return f"{cfg.searcher}-{cfg.supernet.space}-s{cfg.seed}{extra}"
