"""Deriving a discrete genotype from architecture weights, and decoding a genotype back to a one-hot matrix.

Rules (ALGORITHMS.md): DARTS keeps, per node, the two incoming edges whose best non-``none`` weight is highest, each
with its best non-``none`` op (``top2``); NAS-Bench-201 takes the argmax of every edge, ``none`` included
(``argmax``); SNAS ``edge_all`` keeps every edge with its argmax op, ``none`` included (a ``none`` edge adds nothing);
GDAS keeps, per node, the two strongest (op, input) pairs over the non-``none`` ops of every incoming edge, so two ops
may share an input (``top2_pairs``); SNAS' own ``genotype()`` keeps the two edges whose strongest op, ``none``
included, weighs most, each with its argmax op, ``none`` included (``top2_with_none``). Ties go to the lower index, as
in the original code.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from evoray.errors import ConfigError
from evoray.spaces.genotype import CellGenotype, Edge, Genotype
from evoray.spaces.space import SearchSpace

METHODS = ("top2", "argmax", "edge_all", "top2_pairs", "top2_with_none")


def default_method(space: SearchSpace) -> str:
    return space.family.derivation


def _best_op(row: np.ndarray, ops: tuple[str, ...], exclude_none: bool) -> int:
    best = -1
    for k, name in enumerate(ops):
        if exclude_none and name == "none":
            continue
        if best < 0 or row[k] > row[best]:
            best = k
    if best < 0:
        raise ConfigError(f"edge with ops {ops} has no op other than none")
    return best


def _top2_op(row: np.ndarray, ops: tuple[str, ...]) -> int:
    """The best non-``none`` op of an edge; ``none`` when every other op carries a negative weight (an XNAS edge
    whose real experts are all wiped out) and ``none`` is still alive."""
    best = _best_op(row, ops, True)
    if row[best] < 0 and "none" in ops and row[ops.index("none")] >= 0:
        return ops.index("none")
    return best


def derive_cell(
    space: SearchSpace, cell_type: str, weights: np.ndarray, method: str = "top2", k: int = 2
) -> CellGenotype:
    """The genotype of one cell from its (E, K) weights (already normalised, e.g. softmax of the alphas)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != space.alpha_shape(cell_type):
        raise ConfigError(
            f"{cell_type} weights have shape {weights.shape}; space {space.name} needs {space.alpha_shape(cell_type)}"
        )
    if method not in METHODS:
        raise ConfigError(f"unknown derivation method {method!r}; valid: {', '.join(METHODS)}")
    nodes: list[tuple[Edge, ...]] = []
    start = 0
    for i in range(space.steps):
        n_in = space.num_inputs + i
        rows = range(start, start + n_in)
        ops = [space.edge_ops(cell_type, e) for e in rows]
        if method == "top2":
            strength = [
                max(weights[e][c] for c, name in enumerate(ops[j]) if name != "none") for j, e in enumerate(rows)
            ]
            chosen = sorted(range(n_in), key=lambda j: -strength[j])[:k]
            node = tuple((ops[j][_top2_op(weights[start + j], ops[j])], j) for j in chosen)
        elif method == "top2_with_none":
            strength = [max(weights[e]) for e in rows]
            chosen = sorted(range(n_in), key=lambda j: -strength[j])[:k]
            node = tuple((ops[j][_best_op(weights[start + j], ops[j], False)], j) for j in chosen)
        elif method == "top2_pairs":
            pairs = [(j, c) for j in range(n_in) for c, name in enumerate(ops[j]) if name != "none"]
            best = sorted(pairs, key=lambda p: -weights[start + p[0]][p[1]])[:k]  # stable: ties to the lower index
            node = tuple((ops[j][c], j) for j, c in best)
        else:
            node = tuple((ops[j][_best_op(weights[start + j], ops[j], False)], j) for j in range(n_in))
        nodes.append(node)
        start += n_in
    return CellGenotype(tuple(nodes), space.default_concat)


def derive_genotype(
    space: SearchSpace, weights: Mapping[str, np.ndarray], method: str | None = None, k: int = 2
) -> Genotype:
    """The genotype of every cell type of ``space`` from per-cell-type (E, K) weights."""
    method = method or default_method(space)
    return Genotype(tuple((ct, derive_cell(space, ct, weights[ct], method, k)) for ct in space.cell_types))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def decoding_strengths(alpha: np.ndarray) -> np.ndarray:
    """The softmax of one cell type's alphas in float32: the strengths by which EvNAS decodes an individual. One
    function serves the genotype an individual is recorded as and the cell that is trained and scored, so that
    strengths equal to float32 rounding break their tie alike in both."""
    z = np.asarray(alpha, dtype=np.float32)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def one_hot_cell(space: SearchSpace, cell_type: str, cell: CellGenotype) -> np.ndarray:
    """(E, K) matrix with a 1 at each (edge, op) that ``cell`` uses."""
    space.check_cell(cell_type, cell.nodes)
    m = np.zeros(space.alpha_shape(cell_type), dtype=np.float32)
    for i, node in enumerate(cell.nodes):
        for op, j in node:
            e = space.edge_index(space.num_inputs + i, j)
            m[e, space.edge_ops(cell_type, e).index(op)] = 1.0
    return m


def one_hot(space: SearchSpace, genotype: Genotype) -> dict[str, np.ndarray]:
    """Per cell type, the one-hot matrix of the genotype: the EvNAS decoding of an individual."""
    return {ct: one_hot_cell(space, ct, genotype.cell(ct)) for ct in space.cell_types}


def random_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A cell drawn uniformly from the space: NAS-Bench-201, any op on every edge; the DARTS family, per node two
    distinct inputs, each with an op other than ``none`` (random search's cells)."""
    cells = []
    for ct in space.cell_types:
        nodes: list[tuple[Edge, ...]] = []
        for i in range(space.steps):
            target = space.num_inputs + i
            k = space.family.edges_per_node
            inputs = sorted(int(j) for j in rng.choice(target, k, replace=False)) if k else list(range(target))
            node = []
            for j in inputs:
                ops = space.edge_ops(ct, space.edge_index(target, j))
                names = tuple(o for o in ops if o != "none") if k else ops
                node.append((names[int(rng.integers(len(names)))], j))
            nodes.append(tuple(node))
        cells.append((ct, CellGenotype(tuple(nodes), space.default_concat)))
    return Genotype(tuple(cells))
