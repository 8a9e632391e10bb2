"""The evoray dashboard: a local, read-only web app over run directories (``python -m evoray.dashboard [ROOT ...]``):
every run, an evolve run's populations, a search's Tune trials, a committee run, comparisons and cells, live."""
