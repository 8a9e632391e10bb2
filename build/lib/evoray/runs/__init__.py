"""Run directories: the one shape every command writes (manifest, config, results, checkpoints), and the public
reader that every other part of evoray uses to see runs."""

from evoray.runs.archive import individual_row, read_archive, row_alphas, write_archive
from evoray.runs.directory import RunDir, read_config
from evoray.runs.reader import Run, list_runs, open_run

__all__ = [
    "Run",
    "RunDir",
    "individual_row",
    "list_runs",
    "open_run",
    "read_archive",
    "read_config",
    "row_alphas",
    "write_archive",
]
