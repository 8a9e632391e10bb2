"""``python -m evoray.train`` / ``evoray train``: retrain a genotype from scratch, or profile it.

With no arguments it runs the embedded default (DARTS_V2 at a small size on scikit-learn's digits, on the CPU in a
few minutes). ``--config darts-cifar10`` is the DARTS paper's CIFAR-10 evaluation recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evoray import limits
from evoray.cli import (
    default_config_path,
    emit_json,
    load_from_args,
    log_to,
    make_parser,
    refuse_beside_resume,
    resumed_config,
    run_command,
)
from evoray.config import config_to_dict
from evoray.data import describe, require_files
from evoray.errors import ConfigError
from evoray.runs import RunDir
from evoray.runs.curves import read_curves
from evoray.runs.directory import MANIFEST, is_run, read_json, saved_run
from evoray.runs.events import train_scalars, write_scalars
from evoray.runs.reader import CURVES
from evoray.spaces import Genotype, check_genotype
from evoray.spaces.resolve import resolve_genotype
from evoray.training import TrainConfig, check_network, profile_genotype, resumed_genotype, train_genotype

DEFAULT = "train-default.yaml"


def run_name(cfg: TrainConfig) -> str:
    short = cfg.model.genotype if len(cfg.model.genotype) <= 24 and "/" not in cfg.model.genotype else "genotype"
    return cfg.name or f"{short}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    cfg: TrainConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Retrain ``cfg.model.genotype`` into its run directory (``out``, or ``runs/train/<name>``), or with ``resume``
    continue the run in ``out`` from its last epoch, with the genotype it started with."""
    genotype = None
    if resume and out is not None and is_run(Path(out)):  # not what model.genotype (perhaps a file) gives now
        recorded = read_json(Path(out) / MANIFEST, "run manifest").get("genotype")
        genotype = resumed_genotype(cfg, recorded, f"run {str(out)!r}", log=lambda _: None)
    check_sizes(cfg, genotype)  # a bad genotype, size or data root fails before anything is written
    require_files(cfg.data)
    with RunDir.open("train", out, run_name(cfg), resume=resume, overwrite=overwrite) as run:
        result = train_genotype(cfg, run, log)
        write_scalars(run.path, train_scalars(read_curves(run.path / CURVES), result))  # for tensorboard --logdir
        return result


def check_sizes(cfg: TrainConfig, genotype: Genotype | None = None, data: bool = True) -> None:
    """The genotype (default: ``model.genotype``), whole, and a network or batch the machine cannot hold, refused
    before anything runs; ``data``: the data is built and checked too (a profile reads none)."""
    if genotype is None:
        genotype = resolve_genotype(cfg.model.genotype)
    check_network(cfg, genotype)
    check_genotype(genotype)
    shape, m = describe(cfg.data, check=data), cfg.model
    aux = m.auxiliary and m.network != "nb201"
    batch = min(cfg.data.batch_size, shape.num_train)
    limits.check_network(
        genotype, m.network, m.init_channels, m.layers, aux, shape.num_classes, shape.in_channels, shape.side, batch,
        cfg.runtime.device,
    )  # fmt: skip


def profile(cfg: TrainConfig, out: Path | None, overwrite: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Params, FLOPs and latency of the genotype; with ``out``, a run directory holding them (``profile.json``)."""
    check_sizes(cfg, data=False)
    result = profile_genotype(cfg, log)
    if out is not None:
        with RunDir.open("train", out, run_name(cfg), overwrite=overwrite) as run:
            run.start(config_to_dict(cfg), cfg.seed, {"method": "profile"})
            run.write_json("profile.json", result)
            write_scalars(run.path, train_scalars([], result))
            run.finish(result)
    return result


def _main(argv: Sequence[str] | None) -> int:
    default = default_config_path(DEFAULT)
    parser = make_parser("python -m evoray.train", __doc__, default)
    parser.add_argument("--genotype", help="published name, .json file or genotype string (sets model.genotype)")
    parser.add_argument("--profile", action="store_true", help="report params, FLOPs and latency without training")
    args = parser.parse_args(argv)
    if args.genotype is not None and not args.genotype.strip():
        raise ConfigError("--genotype is empty; give a published name, a .json file or a genotype string")
    log = log_to(args.json)
    if args.resume is not None:
        refuse_beside_resume(args)
        if args.genotype is not None or args.profile:
            raise ConfigError("--resume continues a run as it was started; --genotype and --profile do not apply")
        cfg = resumed_config(TrainConfig, saved_run(args.resume, "train"), args, default)
        result = train(cfg, args.resume, resume=True, log=log)
    else:
        cfg = load_from_args(TrainConfig, args)
        if args.genotype is not None:
            cfg.model.genotype = args.genotype
        if args.profile:
            result = profile(cfg, args.out, args.overwrite, log)
        else:
            result = train(cfg, args.out, overwrite=args.overwrite, log=log)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)
