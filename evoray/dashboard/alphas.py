"""Op distributions for the dashboard: alphas as per-edge probabilities with their edge and op names, and a search
trial's per-epoch distributions (reported each epoch as ``ops_<cell type>``, or, for trials that did not report
them, the one-hot choice of each epoch's derived genotype)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evoray.errors import ConfigError
from evoray.spaces import SearchSpace, get_space, parse_genotype


def space_of(name: str | None) -> SearchSpace | None:
    try:
        return get_space(str(name)) if name else None
    except (ConfigError, KeyError, ValueError):
        return None


def softmax(a: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (E, K) alphas; -inf entries (wiped-out ops) get probability 0."""
    a = np.asarray(a, dtype=np.float64)
    m = np.max(np.where(np.isfinite(a), a, -1e300), axis=-1, keepdims=True)
    e = np.where(np.isfinite(a), np.exp(np.clip(a - m, -700, 0)), 0.0)
    return e / np.maximum(e.sum(axis=-1, keepdims=True), 1e-300)


def edge_names(space: SearchSpace | None, n_edges: int) -> list[str]:
    """``source→target`` of each alpha row (state indices), or ``edge i`` when the space is unknown."""
    if space is None or space.num_edges != n_edges:
        return [f"edge {i}" for i in range(n_edges)]
    return [f"{source}→{target}" for target, source in space.edges]


def op_names(space: SearchSpace | None, cell_type: str, n_edges: int, n_ops: int) -> list[list[str]]:
    """The op of each alpha entry, per edge (RobustDARTS' spaces give each edge its own candidates), or ``op k``
    when the space is unknown or its shape differs."""
    if (
        space is None
        or cell_type not in space.cell_types
        or space.num_ops(cell_type) != n_ops
        or space.num_edges != n_edges
    ):
        return [[f"op {k}" for k in range(n_ops)] for _ in range(n_edges)]
    return [list(space.edge_ops(cell_type, e)) for e in range(n_edges)]


def epoch_distributions(
    rows: Sequence[dict[str, Any]], space: SearchSpace | None
) -> tuple[list[int], dict[str, list[np.ndarray]], str]:
    """(epochs, {cell type: one (E, K) array per epoch}, source) of a trial's per-epoch results. ``source`` says
    where they came from: ``reported`` (the trial's ``ops_<cell>`` metrics) or ``derived`` (each epoch's genotype,
    one-hot)."""
    epochs: list[int] = []
    out: dict[str, list[np.ndarray]] = {}
    reported = any(k.startswith("ops_") for r in rows for k in r)
    for i, r in enumerate(rows):
        epoch = int(r.get("epoch") or r.get("training_iteration") or i + 1)
        if reported:
            cells = {k[4:]: np.asarray(v, dtype=np.float64) for k, v in r.items() if k.startswith("ops_") and v}
            if not cells:
                continue
            for ct, p in cells.items():
                out.setdefault(ct, []).append(p)
        else:
            if space is None or not r.get("genotype"):
                continue
            try:
                genotype = parse_genotype(str(r["genotype"]))
            except ConfigError:
                continue
            for ct, cell in genotype.cells:
                if ct not in space.cell_types:
                    continue
                p = np.zeros(space.alpha_shape(ct))
                for k, node in enumerate(cell.nodes):
                    for op, j in node:
                        e = space.edge_index(space.num_inputs + k, j)
                        ops = space.edge_ops(ct, e)
                        if op in ops:
                            p[e, ops.index(op)] = 1.0
                out.setdefault(ct, []).append(p)
        epochs.append(epoch)
    return epochs, out, "reported" if reported else "derived"
