"""Supernet facts: the grouped edges equal the per-edge DARTS computation; each weighting mode does what it says."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evoray.nn import supernet as supernet_module
from evoray.nn.grouped import GroupOp
from evoray.nn.ops import OPS
from evoray.nn.supernet import DartsSupernet, EdgeGroup, NB201Supernet, SearchCell, Supernet
from evoray.nn.weighting import EdgeWeights, WeightingContext, gumbel_soft_weights, random_path
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


def test_a_supernet_first_evaluated_in_inference_mode_then_trains() -> None:
    """What a forward under inference mode leaves behind (the edge groups' weight indices) serves a later training
    forward: its gradients are the per-edge reference's, and the weights' gradients reach every op's parameters."""
    torch.manual_seed(1)
    net = DartsSupernet(get_space("darts"), C=4, layers=3)
    x = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        first = net(x)
    out = net(x)
    torch.testing.assert_close(out, first)
    ref = _reference_forward(net, x)
    g_out = torch.autograd.grad(out.square().sum(), net.arch_parameters(), retain_graph=True)
    g_ref = torch.autograd.grad(ref.square().sum(), net.arch_parameters())
    for ga, gb in zip(g_out, g_ref):
        torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-6)
    out.square().sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "alphas" not in n)


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


def test_snas_gumbel_soft_weights() -> None:
    """gumbel-soft: ``softmax((alpha + G) / tau)`` with the Gumbel noise ``-log(Exponential(1))`` drawn afresh each
    forward; every op runs."""
    space = get_space("darts")
    alpha = torch.randn(14, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ctx = WeightingContext(space, "normal", tau=0.3)
    torch.manual_seed(3)
    ew = gumbel_soft_weights(alpha, ctx)
    torch.manual_seed(3)
    g = -torch.empty(14, 8).exponential_().log()
    assert ew.active is None and not ew.single_path
    torch.testing.assert_close(ew.weights, F.softmax((alpha + g) / 0.3, dim=-1))
    assert not torch.allclose(gumbel_soft_weights(alpha, ctx).weights, ew.weights)


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_random_path_draws_every_op_of_every_edge_alike(space_name: str) -> None:
    """RSPS' random path: one op per edge, weight one, each of the edge's ops about equally often."""
    space = get_space(space_name)
    ct = space.cell_types[0]
    torch.manual_seed(0)
    counts = torch.zeros(space.alpha_shape(ct))
    for _ in range(400):
        ew = random_path(space, ct)
        assert ew.active is not None and ew.single_path and all(len(a) == 1 for a in ew.active)
        assert torch.equal(ew.weights.sum(-1), torch.ones(space.num_edges))
        assert [a[0] for a in ew.active] == ew.weights.argmax(-1).tolist()
        counts += ew.weights
    expected = 400 / counts.shape[1]
    assert float(counts.min()) > 0.5 * expected and float(counts.max()) < 1.5 * expected, counts


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
    with torch.no_grad():
        net.alphas["normal"][:, 4:] += 5.0  # the wiped experts lead: only the wipe-out keeps them from the genotype
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
    assert {op for node in net.genotype().normal.nodes for op, _ in node} <= {
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    }
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


# ---------------------------------------------------------------------------------------------------------------
# Each grouped op, for any subset of its edges (a GDAS sample), against one edge written out in plain PyTorch ops
# that slice the stacked parameters: outputs, input and parameter gradients, running statistics, then evaluation.


def _plain_edge(op: Any, name: str, x: torch.Tensor, s: int, stats: dict, training: bool) -> torch.Tensor:
    """Edge ``s`` of grouped op ``name`` on ``x`` with F.conv2d, F.batch_norm and the pools; ``stats[bn]`` holds this
    edge's own (running_mean, running_var) of each BatchNorm of the op."""
    C = op.C
    params = dict(op.named_parameters())

    def rows(pname: str, width: int = C) -> torch.Tensor:
        return params[pname][s * width : (s + 1) * width]

    def bias(pname: str, width: int = C) -> torch.Tensor | None:
        return rows(pname, width) if pname in params else None

    def bn(h: torch.Tensor, key: str) -> torch.Tensor:
        mean, var = stats[key]
        return F.batch_norm(h, mean, var, None, None, training, 0.1, 1e-5)

    if name.startswith("sep_conv_"):
        h = F.conv2d(x, rows("dw1"), stride=op.stride, padding=op.k // 2, groups=C)
        h = bn(F.conv2d(h, rows("pw1"), bias("pw1_bias")), "bn1")
        h = F.conv2d(F.relu(h), rows("dw2"), padding=op.k // 2, groups=C)
        return bn(F.conv2d(h, rows("pw2"), bias("pw2_bias")), "bn2")
    if name.startswith("dil_conv_"):
        h = F.conv2d(x, rows("dw"), stride=op.stride, padding=op.pad, dilation=2, groups=C)
        return bn(F.conv2d(h, rows("pw"), bias("pw_bias")), "bn")
    if name.startswith("nor_conv_"):
        return bn(F.conv2d(x, rows("weight"), bias("bias"), stride=op.stride, padding=op.pad), "bn")
    if name == "skip_connect":  # stride 2: factorized reduce
        half = C // 2
        a = F.conv2d(x, rows("conv_1", half), bias("conv_1_bias", half), stride=2)
        b = F.conv2d(x[:, :, 1:, 1:], rows("conv_2", half), bias("conv_2_bias", half), stride=2)
        return bn(torch.cat([a, b], dim=1), "bn")
    stride = int(op.pool.stride)
    if name == "max_pool_3x3":
        h = F.max_pool2d(x, 3, stride, 1)
    else:
        h = F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    return bn(h, "bn") if op.bn is not None else h


def _running(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None
    return bn.running_mean, bn.running_var


_GROUPED = [
    (name, stride)
    for name in ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "nor_conv_1x1", "nor_conv_3x3")
    for stride in (1, 2)
] + [("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 2), ("avg_pool_3x3", 1), ("avg_pool_3x3", 2)]


@pytest.mark.parametrize(("name", "stride"), _GROUPED)
def test_grouped_op_on_any_edges_equals_each_edge_written_out(name: str, stride: int) -> None:
    """A grouped op asked for some of its edges (``slots``: all, one, consecutive or not) computes what each edge's
    own plain ops compute from its rows of the stacked parameters: in training the outputs, the input and parameter
    gradients and each requested edge's running statistics (the others untouched), in evaluation (BatchNorm folded
    into the convolution; running variances near eps) the outputs; NCHW, and channels-last on 2 threads (the matrix
    BatchNorm, the polyphase dilated conv, the box-sum pool)."""
    from evoray.nn.grouped import build_group_op
    from evoray.runtime import torch_threads

    C, m = 4, 3
    for bias, slots, channels_last in [
        (False, None, False),
        (True, [1], False),
        (False, [0, 2], True),
        (True, [1, 2], True),
        (True, None, True),
        (False, [2], True),
    ]:
        torch.manual_seed(0)
        op = build_group_op(name, C, m, stride, pool_bn=True, bias=bias).train()
        running = {n: _running(b) for n, b in op.named_modules() if isinstance(b, nn.BatchNorm2d)}
        with torch.no_grad():
            for mean, var in running.values():
                mean.uniform_(-1, 1)
                var.uniform_(0.5, 2)
        before = {n: (mean.clone(), var.clone()) for n, (mean, var) in running.items()}
        chosen = list(range(m)) if slots is None else slots
        stats = {
            s: {
                n: (mean[s * C : (s + 1) * C].clone(), var[s * C : (s + 1) * C].clone())
                for n, (mean, var) in before.items()
            }
            for s in range(m)
        }
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        with torch_threads(2 if channels_last else 1):
            for step in range(2):
                x = (torch.randn(2, C, 8, 8) * 2 + step).contiguous(memory_format=fmt).requires_grad_(True)
                xr = x.detach().contiguous().requires_grad_(True)
                out = op(x, slots)
                per_edge = out.split(C, dim=1) if out.shape[1] != C else [out] * len(chosen)
                assert len(per_edge) == len(chosen)
                refs = [_plain_edge(op, name, xr, s, stats[s], True) for s in chosen]
                for got, want in zip(per_edge, refs, strict=True):
                    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
                g = torch.randn_like(torch.cat(refs, dim=1))
                g_out = g if out.shape[1] != C else g.view(2, len(chosen), C, *g.shape[2:]).sum(1)  # a shared output
                names = [n for n, _ in op.named_parameters()]
                params = list(op.parameters())
                got_g = torch.autograd.grad(out, [x, *params], g_out)
                want_g = torch.autograd.grad(torch.cat(refs, dim=1), [xr, *params], g, allow_unused=True)
                for pname, a, b in zip(["input", *names], got_g, want_g, strict=True):
                    b = torch.zeros_like(a) if b is None else b
                    atol = 1e-4 if pname.endswith("bias") else 1e-5  # before a batch-statistics BN: zero, and noise
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=atol, msg=f"{name} {slots}: {pname}")
            for n, (mean, var) in running.items():
                for s in range(m):
                    want_mean, want_var = stats[s][n] if s in chosen else (r[s * C : (s + 1) * C] for r in before[n])
                    torch.testing.assert_close(mean[s * C : (s + 1) * C], want_mean, msg=f"{n} {s}")
                    torch.testing.assert_close(var[s * C : (s + 1) * C], want_var, msg=f"{n} {s}")
            op.eval()
            with torch.no_grad():
                for n, (mean, var) in running.items():  # variances near eps, where a misplaced eps shows
                    var.uniform_(1e-5, 1e-4)
                    for s in range(m):
                        stats[s][n] = (mean[s * C : (s + 1) * C], var[s * C : (s + 1) * C])
                x = torch.randn(2, C, 8, 8).contiguous(memory_format=fmt)
                out = op(x, slots)
                per_edge = out.split(C, dim=1) if out.shape[1] != C else [out] * len(chosen)
                for got, s in zip(per_edge, chosen, strict=True):
                    want = _plain_edge(op, name, x.contiguous(), s, stats[s], False)
                    err = float((got - want).norm())  # scales of up to 1/sqrt(eps): rounding relative to the whole
                    assert err <= 1e-5 * float(want.norm()), f"{name} {slots} edge {s}: difference {err:.2e}"


@pytest.mark.parametrize("path", ["softmax", "gumbel-hard", "random"])
def test_drop_path_drops_every_edge_in_training_only(path: str, monkeypatch) -> None:
    """SNAS' drop path: in training every edge's output goes through ``drop_path`` once, single paths too (here it
    zeroes them all, so the cell outputs zeros); in evaluation nothing is dropped."""
    space = get_space("darts")
    torch.manual_seed(0)
    net = DartsSupernet(space, C=4, layers=3, weighting="softmax" if path == "softmax" else "gumbel-hard")
    ew = random_path(space, "normal") if path == "random" else net.edge_weights()["normal"]
    calls: list[float] = []

    def dropped(x: torch.Tensor, p: float) -> torch.Tensor:
        calls.append(p)
        return x * 0.0

    monkeypatch.setattr(supernet_module, "drop_path", dropped)
    cell = net.cells[0]
    assert isinstance(cell, SearchCell) and cell.cell_type == "normal"
    s = net.stem(torch.randn(2, 3, 8, 8))
    out = cell([s, s], ew, 0.3)
    assert calls == [0.3] * space.num_edges and out.shape == (2, 16, 8, 8) and not out.any()
    calls.clear()
    cell.eval()
    with torch.no_grad():
        torch.testing.assert_close(cell([s, s], ew, 0.3), cell([s, s], ew, 0.0), rtol=0, atol=0)
    assert calls == []
