"""What every evoray command shares: config flags, output flags, one-line errors, the JSON last line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from evoray.config import add_config_args, config_from_args
from evoray.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_config_path(name: str) -> str | None:
    """``configs/<name>`` of the source tree, the embedded default of a command; None when not shipped."""
    path = REPO_ROOT / "configs" / name
    return str(path) if path.is_file() else None


def make_parser(
    prog: str,
    description: str,
    default_config: str | None,
    out_help: str = "directory for results, resolved config and weights",
    out_type: Callable[[str], Any] = Path,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_args(parser, default_config)
    parser.add_argument("--out", type=out_type, default=None, help=out_help)
    parser.add_argument("--json", action="store_true", help="make the last line of stdout one JSON object")
    return parser


def load_from_args(cls: type[T], args: argparse.Namespace) -> T:
    return config_from_args(cls, args)


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command body, turning ``ConfigError`` into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def emit_json(obj: dict[str, Any]) -> None:
    """Print ``obj`` as the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(obj, default=str), flush=True)


def log_to(stream_is_json: bool) -> Callable[[str], None]:
    """Progress goes to stdout normally; with ``--json`` to stderr, so stdout ends with the JSON object alone."""
    out = sys.stderr if stream_is_json else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out, flush=True)

    return log
