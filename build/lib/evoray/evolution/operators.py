"""Genetic operators: pure functions over alphas with an explicit random generator.

Alphas are ``{cell type: (E, K) float32}``: one row per edge (``space.edges`` order), one column per candidate op.
Operators never modify their inputs; they return new float32 arrays of the same shapes. Families, one signature
each (as in DEAP / pymoo), with a registry per family so that YAML names map to them:

- ``init_*(space, rng) -> Alphas``  (``INITS``)
- ``sel_*(fitness (P,), size, rng) -> index``  (``SELECTIONS``)
- ``cx_*(a, b, rng, prob) -> Alphas``  (``CROSSOVERS``)
- ``mut_*``: ``MUTATIONS`` holds each mutation behind the family signature ``(a, space, rate, rng) -> Alphas``;
  an operator ignores what it does not need (:func:`mut_one_edge` has no rate, :func:`mut_reset_rows` no space).

Random draws are documented per operator, so tests can replay them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from evoray.evolution.individual import Alphas, genotype_of
from evoray.registry import Registry
from evoray.spaces import SearchSpace

Init = Callable[[SearchSpace, np.random.Generator], Alphas]
Selection = Callable[[np.ndarray, int, np.random.Generator], int]
Crossover = Callable[[Alphas, Alphas, np.random.Generator, float], Alphas]
Mutation = Callable[[Alphas, SearchSpace, float, np.random.Generator], Alphas]

INITS: Registry[Init] = Registry("initialisation")
SELECTIONS: Registry[Selection] = Registry("selection")
CROSSOVERS: Registry[Crossover] = Registry("crossover")
MUTATIONS: Registry[Mutation] = Registry("mutation")


@INITS.register("uniform")
def init_uniform(space: SearchSpace, rng: np.random.Generator) -> Alphas:
    """U(0, 1) alphas, (E, K) float32 per cell type (EvNAS). Draws ``rng.random((E, K), float32)`` per cell type,
    in ``space.cell_types`` order."""
    return {ct: rng.random(space.alpha_shape(ct), dtype=np.float32) for ct in space.cell_types}


@SELECTIONS.register("tournament")
def sel_tournament(fitness: np.ndarray, size: int, rng: np.random.Generator) -> int:
    """Index of the fittest of ``size`` individuals sampled without replacement (ties: the first sampled).

    Draws ``rng.choice(P, size, replace=False)``. NaN fitness never wins unless the whole sample is NaN.
    """
    f = np.asarray(fitness, dtype=np.float64)  # (P,)
    assert f.ndim == 1 and 1 <= size <= f.shape[0], f"tournament of {size} from fitness of shape {f.shape}"
    sample = rng.choice(f.shape[0], size=size, replace=False)  # (size,)
    scores = np.where(np.isnan(f[sample]), -np.inf, f[sample])
    return int(sample[int(np.argmax(scores))])  # argmax: first of equal maxima


@CROSSOVERS.register("uniform_rows")
def cx_uniform_rows(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], rng: np.random.Generator, prob: float = 0.5
) -> Alphas:
    """Each edge row of every cell type from ``a`` with probability ``prob``, else from ``b`` (EvNAS).

    Draws ``rng.random(E) < prob`` per cell type, in ``a``'s key order; True rows come from ``a``.
    """
    _check_pair(a, b)
    out = {}
    for ct in a:
        take_a = np.asarray(rng.random((a[ct].shape[0],)) < prob)  # (E,)
        out[ct] = np.where(take_a[:, None], a[ct], b[ct]).astype(np.float32)  # (E, K)
    return out


def mut_reset_rows(a: Mapping[str, np.ndarray], rate: float, rng: np.random.Generator) -> Alphas:
    """Each edge row replaced by a fresh U(0, 1) row with probability ``rate`` (EvNAS).

    Draws, per cell type in key order, ``rng.random(E) < rate`` (rows to reset), then ``rng.random((E, K),
    float32)`` (the fresh rows; drawn even when no row is reset, so the number of draws never varies).
    """
    out = {}
    for ct in a:
        shape = a[ct].shape  # (E, K)
        reset = np.asarray(rng.random((shape[0],)) < rate)  # (E,)
        fresh = rng.random(shape, dtype=np.float32)
        out[ct] = np.where(reset[:, None], fresh, a[ct]).astype(np.float32)
    return out


_MAX_TRIES = 100


def mut_one_edge(a: Mapping[str, np.ndarray], space: SearchSpace, rng: np.random.Generator) -> Alphas:
    """Change the derived genotype by exactly one step (regularized evolution, Real et al., 2019,
    https://arxiv.org/abs/1802.01548).

    With probability 0.5 (always in NAS-Bench-201 spaces, whose nodes have no input choice) an op mutation: an edge
    that the genotype uses gets another allowed op (not ``none`` in DARTS-family spaces), by swapping that op's value
    with the current best's in the edge's row. Otherwise an input mutation: the rows of a used edge and an unused
    edge into the same node are swapped, so the node reads another state, with the same op wherever the new edge
    allows it. Ties that would leave the genotype unchanged (equal alphas) are broken by raising the new op's value
    slightly above the rest of its row; should a draw still leave the genotype unchanged, it is repeated. So the
    result always derives to a genotype one step away.

    Draws: ``rng.integers`` for the cell type; in DARTS-family spaces ``rng.random()`` for the kind; then
    ``rng.integers`` for the edge (op mutation: edge, op; input mutation: node, used edge, unused edge).

    >>> from evoray.spaces import get_space
    >>> space, rng = get_space("darts"), np.random.default_rng(0)
    >>> a = init_uniform(space, rng)
    >>> genotype_of(space, mut_one_edge(a, space, rng)) != genotype_of(space, a)
    True
    """
    before = genotype_of(space, a)
    for _ in range(_MAX_TRIES):
        out = {ct: np.array(v, dtype=np.float32) for ct, v in a.items()}
        ct = space.cell_types[int(rng.integers(len(space.cell_types)))]
        used = _used_edges(space, ct, before.cell(ct).nodes)
        if space.family == "darts" and rng.random() >= 0.5:
            changed = _input_mutation(out[ct], space, ct, used, rng)
        else:
            changed = _op_mutation(out[ct], space, ct, used, rng)
        if changed and genotype_of(space, out) != before:
            return out
    raise RuntimeError(f"mut_one_edge found no one-step change of {before} in {_MAX_TRIES} tries")


MUTATIONS.add("reset_rows", lambda a, space, rate, rng: mut_reset_rows(a, rate, rng))
MUTATIONS.add("one_edge", lambda a, space, rate, rng: mut_one_edge(a, space, rng))


def _check_pair(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    assert list(a) == list(b), f"parents have different cell types: {list(a)} vs {list(b)}"
    for ct in a:
        assert a[ct].shape == b[ct].shape, f"{ct}: parent shapes {a[ct].shape} vs {b[ct].shape}"


def _used_edges(space: SearchSpace, ct: str, nodes: tuple[tuple[tuple[str, int], ...], ...]) -> list[tuple[int, str]]:
    """(alpha row, op) of every edge that the derived cell uses."""
    return [(space.edge_index(space.num_inputs + i, j), op) for i, node in enumerate(nodes) for op, j in node]


def _eligible(space: SearchSpace, ops: tuple[str, ...]) -> list[int]:
    """Columns that derivation may pick: every op in NAS-Bench-201 spaces, every op but ``none`` in DARTS ones."""
    return [k for k, name in enumerate(ops) if space.family == "nb201" or name != "none"]


def _op_mutation(
    m: np.ndarray, space: SearchSpace, ct: str, used: list[tuple[int, str]], rng: np.random.Generator
) -> bool:
    """In place on ``m`` (E, K): a used edge takes another op. False when no used edge has another op."""
    options = [(e, op) for e, op in used if len(_eligible(space, space.edge_ops(ct, e))) > 1]
    if not options:
        return False
    e, op = options[int(rng.integers(len(options)))]
    ops = space.edge_ops(ct, e)
    choices = [k for k in _eligible(space, ops) if ops[k] != op]
    _make_best(m[e], space, ops, choices[int(rng.integers(len(choices)))])
    return True


def _input_mutation(
    m: np.ndarray, space: SearchSpace, ct: str, used: list[tuple[int, str]], rng: np.random.Generator
) -> bool:
    """In place on ``m`` (E, K): swap the rows of a used and an unused edge into one node, and keep the edge's op
    where the new edge allows it (spaces whose op lists differ per edge). False when every edge is used."""
    op_of = dict(used)
    nodes = []
    for target in range(space.num_inputs, space.num_inputs + space.steps):
        rows = [e for e, (t, _) in enumerate(space.edges) if t == target]
        on = [e for e in rows if e in op_of]
        off = [e for e in rows if e not in op_of]
        if on and off:
            nodes.append((on, off))
    if not nodes:
        return False
    on, off = nodes[int(rng.integers(len(nodes)))]
    e = on[int(rng.integers(len(on)))]
    f = off[int(rng.integers(len(off)))]
    m[[e, f]] = m[[f, e]]
    ops = space.edge_ops(ct, f)
    if op_of[e] in ops:
        _make_best(m[f], space, ops, ops.index(op_of[e]))
    return True


def _make_best(row: np.ndarray, space: SearchSpace, ops: tuple[str, ...], k: int) -> None:
    """In place on ``row`` (K,): swap column ``k``'s value with the best eligible one, so ``k`` derives (the row's
    best value, hence the edge's strength, stays); a tie is broken by raising ``k`` a little above the rest."""
    eligible = _eligible(space, ops)
    best = max(eligible, key=lambda j: (row[j], -j))  # derivation's pick: the first of equal maxima
    row[[best, k]] = row[[k, best]]
    top = row[[j for j in eligible if j != k]].max()
    if row[k] <= top:
        row[k] = top + np.float32(1e-6) * max(np.float32(1.0), abs(top))
