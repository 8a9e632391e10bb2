"""``python -m evoray.ensemble`` / ``evoray ensemble``: train the top genotypes as committee members and measure
their committees.

With no arguments it runs the embedded default (``ensembles/default.yaml``): a few published genotypes plus the
best of the newest finished evolve or search run, if there is one, at a small size on scikit-learn's digits, as Ray
tasks on the CPU in a few minutes. ``--config NAME`` takes a shipped spec (``ensembles/NAME.yaml``) or any YAML path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from evoray import limits
from evoray.cli import emit_json, log_to, make_parser, refuse_beside_resume, resumed_config, run_command, shipped
from evoray.config import load_config
from evoray.data import describe, require_files
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.members import Executor, run_members_locally
from evoray.ensemble.runner import plan, recorded_latest, run_ensemble
from evoray.errors import ConfigError
from evoray.runs import RunDir
from evoray.runs.directory import saved_run
from evoray.runtime import runtime_device
from evoray.spaces import Genotype, parse_genotype


def spec_path(name: str | None) -> str | None:
    """A YAML path as given, or ``ensembles/<name>.yaml`` as shipped with evoray for a bare spec name; anything else
    is a one-line ``ConfigError`` listing the shipped specs."""
    if name is None or Path(name).is_file():
        return name
    path = shipped("ensembles", name if name.endswith(".yaml") else f"{name}.yaml")
    if path is None:
        specs = ", ".join(sorted(p.stem for p in shipped_specs()))
        raise ConfigError(f"committee spec not found: {name}; valid: a YAML file, or a shipped spec: {specs}")
    return str(path)


def shipped_specs() -> list[Path]:
    """The committee specs shipped with evoray (``ensembles/*.yaml``)."""
    try:
        folder = resources.files("evoray.ensembles")
    except ModuleNotFoundError:
        return []
    return [Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml") and f.is_file()]


def check_sizes(cfg: EnsembleConfig, genotypes: list[Genotype]) -> None:
    """A member network or batch the machine cannot hold, refused before anything runs."""
    require_files(cfg.data)
    shape, m = describe(cfg.data), cfg.train.model
    batch = min(cfg.data.batch_size, shape.num_train)
    for genotype in genotypes:
        limits.check_network(
            genotype, m.network, m.init_channels, m.layers, m.auxiliary and m.network != "nb201", shape.num_classes,
            shape.in_channels, shape.side, batch, cfg.train.runtime.device,
        )  # fmt: skip


def executor_of(cfg: EnsembleConfig) -> Executor:
    if cfg.executor == "local":
        return run_members_locally
    from evoray.distributed.members import run_members_on_ray

    return run_members_on_ray


def ensemble(
    cfg: EnsembleConfig,
    out: Path | None = None,
    *,
    spec_name: str = "ensemble",
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build and measure the committees of ``cfg`` into its run directory (``out``, or ``runs/ensemble/<name>``), or
    with ``resume`` continue the run in ``out``, reusing every member it finished."""
    resumed = resume and out is not None and Path(out).is_dir()  # its members come from the runs it recorded
    latest = recorded_latest(Path(out), cfg, lambda _: None) if resumed and out is not None else None
    _, pool, _ = plan(cfg, lambda _: None, latest)  # every bad input fails here, before anything is written
    check_sizes(cfg, [parse_genotype(m.genotype) for m in pool if m.kind == "genotype"])
    if cfg.executor == "local":  # the members train here: their device and precision must work here
        runtime_device(cfg.train.runtime)
    name = cfg.name or f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    with RunDir.open("ensemble", out, name, resume=resume, overwrite=overwrite) as run:
        if cfg.executor != "local":  # a cluster that does not answer is refused before the run starts
            from evoray.distributed.cluster import ensure_ray

            ensure_ray(cfg.resources.address)
        return run_ensemble(cfg, run, executor_of(cfg), log)


def _main(argv: Sequence[str] | None) -> int:
    default = spec_path("default")
    parser = make_parser("python -m evoray.ensemble", __doc__, default)
    parser.add_argument("--address", default=None, help="join a Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    args.config = spec_path(args.config)
    log = log_to(args.json)
    if args.resume is not None:
        refuse_beside_resume(args)
        cfg = resumed_config(EnsembleConfig, saved_run(args.resume, "ensemble"), args, default)
    else:
        cfg = load_config(EnsembleConfig, args.config, args.overrides or ())
    if args.address:
        cfg.resources.address = args.address
    spec_name = Path(args.config).stem if args.config else "ensemble"
    out = args.resume if args.resume is not None else args.out
    result = ensemble(cfg, out, spec_name=spec_name, resume=args.resume is not None, overwrite=args.overwrite, log=log)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)
