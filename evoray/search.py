"""``python -m evoray.search``: DARTS, SNAS, GDAS and XNAS as Ray Tune trials over searchers x seeds x a grid.

With no arguments it runs the embedded default: the four searchers, one seed each, on small supernets over
scikit-learn's digits, on the CPU in a few minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

from evoray.cli import default_config_path, emit_json, load_from_args, log_to, make_parser, run_command
from evoray.searchers.experiment import ExperimentConfig


def _main(argv: Sequence[str] | None) -> int:
    parser = make_parser(
        "python -m evoray.search",
        __doc__.splitlines()[0],
        default_config_path("search-default.yaml"),
        out_help="Tune storage: a local directory or a pyarrow filesystem URI such as s3://bucket/runs "
        "(default: the config's storage)",
        out_type=str,
    )
    parser.add_argument("--resume", default=None, help="continue the interrupted experiment at this path")
    parser.add_argument("--address", default=None, help="join an existing Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    log = log_to(args.json)
    from evoray.distributed.search import run_search

    if args.resume is not None:
        result = run_search(None, resume=args.resume, address=args.address, log=log, quiet_stdout=args.json)
    else:
        exp = load_from_args(ExperimentConfig, args)
        result = run_search(exp, storage=args.out, address=args.address, log=log, quiet_stdout=args.json)
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
