"""``python -m evoray.train``: retrain a genotype from scratch, or profile it."""

from evoray.commands.train import main

if __name__ == "__main__":
    raise SystemExit(main())
