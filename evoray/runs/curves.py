"""Curves: a run's per-generation or per-epoch statistics, one row each, as Parquet (``curves.parquet``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from evoray.errors import ConfigError
from evoray.runs.archive import read_table, write_table


def write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every row (numbers; a missing key is null) to ``path`` atomically."""
    keys = sorted({k for row in rows for k in row})
    write_table(pa.table({k: [None if row.get(k) is None else float(row[k]) for row in rows] for k in keys}), path)


def read_curves(path: Path) -> list[dict[str, Any]]:
    """Every row of ``path``; a missing, damaged or foreign file is a one-line ``ConfigError`` saying why."""
    if not path.is_file():
        raise ConfigError(f"curves {str(path)!r} do not exist")
    try:
        return list(read_table(path).to_pylist())
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise ConfigError(f"curves {str(path)!r} are not a readable Parquet file: {reason}") from None
