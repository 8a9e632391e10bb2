"""``python -m evoray.ensemble``: train the top genotypes as committee members and measure their committees."""

from evoray.commands.ensemble import main

if __name__ == "__main__":
    raise SystemExit(main())
