"""Evaluation networks: reproduced parameter counts, the originals' forward written out, tiny forward/backward passes,
drop path, errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evoray.errors import ConfigError
from evoray.nn.networks import (
    AuxiliaryHeadCIFAR,
    AuxiliaryHeadImageNet,
    EvalCell,
    NB201Cell,
    NB201Network,
    NetworkCIFAR,
    NetworkImageNet,
    build_network,
    drop_path,
)
from evoray.nn.ops import build_op
from evoray.spaces.genotype import CellGenotype, Genotype, parse_genotype
from evoray.spaces.published import published_genotype, published_names

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
WITH_NONE = "|nor_conv_1x1~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
NONE_OUTPUT = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"


def n_params(net: nn.Module) -> int:
    """Parameters without the auxiliary head, as the papers count them."""
    return sum(p.numel() for name, p in net.named_parameters() if not name.startswith("auxiliary_head"))


# parameters without the auxiliary head, as the original code's NetworkCIFAR (C=36, 20 cells) and NetworkImageNet
# (C=48, 14 cells, 1000 classes) count them (quark0/darts and nightstorm0909/EvNAS cnn/model.py, the same network):
# the papers' 3.3M / 4.7M (DARTS_V2), 3.6M / 5.1M (EvNAS_A), ...
ORIGINAL_COUNTS = {
    "DARTS_V2": (3_349_342, 4_718_752),
    "DARTS_V1": (3_169_414, 4_510_432),
    "EvNAS_A": (3_626_470, 5_136_640),
    "EvNAS_B": (3_827_782, 5_318_176),
    "EvNAS_C": (3_447_838, 4_907_776),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_COUNTS))
def test_cifar_and_imagenet_parameter_counts_reproduce_the_originals(name: str) -> None:
    cifar, imagenet = ORIGINAL_COUNTS[name]
    net = NetworkCIFAR(36, 10, 20, True, published_genotype(name))
    assert net.auxiliary_head is not None
    assert n_params(net) == cifar
    assert [i for i, cell in enumerate(net.cells) if isinstance(cell, EvalCell) and cell.reduction] == [6, 13]
    # the head after cell 13 (576 channels): 3,825,768 parameters in all for DARTS_V2, as the original counts them
    assert sum(p.numel() for p in net.auxiliary_head.parameters()) == 476_426
    big = NetworkImageNet(48, 1000, 14, True, published_genotype(name))
    assert n_params(big) == imagenet
    assert big.auxiliary_head is not None and sum(p.numel() for p in big.auxiliary_head.parameters()) == 1_260_776


def test_none_edges_build_nothing() -> None:
    # SNAS_mild_edge_all lists every edge, `none` included; its other edges are exactly SNAS_mild's.
    a = NetworkCIFAR(16, 10, 8, False, published_genotype("SNAS_mild"))
    b = NetworkCIFAR(16, 10, 8, False, published_genotype("SNAS_mild_edge_all"))
    assert n_params(a) == n_params(b)
    cell_a, cell_b = a.cells[0], b.cells[0]
    assert isinstance(cell_a, EvalCell) and isinstance(cell_b, EvalCell)
    assert len(cell_a.ops) == len(cell_b.ops) == 8


@pytest.mark.parametrize("name", published_names())
def test_every_published_genotype_trains_a_small_cifar_network(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(published_genotype(name), family="cifar", C=8, layers=5, num_classes=10, auxiliary=True)
    assert isinstance(net, NetworkCIFAR)
    net.drop_path_prob = 0.2
    net.train()
    logits, aux = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and aux is not None and aux.shape == (2, 10)
    assert torch.isfinite(logits).all() and torch.isfinite(aux).all()
    (logits.sum() + 0.4 * aux.sum()).backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    net.eval()
    logits, aux = net(torch.randn(2, 3, 16, 16))
    assert aux is None and torch.isfinite(logits).all()


def test_cifar_network_on_8x8_digits_with_auxiliary_head() -> None:
    net = NetworkCIFAR(8, 10, 8, True, published_genotype("DARTS_V2"), in_channels=1).train()
    logits, aux = net(torch.randn(3, 1, 8, 8))  # the auxiliary head sees a 2x2 map
    assert logits.shape == (3, 10) and aux is not None and aux.shape == (3, 10)
    assert torch.isfinite(aux).all()


def test_auxiliary_head_keeps_the_original_arithmetic_on_8x8_maps() -> None:
    torch.manual_seed(0)
    net = NetworkCIFAR(8, 10, 5, True, published_genotype("DARTS_V2"))
    head = net.auxiliary_head
    assert isinstance(head, AuxiliaryHeadCIFAR)
    head.eval()
    x = torch.randn(2, head.conv1.in_channels, 8, 8)
    h = nn.functional.avg_pool2d(torch.relu(x), 5, 3, count_include_pad=False)  # the original's 2x2 map
    h = torch.relu(head.bn2(head.conv2(torch.relu(head.bn1(head.conv1(h))))))
    torch.testing.assert_close(head(x), head.classifier(h.flatten(1)))


def test_no_auxiliary_logits_without_the_head() -> None:
    net = NetworkCIFAR(8, 10, 5, False, published_genotype("DARTS_V2")).train()
    assert net.auxiliary_head is None
    assert net(torch.randn(2, 3, 16, 16))[1] is None


def test_imagenet_network_small_forward() -> None:
    net = NetworkImageNet(8, 7, 5, True, published_genotype("EvNAS_A")).train()
    logits, aux = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and aux is not None and aux.shape == (2, 7)
    net.eval()
    logits, aux = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and aux is None
    # the ImageNet head has no BN after its 768-channel conv
    assert net.auxiliary_head is not None and not isinstance(net.auxiliary_head.bn2, nn.BatchNorm2d)


def test_drop_path_changes_outputs_only_in_training() -> None:
    net = NetworkCIFAR(8, 10, 5, False, published_genotype("DARTS_V2"))
    x = torch.randn(4, 3, 16, 16)
    net.train()
    torch.manual_seed(1)
    plain = net(x)[0]
    net.drop_path_prob = 0.5
    torch.manual_seed(1)
    dropped = net(x)[0]
    assert not torch.allclose(plain, dropped)
    net.eval()
    net.drop_path_prob = 0.0
    ref = net(x)[0]
    net.drop_path_prob = 0.5
    torch.testing.assert_close(net(x)[0], ref)


def test_drop_path_spares_identity_edges() -> None:
    """As the original: drop path zeroes the outputs of ops, never of a stride-1 skip_connect (an identity)."""
    g = parse_genotype(
        "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
        "('skip_connect', 2), ('skip_connect', 1), ('max_pool_3x3', 0), ('skip_connect', 4)], "
        "normal_concat=[2, 3, 4, 5])"
    )
    cell = EvalCell(g.cell("normal"), 4, 4, 4, False, False).train()
    s0, s1 = torch.randn(64, 4, 5, 5), torch.randn(64, 4, 5, 5)
    plain = cell(s0, s1, 0.0)
    dropped = cell(s0, s1, 0.5)
    torch.testing.assert_close(dropped[:, :4], plain[:, :4])  # node 2: two identities
    torch.testing.assert_close(dropped[:, 8:12], plain[:, 8:12])  # node 4: identities of node 2 and input 1
    assert not torch.allclose(dropped[:, 4:8], plain[:, 4:8])  # node 3: two sep convs, dropped
    assert not torch.allclose(dropped[:, 12:], plain[:, 12:])  # node 5: a pool, dropped, plus an identity


@pytest.mark.parametrize("family", ["cifar", "imagenet"])
def test_auxiliary_head_reads_cell_two_thirds(family: str) -> None:
    g = published_genotype("DARTS_V2")
    net = build_network(g, family=family, C=8, layers=5, num_classes=10, auxiliary=True).train()
    assert isinstance(net, NetworkCIFAR | NetworkImageNet) and net.auxiliary_head is not None
    seen: dict[str, torch.Tensor] = {}
    net.cells[3].register_forward_hook(lambda m, i, out: seen.setdefault("cell", out))
    net.auxiliary_head.register_forward_hook(lambda m, i, out: seen.setdefault("aux", i[0]))
    size = 16 if family == "cifar" else 64
    net(torch.randn(2, 3, size, size))
    assert seen["aux"] is seen["cell"]  # 2 * 5 // 3 = cell 3, the second reduction cell


def test_drop_path_zeroes_whole_samples_and_rescales() -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 2, 3, 3)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] > 0
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert torch.all(per_sample[~kept] == 0)
    assert 0.7 < kept.float().mean().item() < 0.8


def test_none_op_is_zeros_of_the_strided_input() -> None:
    x = torch.randn(2, 3, 5, 5)
    for stride, size in ((1, 5), (2, 3)):
        out = build_op("none", 3, stride, affine=True)(x)
        assert out.shape == (2, 3, size, size) and torch.all(out == 0)


def test_eval_cell_node_without_edges_is_zeros() -> None:
    g = parse_genotype(
        "Genotype(normal=[[('sep_conv_3x3', 0), ('skip_connect', 1)], [('none', 0), ('none', 2)], "
        "[('skip_connect', 3), ('max_pool_3x3', 2)]], normal_concat=[2, 3, 4], "
        "reduce=[[('max_pool_3x3', 0), ('none', 1)], [('none', 0), ('none', 1), ('none', 2)], "
        "[('skip_connect', 0), ('avg_pool_3x3', 3)]], reduce_concat=[2, 3, 4])"
    )
    for cell_type, reduction, size in (("normal", False, 6), ("reduce", True, 3)):
        cell = EvalCell(g.cell(cell_type), 12, 12, 4, reduction, False)
        out = cell(torch.randn(2, 12, 6, 6), torch.randn(2, 12, 6, 6))
        assert out.shape == (2, 12, size, size), cell_type
        assert torch.all(out[:, 4:8] == 0), f"{cell_type}: node 3 has only `none` edges"
        assert out[:, :4].abs().sum() > 0


ALL_OPS = parse_genotype(
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('skip_connect', 2), "
    "('avg_pool_3x3', 1), ('dil_conv_5x5', 3), ('max_pool_3x3', 2), ('skip_connect', 4)], "
    "normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('skip_connect', 1), ('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
    "('dil_conv_5x5', 0), ('sep_conv_5x5', 2), ('dil_conv_3x3', 1), ('skip_connect', 3)], "
    "reduce_concat=[2, 3, 4, 5])"
)
# three nodes, and output concats of three and two nodes out of order
THREE_NODES = parse_genotype(
    "Genotype(normal=[[('sep_conv_3x3', 1), ('skip_connect', 0)], [('dil_conv_3x3', 2), ('max_pool_3x3', 1)], "
    "[('avg_pool_3x3', 3), ('sep_conv_5x5', 2)]], normal_concat=[4, 2, 3], "
    "reduce=[[('max_pool_3x3', 0), ('sep_conv_3x3', 1)], [('skip_connect', 0), ('dil_conv_5x5', 2)], "
    "[('skip_connect', 3), ('avg_pool_3x3', 1)]], reduce_concat=[3, 4])"
)


def _randomize_batchnorms(net: nn.Module) -> Any:
    """Random running statistics and affine parameters, so that a BatchNorm in the wrong place shows in evaluation."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.normal_()
                    m.bias.normal_()
    return net.eval()


def _bn(bn: Any, x: torch.Tensor) -> torch.Tensor:
    assert isinstance(bn, nn.BatchNorm2d)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _relu_conv_bn(op: Any, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    k = op.conv.kernel_size[0]
    return _bn(op.bn, F.conv2d(F.relu(x), op.conv.weight, op.conv.bias, stride=stride, padding=k // 2))


def _factorized_reduce(op: Any, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(x)
    halves = [F.conv2d(x, op.conv_1.weight, stride=2), F.conv2d(x[:, :, 1:, 1:], op.conv_2.weight, stride=2)]
    return _bn(op.bn, torch.cat(halves, dim=1))


def _original_op(name: str, op: Any, x: torch.Tensor, stride: int) -> torch.Tensor:
    """The original DARTS / NAS-Bench-201 op ``name`` (cnn/operations.py, cell_operations.py) with ``op``'s weights."""
    C = x.shape[1]
    if name == "skip_connect":
        return x if stride == 1 else _factorized_reduce(op, x)
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    if name == "max_pool_3x3":
        return F.max_pool2d(x, 3, stride, 1)
    if name.startswith("nor_conv"):
        return _relu_conv_bn(op, x, stride)
    k = int(name[-1])
    if name.startswith("sep_conv"):  # twice ReLU, depthwise, pointwise, BN; the stride in the first depthwise
        x = F.conv2d(F.relu(x), op.dw1.weight, stride=stride, padding=k // 2, groups=C)
        x = _bn(op.bn1, F.conv2d(x, op.pw1.weight))
        x = F.conv2d(F.relu(x), op.dw2.weight, padding=k // 2, groups=C)
        return _bn(op.bn2, F.conv2d(x, op.pw2.weight))
    assert name.startswith("dil_conv")  # ReLU, depthwise with dilation 2, pointwise, BN
    x = F.conv2d(F.relu(x), op.dw.weight, stride=stride, padding=k - 1, dilation=2, groups=C)
    return _bn(op.bn, F.conv2d(x, op.pw.weight))


def _original_cell(
    cell: EvalCell, g: CellGenotype, s0: torch.Tensor, s1: torch.Tensor, reduction_prev: bool
) -> torch.Tensor:
    s0 = _factorized_reduce(cell.preprocess0, s0) if reduction_prev else _relu_conv_bn(cell.preprocess0, s0)
    states = [s0, _relu_conv_bn(cell.preprocess1, s1)]
    ops = iter(cell.ops)
    for node in g.nodes:
        edges = [_original_op(name, next(ops), states[j], 2 if cell.reduction and j < 2 else 1) for name, j in node]
        states.append(torch.stack(edges).sum(0))
    return torch.cat([states[i] for i in g.concat], dim=1)


def _original_darts_head(
    net: Any, g: Genotype, s0: torch.Tensor, s1: torch.Tensor, reduction_prev: bool
) -> torch.Tensor:
    for cell in net.cells:
        assert isinstance(cell, EvalCell)
        s0, s1 = s1, _original_cell(cell, g.cell("reduce" if cell.reduction else "normal"), s0, s1, reduction_prev)
        reduction_prev = cell.reduction
    return F.linear(s1.mean((2, 3)), net.classifier.weight, net.classifier.bias)


@pytest.mark.parametrize("name", ["ALL_OPS", "THREE_NODES", "DARTS_V2"])
def test_cifar_network_computes_the_original_forward(name: str) -> None:
    """DARTS' NetworkCIFAR.forward written out: stem conv3x3 (padding 1) + BN, cells on (s0, s1) with strided edges
    from the inputs of a reduction cell, concat in the genotype's order, global average pool, linear."""
    g = {"ALL_OPS": ALL_OPS, "THREE_NODES": THREE_NODES}.get(name) or published_genotype(name)
    net = _randomize_batchnorms(NetworkCIFAR(4, 10, 3, True, g))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        s = _bn(net.stem[1], F.conv2d(x, net.stem[0].weight, padding=1))
        expected = _original_darts_head(net, g, s, s, reduction_prev=False)
        logits, aux = net(x)
    assert aux is None
    torch.testing.assert_close(logits, expected)


def test_imagenet_network_computes_the_original_forward() -> None:
    """DARTS' NetworkImageNet.forward written out: stem0 (conv3x3/2, BN, ReLU, conv3x3/2, BN), stem1 (ReLU,
    conv3x3/2, BN), the first cell's c_{k-2} input factorized-reduced, global average pool, linear."""
    net = _randomize_batchnorms(NetworkImageNet(4, 10, 3, True, ALL_OPS))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s0 = F.relu(_bn(net.stem0[1], F.conv2d(x, net.stem0[0].weight, stride=2, padding=1)))
        s0 = _bn(net.stem0[4], F.conv2d(s0, net.stem0[3].weight, stride=2, padding=1))  # (2, 4, 16, 16)
        s1 = _bn(net.stem1[2], F.conv2d(F.relu(s0), net.stem1[1].weight, stride=2, padding=1))  # (2, 4, 8, 8)
        expected = _original_darts_head(net, ALL_OPS, s0, s1, reduction_prev=True)
        logits, aux = net(x)
    assert aux is None
    torch.testing.assert_close(logits, expected)


def test_imagenet_auxiliary_head_keeps_the_original_arithmetic_on_7x7_maps() -> None:
    """The original ImageNet head: ReLU, 5x5 average pool of stride 2 (7x7 -> 2x2), conv1x1 + BN + ReLU, conv2x2 +
    ReLU (no BN), linear."""
    torch.manual_seed(0)
    head = _randomize_batchnorms(AuxiliaryHeadImageNet(6, 10))
    x = torch.randn(2, 6, 7, 7)
    h = F.avg_pool2d(torch.relu(x), 5, 2, count_include_pad=False)
    h = torch.relu(head.conv2(torch.relu(_bn(head.bn1, head.conv1(h)))))
    torch.testing.assert_close(head(x), head.classifier(h.flatten(1)))


def test_pool_bn_puts_an_affine_batchnorm_after_every_pool() -> None:
    plain = EvalCell(ALL_OPS.cell("normal"), 8, 8, 4, False, False)
    snas = EvalCell(ALL_OPS.cell("normal"), 8, 8, 4, False, False, pool_bn=True)
    assert n_params(snas) - n_params(plain) == 2 * 2 * 4  # an avg and a max pool, weight and bias of 4 channels
    for cell in (EvalCell(ALL_OPS.cell("reduce"), 8, 8, 4, True, False, pool_bn=True), snas):
        pools = [op for op in cell.ops if isinstance(op, nn.Sequential)]
        assert len(pools) == 2 and all(isinstance(p[1], nn.BatchNorm2d) and p[1].affine for p in pools)


def relu_conv_bn(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + 2 * c_out


def nb201_count_all_3x3(C: int, N: int, num_classes: int) -> int:
    """By hand: stem conv3x3 + BN; 6 ReLU-Conv3x3-BN edges per cell; two residual blocks; last BN; linear."""
    total = 3 * C * 9 + 2 * C
    for stage, c in enumerate((C, 2 * C, 4 * C)):
        if stage > 0:
            c_in = c // 2
            total += relu_conv_bn(c_in, c, 3) + relu_conv_bn(c, c, 3) + c_in * c  # conv_a, conv_b, 1x1 shortcut
        total += N * 6 * relu_conv_bn(c, c, 3)
    return total + 2 * 4 * C + 4 * C * num_classes + num_classes


def test_nb201_parameter_count() -> None:
    net = NB201Network(16, 5, parse_genotype(ALL_3X3), 10)
    expected = nb201_count_all_3x3(16, 5, 10)
    assert expected == 1_531_546  # NAS-Bench-201's largest cell: 1.53M parameters on CIFAR-10
    assert n_params(net) == expected


@pytest.mark.parametrize("arch", [ALL_3X3, WITH_NONE, ALL_NONE, NONE_OUTPUT])
def test_nb201_forward(arch: str) -> None:
    net = build_network(parse_genotype(arch), family="nb201", C=8, layers=0, N=2, num_classes=5).train()
    logits, aux = net(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 5) and aux is None and torch.isfinite(logits).all()
    logits.sum().backward()


def test_nb201_none_edges_build_nothing() -> None:
    full = NB201Network(8, 1, parse_genotype(WITH_NONE.replace("none", "nor_conv_1x1")), 10)
    sparse = NB201Network(8, 1, parse_genotype(WITH_NONE), 10)
    cell_full, cell_sparse = full.cells[0], sparse.cells[0]
    assert isinstance(cell_full, NB201Cell) and isinstance(cell_sparse, NB201Cell)
    assert len(cell_full.ops) == 6 and len(cell_sparse.ops) == 4
    assert n_params(full) - n_params(sparse) == 2 * sum(relu_conv_bn(c, c, 1) for c in (8, 16, 32))


def test_nb201_all_none_cell_outputs_zeros() -> None:
    net = NB201Network(8, 1, parse_genotype(ALL_NONE), 10)
    x = torch.randn(2, 8, 4, 4)
    assert torch.all(net.cells[0](x) == 0)


def _original_nb201_cell(cell: Any, g: CellGenotype, x: torch.Tensor) -> torch.Tensor:
    states = [x]
    ops = iter(cell.ops)
    for node in g.nodes:
        edges = [_original_op(name, next(ops), states[j], 1) for name, j in node if name != "none"]
        states.append(torch.stack(edges).sum(0) if edges else torch.zeros_like(x))
    return states[-1]


@pytest.mark.parametrize("arch", [WITH_NONE, NONE_OUTPUT])
def test_nb201_network_computes_the_original_forward(arch: str) -> None:
    """NAS-Bench-201's TinyNetwork.forward written out: stem, cells whose output is their last node, residual blocks
    (ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus avgpool2 + conv1x1 of the input), BN, ReLU, average pool, linear."""
    g = parse_genotype(arch)
    net = _randomize_batchnorms(NB201Network(4, 1, g, 10))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = _bn(net.stem[1], F.conv2d(x, net.stem[0].weight, padding=1))
        for layer in net.cells:
            if isinstance(layer, NB201Cell):
                h = _original_nb201_cell(layer, g.cell("cell"), h)
            else:
                shortcut = F.conv2d(F.avg_pool2d(h, 2, 2), layer.downsample[1].weight)
                h = _relu_conv_bn(layer.conv_b, _relu_conv_bn(layer.conv_a, h, stride=2)) + shortcut
        h = F.relu(_bn(net.lastact[0], h))
        expected = F.linear(h.mean((2, 3)), net.classifier.weight, net.classifier.bias)
        logits, _ = net(x)
    torch.testing.assert_close(logits, expected)


def test_build_network_errors() -> None:
    darts = published_genotype("DARTS_V2")
    nb201 = parse_genotype(ALL_3X3)
    with pytest.raises(ConfigError, match="valid: cifar, imagenet, nb201"):
        build_network(darts, family="mobile", C=8, layers=5, num_classes=10)
    with pytest.raises(ConfigError, match="nb201"):
        build_network(nb201, family="cifar", C=8, layers=5, num_classes=10)
    with pytest.raises(ConfigError, match="nb201"):
        build_network(nb201, family="imagenet", C=8, layers=5, num_classes=10)
    with pytest.raises(ConfigError, match="NAS-Bench-201"):
        build_network(darts, family="nb201", C=8, layers=5, num_classes=10)
    with pytest.raises(ConfigError, match="layers"):
        build_network(darts, family="cifar", C=8, layers=0, num_classes=10)
    with pytest.raises(ConfigError, match="even"):
        build_network(darts, family="imagenet", C=7, layers=5, num_classes=10)
    with pytest.raises(ConfigError, match="op 'conv_9x9' is not allowed on edge 2->3"):
        build_network(
            parse_genotype(ALL_3X3.replace("nor_conv_3x3~2", "conv_9x9~2")),
            family="nb201",
            C=8,
            layers=0,
            num_classes=10,
        )


def test_build_network_families() -> None:
    darts = published_genotype("DARTS_V2")
    assert isinstance(build_network(darts, family="cifar", C=8, layers=5, num_classes=10), NetworkCIFAR)
    assert isinstance(build_network(darts, family="imagenet", C=8, layers=5, num_classes=10), NetworkImageNet)
    nb = build_network(parse_genotype(ALL_3X3), family="nb201", C=8, layers=0, N=1, num_classes=10, in_channels=1)
    assert isinstance(nb, NB201Network) and nb(torch.randn(2, 1, 8, 8))[0].shape == (2, 10)


def test_training_after_an_inference_pass_of_a_new_size() -> None:
    """An evaluation under inference mode (a rebuilt actor's first fitness pass) must leave nothing that breaks the
    next training step: the average pool's cached pixel counts are normal tensors."""
    arch = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|avg_pool_3x3~2|"
    net = NB201Network(4, 1, parse_genotype(arch), 10)
    x = torch.randn(2, 3, 12, 12)  # a size no other test uses, so the first pass fills the cache
    with torch.inference_mode():
        net.eval()
        net(x)
    net.train()
    net(x)[0].sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
