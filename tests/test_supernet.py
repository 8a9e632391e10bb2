"""Supernet facts: the grouped edges equal the per-edge DARTS computation; each weighting mode does what it says."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evoray.nn.grouped import GroupOp
from evoray.nn.ops import OPS
from evoray.nn.supernet import DartsSupernet, EdgeGroup, NB201Supernet, SearchCell, Supernet
from evoray.nn.weighting import EdgeWeights
from evoray.spaces import get_space

# ---------------------------------------------------------------------------------------------------------------
# A per-edge reference: one ops.py module per (edge, op), as the original DARTS MixedOp, sharing the grouped
# parameters edge by edge. Its output must equal the grouped supernet's.


def _per_edge_op(group: EdgeGroup, name: str, member: int, C: int, pool_bn: bool) -> nn.Module:
    gop = group.ops[name]
    assert isinstance(gop, GroupOp)
    op = OPS.get(name)(C, group.stride, False)
    C_half = C // 2
    with torch.no_grad():
        for pname, param in op.named_parameters():
            stacked = dict(gop.named_parameters())[_grouped_name(gop, pname)]
            rows = C_half if pname.startswith("conv_") else C
            param.copy_(stacked[member * rows : (member + 1) * rows])
    if pool_bn and "pool" in name:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op


def _grouped_name(gop: GroupOp, pname: str) -> str:
    table = {
        "dw1.weight": "dw1",
        "pw1.weight": "pw1",
        "dw2.weight": "dw2",
        "pw2.weight": "pw2",
        "dw.weight": "dw",
        "pw.weight": "pw",
        "conv_1.weight": "conv_1",
        "conv_2.weight": "conv_2",
        "conv.weight": "weight",
    }
    return table[pname]


def _edge_groups(cell: nn.Module) -> list[EdgeGroup]:
    """A search cell's edge groups, typed (an nn.ModuleList yields plain Modules)."""
    assert isinstance(cell, SearchCell)
    groups = [g for g in cell.groups if isinstance(g, EdgeGroup)]
    assert len(groups) == len(cell.groups)
    return groups


def _reference_cell(cell: SearchCell, inputs: list[torch.Tensor], ew: EdgeWeights, space, C: int) -> torch.Tensor:
    if cell.darts:
        states = [cell.preprocess0(inputs[0]), cell.preprocess1(inputs[1])]
    else:
        states = [inputs[0]]
    ops = {}
    for group in _edge_groups(cell):
        for name, members in group.members.items():
            for i, s in enumerate(members):
                e = group.edge_ids[s]
                ops[(e, group.cols[name][i])] = _per_edge_op(group, name, i, C, cell.darts)
    e = 0
    for _ in range(cell.steps):
        node = 0
        for j in range(len(states)):
            for k in range(len(space.edge_ops(cell.cell_type, e))):
                node = node + ew.weights[e, k] * ops[(e, k)](states[j])
            e += 1
        states.append(node)
    return torch.cat(states[2:], dim=1) if cell.darts else states[-1]


def _reference_forward(net: DartsSupernet, x: torch.Tensor) -> torch.Tensor:
    weights = net.edge_weights()
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        assert isinstance(cell, SearchCell)
        C = _edge_groups(cell)[0].C
        s0, s1 = s1, _reference_cell(cell, [s0, s1], weights[cell.cell_type], net.space, C)
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))


@pytest.mark.parametrize("space_name", ["darts", "rdarts-s1", "conas-5x5"])
def test_grouped_supernet_equals_per_edge_reference(space_name: str) -> None:
    torch.manual_seed(1)
    net = DartsSupernet(get_space(space_name), C=4, layers=3)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()  # distinct weights so that a mix-up of edges or ops shows
    x = torch.randn(3, 3, 8, 8)
    out = net(x)
    ref = _reference_forward(net, x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    g_out = torch.autograd.grad(out.square().sum(), net.arch_parameters())
    g_ref = torch.autograd.grad(ref.square().sum(), net.arch_parameters())
    for ga, gb in zip(g_out, g_ref):
        torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-6)


def test_nb201_supernet_equals_per_edge_reference() -> None:
    torch.manual_seed(2)
    space = get_space("nb201")
    net = NB201Supernet(space, C=4, N=1)
    with torch.no_grad():
        net.alphas["cell"].normal_()
    x = torch.randn(3, 3, 8, 8)
    weights = net.edge_weights()["cell"]
    cell = net.cells[0]
    assert isinstance(cell, SearchCell)
    h = net.stem(x)
    torch.testing.assert_close(cell([h], weights), _reference_cell(cell, [h], weights, space, 4), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------


def _count_op_runs(net: Supernet) -> tuple[Counter, list]:
    """Hooks counting, per (cell index, edge), how many op evaluations ran."""
    runs: Counter = Counter()
    handles = []
    for c, cell in enumerate(net.cells):
        if not isinstance(cell, SearchCell):
            continue
        for group in _edge_groups(cell):
            for name, op in group.ops.items():
                members = group.members[name]

                def hook(module, args, output, c=c, group=group, members=members):
                    slots = args[1] if len(args) > 1 else None
                    chosen = range(len(members)) if slots is None else slots
                    for i in chosen:
                        runs[(c, group.edge_ids[members[i]])] += 1

                handles.append(op.register_forward_hook(hook))
    return runs, handles


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_gdas_runs_one_op_per_edge_and_every_alpha_gets_a_gradient(space_name: str) -> None:
    space = get_space(space_name)
    if space.family.name == "nb201":
        net: Supernet = NB201Supernet(space, C=4, N=1, weighting="gumbel-hard")
    else:
        net = DartsSupernet(space, C=4, layers=3, weighting="gumbel-hard")
    net.tau = 10.0
    first = space.cell_types[0]
    with torch.no_grad():
        net.alphas[first][0, space.edge_ops(first, 0).index("none")] = 30.0  # edge 0 samples `none`
        if space.family.name == "nb201":  # the other edges pool: a 1x1 conv and BN would cancel the zero terms
            net.alphas[first][1:, space.edge_ops(first, 1).index("avg_pool_3x3")] = 30.0
    weights = net.edge_weights()
    first_active = weights[first].active
    assert first_active is not None and first_active[0] == [0]
    runs, handles = _count_op_runs(net)
    out = net(torch.randn(2, 3, 8, 8), weights)

    def sampled(c: int, e: int) -> str:
        cell = net.cells[c]
        assert isinstance(cell, SearchCell)
        active = weights[cell.cell_type].active
        assert active is not None
        return space.edge_ops(cell.cell_type, e)[active[e][0]]

    cells = [c for c, cell in enumerate(net.cells) if isinstance(cell, SearchCell)]
    # every edge runs exactly its sampled op; a sampled `none` outputs zeros without running an op
    assert set(runs) == {(c, e) for c in cells for e in range(space.num_edges) if sampled(c, e) != "none"}
    assert all(sampled(c, 0) == "none" for c in cells if net.cells[c].cell_type == first)
    assert set(runs.values()) == {1}, "every edge must run exactly one op"
    out.logsumexp(1).sum().backward()
    for ct, alpha in net.alphas.items():
        assert alpha.grad is not None
        sampled_none = [space.edge_ops(ct, e)[k] == "none" for e, (k,) in enumerate(weights[ct].active or [])]
        for e, row in enumerate(alpha.grad):
            if sampled_none[e] and space.family.name == "darts":
                # the original's DARTS-space cells output w[k] * op_k(x) only: a `none` sample passes no gradient
                assert (row == 0).all()
            else:  # NB201 cells add the other ops' zero-valued weights, so even a `none` sample passes one
                assert (row != 0).all(), "every logit of the edge gets a gradient"
    for h in handles:
        h.remove()


def test_gdas_weights_are_one_hot_forward_and_soft_backward() -> None:
    space = get_space("darts")
    net = DartsSupernet(space, C=4, layers=3, weighting="gumbel-hard")
    ew = net.edge_weights()["normal"]
    assert ew.active is not None and all(len(a) == 1 for a in ew.active)
    hot = torch.zeros_like(ew.weights)
    for e, (k,) in enumerate(ew.active):
        hot[e, k] = 1.0
    torch.testing.assert_close(ew.weights.detach(), hot, atol=1e-6, rtol=0)
    # backward: the straight-through gradient of sum(c * w) is that of the soft sample p = softmax((log_softmax(a) +
    # g) / tau), worked out by hand: p * (c - <p, c>) / tau per edge; and the hard sample is p's argmax
    from evoray.nn.weighting import WeightingContext, gumbel_hard_weights

    alpha = torch.randn(14, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    tau, c = 0.7, torch.randn(14, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    ew = gumbel_hard_weights(alpha, WeightingContext(space, "normal", tau))
    torch.manual_seed(3)  # the same Gumbel draw: -log of Exponential(1) samples
    g = -torch.empty(14, 8).exponential_().log()
    p = F.softmax((F.log_softmax(alpha.detach(), dim=-1) + g) / tau, dim=-1)
    assert ew.active == [[int(k)] for k in p.argmax(-1)]
    (grad,) = torch.autograd.grad((ew.weights * c).sum(), alpha)
    torch.testing.assert_close(grad, p * (c - (p * c).sum(-1, keepdim=True)) / tau, atol=1e-6, rtol=1e-5)
    assert grad.abs().sum() > 0


def test_softmax_mode_runs_every_op_but_none() -> None:
    net = DartsSupernet(get_space("darts"), C=4, layers=3)
    runs, handles = _count_op_runs(net)
    net(torch.randn(2, 3, 8, 8))
    assert set(runs.values()) == {7}  # 8 ops, `none` skipped
    for h in handles:
        h.remove()


def test_evnas_decoded_weights() -> None:
    space = get_space("darts")
    net = DartsSupernet(space, C=4, layers=3, weighting="decoded")
    with torch.no_grad():
        for a in net.arch_parameters():
            a.uniform_()  # an EvNAS individual: U(0, 1)
    genotype = net.genotype()
    e_ = math.e
    for ct in space.cell_types:
        w = net.edge_weights()[ct].weights
        chosen = {
            (space.edge_index(2 + i, j), space.edge_ops(ct, 0).index(op))
            for i, node in enumerate(genotype.cell(ct).nodes)
            for op, j in node
        }
        chosen_edges = {e for e, _ in chosen}
        assert len(chosen) == 8
        for e in range(14):
            for k in range(8):
                if (e, k) in chosen:
                    expected = e_ / (e_ + 7)
                elif e in chosen_edges:
                    expected = 1 / (e_ + 7)
                else:
                    expected = 1 / 8
                assert w[e, k].item() == pytest.approx(expected, rel=1e-6)
    assert e_ / (e_ + 7) == pytest.approx(0.2797, abs=1e-4) and 1 / (e_ + 7) == pytest.approx(0.1029, abs=1e-4)


def test_expert_mode_skips_wiped_experts() -> None:
    space = get_space("darts")
    net = DartsSupernet(space, C=4, layers=3, weighting="expert")
    net.wiped("normal")[:, 4:] = True  # wipe out every conv expert of the normal cells
    runs, handles = _count_op_runs(net)
    out = net(torch.randn(2, 3, 8, 8))
    w = net.edge_weights()["normal"].weights
    assert (w[:, 4:] == 0).all() and torch.allclose(w.sum(1), torch.ones(14))
    normal_cells = [c for c, cell in enumerate(net.cells) if cell.cell_type == "normal"]
    for c in normal_cells:
        assert all(runs[(c, e)] == 3 for e in range(14))  # max pool, avg pool, skip
    out.sum().backward()
    assert net.alphas["normal"].grad is not None
    assert (net.alphas["normal"].grad[:, 4:] == 0).all()
    assert "sep_conv" not in str(net.genotype().normal)
    for h in handles:
        h.remove()


def test_pool_bn_keeps_per_edge_running_statistics() -> None:
    net = DartsSupernet(get_space("darts"), C=4, layers=3, weighting="gumbel-hard")
    torch.manual_seed(0)
    weights = net.edge_weights()
    before = {n: b.clone() for n, b in net.named_buffers() if "running_mean" in n}
    net(torch.randn(4, 3, 8, 8), weights)
    # each edge's rows of a pool's BatchNorm move exactly when that edge sampled that pool
    seen: Counter[bool] = Counter()
    for ci, cell in enumerate(net.cells):
        assert isinstance(cell, SearchCell)
        ew = weights[cell.cell_type]
        assert ew.active is not None
        for gi, group in enumerate(_edge_groups(cell)):
            for name in ("max_pool_3x3", "avg_pool_3x3"):
                key = f"cells.{ci}.groups.{gi}.ops.{name}.bn.running_mean"
                now, old, C = dict(net.named_buffers())[key], before[key], group.C
                for s, col in zip(group.members[name], group.cols[name], strict=True):
                    sampled = col in ew.active[group.edge_ids[s]]
                    moved = not torch.equal(now[s * C : (s + 1) * C], old[s * C : (s + 1) * C])
                    assert moved == sampled, (key, s)
                    seen[sampled] += 1
    assert seen[True] > 0 and seen[False] > 0
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(4, 3, 8, 8))
    assert torch.isfinite(out).all()
