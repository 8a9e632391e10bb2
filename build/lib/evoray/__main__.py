"""``python -m evoray COMMAND``: the ``evoray`` console command."""

from evoray.commands.console import main

if __name__ == "__main__":
    raise SystemExit(main())
