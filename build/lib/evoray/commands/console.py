"""``evoray``: one console command with a subcommand per command (``evoray evolve``, ``evoray search``, ``evoray
train``, ``evoray ensemble``, ``evoray dashboard``), the same as ``python -m evoray.<command>``."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "evolve": ("evoray.commands.evolve", "EvNAS or regularized evolution over a supernet or a benchmark table"),
    "search": ("evoray.commands.search", "DARTS, SNAS, GDAS, XNAS and RSPS as Ray Tune trials"),
    "train": ("evoray.commands.train", "retrain or profile a genotype"),
    "ensemble": ("evoray.commands.ensemble", "committees of the best genotypes"),
    "dashboard": ("evoray.dashboard.app", "a web view of every run"),
}


def usage() -> str:
    lines = ["usage: evoray COMMAND [ARGS...]   (evoray COMMAND --help for a command's options)", "", "commands:"]
    lines += [f"  {name:10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main())
