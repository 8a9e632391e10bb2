"""``python -m evoray.ensemble``: train the top genotypes as committee members and measure their committees.

With no arguments it runs the embedded default (``ensembles/default.yaml``): a few published genotypes plus the
best of the newest evolve run, if there is one, at a small size on scikit-learn's digits, as Ray tasks on the CPU in
a few minutes. ``--config NAME`` takes ``ensembles/NAME.yaml`` or any YAML path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evoray.cli import REPO_ROOT, emit_json, load_from_args, log_to, make_parser, run_command
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.runner import run_ensemble

SPECS = REPO_ROOT / "ensembles"


def spec_path(name: str | None) -> str | None:
    """A YAML path as given, or ``ensembles/<name>.yaml`` of the source tree for a bare spec name."""
    if name is None or Path(name).is_file():
        return name
    shipped = SPECS / f"{name}.yaml"
    return str(shipped) if shipped.is_file() else name


def _main(argv: Sequence[str] | None) -> int:
    default = SPECS / "default.yaml"
    parser = make_parser(
        "python -m evoray.ensemble", __doc__.splitlines()[0], str(default) if default.is_file() else None
    )
    parser.add_argument("--address", default=None, help="join an existing Ray cluster (auto, host:port, ray://...)")
    args = parser.parse_args(argv)
    args.config = spec_path(args.config)
    cfg = load_from_args(EnsembleConfig, args)
    spec_name = Path(args.config).stem if args.config else "ensemble"
    result = run_ensemble(cfg, args.out, spec_name, args.address, log_to(args.json))
    if args.json:
        emit_json(result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
