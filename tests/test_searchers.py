"""The gradient searchers without Ray: DARTS' unrolled gradient, GDAS' sampling, XNAS' wipeout and rewards, SNAS'
resource penalty, and state save/restore of every registered searcher."""

from __future__ import annotations

import io
import math
import pickle
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoray.cli import default_config_path
from evoray.commands.search import shadow_notes
from evoray.config import config_from_dict, load_config
from evoray.errors import ConfigError
from evoray.nn.supernet import DartsSupernet, EdgeGroup, SearchCell, Supernet
from evoray.optim import step_schedule_first
from evoray.searchers import SEARCHERS, SearchConfig, SearchSettings
from evoray.searchers.base import lr_now
from evoray.searchers.experiment import ExperimentConfig, expand, shadowed_base_key, trial_label
from evoray.searchers.methods.darts import unrolled_arch_grad
from evoray.searchers.methods.snas import SNAS
from evoray.searchers.methods.snas_resources import cell_costs, cell_type_penalty, concrete_log_density, op_cost
from evoray.searchers.methods.xnas import XNAS, theory_eta, wipeout
from evoray.searchers.results import best_trial, format_table, trial_summary
from evoray.spaces import get_space

CPU = torch.device("cpu")


def tiny(searcher: str, **sections: object) -> SearchSettings:
    data: dict[str, Any] = {
        "searcher": searcher,
        "epochs": 3,
        "supernet": {"space": "darts", "init_channels": 4, "layers": 3},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 160},
        "arch": {"lr": 3e-3},
    }
    data.update(sections)
    return config_from_dict(SearchConfig, data)


def test_registry_is_the_five_methods() -> None:
    assert sorted(SEARCHERS.names()) == ["darts", "gdas", "rsps", "snas", "xnas"]


# -- DARTS ------------------------------------------------------------------------------------------------------


def _unrolled_objective(net, arch, train, valid, xi, momentum, wd, buffers) -> float:
    """L_val(w - xi (m buf + grad_w L_train(w, a) + wd w), a), computed directly."""
    names = [n for n, p in net.named_parameters() if all(p is not a for a in arch)]
    weights = [p for n, p in net.named_parameters() if n in names]
    grads = torch.autograd.grad(F.cross_entropy(net(train[0]), train[1]), weights)
    saved = [w.detach().clone() for w in weights]
    with torch.no_grad():
        for n, w, g in zip(names, weights, grads):
            w.sub_(xi * (momentum * buffers[n] + g + wd * w))
        value = float(F.cross_entropy(net(valid[0]), valid[1]))
        for w, s in zip(weights, saved):
            w.copy_(s)
    return value


def _smooth_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return F.softplus(x, beta=4.0)


def test_second_order_gradient_matches_finite_differences(monkeypatch) -> None:
    """On a tiny supernet made smooth (softplus for ReLU, a space without max-pooling), so that finite differences
    of the unrolled objective converge."""
    monkeypatch.setattr(F, "relu", _smooth_relu)
    torch.manual_seed(0)
    net = DartsSupernet(get_space("rdarts-s3"), C=4, layers=3, num_classes=3, in_channels=2, alpha_init_std=0.5)
    net = net.double()
    arch = net.arch_parameters()
    train = (torch.randn(6, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,)))
    valid = (torch.randn(6, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,)))
    buffers = {n: 0.1 * torch.randn_like(p) for n, p in net.named_parameters() if all(p is not a for a in arch)}
    xi, momentum, wd = 0.1, 0.9, 3e-4
    grads = unrolled_arch_grad(net, arch, train, valid, xi, momentum, wd, buffers)
    first = torch.autograd.grad(
        F.cross_entropy(
            torch.func.functional_call(net, dict(net.named_parameters()), (valid[0],)), valid[1]
        ),  # first order at w (not w'): a different number
        arch,
    )
    h = 1e-5
    errors, naive_errors = [], []
    for _ in range(3):
        d = [torch.randn_like(a) for a in arch]
        with torch.no_grad():
            for a, v in zip(arch, d):
                a.add_(h * v)
        f_plus = _unrolled_objective(net, arch, train, valid, xi, momentum, wd, buffers)
        with torch.no_grad():
            for a, v in zip(arch, d):
                a.sub_(2 * h * v)
        f_minus = _unrolled_objective(net, arch, train, valid, xi, momentum, wd, buffers)
        with torch.no_grad():
            for a, v in zip(arch, d):
                a.add_(h * v)
        numeric = (f_plus - f_minus) / (2 * h)
        scale = sum(float((g.abs() * v.abs()).sum()) for g, v in zip(grads, d))
        errors.append(abs(sum(float((g * v).sum()) for g, v in zip(grads, d)) - numeric) / scale)
        naive_errors.append(abs(sum(float((g * v).sum()) for g, v in zip(first, d)) - numeric) / scale)
    assert max(errors) < 2e-3, errors
    assert min(naive_errors) > 10 * max(errors), "the check must tell the second order from the first"


@pytest.mark.parametrize("order", [1, 2])
def test_darts_orders_step_the_alphas(order: int, monkeypatch) -> None:
    """Before the weights (DARTS' order), one Adam step of the alphas on: first order, the validation loss's gradient
    at the current weights; second order, ``unrolled_arch_grad`` at the weight step's own rate, momentum and weight
    decay with its momentum buffers (the gradient's value is the finite-difference test's)."""
    import copy

    from evoray.searchers.methods import darts

    s = SEARCHERS.get("darts")(tiny("darts", darts={"order": order}), CPU)
    assert s.data.valid is not None and s.a_optimizer is not None
    (x, y), (xv, yv) = next(iter(s.data.train)), next(iter(s.data.valid))
    (x, y), (xv, yv) = s.to_device(x, y), s.to_device(xv, yv)
    unrolled: list[dict] = []
    real = darts.unrolled_arch_grad

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        grads = real(*args, **kwargs)
        momentum = {n: b.clone() for n, b in args[7].items()}  # as passed: the weight step then updates them
        unrolled.append({"args": args, "momentum": momentum, "grads": [g.detach().clone() for g in grads]})
        return grads

    monkeypatch.setattr(darts, "unrolled_arch_grad", spy)
    step_schedule_first(s.scheduler)  # an epoch whose rate is not optim.lr: xi is the current one
    assert lr_now(s) < s.cfg.optim.lr
    for step in range(2):  # the second step unrolls with the first's momentum buffers
        arch = s.net.arch_parameters()
        before, adam_state = [a.detach().clone() for a in arch], copy.deepcopy(s.a_optimizer.state_dict())
        expected = [g.detach() for g in torch.autograd.grad(F.cross_entropy(s.forward(xv), yv), arch)]
        lr, o = lr_now(s), s.cfg.optim
        state = s.w_optimizer.state
        held = {n: state[p]["momentum_buffer"].clone() for n, p in s.net.named_parameters() if p in state}
        unrolled.clear()
        s.step(x, y, xv, yv)
        if order == 2:
            assert len(unrolled) == 1
            xi, momentum, weight_decay, buffers = unrolled[0]["args"][4:8]
            assert (xi, momentum, weight_decay) == (lr, o.momentum, o.weight_decay)
            assert (len(buffers) > 0) == (step > 0)
            passed = unrolled[0]["momentum"]  # the optimiser's momentum buffers, every weight's after the first step
            assert passed.keys() == held.keys() and all(torch.equal(passed[n], b) for n, b in held.items())
            assert step == 0 or len(held) == len(s.weights)
            assert not all(torch.equal(g, e) for g, e in zip(unrolled[0]["grads"], expected, strict=True))
            expected = unrolled[0]["grads"]
        else:
            assert not unrolled
        # DARTS' Adam (betas (0.5, 0.999), weight decay 1e-3; tiny's lr) with the searcher's state, from the alphas
        # before the step, on the expected gradients (the state dict's settings would replace these: set them again)
        replay = [torch.nn.Parameter(b.clone()) for b in before]
        adam = torch.optim.Adam(replay)
        adam.load_state_dict(adam_state)
        adam.param_groups[0].update(lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
        for p, g in zip(replay, expected, strict=True):
            p.grad = g.clone()
        adam.step()
        for got, want, old in zip(s.net.arch_parameters(), replay, before, strict=True):
            torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-6, atol=1e-7)
            assert not torch.equal(got.detach(), old)


# -- GDAS -------------------------------------------------------------------------------------------------------


def record_ops(net: Supernet, monkeypatch) -> dict[tuple[int, int], list[str]]:
    """Instrument every op of ``net``: the returned dict fills with (cell, edge) -> names of the ops that ran."""
    runs: dict[tuple[int, int], list[str]] = {}
    for c, cell in enumerate(net.cells):
        assert isinstance(cell, SearchCell)
        for group in cell.groups:
            assert isinstance(group, EdgeGroup)
            for name, op in group.ops.items():
                original = op.forward

                def record(x, run=None, _o=original, _g=group, _n=name, _c=c):
                    members = _g.members[_n] if run is None else [_g.members[_n][i] for i in run]
                    for m in members:
                        runs.setdefault((_c, _g.edge_ids[m]), []).append(_n)
                    return _o(x, run)

                monkeypatch.setattr(op, "forward", record)
    return runs


def test_gdas_runs_one_op_per_edge_and_every_alpha_gets_a_gradient(monkeypatch) -> None:
    s = SEARCHERS.get("gdas")(tiny("gdas"), CPU)
    s.begin_epoch()
    runs = record_ops(s.net, monkeypatch)
    x, y = next(iter(s.data.train))
    weights = s.net.edge_weights()
    loss = F.cross_entropy(s.net(x, weights), y)
    grads = torch.autograd.grad(loss, s.net.arch_parameters())
    edges = s.space.num_edges
    assert all(len(ops) == 1 for ops in runs.values())  # every edge ran exactly one op ...
    for c, cell in enumerate(s.net.cells):
        assert isinstance(cell, SearchCell)
        active = weights[cell.cell_type].active
        assert active is not None
        chosen = [s.space.edge_ops(cell.cell_type, e)[k] for e, (k,) in enumerate(active)]
        # ... its sampled op; a sampled `none` outputs zeros without running an op
        assert [runs[(c, e)][0] if (c, e) in runs else "none" for e in range(edges)] == chosen
    for ct, g in zip(s.net.alphas, grads, strict=True):  # straight-through: every logit of every edge ...
        for e, (k,) in enumerate(weights[ct].active or []):
            assert (g[e] == 0).all() if s.space.edge_ops(ct, e)[k] == "none" else (g[e] != 0).all()  # ... but `none`
    assert s.genotype() == s.net.genotype("top2_pairs")  # the original's child: the strongest (op, input) pairs


def test_gdas_tau_falls_linearly() -> None:
    s = SEARCHERS.get("gdas")(tiny("gdas", epochs=5), CPU)
    taus = []
    for epoch in range(5):
        s.epoch = epoch
        s.begin_epoch()
        taus.append(s.net.tau)
    np.testing.assert_allclose(taus, np.linspace(10.0, 0.1, 5))


# -- XNAS -------------------------------------------------------------------------------------------------------


def test_xnas_wipeout_hand_case() -> None:
    alpha = torch.tensor([[0.0, -1.0, -3.0, -0.5], [2.0, 2.0, -5.0, 1.9]])
    wiped = torch.tensor([[False, False, False, True], [False, False, False, False]])
    # threshold 2 * eta * L * (T - t) = 2 * 0.1 * 1 * 5 = 1: gaps 0, 1, 3 | 0, 0, 7, 0.1
    out = wipeout(alpha, wiped, eta=0.1, bound=1.0, total=10, t=5)
    assert out.tolist() == [[False, False, True, True], [False, False, True, False]]
    final = wipeout(alpha, wiped, eta=0.1, bound=1.0, total=10, t=10)  # threshold 0: all but the leaders
    assert final.tolist() == [[False, True, True, True], [False, False, True, True]]
    assert theory_eta(8, 100, 2.0) == pytest.approx(math.sqrt(2 * math.log(8) / 100) / 2.0)


def test_xnas_update_is_exponentiated_gradient_with_clipped_rewards() -> None:
    s = SEARCHERS.get("xnas")(tiny("xnas", xnas={"reward_bound": 0.05, "wipeout": False}), CPU)
    assert isinstance(s, XNAS) and s.data.valid is not None
    xv, yv = next(iter(s.data.valid))
    before = {ct: a.detach().clone() for ct, a in s.net.alphas.items()}
    # dL/dw of the softmax mixing weights, computed independently
    w = {ct: F.softmax(a.detach(), -1).requires_grad_(True) for ct, a in s.net.alphas.items()}
    from evoray.nn.weighting import EdgeWeights

    loss = F.cross_entropy(s.net(xv, {ct: EdgeWeights(v) for ct, v in w.items()}), yv)
    g = dict(zip(w, torch.autograd.grad(loss, list(w.values()))))
    s.expert_update(xv, yv)
    for ct in s.net.alphas:
        expected = before[ct] + s.eta[ct] * (-g[ct]).clamp(-0.05, 0.05)
        torch.testing.assert_close(s.net.alphas[ct].detach(), expected)
        none = s.space.edge_ops(ct, 0).index("none")
        assert (s.net.alphas[ct][:, none] == before[ct][:, none]).all()  # `none` outputs zeros: no reward
    assert any((g[ct].abs() > 0.05).any() for ct in g), "the bound must clip some reward"


def test_xnas_wiped_experts_never_run_again() -> None:
    s = SEARCHERS.get("xnas")(tiny("xnas"), CPU)
    wiped = s.net.wiped("normal")
    wiped[:, 1:4] = True  # max_pool, avg_pool, skip wiped on every edge
    ew = s.net.edge_weights()["normal"]
    assert ew.active is not None and all(not set(a) & {1, 2, 3} for a in ew.active)
    assert (ew.weights[:, 1:4] == 0).all()
    assert "max_pool_3x3" not in str(s.genotype().cell("normal"))


def test_xnas_alphas_carry_no_gradient_from_one_weight_step_to_the_next() -> None:
    """XNAS has no optimiser for its alphas: the gradient a weight step leaves on them must not add up over the steps
    (with ``optim.clip_all`` it would count in every later clipping norm)."""
    s = SEARCHERS.get("xnas")(tiny("xnas", optim={"clip_all": True}), CPU)
    assert isinstance(s, XNAS) and s.data.valid is not None
    (x, y), (xv, yv) = next(iter(s.data.train)), next(iter(s.data.valid))
    s.weight_step(x, y)
    first = {ct: a.grad.clone() for ct, a in s.net.alphas.items() if a.grad is not None}
    assert first, "the weight step's backward reaches the alphas"
    s.expert_update(xv, yv)
    alphas = list(s.net.alphas.values())  # the gradient this step alone gives them, from the same state:
    expected = torch.autograd.grad(F.cross_entropy(s.forward(x), y), alphas)
    s.weight_step(x, y)
    for alpha, g in zip(alphas, expected):
        torch.testing.assert_close(alpha.grad, g)


# -- SNAS -------------------------------------------------------------------------------------------------------


def test_snas_op_costs_by_hand() -> None:
    # C = 4 channels, side 8 (stride 1: y = 8; stride 2: y = 4)
    assert op_cost("sep_conv_3x3", 4, 8, 1) == (104.0, 104.0 * 64, 64 * (7 * 4 + 4) + 104.0)
    assert op_cost("sep_conv_3x3", 4, 8, 2) == (104.0, 104.0 * 16, 16 * (10 * 4 + 4) + 104.0)
    assert op_cost("dil_conv_5x5", 4, 8, 1) == (116.0, 116.0 * 64, 64 * (3 * 4 + 4) + 116.0)
    assert op_cost("max_pool_3x3", 4, 8, 1) == (0.0, 9.0 * 64 * 4, 2.0 * 64 * 4)
    assert op_cost("avg_pool_3x3", 4, 8, 2) == (0.0, 9.0 * 16 * 4, 5.0 * 16 * 4)
    assert op_cost("skip_connect", 4, 8, 1) == (0.0, 0.0, 2.0 * 64 * 4)
    assert op_cost("skip_connect", 4, 8, 2) == (16.0, 16.0 * 16, 2.0 * 16 * (16 + 2) + 16.0)
    assert op_cost("none", 4, 8, 2) == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="no cost for op 'conv_9x9'"):
        op_cost("conv_9x9", 4, 8, 1)


def _hand_penalty(costs: np.ndarray, w: np.ndarray, log_form: bool) -> float:
    total = 0.0
    for e in range(costs.shape[0]):
        sums = [sum(w[e, k] * costs[e, k, r] for k in range(costs.shape[1])) for r in range(3)]
        if log_form:
            total += sum(math.log(abs(s)) if abs(s) >= 1 else 0.0 for s in sums) / 3
        else:
            total += 0.43 * (2 * sums[0] + sums[1] / 4000 + sums[2] / 100)
    return total


def test_snas_penalty_equals_hand_computation() -> None:
    space = get_space("darts")
    costs = cell_costs(space, "reduce", 4, 8, reduction=True)
    assert tuple(costs[0, space.edge_ops("reduce", 0).index("sep_conv_3x3")].tolist()) == op_cost(
        "sep_conv_3x3", 4, 8, 2
    )
    assert tuple(costs[2, 4].tolist()) == op_cost(space.edge_ops("reduce", 2)[4], 4, 8, 2)  # node 3 <- input 0
    assert tuple(costs[4, 4].tolist()) == op_cost(space.edge_ops("reduce", 4)[4], 4, 4, 1)  # node 3 <- node 2
    torch.manual_seed(1)
    log_alpha = torch.randn(14, 8, dtype=torch.float64)
    z = F.softmax((log_alpha + 0.3 * torch.randn(14, 8, dtype=torch.float64)) / 0.7, -1)
    c = costs.numpy()
    for log_form in (False, True):
        rep = cell_type_penalty(costs[None], log_alpha, z, "reparametrization", 0.7, "all", log_form)
        assert float(rep) == pytest.approx(_hand_penalty(c, z.numpy(), log_form), rel=1e-10)
        disc = cell_type_penalty(costs[None], log_alpha, z, "discrete", 0.7, "all", log_form)
        assert float(disc) == pytest.approx(_hand_penalty(c, F.softmax(log_alpha, -1).numpy(), log_form), rel=1e-10)
    # the Concrete log-density of one row, by hand
    la, zz, tau, n = log_alpha[0].numpy(), z[0].numpy(), 0.7, 8
    hand = (
        math.log(math.factorial(n - 1))
        + (n - 1) * math.log(tau)
        + la.sum()
        - (tau + 1) * np.log(zz).sum()
        - n * math.log((np.exp(la) * zz ** (-tau)).sum())
    )
    assert float(concrete_log_density(log_alpha, z, tau)[0]) == pytest.approx(hand, rel=1e-9)
    pg = cell_type_penalty(costs[None], log_alpha, z, "policy_gradient", 0.7)
    per_edge = [_hand_penalty(c[e : e + 1], z.numpy()[e : e + 1], False) for e in range(14)]
    logp = concrete_log_density(log_alpha, z, tau).numpy()
    assert float(pg) == pytest.approx(float(np.dot(per_edge, logp)), rel=1e-9)


@pytest.mark.parametrize("method", ["reparametrization", "discrete", "policy_gradient"])
@pytest.mark.parametrize("log_form", [False, True])
def test_snas_penalty_methods_give_the_alphas_gradients(method: str, log_form: bool) -> None:
    s = SEARCHERS.get("snas")(tiny("snas", snas={"penalty": method, "log_penalty": log_form}), CPU)
    assert isinstance(s, SNAS)
    assert s.resource_lambda > 0
    weights = s.net.edge_weights()
    penalty = s.penalty({ct: w.weights for ct, w in weights.items()})
    grads = torch.autograd.grad(penalty, s.net.arch_parameters())
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_snas_penalty_prefers_cheap_ops() -> None:
    """A strong size penalty and no data loss: the alphas move towards parameter-free ops."""
    s = SEARCHERS.get("snas")(
        tiny("snas", snas={"penalty": "discrete", "separation": "size", "resource_lambda": 1e-3}), CPU
    )
    assert isinstance(s, SNAS) and s.a_optimizer is not None
    conv = [k for k, n in enumerate(s.space.edge_ops("normal", 0)) if "conv" in n]
    free = [k for k, n in enumerate(s.space.edge_ops("normal", 0)) if "pool" in n or n == "skip_connect"]
    for _ in range(20):
        s.a_optimizer.zero_grad()
        s.penalty({ct: w.weights for ct, w in s.net.edge_weights().items()}).backward()
        s.a_optimizer.step()
    a = s.net.alphas["normal"].detach()
    assert (a[:, free].mean(1) > a[:, conv].mean(1)).all()


def test_snas_pretrain_trains_weights_on_single_paths_and_leaves_the_alphas(monkeypatch) -> None:
    s = SEARCHERS.get("snas")(tiny("snas", epochs=3, snas={"pretrain_epochs": 1}), CPU)
    assert isinstance(s, SNAS)
    alphas = [a.detach().clone() for a in s.net.arch_parameters()]
    weights = [w.detach().clone() for w in s.weights]
    runs = record_ops(s.net, monkeypatch)
    x, y = next(iter(s.data.train))
    s.step(x, y, x, y)
    assert len(runs) == len(s.net.cells) * s.space.num_edges and all(len(ops) == 1 for ops in runs.values())
    for cell in ("normal", "reduce"):  # one draw per cell type: every cell of a type runs the same path
        paths = {tuple(runs[(c, e)][0] for e in range(s.space.num_edges)) for c in _cells_of(s.net, cell)}
        assert len(paths) == 1
    assert all(torch.equal(a, b) for a, b in zip(alphas, s.net.arch_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(weights, s.weights))
    s.epoch = 1  # the Gumbel phase: every op but `none` runs and the alphas move
    runs.clear()
    s.step(x, y, x, y)
    assert all(len(ops) == 7 for ops in runs.values())
    assert all(not torch.equal(a, b) for a, b in zip(alphas, s.net.arch_parameters()))
    torch.manual_seed(0)
    drawn = {ct: torch.zeros(s.space.alpha_shape(ct)) for ct in s.space.cell_types}
    for _ in range(200):  # uniform draws: every op of every edge comes up
        for ct, ew in s.random_path().items():
            assert ew.active is not None and (ew.weights.sum(1) == 1).all()
            drawn[ct] += ew.weights
    assert all((d > 0).all() and (d.sum(1) == 200).all() for d in drawn.values())
    with pytest.raises(ConfigError, match=re.escape("snas.pretrain_epochs = 3 leaves no search epoch")):
        tiny("snas", epochs=3, snas={"pretrain_epochs": 3})


def _cells_of(net: Supernet, cell_type: str) -> list[int]:
    return [c for c, cell in enumerate(net.cells) if isinstance(cell, SearchCell) and cell.cell_type == cell_type]


# -- every searcher ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clipped", [False, True], ids=["default", "zeroed-grads-clipped"])
@pytest.mark.parametrize("name", SEARCHERS.names())
def test_save_restore_resumes_to_the_same_next_epoch(name: str, clipped: bool) -> None:
    """Bit for bit. ``clipped``: gradients zeroed, not freed (FlatSGD's flat buffers), and a clipping bound every
    step reaches, whose norm a resumed run must take over the same flat buffer as the uninterrupted run."""
    sections: dict[str, Any] = {"optim": {"keep_zero_grads": True, "grad_clip": 0.05}} if clipped else {}
    cls = SEARCHERS.get(name)
    straight = cls(tiny(name, **sections), CPU)
    straight.train_epoch()
    expected = straight.train_epoch()
    first = cls(tiny(name, **sections), CPU)
    first.train_epoch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = cls(tiny(name, **sections), CPU)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    got = resumed.train_epoch()
    assert got == expected
    for a, b in zip(resumed.net.arch_parameters(), straight.net.arch_parameters()):
        assert torch.equal(a, b)
    for a, b in zip(resumed.net.parameters(), straight.net.parameters()):
        assert torch.equal(a, b)


def test_alphas_step_on_augmented_validation_batches() -> None:
    """As in the original code, the architecture steps see the validation half cropped like the training half."""
    searcher = SEARCHERS.get("darts")(
        tiny("darts", data={"dataset": "digits", "batch_size": 32, "limit_train": 160}), CPU
    )
    assert searcher.data.arch is not None and searcher.data.valid is not None
    xv, yv = next(searcher._valid_batches())
    searcher.data.arch.set_epoch(0)
    searcher.data.valid.set_epoch(0)
    (xa, _), (xp, yp) = next(iter(searcher.data.arch)), next(iter(searcher.data.valid))
    assert torch.equal(xv, xa) and torch.equal(yv, yp) and not torch.equal(xv, xp)


class _Unreadable:
    """A batch source that fails when read: the alphas' batches of a searcher that must not draw them."""

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        raise AssertionError("a validation batch was drawn")


def test_snas_is_single_level_and_draws_no_validation_batch() -> None:
    """SNAS steps weights and alphas on the training batch alone; a bilevel searcher reads the alphas' half."""
    snas = SEARCHERS.get("snas")(tiny("snas"), CPU)
    snas.data.arch = _Unreadable()  # type: ignore[assignment]
    before = [a.detach().clone() for a in snas.net.arch_parameters()]
    snas.train_epoch()
    assert not all(torch.equal(a, b) for a, b in zip(before, snas.net.arch_parameters()))
    darts = SEARCHERS.get("darts")(tiny("darts"), CPU)
    darts.data.arch = _Unreadable()  # type: ignore[assignment]
    with pytest.raises(AssertionError, match="a validation batch was drawn"):
        darts.train_epoch()


def test_snas_on_the_whole_training_set_validates_on_the_test_set() -> None:
    """With train_portion 1 (SNAS' paper setting) every training image steps the search, which validates on the test
    set and has no alphas' half."""
    s = SEARCHERS.get("snas")(
        tiny(
            "snas",
            data={"dataset": "digits", "batch_size": 32, "limit_train": 160, "limit_test": 64, "train_portion": 1},
        ),
        CPU,
    )
    assert s.data.arch is None and s.data.train.num_examples == 160
    assert s.data.valid is not None and s.data.valid.num_examples == s.data.test.num_examples == 64
    before = [a.detach().clone() for a in s.net.arch_parameters()]
    s.train_epoch()
    assert not all(torch.equal(a, b) for a, b in zip(before, s.net.arch_parameters()))


def test_summary_names_the_set_each_trial_was_validated_on() -> None:
    whole = {"dataset": "digits", "limit_train": 160, "train_portion": 1.0}
    outcomes = [
        {"config": cfg, "metrics": {"epoch": 3, "valid_acc": 50.0}, "error": None, "path": "p"}
        for cfg in (tiny("darts"), tiny("snas", data=whole))
    ]
    summary = trial_summary(outcomes)
    assert [s["valid_on"] for s in summary] == ["split", "test"]
    assert [line.split()[7] for line in format_table(summary).splitlines()[2:]] == ["split", "test"]
    summary[1]["valid_acc"] = 90.0  # on the test set: never the headline's best, however high
    assert best_trial(summary) is summary[0] and best_trial(summary[1:]) is None


def test_a_trial_stopped_before_its_last_epoch_is_stopped_though_tune_says_done() -> None:
    """Tune marks a trial its scheduler stopped early ``done``: the summary says stopped unless every epoch ran."""
    cfg = tiny("darts")  # 3 epochs
    outcomes = [
        {"config": cfg, "metrics": {"epoch": epoch, "valid_acc": 50.0, "done": True}, "error": None, "path": "p"}
        for epoch in (1, 3)
    ]
    assert [s["status"] for s in trial_summary(outcomes)] == ["stopped", "done"]


def test_best_validation_accuracy_is_kept_across_a_restore(monkeypatch) -> None:
    """The best epoch's accuracy stays reported when a later epoch falls, also after a save and restore."""
    accs = iter([60.0, 40.0, 70.0])
    monkeypatch.setattr(SEARCHERS.get("darts"), "evaluate", lambda self: {"valid_loss": 1.0, "valid_acc": next(accs)})
    first = SEARCHERS.get("darts")(tiny("darts", darts={"order": 1}), CPU)
    assert (first.train_epoch()["valid_acc_best"], first.best) == (60.0, (60.0, 1))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = SEARCHERS.get("darts")(tiny("darts", darts={"order": 1}), CPU)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    m = resumed.train_epoch()
    assert (m["valid_acc"], m["valid_acc_best"], m["best_epoch"]) == (40.0, 60.0, 1)
    m = resumed.train_epoch()
    assert (m["valid_acc_best"], m["best_epoch"]) == (70.0, 3)


def test_every_searcher_runs_on_nb201_where_it_applies() -> None:
    for name in SEARCHERS.names():
        cls = SEARCHERS.get(name)
        cfg = {"supernet": {"space": "nb201", "init_channels": 4, "layers": 1}}
        if "nb201" not in [f for f in cls.families] and name == "snas":
            with pytest.raises(ConfigError, match="searcher snas cannot run on space nb201"):
                tiny(name, **cfg)
            continue
        s = cls(tiny(name, epochs=1, **cfg), CPU)
        m = s.train_epoch()
        assert m["genotype"].startswith("|") and s.genotype().is_nb201


def test_options_of_another_searcher_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"option snas\.penalty does not apply to searcher gdas"):
        tiny("gdas", snas={"penalty": "reparametrization"})
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts", "gdas"], "base": {"xnas": {"wipeout": False}}})
    with pytest.raises(ConfigError, match=r"trial darts seed 0: option xnas\.wipeout does not apply"):
        expand(exp)
    with pytest.raises(ConfigError, match="unknown searcher 'enas'; valid: darts, gdas, rsps, snas, xnas"):
        config_from_dict(ExperimentConfig, {"searchers": ["enas"]})


@pytest.mark.parametrize(
    ("searcher", "sections", "message"),
    [
        (
            "gdas",
            {"darts": {"order": 2}},
            "option darts.order does not apply to searcher gdas; it is an option of darts only",
        ),
        (
            "darts",
            {"gdas": {"tau_max": 5.0}},
            "option gdas.tau_max does not apply to searcher darts; it is an option of gdas only",
        ),
    ],
)
def test_every_option_of_another_searcher_is_refused(searcher: str, sections: dict, message: str) -> None:
    """A section's first option counts as much as any other (darts has only one)."""
    with pytest.raises(ConfigError) as info:
        tiny(searcher, **sections)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grid": {"seed": [0, 1]}}, r"grid\.seed cannot be set: .* use seeds: \[\.\.\.\] instead"),
        ({"grid": {"searcher": ["darts", "gdas"]}}, r"grid\.searcher cannot be set: .* use searchers: \[\.\.\.\]"),
        ({"base": {"seed": 3}}, r"base\.seed cannot be set: .* use seeds: \[\.\.\.\] instead"),
        ({"base": {"searcher": "gdas"}}, r"base\.searcher cannot be set"),
        ({"per_searcher": {"darts": {"searcher": "gdas"}}}, r"per_searcher\.darts\.searcher cannot be set"),
        ({"per_searcher": {"gdas": {"seed": 1}}}, r"per_searcher\.gdas\.seed cannot be set: .* use seeds"),
    ],
)
def test_seed_and_searcher_come_from_the_lists_only(data: dict, message: str) -> None:
    """A grid over seed (or a base/per_searcher seed or searcher) would be overwritten by each trial's own: refused."""
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(ExperimentConfig, {"searchers": ["darts"], **data})
    assert "\n" not in str(info.value)


def test_trial_configs_layer_paper_defaults_under_the_user() -> None:
    exp = config_from_dict(
        ExperimentConfig,
        {
            "searchers": ["gdas", "snas"],
            "seeds": [0, 1],
            "base": {"epochs": 2, "optim": {"lr": 0.1}},
            "per_searcher": {"snas": {"snas": {"penalty": "discrete"}}},
            "grid": {"arch.lr": [1e-3, 3e-3]},
        },
    )
    trials = expand(exp)
    assert len(trials) == 8
    gdas = [t for t in trials if t.searcher == "gdas"]
    assert all(t.optim.nesterov and t.optim.weight_decay == 5e-4 and t.optim.lr == 0.1 for t in gdas)
    assert all(t.data.train_portion == 0.5 for t in gdas)
    snas = [t for t in trials if t.searcher == "snas"]
    assert all(
        t.arch.optimizer == "sgd" and t.section("snas").penalty == "discrete" and t.data.train_portion == 1.0
        for t in snas
    )
    assert sorted({(t.seed, t.arch.lr) for t in snas}) == [(0, 1e-3), (0, 3e-3), (1, 1e-3), (1, 3e-3)]


def test_a_base_key_that_a_later_layer_overrides_is_named() -> None:
    """`--set base.epochs=3` on the default search config leaves GDAS at its per_searcher epochs (the documented
    layering): the command says so in one note per shadowing layer, and says nothing where base reaches every trial."""
    exp = load_config(
        ExperimentConfig,
        default_config_path("search-default.yaml"),
        ["base.epochs=3", "per_searcher.snas.epochs=3", "grid.optim.lr=[0.1, 0.2]"],
    )
    assert shadowed_base_key(exp, "epochs") == ["per_searcher.gdas.epochs = 32"]  # snas' 3 equals base's: no shadow
    assert shadowed_base_key(exp, "gdas.tau_min") == ["per_searcher.gdas.gdas.tau_min = 0.1"]
    assert shadowed_base_key(exp, "optim.lr") == ["grid.optim.lr"]
    assert shadowed_base_key(exp, "optim") == ["grid.optim.lr"]
    assert shadowed_base_key(exp, "supernet.layers") == []
    exp.searchers = ["darts", "xnas"]  # no searcher of the run has per_searcher epochs
    assert shadowed_base_key(exp, "epochs") == []
    exp.searchers = ["gdas"]
    notes = shadow_notes(exp, ["base.epochs=3", "epochs=3", "base.supernet.layers=4", "base.optim.lr=0.3"])
    assert notes == [
        "note: --set base.epochs does not reach every trial: per_searcher.gdas.epochs = 32 comes after base and "
        "wins there",
        "note: --set base.optim.lr does not reach every trial: grid.optim.lr comes after base and wins there",
    ]
    assert [t.epochs for t in expand(exp)] == [32, 32]  # what the note says


def test_a_diverged_search_stops_in_one_line_and_a_failed_trial_is_never_a_result(tmp_path) -> None:
    """A NaN loss stops the trial (it went on to report a cell of NaN weights as done); a trial that failed is shown
    with its error, archived without a fitness and never the best."""
    from evoray.errors import DivergedError
    from evoray.runs.archive import read_archive
    from evoray.searchers.results import write_population

    s = SEARCHERS.get("darts")(tiny("darts"), CPU)
    with pytest.raises(DivergedError, match=r"search diverged: the training loss became nan at epoch 0; lower optim"):
        s.loss_value(torch.tensor(float("nan")))
    ok = {"config": tiny("darts"), "metrics": {"epoch": 3, "valid_acc": 50.0, "genotype": str(s.genotype())}}
    bad = {"config": tiny("gdas"), "metrics": {"epoch": 2, "valid_acc": 90.0, "genotype": str(s.genotype())}}
    outcomes = [
        {**ok, "history": [], "alphas": s.alphas(), "error": None, "path": "/t/darts_00000"},
        {**bad, "history": [], "alphas": s.alphas(), "error": "DivergedError: search diverged", "path": "/t/g_00001"},
    ]
    summary = trial_summary(outcomes)
    best = best_trial(summary)
    assert best is not None and best["trial"] == 0  # not the failed trial's higher accuracy
    table = format_table(summary).splitlines()
    assert table[0].split()[:2] == ["trial", "searcher"] and table[3].split()[:2] == ["1", "gdas"]
    assert table[3].endswith("(error: DivergedError: search diverged)")
    rows = read_archive(write_population(tmp_path, outcomes, summary).parent)
    assert [r["fitness"] for r in rows] == [50.0, None]


def test_xnas_child_takes_no_wiped_op() -> None:
    s = SEARCHERS.get("xnas")(tiny("xnas"), CPU)
    wiped = s.net.wiped("normal")
    wiped[0:2, 1:] = True  # node 2's two edges keep only `none`
    wiped[2, 1:4] = True
    cell = s.genotype().cell("normal")
    assert cell.nodes[0] == (("none", 0), ("none", 1))
    assert all(op not in ("max_pool_3x3", "avg_pool_3x3", "skip_connect") for op, j in cell.nodes[1] if j == 0)


@pytest.mark.parametrize(
    ("searcher", "sections", "message"),
    [
        ("gdas", {"gdas": {"tau_min": 0.0}}, "need 0 < tau_min <= tau_max"),
        ("snas", {"snas": {"tau_max": 0.01}}, "need 0 < tau_min <= tau_max"),
        ("snas", {"snas": {"resource_lambda": 1e-4}}, "snas.penalty is none"),
        ("xnas", {"xnas": {"eta": {"normall": 0.1}}}, "xnas.eta names cell type 'normall'"),
        ("xnas", {"xnas": {"eta": {"normal": 0.0}}}, "xnas.eta.normal = 0.0 must be > 0"),
        ("xnas", {"xnas": {"reward_bound": 0.0}}, "xnas.reward_bound = 0.0 must be > 0"),
        ("darts", {"supernet": {"space": "darts", "init_channels": 4, "layers": 2}}, "needs >= 3 cells"),
        ("darts", {"runtime": {"precision": "fp16"}}, "use bf16"),
        (
            "gdas",
            {"data": {"dataset": "digits", "train_portion": 1.0}},
            "data.train_portion = 1.0 leaves the alphas of gdas no validation half; it must be < 1",
        ),
    ],
)
def test_bad_search_options_are_one_line_errors(searcher: str, sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        tiny(searcher, **sections)


def test_asha_is_refused_for_trials_validated_on_the_test_set() -> None:
    """ASHA stops trials by their validation accuracy: a single-level trial's is the test set's."""
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts", "snas"], "scheduler": {"kind": "asha"}})
    with pytest.raises(ConfigError, match=r"scheduler.kind=asha .* trial snas.* validates on the test set"):
        expand(exp)
    exp.scheduler.kind = "none"
    assert [t.data.whole_train for t in expand(exp)] == [False, True]


def test_asha_grace_period_must_fit_the_trials() -> None:
    exp = config_from_dict(
        ExperimentConfig,
        {"searchers": ["darts"], "base": {"epochs": 2}, "scheduler": {"kind": "asha", "grace_period": 3}},
    )
    with pytest.raises(ConfigError, match="grace_period = 3 exceeds the longest trial"):
        expand(exp)


def test_asha_grace_period_may_equal_the_longest_trial() -> None:
    """A grace period of exactly the longest trial's epochs is allowed; one more is refused, naming both numbers."""
    exp = config_from_dict(
        ExperimentConfig,
        {"searchers": ["darts"], "base": {"epochs": 2}, "scheduler": {"kind": "asha", "grace_period": 2}},
    )
    assert [t.epochs for t in expand(exp)] == [2]
    exp.scheduler.grace_period = 3
    with pytest.raises(ConfigError) as info:
        expand(exp)
    assert str(info.value) == "scheduler.grace_period = 3 exceeds the longest trial (2 epochs)"


def test_paper_settings_follow_each_trials_space() -> None:
    """The paper settings are those of the space the trial runs on, wherever the user set it: GDAS on NAS-Bench-201
    (from base) gets no NASNet supernet, DARTS on its own space (from per_searcher) no AutoDL optimizer, and a grid over
    the space gives DARTS AutoDL's optimizer on nb201 only."""
    exp = config_from_dict(
        ExperimentConfig,
        {
            "searchers": ["gdas", "darts"],
            "base": {"supernet": {"space": "nb201"}},
            "per_searcher": {"darts": {"supernet": {"space": "darts"}}},
        },
    )
    trials = [
        (t.searcher, t.supernet.space, t.epochs, t.supernet.style, t.data.batch_size, t.optim.nesterov)
        for t in expand(exp)
    ]
    assert trials == [("gdas", "nb201", 250, "", 64, True), ("darts", "darts", 50, "", 64, False)]
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts"], "grid": {"supernet.space": ["darts", "nb201"]}})
    assert [(t.supernet.space, t.optim.nesterov, t.optim.clip_all) for t in expand(exp)] == [
        ("darts", False, False),
        ("nb201", True, True),
    ]


def test_trials_are_every_grid_combination_in_searcher_point_seed_order() -> None:
    """Two grid keys give their product (the first key slowest), each point once per seed, searcher by searcher."""
    exp = config_from_dict(
        ExperimentConfig,
        {
            "searchers": ["darts", "xnas"],
            "seeds": [0, 1],
            "grid": {"optim.lr": [0.1, 0.2], "arch.lr": [1e-3, 3e-3]},
        },
    )
    one = [
        (0.1, 1e-3, 0), (0.1, 1e-3, 1), (0.1, 3e-3, 0), (0.1, 3e-3, 1),
        (0.2, 1e-3, 0), (0.2, 1e-3, 1), (0.2, 3e-3, 0), (0.2, 3e-3, 1),
    ]  # fmt: skip
    trials = [(t.searcher, t.optim.lr, t.arch.lr, t.seed) for t in expand(exp)]
    assert trials == [("darts", *p) for p in one] + [("xnas", *p) for p in one]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"searchers": []}, "searchers is empty; name at least one of: darts, gdas, rsps, snas, xnas"),
        ({"seeds": []}, "seeds is empty; give at least one seed"),
        ({"grid": {"optim.lr": []}}, "grid.optim.lr must be a non-empty list of values"),
        (
            {"per_searcher": {"enas": {}}},
            "per_searcher names unknown searcher 'enas'; valid: darts, gdas, rsps, snas, xnas",
        ),
    ],
)
def test_an_experiment_with_no_trials_or_an_unknown_section_is_refused(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(ExperimentConfig, data)
    assert str(info.value) == message


def test_a_searchers_section_of_a_searcher_not_in_the_run_is_kept_unused() -> None:
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts"], "per_searcher": {"gdas": {"epochs": 7}}})
    assert [(t.searcher, t.epochs) for t in expand(exp)] == [("darts", 50)]


def test_a_bad_grid_value_names_its_trial_and_point() -> None:
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts"], "grid": {"optim.lr": [0.1, -1.0]}})
    with pytest.raises(ConfigError) as info:
        expand(exp)
    assert str(info.value) == (
        "trial darts seed 0 {'optim.lr': -1.0}: config key 'optim.lr' = -1.0 is out of range [0.0, inf)"
    )


def test_trial_labels_name_searcher_space_seed_and_grid_values() -> None:
    cfg = expand(config_from_dict(ExperimentConfig, {"searchers": ["gdas"], "seeds": [3]}))[0]
    assert trial_label(cfg) == "gdas-darts-s3"
    assert trial_label(cfg, {"optim.lr": 0.1, "gdas.tau_min": 0.5}) == "gdas-darts-s3-lr=0.1-tau_min=0.5"


def test_a_search_config_pickles_as_the_registry_built_class() -> None:
    """Tune ships each trial's config to its worker by pickle: the assembled class is found again by its module."""
    cfg = tiny("gdas", gdas={"tau_min": 0.5})
    back = pickle.loads(pickle.dumps(cfg))
    assert type(back) is SearchConfig and back == cfg and back.section("gdas").tau_min == 0.5


def test_a_grid_over_a_section_shadows_only_the_base_keys_its_values_set() -> None:
    """A grid's sections merge into base's: base's optim.lr is replaced in every trial, its optim.momentum is not."""
    exp = config_from_dict(
        ExperimentConfig,
        {
            "searchers": ["darts"],
            "base": {"optim": {"lr": 0.3, "momentum": 0.8}},
            "grid": {"optim": [{"lr": 0.1}, {"lr": 0.2}]},
        },
    )
    assert shadowed_base_key(exp, "optim.lr") == ["grid.optim"]
    assert shadowed_base_key(exp, "optim.momentum") == []
    assert [(t.optim.lr, t.optim.momentum) for t in expand(exp)] == [(0.1, 0.8), (0.2, 0.8)]


def test_every_layer_that_shadows_a_base_key_gets_its_note() -> None:
    """One note per shadowing layer, also for an override written with blanks around its '='."""
    exp = config_from_dict(
        ExperimentConfig,
        {
            "searchers": ["darts", "gdas"],
            "base": {"epochs": 3},
            "per_searcher": {"darts": {"epochs": 4}, "gdas": {"epochs": 5}},
            "grid": {"epochs": [6]},
        },
    )
    assert shadow_notes(exp, ["base.epochs = 3"]) == [
        f"note: --set base.epochs does not reach every trial: {layer} comes after base and wins there"
        for layer in ("per_searcher.darts.epochs = 4", "per_searcher.gdas.epochs = 5", "grid.epochs")
    ]


def test_the_search_command_prints_its_notes_before_refusing_a_run(tmp_path, capsys) -> None:
    """The note on a shadowed base key comes before anything runs, so a run refused later still shows it."""
    from evoray.commands.search import main

    args = ["--set", "base.epochs=3", "--set", "scheduler.kind=asha", "--set", "scheduler.grace_period=40"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "note: --set base.epochs does not reach every trial: per_searcher.gdas.epochs = 32 comes after base and wins "
        "there"
    ]
    assert "scheduler.grace_period = 40 exceeds the longest trial (32 epochs)" in err
    assert not (tmp_path / "s").exists()


def test_summary_and_best_trial_read_the_last_epoch() -> None:
    """The best trial is the highest last-epoch accuracy (not the best epoch's, not the lowest); the summary keeps
    the epochs run and both accuracies, and the table shows them in that order."""
    cfg = tiny("darts")  # 3 epochs
    metrics = [
        {"epoch": 3, "valid_acc": 50.0, "valid_acc_best": 80.0},
        {"epoch": 1, "valid_acc": 70.0, "valid_acc_best": 72.5},
        {"epoch": 3, "valid_acc": 60.0, "valid_acc_best": 60.0},
    ]
    summary = trial_summary([{"config": cfg, "metrics": m, "error": None, "path": "p"} for m in metrics])
    assert [(s["trial"], s["epochs"], s["valid_acc"], s["valid_acc_best"], s["status"]) for s in summary] == [
        (0, 3, 50.0, 80.0, "done"),
        (1, 1, 70.0, 72.5, "stopped"),
        (2, 3, 60.0, 60.0, "done"),
    ]
    best = best_trial(summary)
    assert best is not None and best["trial"] == 1
    row = format_table(summary).splitlines()[3].split()
    assert row[:9] == ["1", "darts", "darts", "0", "1", "70.00", "72.50", "split", "-"]
    # a trial stopped before its first epoch ended has no cell and no error: the table says so
    unrun = trial_summary([{"config": cfg, "metrics": {}, "error": None, "path": "p"}])
    assert format_table(unrun).splitlines()[2].endswith("  (no genotype: stopped after 0 epochs)")


# -- each searcher's step, number for number --------------------------------------------------------------------


def _original_unrolled(net, train, valid, xi, momentum, wd, buffers, r=1e-2) -> list[torch.Tensor]:
    """DARTS' second-order gradient as quark0/darts' Architect computes it, on a copy of ``net``: the weights moved
    in place to ``w - xi (momentum buf + grad + wd w)``, a backward of the validation loss there, then the central
    difference of the training loss's alpha gradient at ``w +- R v`` (``v`` the weights' gradient, ``R = r / |v|``)."""
    import copy

    model = copy.deepcopy(net)
    arch = model.arch_parameters()
    named = [(n, p) for n, p in model.named_parameters() if all(p is not a for a in arch)]
    grads = torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), [p for _, p in named])
    theta = [p.detach().clone() for _, p in named]
    with torch.no_grad():
        for (n, p), g in zip(named, grads):
            p.sub_(xi * (momentum * buffers[n] + g + wd * p))
    model.zero_grad()
    F.cross_entropy(model(valid[0]), valid[1]).backward()
    d_alpha = [a.grad.detach().clone() for a in arch]
    vector = [p.grad.detach().clone() for _, p in named]
    radius = r / float(torch.cat([v.flatten() for v in vector]).norm())
    at = []
    for shift in (radius, -radius):
        with torch.no_grad():
            for (_, p), t, v in zip(named, theta, vector):
                p.copy_(t + shift * v)
        at.append(torch.autograd.grad(F.cross_entropy(model(train[0]), train[1]), arch))
    return [d - xi * (p - m) / (2 * radius) for d, p, m in zip(d_alpha, *at)]


def test_second_order_gradient_is_the_originals_on_a_hand_case() -> None:
    """The same number as the original's procedure, to rounding: its finite-difference radius 0.01 / |v|, the weight
    decay and momentum of the virtual step, the factor xi of the Hessian term (the finite-difference test above
    cannot see the radius, nor a weight decay this small)."""
    torch.manual_seed(0)
    net = DartsSupernet(get_space("darts"), C=4, layers=3, num_classes=3, in_channels=2, alpha_init_std=0.5).double()
    arch = net.arch_parameters()
    train = (torch.randn(6, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,)))
    valid = (torch.randn(6, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,)))
    buffers = {n: 0.1 * torch.randn_like(p) for n, p in net.named_parameters() if all(p is not a for a in arch)}
    for xi, momentum, wd in ((0.1, 0.9, 3e-4), (0.05, 0.0, 0.05)):
        got = unrolled_arch_grad(net, arch, train, valid, xi, momentum, wd, buffers)
        want = _original_unrolled(net, train, valid, xi, momentum, wd, buffers)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_snas_step_moves_the_alphas_by_the_loss_and_penalty_gradient_alone() -> None:
    """One SNAS step, replayed by hand from the same Gumbel sample and drop-path masks: the alphas move by SGD on the
    gradient of ``CE + lambda (normal penalty + ratio * reduction penalty)``, clipped to ``arch.grad_clip``; the
    second step's gradient is its own loss's alone (none left from the first). The alphas start at N(1, 0.01)."""
    s = SEARCHERS.get("snas")(
        tiny(
            "snas",
            arch={"optimizer": "sgd", "lr": 0.5, "weight_decay": 0.0, "grad_clip": 0.5},
            snas={"penalty": "discrete", "resource_lambda": 1e-3, "ratio": 2.0},
        ),
        CPU,
    )
    assert isinstance(s, SNAS)
    for alpha in s.net.arch_parameters():
        a = alpha.detach()
        assert abs(float(a.mean()) - 1.0) < 0.01 and 0.005 < float(a.std()) < 0.02
    s.begin_epoch()
    x, y = next(iter(s.data.train))
    for _ in range(2):
        alphas = s.net.arch_parameters()
        before = [a.detach().clone() for a in alphas]
        rng = torch.get_rng_state()
        weights = s.net.edge_weights()
        loss = F.cross_entropy(s.forward(x, weights), y)
        penalty = sum(
            (2.0 if ct == "reduce" else 1.0)
            * cell_type_penalty(s.costs[ct], s.net.alphas[ct], weights[ct].weights, "discrete", s.net.tau)
            for ct in s.net.alphas
        )
        grads = torch.autograd.grad(loss + 1e-3 * penalty, alphas)
        norm = float(torch.cat([g.flatten() for g in grads]).norm())
        assert norm > 0.5, "the test needs the clipping to act"
        torch.set_rng_state(rng)
        s.step(x, y, x, y)
        for a, b, g in zip(alphas, before, grads, strict=True):
            torch.testing.assert_close(a.detach(), b - 0.5 * g * 0.5 / (norm + 1e-6), rtol=1e-5, atol=1e-6)


def test_xnas_last_update_leaves_each_edge_its_leader_alone() -> None:
    """Update ``t = T`` brings the wipeout threshold ``2 eta L (T - t)`` to zero: every edge keeps one expert, the
    one with the highest alpha; the update before it still keeps the near-ties of alphas drawn from N(0, 1e-3)."""
    s = SEARCHERS.get("xnas")(tiny("xnas"), CPU)
    assert isinstance(s, XNAS) and s.data.valid is not None
    xv, yv = next(iter(s.data.valid))
    assert s.eta == {ct: pytest.approx(math.sqrt(2 * math.log(8) / t) / 5.0) for ct, t in s.total.items()}  # L = 5
    s.updates = {ct: s.total[ct] - 2 for ct in s.updates}
    s.expert_update(xv, yv)
    assert all(int((~s.net.wiped(ct)).sum()) > s.space.num_edges for ct in s.net.alphas)
    s.expert_update(xv, yv)
    assert s.updates == s.total
    for ct, alpha in s.net.alphas.items():
        alive = ~s.net.wiped(ct)
        assert (alive.sum(1) == 1).all()
        assert alive.float().argmax(1).tolist() == alpha.detach().argmax(1).tolist()


@pytest.mark.parametrize(("name", "first"), [("darts", "arch"), ("gdas", "weights"), ("xnas", "weights")])
def test_bilevel_searchers_step_in_their_originals_order(name: str, first: str, monkeypatch) -> None:
    """quark0/darts steps the alphas before the weights; AutoDL's GDAS the weights first; XNAS (the paper's
    algorithm) rewards the experts after the weight step."""
    s = SEARCHERS.get(name)(tiny(name), CPU)
    order: list[str] = []

    def weight_step(*a: Any) -> tuple[float, int]:
        order.append("weights")
        return 0.0, 0

    def arch_update(*a: Any) -> None:
        order.append("arch")

    monkeypatch.setattr(s, "weight_step", weight_step)
    monkeypatch.setattr(s, "arch_update", arch_update)
    x, y = next(iter(s.data.train))
    s.step(x, y, x, y)
    assert order == [first, "arch" if first == "weights" else "weights"]


def test_gdas_alphas_step_by_adam_on_the_validation_batch() -> None:
    """GDAS' architecture half, replayed from the same Gumbel sample: one Adam step (lr, betas (0.5, 0.999), weight
    decay 1e-3) on the validation loss's gradient, not the training batch's."""
    s = SEARCHERS.get("gdas")(tiny("gdas"), CPU)
    assert s.data.valid is not None
    s.begin_epoch()
    (x, y), (xv, yv) = next(iter(s.data.train)), next(iter(s.data.valid))
    alphas = s.net.arch_parameters()
    rng = torch.get_rng_state()
    grads = torch.autograd.grad(F.cross_entropy(s.forward(xv), yv), alphas)
    replay = [torch.nn.Parameter(a.detach().clone()) for a in alphas]
    torch.set_rng_state(rng)
    s.arch_update(x, y, xv, yv)
    adam = torch.optim.Adam(replay, 3e-3, betas=(0.5, 0.999), weight_decay=1e-3)
    for p, g in zip(replay, grads, strict=True):
        p.grad = g.clone()
    adam.step()
    for got, want in zip(alphas, replay, strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-6, atol=1e-7)
