"""Genetic operators: hand-replayed random draws, shapes, purity, and mut_one_edge's one-step guarantee."""

from __future__ import annotations

import numpy as np
import pytest

from evoray.errors import ConfigError
from evoray.evolution.individual import genotype_of, make_individual
from evoray.evolution.operators import (
    CROSSOVERS,
    INITS,
    MUTATIONS,
    SELECTIONS,
    cx_uniform_rows,
    init_uniform,
    mut_one_edge,
    mut_reset_rows,
    sel_tournament,
)
from evoray.spaces import SPACES, get_space


def _marked(space_name: str, sign: float) -> dict[str, np.ndarray]:
    """Alphas whose every row says where it came from: row e of cell type c holds sign * (100 c + e + 1)."""
    space = get_space(space_name)
    out = {}
    for c, ct in enumerate(space.cell_types):
        e, k = space.alpha_shape(ct)
        out[ct] = np.repeat(sign * (100.0 * c + np.arange(1, e + 1, dtype=np.float32))[:, None], k, axis=1)
    return {ct: a.astype(np.float32) for ct, a in out.items()}


def _copy(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {ct: v.copy() for ct, v in a.items()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for ct in a:
        np.testing.assert_array_equal(a[ct], b[ct])


# -- init -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACES.names())
def test_init_uniform_shapes_dtype_range(name: str) -> None:
    space = get_space(name)
    a = init_uniform(space, np.random.default_rng(0))
    replay = np.random.default_rng(0)
    assert list(a) == list(space.cell_types)
    for ct, v in a.items():
        assert v.shape == space.alpha_shape(ct) and v.dtype == np.float32
        np.testing.assert_array_equal(v, replay.random(space.alpha_shape(ct), dtype=np.float32))  # U(0, 1)


# -- crossover ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "seed", "prob"), [("darts", 3, 0.5), ("nb201", 11, 0.5), ("darts", 5, 0.8)])
def test_cx_uniform_rows_takes_exactly_the_replayed_rows(name: str, seed: int, prob: float) -> None:
    a, b = _marked(name, 1.0), _marked(name, -1.0)
    a0, b0 = _copy(a), _copy(b)
    child = cx_uniform_rows(a, b, np.random.default_rng(seed), prob)
    replay = np.random.default_rng(seed)
    for ct in a:
        from_a = replay.random((a[ct].shape[0],)) < prob  # the draw the operator documents
        got_a = child[ct][:, 0] > 0  # rows of parent a are positive
        np.testing.assert_array_equal(got_a, from_a, err_msg=f"{ct}: rows from parent a")
        expect = np.where(from_a[:, None], a[ct], b[ct])
        np.testing.assert_array_equal(child[ct], expect)
        assert child[ct].dtype == np.float32 and child[ct].shape == a[ct].shape
    assert 0 < sum(int((child[ct][:, 0] > 0).sum()) for ct in a) < sum(a[ct].shape[0] for ct in a)
    _assert_same(a, a0)
    _assert_same(b, b0)


def test_cx_probability_extremes() -> None:
    a, b = _marked("darts", 1.0), _marked("darts", -1.0)
    # prob positional: the registry types cx_uniform_rows as a Crossover, (a, b, rng, prob)
    _assert_same(cx_uniform_rows(a, b, np.random.default_rng(0), 1.0), a)
    _assert_same(cx_uniform_rows(a, b, np.random.default_rng(0), 0.0), b)


def test_cx_refuses_parents_of_other_cell_types_or_shapes() -> None:
    a = _marked("darts", 1.0)
    swapped = {"reduce": a["reduce"], "normal": a["normal"]}  # the same arrays in another cell-type order
    with pytest.raises(AssertionError, match="parents have different cell types"):
        cx_uniform_rows(a, swapped, np.random.default_rng(0), 0.5)
    short = {"normal": a["normal"][:1], "reduce": a["reduce"]}  # one row: it would broadcast over every edge
    with pytest.raises(AssertionError, match=r"normal: parent shapes \(14, 8\) vs \(1, 8\)"):
        cx_uniform_rows(a, short, np.random.default_rng(0), 0.5)


# -- selection ------------------------------------------------------------------------------------------------------


def test_tournament_returns_the_fittest_of_its_replayed_sample() -> None:
    fitness = np.array([3.0, 9.0, 1.0, 9.0, 4.0, 7.0])
    rng, replay = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(300):
        winner = sel_tournament(fitness, 3, rng)
        sample = replay.choice(len(fitness), size=3, replace=False)
        assert len(set(sample.tolist())) == 3
        best = max(fitness[sample])
        first_best = next(int(i) for i in sample if fitness[i] == best)  # ties: the first sampled
        assert winner == first_best


def test_tournament_samples_without_replacement() -> None:
    rng = np.random.default_rng(0)
    fitness = np.array([0.5, 0.1, 0.9, 0.3])
    # a tournament over the whole population must always find the best: with replacement it would miss it often
    assert {sel_tournament(fitness, 4, rng) for _ in range(500)} == {2}
    # two distinct entrants: the worst can never win (with replacement it would win when drawn twice)
    wins = [sel_tournament(fitness, 2, rng) for _ in range(500)]
    assert 1 not in wins and set(wins) == {0, 2, 3}


def test_tournament_ties_and_nan() -> None:
    rng, replay = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(50):
        assert sel_tournament(np.zeros(5), 3, rng) == int(replay.choice(5, size=3, replace=False)[0])
    nan = np.array([np.nan, 1.0, np.nan])
    assert {sel_tournament(nan, 3, np.random.default_rng(s)) for s in range(20)} == {1}


def test_tournament_rejects_oversized_sample() -> None:
    with pytest.raises(AssertionError, match="tournament of 4"):
        sel_tournament(np.zeros(3), 4, np.random.default_rng(0))


# -- reset mutation -------------------------------------------------------------------------------------------------


def test_mut_reset_rows_rate_zero_changes_nothing_rate_one_every_row() -> None:
    space = get_space("darts")
    a = init_uniform(space, np.random.default_rng(0))
    a0 = _copy(a)
    _assert_same(mut_reset_rows(a, 0.0, np.random.default_rng(1)), a)
    every = mut_reset_rows(a, 1.0, np.random.default_rng(1))
    for ct in a:
        assert every[ct].dtype == np.float32 and every[ct].shape == a[ct].shape
        assert (every[ct] != a[ct]).any(axis=1).all(), f"{ct}: a row survived rate 1"
    _assert_same(a, a0)


def test_mut_reset_rows_replays() -> None:
    a = _marked("darts", 1.0)
    out = mut_reset_rows(a, 0.3, np.random.default_rng(4))
    replay = np.random.default_rng(4)
    for ct in a:
        reset = replay.random((a[ct].shape[0],)) < 0.3
        fresh = replay.random(a[ct].shape, dtype=np.float32)
        np.testing.assert_array_equal(out[ct], np.where(reset[:, None], fresh, a[ct]))
        assert 0 < reset.sum() < len(reset)


# -- one-edge mutation ----------------------------------------------------------------------------------------------


def _node_edges(genotype_cells: dict[str, tuple]) -> dict[tuple[str, int], set[tuple[str, int]]]:
    return {(ct, i): set(node) for ct, nodes in genotype_cells.items() for i, node in enumerate(nodes)}


@pytest.mark.parametrize("name", ["darts", "nb201", "rdarts-s1", "conas-3x3"])
def test_mut_one_edge_changes_exactly_one_edge(name: str) -> None:
    space = get_space(name)
    kinds = {"op": 0, "input": 0}
    for seed in range(200):
        rng = np.random.default_rng(seed)
        a = init_uniform(space, rng)
        a0 = _copy(a)
        child = mut_one_edge(a, space, rng)
        _assert_same(a, a0)
        before, after = genotype_of(space, a), genotype_of(space, child)
        assert after != before, f"seed {seed}: genotype unchanged"
        nb = _node_edges({ct: before.cell(ct).nodes for ct in space.cell_types})
        na = _node_edges({ct: after.cell(ct).nodes for ct in space.cell_types})
        changed = [key for key in nb if nb[key] != na[key]]
        assert len(changed) == 1, f"seed {seed}: nodes {changed} changed"
        removed, added = nb[changed[0]] - na[changed[0]], na[changed[0]] - nb[changed[0]]
        assert len(removed) == len(added) == 1, f"seed {seed}: {removed} -> {added}"
        (old_op, old_in), (new_op, new_in) = removed.pop(), added.pop()
        if old_in == new_in:
            kinds["op"] += 1
            assert new_op != old_op
        else:
            kinds["input"] += 1
            ct, i = changed[0]
            if old_op in space.edge_ops(ct, space.edge_index(space.num_inputs + i, new_in)):
                assert new_op == old_op, f"seed {seed}: an input mutation keeps the edge's op where allowed"
        assert new_op != "none" or space.family.name == "nb201"
        rows = [(ct, e) for ct in a for e in range(a[ct].shape[0]) if (child[ct][e] != a[ct][e]).any()]
        assert 1 <= len(rows) <= 2 and len({ct for ct, _ in rows}) == 1, f"seed {seed}: rows {rows} changed"
        for ct in a:
            assert child[ct].dtype == np.float32 and child[ct].shape == a[ct].shape
    if space.family.name == "darts":
        assert kinds["op"] > 50 and kinds["input"] > 50, kinds
    else:
        assert kinds == {"op": 200, "input": 0}


def test_mut_one_edge_breaks_ties() -> None:
    space = get_space("nb201")
    flat = {"cell": np.zeros(space.alpha_shape("cell"), dtype=np.float32)}  # every op ties: argmax is none
    for seed in range(20):
        child = mut_one_edge(flat, space, np.random.default_rng(seed))
        assert genotype_of(space, child) != genotype_of(space, flat)


def test_operators_accept_read_only_individual_alphas() -> None:
    space = get_space("darts")
    rng = np.random.default_rng(0)
    p1 = make_individual(space, init_uniform(space, rng), 0, 0)
    p2 = make_individual(space, init_uniform(space, rng), 1, 0)
    for ind in (p1, p2):
        for v in ind.alphas.values():
            v.setflags(write=False)  # any in-place write by an operator would raise
    child = cx_uniform_rows(p1.alphas, p2.alphas, rng, 0.5)  # registered as a Crossover: prob is positional
    for out in (mut_reset_rows(child, 0.5, rng), mut_one_edge(p1.alphas, space, rng)):
        assert all(v.flags.writeable and v.dtype == np.float32 for v in out.values())


# -- registries -----------------------------------------------------------------------------------------------------


def test_registries_map_yaml_names() -> None:
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    a = INITS.get("uniform")(space, rng)
    assert SELECTIONS.get("tournament")(np.array([1.0, 2.0]), 2, rng) == 1
    _assert_same(CROSSOVERS.get("uniform_rows")(a, a, rng, 0.5), a)
    _assert_same(MUTATIONS.get("reset_rows")(a, space, 0.0, rng), a)
    assert genotype_of(space, MUTATIONS.get("one_edge")(a, space, 0.0, rng)) != genotype_of(space, a)
    with pytest.raises(ConfigError, match="unknown mutation 'flip'; valid: one_edge, reset_rows"):
        MUTATIONS.get("flip")


def test_recorded_genotype_is_the_decoded_cell_at_a_float32_tie() -> None:
    """The genotype an individual is recorded as and the cell the supernet trains and scores come from the same
    float32 strengths: two edges whose strengths differ by less than float32 rounding (edges 3 and 4: the same row
    but for one entry a float32 step lower) rank alike in both (a float64 ranking of the recorded genotype picked
    the other edge)."""
    import torch

    from evoray.nn.weighting import decode_one_hot
    from evoray.spaces.derive import one_hot_cell

    space = get_space("darts")
    rng = np.random.default_rng(0)
    a = {ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types}
    row = a["normal"]  # node 3 reads edges 2, 3, 4 (inputs 0, 1, 2); op 0 is `none`, which ranks no edge
    row[2, 1:] += 2.0  # edge 2 the strongest: edges 3 and 4 compete for the second place
    row[4] = row[3]
    j = next(k for k in range(1, row.shape[1]) if k != int(row[4].argmax()))
    row[4, j] = np.nextafter(row[4, j], np.float32(-1.0))
    recorded = genotype_of(space, a)
    for ct in space.cell_types:
        decoded = decode_one_hot(torch.from_numpy(a[ct]), space, ct).numpy()
        np.testing.assert_array_equal(decoded, one_hot_cell(space, ct, recorded.cell(ct)))
