"""``python -m evoray.evolve`` / ``evoray evolve``: EvNAS (or regularized evolution) over a shared supernet or a
tabular benchmark.

With no arguments it runs the embedded default: a small DARTS-space supernet on scikit-learn's digits with a small
population, on the CPU in a few minutes, through one Ray actor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evoray import limits
from evoray.cli import command_config, default_config_path, emit_json, log_to, make_parser, run_command
from evoray.data import describe, require_files
from evoray.evolution.config import EvolveConfig
from evoray.evolution.fitness import FitnessBackend
from evoray.evolution.run import build_backend, initial_alphas, run_evolve
from evoray.evolution.strategies import unread_settings_notes
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.runs import RunDir
from evoray.runs.directory import CHECKPOINTS
from evoray.runtime import apply_runtime
from evoray.spaces import get_space

DEFAULT = "evolve-default.yaml"


def evolve(
    cfg: EvolveConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the search of ``cfg`` into its run directory (``out``, or ``runs/evolve/<name>``), or with ``resume``
    continue the run in ``out``; returns the summary written to ``best.json``."""
    check_sizes(cfg)
    if not (resume and out is not None and (Path(out) / CHECKPOINTS / "last.pt").is_file()):  # else it holds them
        initial_alphas(cfg.initial_population, get_space(cfg.supernet.space), 1, np.random.default_rng(0))  # fails now
    with RunDir.open("evolve", out, cfg.name or cfg.default_name(), resume=resume, overwrite=overwrite) as run:
        return run_evolve(cfg, run, _backend(cfg), log)


def check_sizes(cfg: EvolveConfig) -> None:
    """A population, supernet or batch the machine cannot hold is refused before anything runs."""
    space = get_space(cfg.supernet.space)
    numel = sum(math.prod(space.alpha_shape(ct)) for ct in space.cell_types)
    limits.check_population(cfg.evolution.population, cfg.evolution.generations, numel)
    if cfg.fitness.backend == "supernet":
        require_files(cfg.data)
        shape = describe(cfg.data, "search")
        batch = min(cfg.data.batch_size, shape.num_train)  # fitness batches run without a backward pass
        device = cfg.runtime.device
        limits.check_supernet(cfg.supernet, shape.num_classes, shape.in_channels, shape.side, batch, device)


def _backend(cfg: EvolveConfig) -> FitnessBackend:
    device = apply_runtime(cfg.runtime, autotune=SupernetTrainer.autotune)
    if cfg.fitness.backend == "supernet" and cfg.distributed.num_actors > 0:
        from evoray.distributed.cluster import ensure_ray
        from evoray.distributed.fleet import FleetBackend

        ensure_ray(cfg.resources.address)
        return FleetBackend(cfg)
    return build_backend(cfg, device)


def _main(argv: Sequence[str] | None) -> int:
    default = default_config_path(DEFAULT)
    parser = make_parser("python -m evoray.evolve", __doc__, default)
    parser.add_argument("--address", default=None, help="join a Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    log = log_to(args.json)
    cfg, out, resume = command_config(EvolveConfig, args, "evolve", default)
    for line in unread_settings_notes(cfg.evolution):
        log(line)
    if args.address:
        cfg.resources.address = args.address
    result = evolve(cfg, out, resume=resume, overwrite=args.overwrite, log=log)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)
