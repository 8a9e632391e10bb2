"""``python -m evoray.search``: gradient searchers as Ray Tune trials over searchers x seeds x a grid."""

from evoray.commands.search import main

if __name__ == "__main__":
    raise SystemExit(main())
