"""What every evoray command shares: config flags, run-directory flags, one-line errors, the JSON last line, and the
configs and specs that ship with evoray."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from evoray.config import add_config_args, config_from_dict, config_to_dict, load_config
from evoray.errors import ConfigError

T = TypeVar("T")


def shipped(package: str, name: str) -> Path | None:
    """A file shipped with evoray (``package`` "configs", "ensembles" or "populations"), or None."""
    try:
        path = resources.files(f"evoray.{package}") / name
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def default_config_path(name: str) -> str | None:
    """``configs/<name>``, the embedded default of a command, as shipped with evoray; None when not shipped."""
    path = shipped("configs", name)
    return None if path is None else str(path)


def config_path(value: str | None) -> str | None:
    """A ``--config`` value: a YAML file as given, or the name of a shipped config (``evnas-nb201`` or
    ``evnas-nb201.yaml``)."""
    if value is None or Path(value).is_file():
        return value
    name = value if value.endswith((".yaml", ".yml")) else f"{value}.yaml"
    path = shipped("configs", Path(name).name) if "/" not in value else None
    return str(path) if path is not None else value


def shipped_configs(cls: type) -> list[str]:
    """Names of the shipped configs of ``cls`` (those whose top-level keys are all keys of ``cls``), sorted."""
    try:
        files = list(resources.files("evoray.configs").iterdir())
    except ModuleNotFoundError:
        return []
    keys = {f.name for f in dataclasses.fields(cls) if f.init}
    names = []
    for f in files:
        if not f.name.endswith(".yaml") or not f.is_file():
            continue
        try:
            data = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data and set(data) <= keys:
            names.append(f.name.removesuffix(".yaml"))
    return sorted(names)


def require_config(cls: type, value: str | None) -> str | None:
    """The path of a ``--config`` value (``config_path``); one that names no file is refused in one line that lists
    the shipped configs of ``cls``."""
    path = config_path(value)
    if path is None or Path(path).is_file():
        return path
    names = shipped_configs(cls)
    choices = f"; valid: a YAML file, or a shipped config: {', '.join(names)}" if names else "; give a YAML file"
    raise ConfigError(f"config file not found: {value}{choices}")


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring on one line (a summary that wraps is kept whole)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are a ``ConfigError`` (one line and exit status 2 under :func:`run_command`), as
    every other refusal of the commands is, where argparse prints its whole usage above the error: what was wrong,
    and where the options are listed."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see {self.prog} --help")


def directory_arg(text: str) -> Path:
    """A directory argument; an empty one (which a path would read as the current directory) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a directory")
    return Path(text)


def make_parser(prog: str, doc: str | None, default_config: str | None, resumable: bool = True) -> Parser:
    """The parser of a command whose module docstring is ``doc``: its first paragraph is the description."""
    parser = Parser(prog=prog, description=first_paragraph(doc))
    add_config_args(parser, default_config)
    where = "the run directory (default: runs/<command>/<name>)"
    parser.add_argument("--out", type=directory_arg, default=None, help=where)
    parser.add_argument("--json", action="store_true", help="make the last line of stdout one JSON object")
    if resumable:
        parser.add_argument("--resume", type=directory_arg, default=None, metavar="DIR", help="continue the run in DIR")
        parser.add_argument(
            "--overwrite", action="store_true", help="move a run already in --out aside (to DIR.old-<time>), start anew"
        )
    return parser


def load_from_args(cls: type[T], args: argparse.Namespace) -> T:
    return load_config(cls, require_config(cls, getattr(args, "config", None)), getattr(args, "overrides", None) or ())


def command_config(
    cls: type[T], args: argparse.Namespace, command: str, default_config: str | None
) -> tuple[T, Path | None, bool]:
    """(config, run directory, resume) of a command's arguments: with ``--resume DIR``, the run's saved config (which
    ``--config``/``--set`` may repeat, not change); else the config ``--config``/``--set`` build and ``--out``."""
    from evoray.runs.directory import saved_run

    if args.resume is not None:
        refuse_beside_resume(args)
        return resumed_config(cls, saved_run(args.resume, command), args, default_config), args.resume, True
    return load_from_args(cls, args), args.out, False


def refuse_beside_resume(args: argparse.Namespace) -> None:
    """``--out`` and ``--overwrite`` have no meaning beside ``--resume`` (the run continues in its own directory,
    never moved aside): given, they are refused rather than ignored."""
    for flag, given in (("--out", args.out is not None), ("--overwrite", getattr(args, "overwrite", False))):
        if given:
            raise ConfigError(f"--resume continues the run in {str(args.resume)!r}; {flag} cannot be given with it")


def resumed_config(cls: type[T], saved: dict[str, Any], args: argparse.Namespace, default_config: str | None) -> T:
    """The saved config of a run being resumed. ``--config`` or ``--set`` may repeat it, not change it: a config
    that differs is refused in one line naming the keys that differ."""
    config = config_from_dict(cls, saved)
    given = getattr(args, "config", None)
    explicit = given is not None and getattr(args, "config_given", given != default_config)
    overrides = getattr(args, "overrides", None) or []
    if not explicit and not overrides:
        return config
    wanted = (
        load_config(cls, require_config(cls, given), overrides)
        if explicit
        else load_config(cls, None, overrides, base=config)
    )
    diff = diff_keys(config_to_dict(wanted), config_to_dict(config))
    if diff:
        raise ConfigError(
            f"--resume continues a run with its saved config; --config/--set would change {', '.join(diff[:5])}"
            + (" ..." if len(diff) > 5 else "")
        )
    return config


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command body, turning ``ConfigError`` into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        if not out_of_memory(err):
            raise
        print(f"error: {out_of_memory_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is PyTorch's out-of-memory error (a GPU's allocator that failed), raised here or by a Ray
    worker (whose error is an instance of the cause's class)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, torch.OutOfMemoryError)


def out_of_memory_line(err: BaseException) -> str:
    """The one line of an out-of-memory error: where the allocator's message says what it could not allocate (a
    worker's error carries its traceback: the line naming the memory is taken), then what to lower."""
    lines = [line.strip() for line in str(err).splitlines() if "out of memory" in line.lower()]
    what = lines[-1] if lines else str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    what = what.split(" Including non-PyTorch memory")[0].split(" Of the allocated memory")[0]
    what = re.sub(r"^[\w.]*(Error|Exception): ", "", what).rstrip(". ")  # a traceback's "torch.OutOfMemoryError: "
    return (
        f"out of memory: {what[:300]}; lower the batch size (data.batch_size, fitness.batch_size) or the network's "
        "size (init_channels, layers), or run where there is more memory"
    )


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def emit_json(obj: dict[str, Any]) -> None:
    """Print ``obj`` as the last line of stdout: strict JSON, NaN and infinities written as null."""
    sys.stdout.flush()
    print(json.dumps(finite(obj), default=str, allow_nan=False), flush=True)


def log_to(stream_is_json: bool) -> Callable[[str], None]:
    """Progress goes to stdout normally; with ``--json`` to stderr, so stdout ends with the JSON object alone."""
    out = sys.stderr if stream_is_json else sys.stdout

    def log(msg: str) -> None:
        print(msg, file=out, flush=True)

    return log
