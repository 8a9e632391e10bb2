"""One-shot supernets over the DARTS-family spaces and NAS-Bench-201, with every weighting mode.

The supernet owns its architecture parameters (``alphas``, one (E, K) matrix per cell type, shared by every cell of
that type) and turns them into edge weights with the mode named by ``weighting`` (see ``evoray.nn.weighting``).
Weights may also be passed to ``forward`` explicitly.

Two styles of search ops and cells, as the originals build them:

- ``darts`` (quark0/darts, SNAS, EvNAS): a BatchNorm (not affine) after each pool, bias-free convolutions, the
  classifier straight after the global pool;
- ``autodl`` (AutoDL-Projects: GDAS, its NAS-Bench-201 baselines, EvNAS on NAS-Bench-201): no BatchNorm after the
  pools, a bias in every convolution whose BatchNorm is not affine, and BN-ReLU before the global pool.

``drop_path_prob`` (SNAS' search) drops each edge's output per sample while training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.errors import ConfigError
from evoray.nn.grouped import build_group_op, tile_channels
from evoray.nn.ops import BatchNorm2d, Conv2d, FactorizedReduce, ReLUConvBN, drop_path
from evoray.nn.straight import PathGrads, node_sum
from evoray.nn.weighting import WEIGHTINGS, EdgeWeights, WeightingContext
from evoray.spaces.catalog import SPACES, get_space
from evoray.spaces.derive import derive_genotype
from evoray.spaces.genotype import Genotype
from evoray.spaces.space import SearchSpace

STYLES = ("darts", "autodl")


class EdgeGroup(nn.Module):
    """The mixed edges that leave one state of a cell, computed op by op for all of them at once.

    ``ops[name]`` runs op ``name`` for the edges (``members``, positions within the group) that offer it; their
    alpha columns are ``cols[name]``. The output of edge ``e`` is ``sum_k w[e, k] * op_k(x)`` over its active ops.
    """

    def __init__(
        self, space: SearchSpace, cell_type: str, source: int, C: int, stride: int, pool_bn: bool, bias: bool = False
    ) -> None:
        super().__init__()
        self.C, self.stride = C, stride
        self.edge_ids = [e for e, (_, j) in enumerate(space.edges) if j == source]  # alpha rows, by target
        names: dict[str, None] = {}
        for e in self.edge_ids:
            names.update(dict.fromkeys(space.edge_ops(cell_type, e)))
        self.ops = nn.ModuleDict()
        self.members: dict[str, list[int]] = {}
        self.cols: dict[str, list[int]] = {}
        for name in names:
            members = [s for s, e in enumerate(self.edge_ids) if name in space.edge_ops(cell_type, e)]
            self.members[name] = members
            self.cols[name] = [space.edge_ops(cell_type, self.edge_ids[s]).index(name) for s in members]
            self.ops[name] = build_group_op(name, C, len(members), stride, pool_bn, bias)
        self.needs_relu = any(op.relu_first for op in self.ops.values())
        self._channel_index: dict[tuple[str, int, torch.device], Tensor] = {}

    def channel_weights(self, W: Tensor, name: str) -> Tensor:
        """(1, m*C, 1, 1): the weight of op ``name`` on each edge of the group (which must all offer it), repeated over
        the edge's ``C`` channels; one gather from ``W`` (E, K) by an index made once."""
        key = (name, W.shape[1], W.device)
        if key not in self._channel_index:  # a normal tensor even under inference mode (a gather saves its index)
            flat = [self.edge_ids[s] * W.shape[1] + c for s, c in zip(self.members[name], self.cols[name], strict=True)]
            with torch.inference_mode(False), torch.no_grad():
                self._channel_index[key] = torch.tensor(flat, device=W.device).repeat_interleave(self.C)
        return W.reshape(-1).index_select(0, self._channel_index[key]).view(1, -1, 1, 1)

    def forward(self, x: Tensor, x_relu: Tensor | None, ew: EdgeWeights) -> list[Tensor]:
        C, m, W = self.C, len(self.edge_ids), ew.weights
        full: Tensor | None = None  # (B, m*C, H, W): contributions of ops that ran on every edge of the group
        parts: list[list[Tensor]] = [[] for _ in range(m)]
        tiled: dict[int, Tensor] = {}  # the activated input tiled n times, made once for every op that reads it so
        for name, op in self.ops.items():
            members, cols = self.members[name], self.cols[name]
            if ew.active is None:
                if name == "none":
                    continue  # zeros: no effect on the output or on any gradient
                run = list(range(len(members)))
            else:
                run = [i for i, s in enumerate(members) if cols[i] in ew.active[self.edge_ids[s]]]
            if not run:
                continue
            inp = x_relu if op.relu_first else x
            if op.tiles_input and inp is not None and len(run) > 1:
                if len(run) not in tiled:
                    tiled[len(run)] = tile_channels(inp, len(run))
                inp = tiled[len(run)]
            y = op(inp, None if len(run) == len(members) else run)
            slots = [members[i] for i in run]
            if len(slots) == m:  # every edge of the group: one multiply(-add) for all of them
                if y.shape[1] == C and m > 1:
                    y = tile_channels(y, m)
                wv = self.channel_weights(W, name)
                # in place into the sum this group made itself (a product's output, saved by no backward)
                full = y * wv if full is None else full.addcmul_(y, wv)
            else:
                w = W[[self.edge_ids[s] for s in slots], [cols[i] for i in run]]  # (n,)
                per_edge = y.split(C, dim=1) if y.shape[1] != C else [y] * len(slots)
                for i, s in enumerate(slots):
                    parts[s].append(w[i] * per_edge[i])
        outs = []
        per_edge_full = full.split(C, dim=1) if full is not None else None
        for s, e in enumerate(self.edge_ids):
            terms = ([per_edge_full[s]] if per_edge_full is not None else []) + parts[s]
            if not terms:
                terms = [self.zeros(x)]
            out = terms[0]
            for t in terms[1:]:
                out = out + t
            if ew.zero_terms and ew.active is not None:  # ops not run still pass on their (zero) weight
                out = out + (W[e].sum() - W[e, ew.active[e]].sum())
            outs.append(out)
        return outs

    def zeros(self, x: Tensor) -> Tensor:
        """What an edge of this group outputs when no op runs on it: zeros of its output's shape."""
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def single(self, x: Tensor, ew: EdgeWeights) -> list[Tensor | None]:
        """A single path (``ew.single_path``): each edge's one op output, unscaled; None where the edge outputs zeros
        (``none``, or no op). ``x`` is activated only if a sampled op reads it activated."""
        assert ew.active is not None
        C = self.C
        ys: list[Tensor | None] = [None] * len(self.edge_ids)
        x_relu: Tensor | None = None
        for name, op in self.ops.items():
            if name == "none":
                continue
            members, cols = self.members[name], self.cols[name]
            run = [i for i, s in enumerate(members) if cols[i] in ew.active[self.edge_ids[s]]]
            if not run:
                continue
            if op.relu_first and x_relu is None:
                x_relu = F.relu(x)
            y = op(x_relu if op.relu_first else x, None if len(run) == len(members) else run)
            per_edge = y.split(C, dim=1) if y.shape[1] != C else [y] * len(run)  # one backward concatenation
            for k, i in enumerate(run):
                ys[members[i]] = per_edge[k]
        return ys


class SearchCell(nn.Module):
    """A supernet cell: DARTS (two inputs, preprocessed) or NAS-Bench-201 (one input). ``style``: see the module."""

    def __init__(
        self,
        space: SearchSpace,
        cell_type: str,
        C_prev_prev: int,
        C_prev: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
        style: str = "darts",
    ) -> None:
        super().__init__()
        self.cell_type = cell_type
        self.reduction = reduction
        self.darts = space.family.concat_output  # two preprocessed inputs, the nodes concatenated
        self.steps, self.num_inputs = space.steps, space.num_inputs
        bias = style == "autodl"
        if self.darts:
            if reduction_prev:
                self.preprocess0: nn.Module = FactorizedReduce(C_prev_prev, C, affine=False, bias=bias)
            else:
                self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False, bias=bias)
            self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False, bias=bias)
        last = space.num_inputs + space.steps - 1  # the last node feeds no edge
        pool_bn = self.darts and style == "darts"
        self.groups = nn.ModuleList(
            EdgeGroup(space, cell_type, j, C, 2 if reduction and j < space.num_inputs else 1, pool_bn, bias)
            for j in range(last)
        )
        self.incoming = [[e for e, (t, _) in enumerate(space.edges) if t == target] for target in range(last + 1)]
        self.source = [j for _, j in space.edges]

    def forward(
        self, inputs: list[Tensor], ew: EdgeWeights, drop_prob: float = 0.0, grads: PathGrads | None = None
    ) -> Tensor:
        """The cell on ``inputs``. A single path's weights take their gradients through ``grads``, shared by every
        cell of the type in one forward (``ew.path_grads()``; None: made for this cell alone)."""
        if self.darts:
            states = [self.preprocess0(inputs[0]), self.preprocess1(inputs[1])]
        else:
            states = [inputs[0]]
        drop = self.training and drop_prob > 0.0
        if ew.single_path and not drop:
            return self._single_path(states, ew, grads or ew.path_grads())
        edge_out: dict[int, Tensor] = {}

        def run(j: int) -> None:
            group = self.groups[j]
            assert isinstance(group, EdgeGroup)
            x_relu = F.relu(states[j]) if group.needs_relu else None
            outs = group(states[j], x_relu, ew)
            if drop:  # SNAS' search: every edge's output, one mask per edge and sample
                outs = [drop_path(out, drop_prob) for out in outs]
            edge_out.update(zip(group.edge_ids, outs))

        for j in range(self.num_inputs):
            run(j)
        for i in range(self.steps):
            target = self.num_inputs + i
            first, *rest = self.incoming[target]
            node = edge_out[first]
            for k, e in enumerate(rest):  # the first sum in new memory (edge outputs are views of their group's)
                node = node + edge_out[e] if k == 0 else node.add_(edge_out[e])
            states.append(node)
            if target < len(self.groups):
                run(target)
        return self._output(states)

    def _output(self, states: list[Tensor]) -> Tensor:
        if self.darts:
            return torch.cat(states[self.num_inputs :], dim=1)
        return states[-1]

    def _single_path(self, states: list[Tensor], ew: EdgeWeights, grads: PathGrads | None) -> Tensor:
        """The cell on a single path: each node one :func:`node_sum` of its edges' op outputs."""
        ys: dict[int, Tensor | None] = {}

        def run(j: int) -> None:
            group = self.groups[j]
            assert isinstance(group, EdgeGroup)
            ys.update(zip(group.edge_ids, group.single(states[j], ew)))

        for j in range(self.num_inputs):
            run(j)
        for i in range(self.steps):
            target = self.num_inputs + i
            edges = self.incoming[target]
            outs = [ys[e] for e in edges]
            zero = None
            if all(y is None for y in outs):  # every edge outputs zeros: the node's shape from its first source
                group = self.groups[self.source[edges[0]]]
                assert isinstance(group, EdgeGroup)
                zero = group.zeros(states[self.source[edges[0]]])
            states.append(node_sum(outs, edges, grads, zero))
            if target < len(self.groups):
                run(target)
        return self._output(states)


class Supernet(nn.Module):
    """Base of the supernets: alphas, weighting, genotype derivation."""

    space: SearchSpace
    weighting: str  # a name of evoray.nn.weighting.WEIGHTINGS
    tau: float  # temperature of the Gumbel modes
    cells: nn.ModuleList
    drop_path_prob: float = 0.0  # per-sample drop of every edge's output while training (SNAS: 0.3)

    def _init_alphas(self, init_std: float) -> None:
        self.alphas = nn.ParameterDict(
            {ct: nn.Parameter(init_std * torch.randn(*self.space.alpha_shape(ct))) for ct in self.space.cell_types}
        )
        for ct in self.space.cell_types:
            self.register_buffer(f"wiped_{ct}", torch.zeros(*self.space.alpha_shape(ct), dtype=torch.bool))

    def wiped(self, cell_type: str) -> Tensor:
        buf = getattr(self, f"wiped_{cell_type}")
        assert isinstance(buf, Tensor)
        return buf

    def edge_weights(self) -> dict[str, EdgeWeights]:
        """The current edge weights of every cell type under ``self.weighting``."""
        mode = WEIGHTINGS.get(self.weighting)
        return {
            ct: mode(alpha, WeightingContext(self.space, ct, self.tau, self.wiped(ct)))
            for ct, alpha in self.alphas.items()
        }

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    def genotype(self, method: str | None = None) -> Genotype:
        """Derive the genotype from ``softmax(alphas)``; wiped-out experts get the weight -1, below every living one,
        so they are never chosen while an edge has a living op (see ``derive_cell``)."""
        weights = {}
        for ct, alpha in self.alphas.items():
            wiped = self.wiped(ct)
            a = alpha.detach().float().masked_fill(wiped, float("-inf"))
            weights[ct] = F.softmax(a, dim=-1).masked_fill(wiped, -1.0).cpu().numpy()
        return derive_genotype(self.space, weights, method)


class DartsSupernet(Supernet):
    """The DARTS search network (Liu et al., 2019, https://arxiv.org/abs/1806.09055) over any DARTS-family space.

    >>> from evoray.spaces import get_space
    >>> net = DartsSupernet(get_space("darts"), C=8, layers=5)
    >>> net(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        space: SearchSpace,
        C: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        weighting: str = "softmax",
        alpha_init_std: float = 1e-3,
        style: str = "darts",
    ) -> None:
        super().__init__()
        assert space.family.num_inputs == 2, f"DartsSupernet needs a darts-family space, got {space.name}"
        assert style in STYLES, f"style {style!r} is not one of {STYLES}"
        WEIGHTINGS.get(weighting)
        self.space, self.weighting, self.tau, self.style = space, weighting, 1.0, style
        multiplier = space.steps
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            ct = "reduce" if reduction else "normal"
            self.cells.append(SearchCell(space, ct, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, style))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        # AutoDL's NASNet-space supernet (GDAS) ends in BN-ReLU before the pool; DARTS' pools the last cell directly
        self.lastact: nn.Module = nn.Sequential(BatchNorm2d(C_prev), nn.ReLU()) if style == "autodl" else nn.Identity()
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_alphas(alpha_init_std)

    def forward(self, x: Tensor, weights: dict[str, EdgeWeights] | None = None) -> Tensor:
        weights = weights or self.edge_weights()
        grads = {ct: ew.path_grads() for ct, ew in weights.items()}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            assert isinstance(cell, SearchCell)
            ct = cell.cell_type
            s0, s1 = s1, cell([s0, s1], weights[ct], self.drop_path_prob, grads[ct])
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.lastact(s1), 1), 1))


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block: ReLUConvBN 3x3 (stride 2), ReLUConvBN 3x3, shortcut avgpool(2) + 1x1 conv."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class NB201Supernet(Supernet):
    """The NAS-Bench-201 macro network with a mixed cell (Dong & Yang, 2020, https://arxiv.org/abs/2001.00326).

    Stem conv to C, N cells, a residual reduction block to 2C, N cells, one to 4C, N cells, BN-ReLU, pool, linear.
    """

    def __init__(
        self,
        space: SearchSpace,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        in_channels: int = 3,
        weighting: str = "softmax",
        alpha_init_std: float = 1e-3,
        style: str = "autodl",
    ) -> None:
        super().__init__()
        assert space.family.num_inputs == 1, f"NB201Supernet needs the nb201 space, got {space.name}"
        assert style in STYLES, f"style {style!r} is not one of {STYLES}"
        WEIGHTINGS.get(weighting)
        self.space, self.weighting, self.tau, self.style = space, weighting, 1.0, style
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), BatchNorm2d(C))
        layers: list[nn.Module] = []
        C_prev = C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage > 0:
                layers.append(ResNetBasicBlock(C_prev, C_curr))
            layers.extend(SearchCell(space, "cell", 0, C_curr, C_curr, False, False, style) for _ in range(N))
            C_prev = C_curr
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_alphas(alpha_init_std)

    def forward(self, x: Tensor, weights: dict[str, EdgeWeights] | None = None) -> Tensor:
        weights = weights or self.edge_weights()
        ew, grads = weights["cell"], weights["cell"].path_grads()
        h = self.stem(x)
        for layer in self.cells:
            h = layer([h], ew, self.drop_path_prob, grads) if isinstance(layer, SearchCell) else layer(h)
        h = self.lastact(h)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


@dataclass
class SupernetConfig:
    """The one-shot supernet of a search: its space, size and op style."""

    space: str = "darts"  # a registered search space
    init_channels: int = field(default=16, metadata={"min": 2})  # C of the first cells (EvNAS: 16)
    layers: int = field(default=8, metadata={"min": 1})  # cells (DARTS family); cells per stage N (nb201, 5)
    # search ops and cells: darts (BN after pools, no conv bias) or autodl (AutoDL-Projects: no BN after pools, conv
    # bias where BN is not affine, BN-ReLU before the pool); "" = the space's original: darts for the DARTS family,
    # autodl for nb201
    style: str = field(default="", metadata={"choices": ("", *STYLES)})

    def validate(self) -> None:
        if self.space not in SPACES:
            raise ConfigError(f"unknown search space {self.space!r}; valid: {', '.join(SPACES.names())}")

    def resolved_style(self) -> str:
        return self.style or get_space(self.space).family.style


def build_supernet(
    cfg: SupernetConfig,
    num_classes: int,
    in_channels: int,
    weighting: str = "decoded",
    alpha_init_std: float = 1e-3,
) -> Supernet:
    """The supernet of ``cfg``'s space (DARTS family or NB201) with the weighting mode of its searcher."""
    space = get_space(cfg.space)
    cls = DartsSupernet if space.family.num_inputs == 2 else NB201Supernet
    return cls(
        space,
        cfg.init_channels,
        cfg.layers,
        num_classes=num_classes,
        in_channels=in_channels,
        weighting=weighting,
        alpha_init_std=alpha_init_std,
        style=cfg.resolved_style(),
    )
