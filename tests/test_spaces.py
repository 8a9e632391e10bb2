"""Every registered search space: shape facts, a supernet and an evaluation network that run forward and backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evoray.errors import ConfigError
from evoray.nn.networks import build_network
from evoray.nn.supernet import DartsSupernet, NB201Supernet, Supernet
from evoray.spaces import SPACES, SearchSpace, check_genotype, derive_genotype, get_space, parse_arch, parse_genotype
from evoray.spaces.space import DARTS_FAMILY

EXPECTED = {
    "darts": (14, 8),
    "conas-3x3": (14, 6),
    "conas-5x5": (14, 6),
    "rdarts-s1": (14, 2),
    "rdarts-s2": (14, 2),
    "rdarts-s3": (14, 3),
    "rdarts-s4": (14, 2),
    "nb201": (6, 5),
}


def test_registry_holds_the_expected_spaces() -> None:
    assert set(SPACES.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_alpha_shapes(name: str) -> None:
    space = get_space(name)
    for ct in space.cell_types:
        assert space.alpha_shape(ct) == EXPECTED[name]


def test_space_facts() -> None:
    darts = get_space("darts")
    assert darts.cell_types == ("normal", "reduce")
    assert darts.edges[:5] == ((2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    nb = get_space("nb201")
    assert nb.edges == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert math.prod(nb.alpha_shape()) == 30
    cell = nb.cell_types[0]  # NAS-Bench-201's 15,625 cells: an op from each edge's list
    assert math.prod(len(nb.edge_ops(cell, e)) for e in range(len(nb.edges))) == 15625
    s1 = get_space("rdarts-s1")
    assert s1.edge_ops("normal", 0) == ("skip_connect", "dil_conv_3x3")
    assert s1.edge_ops("reduce", 0) == ("max_pool_3x3", "avg_pool_3x3")
    assert s1.edge_ops("normal", 5) != s1.edge_ops("normal", 0)
    assert "noise" in get_space("rdarts-s4").op_names
    assert set(get_space("conas-3x3").op_names).isdisjoint({"sep_conv_5x5", "dil_conv_5x5"})
    assert darts.default_concat == (2, 3, 4, 5) and nb.default_concat == (3,)
    # every op of a space, in the order first seen: normal cell edge by edge, then the reduce cell
    assert s1.op_names == (
        "skip_connect",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "sep_conv_3x3",
        "max_pool_3x3",
        "avg_pool_3x3",
    )


def test_op_columns_follow_the_original_code() -> None:
    """The alpha columns of each space in the order of the original code (RobustDARTS spaces.py, CoNAS, AutoDL)."""
    assert get_space("rdarts-s2").edge_ops("reduce", 13) == ("skip_connect", "sep_conv_3x3")
    assert get_space("rdarts-s3").edge_ops("normal", 0) == ("none", "skip_connect", "sep_conv_3x3")
    assert get_space("rdarts-s4").edge_ops("normal", 7) == ("noise", "sep_conv_3x3")
    assert get_space("nb201").edge_ops("cell", 0) == (
        "none",
        "skip_connect",
        "nor_conv_1x1",
        "nor_conv_3x3",
        "avg_pool_3x3",
    )


def test_unknown_space_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown search space 'dartz'.*conas-3x3.*nb201"):
        get_space("dartz")


def test_check_cell_names_what_is_wrong() -> None:
    darts, s1 = get_space("darts"), get_space("rdarts-s1")
    empty: tuple = ((), (), ())
    with pytest.raises(ConfigError, match=r"^space darts has no cell type 'cell'; valid: normal, reduce$"):
        darts.check_cell("cell", ((("skip_connect", 0),), *empty))
    with pytest.raises(ConfigError, match=r"^space darts: the normal cell needs 4 nodes, got 3$"):
        darts.check_cell("normal", ((("skip_connect", 0),), (), ()))
    with pytest.raises(ConfigError, match=r"node 2 of the normal cell cannot take input -1; valid inputs: 0..1$"):
        darts.check_cell("normal", ((("skip_connect", -1),), *empty))
    # RobustDARTS S1: the ops valid on that very edge, not every op of the space
    with pytest.raises(
        ConfigError,
        match=r"^space rdarts-s1: op 'sep_conv_3x3' is not allowed on edge 0->2 of the normal cell; "
        r"valid: skip_connect, dil_conv_3x3$",
    ):
        s1.check_cell("normal", ((("sep_conv_3x3", 0),), *empty))
    with pytest.raises(ConfigError, match=r"^space darts has no edge into state 3 from state 5$"):
        darts.edge_index(3, 5)


def test_a_space_needs_one_op_list_per_edge_all_of_one_width() -> None:
    with pytest.raises(ValueError, match=r"space bad/normal: 13 edge op lists, need 14"):
        SearchSpace("bad", DARTS_FAMILY, 4, {"normal": (("skip_connect", "sep_conv_3x3"),) * 13})
    with pytest.raises(ValueError, match=r"space bad/normal: edges have different op counts \[1, 2\]"):
        SearchSpace("bad", DARTS_FAMILY, 4, {"normal": (("skip_connect", "sep_conv_3x3"),) * 13 + (("none",),)})


def test_check_genotype_refuses_what_no_space_can_build() -> None:
    node = "[('sep_conv_3x3', 0), ('skip_connect', 1)]"
    four, three = ", ".join([node] * 4), ", ".join([node] * 3)
    with pytest.raises(ConfigError, match=r"^genotype has no 'reduce' cell; it has normal$"):
        check_genotype(parse_genotype(f"Genotype(normal=[{four}], normal_concat=[2, 3, 4, 5])"))
    g = parse_genotype(
        f"Genotype(normal=[{three}], normal_concat=[2, 3, 4], reduce=[{four}], reduce_concat=[2, 3, 4, 5])"
    )
    with pytest.raises(ConfigError, match=r"^the genotype's normal cell has 3 nodes; DARTS-family cells have 4$"):
        check_genotype(g)
    with pytest.raises(ConfigError, match=r"node 2 must take each earlier node once \(inputs \[0, 1\]\), got \[0, 0\]"):
        check_genotype(parse_arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|none~0|none~1|none~2|"))


def _supernet(name: str, weighting: str = "softmax") -> Supernet:
    space = get_space(name)
    if space.family.name == "nb201":
        return NB201Supernet(space, C=4, N=1, weighting=weighting)
    return DartsSupernet(space, C=4, layers=3, weighting=weighting)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("weighting", ["softmax", "gumbel-soft", "gumbel-hard", "decoded", "expert"])
def test_supernet_forward_backward(name: str, weighting: str) -> None:
    net = _supernet(name, weighting)
    x = torch.randn(2, 3, 8, 8)
    out = net(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in net.weight_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if weighting != "decoded":  # decoded weights are constants of the individual, not trained
        for alpha in net.arch_parameters():
            assert alpha.grad is not None and alpha.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_evaluation_network_from_derived_genotype(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(0)
    weights = {ct: rng.random(space.alpha_shape(ct)) for ct in space.cell_types}
    genotype = derive_genotype(space, weights)
    for ct in space.cell_types:
        space.check_cell(ct, genotype.cell(ct).nodes)
    family = space.family.network
    net = build_network(genotype, family=family, C=4, layers=3, N=1, num_classes=10, auxiliary=False)
    net.train()
    logits, _ = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
