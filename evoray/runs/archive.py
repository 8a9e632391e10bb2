"""Population archives: one row per individual (or search trial) per generation, in one schema for evolve and search
runs, written as Parquet that pandas and pyarrow read.

Columns: ``generation``, ``id``, ``parents``, ``origin``, ``genotype``, ``fitness``, ``params_m`` (the genotype's
evaluation network, millions), ``alphas`` (per cell type, flat float32) with ``alpha_shapes``, ``space``, and who
made the row: ``searcher`` (an evolution strategy such as ``ga``, or a gradient searcher such as ``gdas``), ``trial``
(a search trial's id; empty for evolve) and ``seed``. The file is rewritten atomically (a temporary file, then a
rename), so an interrupted run never leaves a truncated archive, and with a checksum on every page, so a damaged
archive is refused when it is read instead of read with wrong values.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoray.errors import ConfigError
from evoray.runs.directory import replacing

ARCHIVE = "archive.parquet"
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
        ("searcher", pa.string()),
        ("trial", pa.string()),
        ("seed", pa.int64()),
    ]
)
COLUMNS = tuple(_SCHEMA.names)
REQUIRED = ("generation", "genotype", "fitness", "alphas")
# Page checksums (pyarrow >= 15) are written, and checked when a file has them; older pyarrow writes and reads without.
_CHECKSUMS = "page_checksum_verification" in inspect.signature(pq.read_table).parameters


def write_table(table: pa.Table, path: Path) -> None:
    """``table`` as Parquet at ``path``, atomically, with a checksum on every page."""
    with replacing(path) as tmp:
        pq.write_table(table, tmp, **({"write_page_checksum": True} if _CHECKSUMS else {}))


def read_table(path: Path) -> pa.Table:
    """A Parquet file, each page checked against its checksum where it has one (a damaged page raises OSError)."""
    return pq.read_table(path, **({"page_checksum_verification": True} if _CHECKSUMS else {}))


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
    searcher: str | None = None,
    trial: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """One archive row; alphas are stored flat (float32) per cell type with their shapes."""
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
        "searcher": searcher,
        "trial": trial,
        "seed": seed,
    }


def row_alphas(row: dict[str, Any]) -> dict[str, np.ndarray]:
    """The alphas of an archive row (as read back by :func:`read_archive`)."""
    alphas, shapes = dict(row["alphas"]), dict(row["alpha_shapes"])
    return {ct: np.asarray(v, dtype=np.float32).reshape(shapes[ct]) for ct, v in alphas.items()}


def write_archive(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write every row to ``path`` atomically."""
    data = {c: [r.get(c) for r in rows] for c in COLUMNS}
    data["alphas"] = [list(r["alphas"].items()) for r in rows]
    data["alpha_shapes"] = [list(r["alpha_shapes"].items()) for r in rows]
    write_table(pa.Table.from_pydict(data, schema=_SCHEMA), path)


def read_archive(path: Path | str) -> list[dict[str, Any]]:
    """Rows of an archive file, or of ``archive.parquet`` inside a run directory; archives of an older evoray (no
    searcher, trial or seed columns) read with those left empty."""
    p = Path(path)
    if p.is_dir():
        p = p / ARCHIVE
    if not p.is_file():
        raise ConfigError(f"population archive {str(p)!r} does not exist")
    try:
        rows: list[dict[str, Any]] = read_table(p).to_pylist()
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise ConfigError(f"population archive {str(p)!r} is not a readable Parquet file: {reason}") from None
    missing = [c for c in REQUIRED if c not in (rows[0] if rows else COLUMNS)]
    if missing:
        raise ConfigError(f"population archive {str(p)!r} lacks columns {missing}")
    for row in rows:
        for key in ("alphas", "alpha_shapes"):  # Parquet maps come back as lists of (key, value) pairs
            if isinstance(row.get(key), list):
                row[key] = dict(row[key])
        for key in COLUMNS:
            row.setdefault(key, None)
    return rows
