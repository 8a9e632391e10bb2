"""Every registered search space: shape facts, a supernet and an evaluation network that run forward and backward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evoray.errors import ConfigError
from evoray.nn.networks import build_network
from evoray.nn.supernet import DartsSupernet, NB201Supernet, Supernet
from evoray.spaces import SPACES, derive_genotype, get_space

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


def test_unknown_space_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown search space 'dartz'.*conas-3x3.*nb201"):
        get_space("dartz")


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
