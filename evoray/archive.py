"""Population archives: one row per individual per generation, written as Parquet that pandas and pyarrow read.

The archive is append-only: rows are only ever added, and the file is rewritten atomically (a temporary file, then a
rename) after each generation, so an interrupted run never leaves a truncated archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoray.errors import ConfigError

COLUMNS = (
    "generation",
    "id",
    "parents",
    "origin",
    "genotype",
    "fitness",
    "params_m",
    "alphas",
    "alpha_shapes",
    "space",
)


def individual_row(
    generation: int,
    ident: int,
    parents: Iterable[int],
    origin: str,
    genotype: str,
    fitness: float | None,
    params_m: float | None,
    alphas: dict[str, np.ndarray],
    space: str | None = None,
) -> dict[str, Any]:
    """One archive row; alphas are stored flat (float32) per cell type with their shapes; ``space`` names the
    search space the alphas belong to."""
    return {
        "generation": int(generation),
        "id": int(ident),
        "parents": [int(p) for p in parents],
        "origin": origin,
        "genotype": genotype,
        "fitness": None if fitness is None else float(fitness),
        "params_m": None if params_m is None else float(params_m),
        "alphas": {ct: np.asarray(a, dtype=np.float32).ravel().tolist() for ct, a in alphas.items()},
        "alpha_shapes": {ct: list(np.asarray(a).shape) for ct, a in alphas.items()},
        "space": space,
    }


def row_alphas(row: dict[str, Any]) -> dict[str, np.ndarray]:
    """The alphas of an archive row (as read back by :func:`read_archive`)."""
    alphas, shapes = dict(row["alphas"]), dict(row["alpha_shapes"])
    return {ct: np.asarray(v, dtype=np.float32).reshape(shapes[ct]) for ct, v in alphas.items()}


_SCHEMA = pa.schema(
    [
        ("generation", pa.int32()),
        ("id", pa.int64()),
        ("parents", pa.list_(pa.int64())),
        ("origin", pa.string()),
        ("genotype", pa.string()),
        ("fitness", pa.float64()),
        ("params_m", pa.float64()),
        ("alphas", pa.map_(pa.string(), pa.list_(pa.float32()))),
        ("alpha_shapes", pa.map_(pa.string(), pa.list_(pa.int32()))),
        ("space", pa.string()),
    ]
)


def write_archive(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row to ``path`` atomically."""
    data = {c: [r.get(c) for r in rows] for c in COLUMNS}
    data["alphas"] = [list(r["alphas"].items()) for r in rows]
    data["alpha_shapes"] = [list(r["alpha_shapes"].items()) for r in rows]
    table = pa.Table.from_pydict(data, schema=_SCHEMA)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_archive(path: Path | str) -> list[dict[str, Any]]:
    """Rows of an archive file, or of ``archive.parquet`` inside a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / "archive.parquet"
    if not p.is_file():
        raise ConfigError(f"population archive {str(p)!r} does not exist")
    try:
        rows: list[dict[str, Any]] = pq.read_table(p).to_pylist()
    except (pa.ArrowInvalid, OSError) as err:
        raise ConfigError(f"population archive {str(p)!r} is not a readable Parquet file: {err}") from None
    missing = [c for c in ("generation", "genotype", "fitness", "alphas") if c not in (rows[0] if rows else COLUMNS)]
    if missing:
        raise ConfigError(f"population archive {str(p)!r} lacks columns {missing}")
    for row in rows:  # Parquet maps come back as lists of (key, value) pairs
        for key in ("alphas", "alpha_shapes"):
            if isinstance(row.get(key), list):
                row[key] = dict(row[key])
    return rows
