"""``python -m evoray.evolve``: EvNAS (or regularized evolution) over a shared supernet or a tabular benchmark.

With no arguments it runs the embedded default: a small DARTS-space supernet on scikit-learn's digits with a small
population, on the CPU in a few minutes, through one Ray actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evoray.cli import default_config_path, emit_json, load_from_args, log_to, make_parser, run_command
from evoray.evolution.runner import EvolveConfig, run_evolve


def _main(argv: Sequence[str] | None) -> int:
    parser = make_parser("python -m evoray.evolve", __doc__.splitlines()[0], default_config_path("evolve-default.yaml"))
    parser.add_argument("--resume", type=Path, default=None, help="continue the interrupted run in this directory")
    parser.add_argument("--address", default=None, help="join an existing Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    log = log_to(args.json)
    if args.resume is not None:
        explicit = args.config is not None and args.config != default_config_path("evolve-default.yaml")
        cfg = load_from_args(EvolveConfig, args) if explicit else None
        result = run_evolve(cfg, args.resume, True, args.address, log, overrides=args.overrides or [])
    else:
        result = run_evolve(load_from_args(EvolveConfig, args), args.out, False, args.address, log)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
