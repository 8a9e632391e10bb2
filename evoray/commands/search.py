"""``python -m evoray.search`` / ``evoray search``: DARTS, SNAS, GDAS, XNAS and RSPS as Ray Tune trials over
searchers x seeds x a grid.

With no arguments it runs the embedded default: the four gradient searchers, one seed each, on small supernets over
scikit-learn's digits, on the CPU in a few minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evoray import limits
from evoray.cli import command_config, default_config_path, emit_json, log_to, make_parser, run_command
from evoray.data import DataShape, describe, require_files
from evoray.runs import RunDir
from evoray.searchers.experiment import ExperimentConfig, expand, shadowed_base_key

DEFAULT = "search-default.yaml"


def search(
    exp: ExperimentConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    quiet_stdout: bool = False,
) -> dict[str, Any]:
    """Run the experiment ``exp`` as Ray Tune trials into its run directory (``out``, or ``runs/search/<name>``),
    or with ``resume`` continue the run in ``out``: every trial from its last checkpoint."""
    shapes: dict[str, DataShape] = {}  # the trials mostly share their data and supernet: each checked once
    checked: set[str] = set()
    for trial in expand(exp):  # every trial validated before the run directory or Ray is touched
        require_files(trial.data)
        key = repr(trial.data)
        shape = shapes[key] = shapes.get(key) or describe(trial.data, "search")
        batch = min(trial.data.batch_size, shape.num_train)
        if repr((trial.supernet, shape, batch)) not in checked:
            limits.check_supernet(trial.supernet, shape.num_classes, shape.in_channels, shape.side, batch, "auto")
            checked.add(repr((trial.supernet, shape, batch)))
    with RunDir.open("search", out, exp.name or exp.default_name(), resume=resume, overwrite=overwrite) as run:
        from evoray.distributed.cluster import ensure_ray
        from evoray.distributed.search import run_search

        ensure_ray(exp.resources.address)
        return run_search(exp, run, log, quiet_stdout)


def shadow_notes(exp: ExperimentConfig, overrides: Sequence[str]) -> list[str]:
    """A note for each ``--set base.KEY=...`` that a later layer of ``exp`` (a searcher's ``per_searcher`` section, a
    grid key) overrides for some trials: the layering is documented, the surprise is not."""
    notes = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith("base."):
            for layer in shadowed_base_key(exp, key.removeprefix("base.")):
                notes.append(f"note: --set {key} does not reach every trial: {layer} comes after base and wins there")
    return notes


def _main(argv: Sequence[str] | None) -> int:
    default = default_config_path(DEFAULT)
    parser = make_parser("python -m evoray.search", __doc__, default)
    parser.add_argument("--address", default=None, help="join a Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    log = log_to(args.json)
    exp, out, resume = command_config(ExperimentConfig, args, "search", default)
    for line in shadow_notes(exp, args.overrides or ()):
        log(line)
    if args.address:
        exp.resources.address = args.address
    result = search(exp, out, resume=resume, overwrite=args.overwrite, log=log, quiet_stdout=args.json)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)
