"""Curves: a run's per-generation or per-epoch statistics, one row each, as Parquet (``curves.parquet``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from evoray.errors import ConfigError


def write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    """Every row (numbers; a missing key is null) to ``path`` atomically."""
    keys = sorted({k for row in rows for k in row})
    table = pa.table({k: [None if row.get(k) is None else float(row[k]) for row in rows] for k in keys})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_curves(path: Path) -> list[dict[str, Any]]:
    try:
        return list(pq.read_table(path).to_pylist())
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"curves {str(path)!r} are not a readable Parquet file ({type(err).__name__})") from None
