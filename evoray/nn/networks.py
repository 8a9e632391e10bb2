"""Evaluation networks built from a discrete genotype: DARTS CIFAR / ImageNet networks and the NAS-Bench-201 net.

Every network's ``forward`` returns ``(logits, logits_aux)``; ``logits_aux`` is ``None`` unless the network has an
auxiliary head and is training. Parameters of the auxiliary head live under the ``auxiliary_head`` submodule, so the
count that papers report (without it) is ``sum(p.numel() for n, p in net.named_parameters()
if not n.startswith("auxiliary_head"))``.

DARTS: Liu et al., 2019, https://arxiv.org/abs/1806.09055. NAS-Bench-201: Dong & Yang, 2020,
https://arxiv.org/abs/2001.00326.

>>> from evoray.spaces.published import published_genotype
>>> net = build_network(published_genotype("DARTS_V2"), family="cifar", C=8, layers=5, num_classes=10)
>>> logits, aux = net(torch.randn(2, 3, 16, 16))
>>> tuple(logits.shape), aux
((2, 10), None)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.errors import ConfigError
from evoray.nn.ops import FactorizedReduce, Identity, ReLUConvBN, build_op, drop_path
from evoray.nn.supernet import ResNetBasicBlock
from evoray.spaces.catalog import check_genotype
from evoray.spaces.genotype import CellGenotype, Genotype

FAMILIES = ("cifar", "imagenet", "nb201")


class EvalCell(nn.Module):
    """A discrete DARTS cell: two preprocessed inputs, each node the sum of its edges, output the concat.

    Edges whose op is ``none`` are not built (they would add zeros); a node left without edges is zeros. ``pool_bn``
    puts an affine BatchNorm after each pool, as SNAS' evaluation network does (DARTS' has none).
    """

    def __init__(
        self,
        cell: CellGenotype,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        pool_bn: bool = False,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0: nn.Module = (
            FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        )
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.ops = nn.ModuleList()
        self.node_inputs: list[list[int]] = []  # per node, the input state of each built op, in self.ops order
        for node in cell.nodes:
            inputs = []
            for name, j in node:
                if name == "none":
                    continue
                stride = 2 if reduction and j < 2 else 1
                op = build_op(name, C, stride, affine=True)
                if pool_bn and name.endswith("pool_3x3"):  # SNAS' evaluation ops: a BN after each pool
                    op = nn.Sequential(op, nn.BatchNorm2d(C))
                self.ops.append(op)
                inputs.append(j)
            self.node_inputs.append(inputs)
        self.concat = tuple(cell.concat)
        self.multiplier = len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # each (B, C, H, W)
        k = 0
        for inputs in self.node_inputs:
            out: Tensor | None = None
            for j in inputs:
                op = self.ops[k]
                k += 1
                h = op(states[j])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                out = h if out is None else out + h
            if out is None:  # every edge was `none`
                stride = 2 if self.reduction else 1
                out = torch.zeros_like(states[1][:, :, ::stride, ::stride])
            states.append(out)
        return torch.cat([states[i] for i in self.concat], dim=1)  # (B, multiplier * C, H', W')


class _AuxiliaryHead(nn.Module):
    """ReLU, 5x5 average pool, 1x1 conv to 128 + BN + ReLU, 2x2 conv to 768 (+ BN) + ReLU, linear.

    The original expects the pool to leave a 2x2 map (8x8 input with stride 3 on CIFAR, 7x7 with stride 2 on
    ImageNet); other sizes are pooled adaptively to 2x2 (also when the map is smaller than the 5x5 window), which
    keeps the parameter count and, at the original sizes, the arithmetic.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, bn_768: bool) -> None:
        super().__init__()
        self.pool_stride = pool_stride
        self.conv1 = nn.Conv2d(C, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128)
        self.conv2 = nn.Conv2d(128, 768, 2, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(768) if bn_768 else nn.Identity()
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, 5, self.pool_stride, count_include_pad=False)
        if tuple(x.shape[-2:]) != (2, 2):
            x = F.adaptive_avg_pool2d(x, 2)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 128, 2, 2)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 768, 1, 1)
        return self.classifier(torch.flatten(x, 1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__(C, num_classes, pool_stride=3, bn_768=True)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """As the original: no BN after the 768-channel conv (omitted there by a typo, kept for the paper's numbers)."""

    def __init__(self, C: int, num_classes: int) -> None:
        super().__init__(C, num_classes, pool_stride=2, bn_768=False)


def _require_darts(genotype: Genotype, who: str) -> None:
    if genotype.is_nb201:
        raise ConfigError(f"{who} needs a DARTS genotype with normal and reduce cells, got the NB201 cell {genotype}")
    for cell_type in ("normal", "reduce"):
        genotype.cell(cell_type)  # a missing cell type raises a ConfigError naming it


def _darts_cells(
    genotype: Genotype, layers: int, C: int, C_stem: int, reduction_prev: bool, pool_bn: bool = False
) -> tuple[nn.ModuleList, int, int]:
    """The cell stack, its output channels, and the channels entering the auxiliary head (after cell 2L//3)."""
    cells = nn.ModuleList()
    C_prev_prev, C_prev, C_curr, C_aux = C_stem, C_stem, C, C_stem
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        cell = EvalCell(
            genotype.cell("reduce" if reduction else "normal"),
            C_prev_prev,
            C_prev,
            C_curr,
            reduction,
            reduction_prev,
            pool_bn,
        )
        cells.append(cell)
        reduction_prev = reduction
        C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        if i == 2 * layers // 3:
            C_aux = C_prev
    return cells, C_prev, C_aux


class _DartsNetwork(nn.Module):
    """What the DARTS evaluation networks share after their stems: the cells, the auxiliary head after cell 2L//3
    (while training), the global average pool and the classifier."""

    cells: nn.ModuleList
    auxiliary_head: nn.Module | None
    global_pooling: nn.Module
    classifier: nn.Linear
    aux_index: int
    drop_path_prob: float

    def head(self, s0: Tensor, s1: Tensor) -> tuple[Tensor, Tensor | None]:
        """(logits, auxiliary logits or None) from the stem's outputs ``s0``, ``s1``."""
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return self.classifier(torch.flatten(self.global_pooling(s1), 1)), logits_aux


class NetworkCIFAR(_DartsNetwork):
    """The DARTS CIFAR evaluation network: stem conv3x3 + BN, ``layers`` cells (reductions at L//3 and 2L//3),
    an optional auxiliary head after cell 2L//3, global average pool, linear.

    Set ``drop_path_prob`` before each epoch (DARTS ramps it linearly from 0 to 0.2).
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        genotype: Genotype,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        pool_bn: bool = False,
    ) -> None:
        super().__init__()
        _require_darts(genotype, "NetworkCIFAR")
        self.drop_path_prob = 0.0
        self.aux_index = 2 * layers // 3
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self.cells, C_prev, C_aux = _darts_cells(genotype, layers, C, C_stem, reduction_prev=False, pool_bn=pool_bn)
        self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # a module, as in the originals (counted by thop)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        s = self.stem(x)
        return self.head(s, s)


class NetworkImageNet(_DartsNetwork):
    """The DARTS ImageNet evaluation network: three stride-2 stem convs, cells as :class:`NetworkCIFAR` (the first
    one preprocessing its c_{k-2} input with FactorizedReduce), global average pool, linear.
    """

    def __init__(
        self,
        C: int,
        num_classes: int,
        layers: int,
        auxiliary: bool,
        genotype: Genotype,
        in_channels: int = 3,
        pool_bn: bool = False,
    ) -> None:
        super().__init__()
        _require_darts(genotype, "NetworkImageNet")
        self.drop_path_prob = 0.0
        self.aux_index = 2 * layers // 3
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells, C_prev, C_aux = _darts_cells(genotype, layers, C, C, reduction_prev=True, pool_bn=pool_bn)
        self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes) if auxiliary else None
        # a module, counted by thop; the original's AvgPool2d(7) takes 224-pixel images only (the same average of
        # their 7x7 maps, which thop counts 0.04M FLOPs lower: 546.47M for DARTS_V2)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        s0 = self.stem0(x)  # (B, C, H/4, W/4)
        return self.head(s0, self.stem1(s0))  # s1: (B, C, H/8, W/8)


class NB201Cell(nn.Module):
    """A discrete NAS-Bench-201 cell: node i is the sum of op(state j) over its edges; the output is the last node."""

    def __init__(self, cell: CellGenotype, C: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList()
        self.node_inputs: list[list[int]] = []
        for node in cell.nodes:
            inputs = []
            for name, j in node:
                if name == "none":
                    continue
                self.ops.append(build_op(name, C, 1, affine=True))
                inputs.append(j)
            self.node_inputs.append(inputs)

    def forward(self, x: Tensor) -> Tensor:
        states = [x]  # each (B, C, H, W)
        k = 0
        for inputs in self.node_inputs:
            out: Tensor | None = None
            for j in inputs:
                h = self.ops[k](states[j])
                k += 1
                out = h if out is None else out + h
            states.append(torch.zeros_like(x) if out is None else out)
        return states[-1]


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro network with one discrete cell: stem conv3x3 + BN, N cells at C, a residual block to
    2C, N cells, one to 4C, N cells, BN, ReLU, global average pool, linear. ``forward`` returns ``(logits, None)``.
    """

    def __init__(self, C: int, N: int, genotype: Genotype, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if not genotype.is_nb201:
            raise ConfigError(f"NB201Network needs a NAS-Bench-201 arch string genotype, got {genotype}")
        cell = genotype.cell("cell")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        C_prev = C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBasicBlock(C_prev, C_curr))
            layers.extend(NB201Cell(cell, C_curr) for _ in range(N))
            C_prev = C_curr
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # a module, as in the originals (counted by thop)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        h = self.lastact(self.cells(self.stem(x)))  # (B, 4C, H/4, W/4)
        return self.classifier(torch.flatten(self.global_pooling(h), 1)), None


def build_network(
    genotype: Genotype,
    *,
    family: str,
    C: int,
    layers: int,
    num_classes: int,
    in_channels: int = 3,
    auxiliary: bool = False,
    N: int = 5,
    pool_bn: bool = False,
) -> nn.Module:
    """Build the evaluation network of ``family`` ("cifar", "imagenet" or "nb201") for ``genotype``.

    ``layers`` is the number of cells of the DARTS networks; ``N`` the cells per stage of the NB201 network;
    ``pool_bn`` puts a BatchNorm after each pool of a DARTS network (SNAS' evaluation network).
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown network family {family!r}; valid: {', '.join(FAMILIES)}")
    check_genotype(genotype)  # every cell, also those a small network does not build
    if family == "nb201":
        if N < 1:
            raise ConfigError(f"N (cells per stage) must be >= 1, got {N}")
        return NB201Network(C, N, genotype, num_classes, in_channels)
    if genotype.is_nb201:
        raise ConfigError(f"family {family!r} needs a DARTS genotype; an NB201 arch string needs family 'nb201'")
    if layers < 1:
        raise ConfigError(f"layers (number of cells) must be >= 1, got {layers}")
    if C < 1 or (family == "imagenet" and C % 2):
        raise ConfigError(f"C (initial channels) must be >= 1, and even for family 'imagenet'; got {C}")
    if family == "cifar":
        return NetworkCIFAR(C, num_classes, layers, auxiliary, genotype, in_channels=in_channels, pool_bn=pool_bn)
    return NetworkImageNet(C, num_classes, layers, auxiliary, genotype, in_channels=in_channels, pool_bn=pool_bn)
