"""``python -m evoray.evolve``: EvNAS (or regularized evolution) over a shared supernet or a tabular benchmark."""

from evoray.commands.evolve import main

if __name__ == "__main__":
    raise SystemExit(main())
