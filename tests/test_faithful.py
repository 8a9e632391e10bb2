"""Each method as its original code runs it: SNAS' search drop-path, children and temperature, the schedules stepped
as PyTorch 0.3-1.0 stepped them, GDAS' zeroed (not freed) gradients and its AutoDL search network, DARTS as AutoDL's
NAS-Bench-201 baseline, RSPS, archai's XNAS, and the README's table of every divergence."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evoray.config import config_from_dict, load_config
from evoray.errors import ConfigError
from evoray.nn import supernet as supernet_module
from evoray.nn.grouped import GroupSepConv, SharedPool
from evoray.nn.ops import drop_path
from evoray.nn.supernet import EdgeGroup, SearchCell, SupernetConfig, build_supernet
from evoray.nn.weighting import EdgeWeights
from evoray.searchers import SEARCHERS, SearchConfig, SearchSettings
from evoray.searchers.experiment import ExperimentConfig, expand
from evoray.searchers.methods.rsps import RSPS
from evoray.searchers.methods.snas import SnasOptions, snas_tau
from evoray.searchers.methods.xnas import XNAS, XnasOptions
from evoray.spaces import get_space
from evoray.spaces.derive import derive_cell, random_genotype

from .test_searchers import record_ops

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def tiny(searcher: str, space: str = "darts", **sections: object) -> SearchSettings:
    data: dict[str, Any] = {
        "searcher": searcher,
        "epochs": 3,
        "supernet": {"space": space, "init_channels": 4, "layers": 3 if space == "darts" else 1},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 160},
        "arch": {"lr": 3e-3},
    }
    data.update(sections)
    return config_from_dict(SearchConfig, data)


# -- the supernets reproduce the originals' parameter counts -------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "weights", "alphas"),
    [
        # quark0/darts cnn/model_search.py Network(16, 10, 8): 1,930,618 weights
        (SupernetConfig("darts", 16, 8, "darts"), 1_930_618, 2 * 14 * 8),
        # AutoDL's NASNetworkGDAS (GDAS-NASNet-CIFAR: C=16, N=2): 1,343,034 weights, conv biases included
        (SupernetConfig("darts", 16, 6, "autodl"), 1_343_034, 2 * 14 * 8),
        # AutoDL's TinyNetworkGDAS / TinyNetworkDarts on NAS-Bench-201 (C=16, N=5): 1,692,826 weights
        (SupernetConfig("nb201", 16, 5), 1_692_826, 6 * 5),
    ],
)
def test_supernets_have_the_originals_parameter_counts(cfg: SupernetConfig, weights: int, alphas: int) -> None:
    with torch.device("meta"):
        net = build_supernet(cfg, num_classes=10, in_channels=3)
    assert sum(p.numel() for p in net.weight_parameters()) == weights
    assert sum(p.numel() for p in net.arch_parameters()) == alphas


def test_autodl_style_has_no_bn_after_pools_and_a_bn_relu_head() -> None:
    gdas = build_supernet(SupernetConfig("darts", 4, 6, "autodl"), 10, 3)
    darts = build_supernet(SupernetConfig("darts", 4, 6, "darts"), 10, 3)
    pools = [m for m in gdas.modules() if isinstance(m, SharedPool)]
    assert pools and all(p.bn is None for p in pools)
    assert all(p.bn is not None for p in darts.modules() if isinstance(p, SharedPool))
    assert isinstance(gdas.lastact, torch.nn.Sequential) and isinstance(darts.lastact, torch.nn.Identity)
    reductions = [c.reduction for c in gdas.cells]
    assert reductions == [False, False, True, False, True, False]  # C, C, 2C reduce, 2C, 4C reduce, 4C


# -- SNAS -------------------------------------------------------------------------------------------------------


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest() -> None:
    torch.manual_seed(3)
    x = torch.ones(1000, 2, 3, 3)
    out = drop_path(x, 0.3)
    per_sample = out.flatten(1)
    dropped = (per_sample == 0).all(1)
    assert ((per_sample == 0) | torch.isclose(per_sample, torch.tensor(1 / 0.7))).all()  # kept samples are scaled
    assert (per_sample[~dropped] == per_sample[~dropped][:, :1]).all()
    assert 0.25 < float(dropped.float().mean()) < 0.35


def test_snas_drops_every_edge_output_during_search_and_none_while_measuring(monkeypatch) -> None:
    s = SEARCHERS.get("snas")(tiny("snas"), CPU)
    assert s.net.drop_path_prob == 0.3  # the README's --drop_path_prob 3e-1
    calls: list[tuple[int, float]] = []

    def counting(x: torch.Tensor, p: float) -> torch.Tensor:
        calls.append((int(x.shape[0]), p))
        return drop_path(x, p)

    monkeypatch.setattr(supernet_module, "drop_path", counting)
    x, y = next(iter(s.data.train))
    s.step(x, y, x, y)
    assert len(calls) == len(s.net.cells) * s.space.num_edges  # one mask per edge of every cell ...
    assert {p for _, p in calls} == {0.3} and {b for b, _ in calls} == {x.shape[0]}  # ... per sample
    calls.clear()
    s.evaluate()
    assert calls == [] and s.net.drop_path_prob == 0.3  # measuring drops nothing, and leaves the setting
    off = SEARCHERS.get("snas")(tiny("snas", snas={"drop_path_prob": 0.0}), CPU)
    off.step(x, y, x, y)
    assert calls == []


def test_snas_children_on_a_hand_case() -> None:
    space = get_space("darts")
    ops = space.edge_ops("normal", 0)
    none, skip, sep3, dil5 = (ops.index(n) for n in ("none", "skip_connect", "sep_conv_3x3", "dil_conv_5x5"))
    w = np.full(space.alpha_shape("normal"), 0.1)
    # node 2 (edges 0, 1): input 0 is strongly `none`, input 1 mildly sep_conv_3x3
    w[0, none], w[0, skip] = 0.9, 0.3
    w[1, sep3] = 0.5
    # node 3 (edges 2, 3, 4): input 2 best by a non-none op, inputs 0 and 1 weaker
    w[2, dil5], w[3, sep3], w[4, skip] = 0.6, 0.2, 0.8
    edge_all = derive_cell(space, "normal", w, "edge_all")
    with_none = derive_cell(space, "normal", w, "top2_with_none")
    top2 = derive_cell(space, "normal", w, "top2")
    assert edge_all.nodes[0] == (("none", 0), ("sep_conv_3x3", 1))  # every edge, argmax with none
    assert edge_all.nodes[1] == (("dil_conv_5x5", 0), ("sep_conv_3x3", 1), ("skip_connect", 2))
    assert with_none.nodes[0] == (("none", 0), ("sep_conv_3x3", 1))  # ranks none too: input 0 first, as none
    assert with_none.nodes[1] == (("skip_connect", 2), ("dil_conv_5x5", 0))
    assert top2.nodes[0] == (("sep_conv_3x3", 1), ("skip_connect", 0))  # DARTS: none never ranks or wins
    snas = SEARCHERS.get("snas")(tiny("snas"), CPU)
    assert snas.derive_method() == "edge_all" and all(
        len(n) == 2 + i for i, n in enumerate(snas.genotype().normal.nodes)
    )


def test_snas_temperature_and_schedules_match_the_originals() -> None:
    opts = SnasOptions()
    assert snas_tau(opts, 0, 150) == pytest.approx(1 - 0.97 / 150)  # Temp_Scheduler steps before epoch 0
    assert snas_tau(opts, 149, 150) == pytest.approx(0.03)  # and reaches temp_min at the last epoch
    assert snas_tau(SnasOptions(tau_epochs=0), 9, 10) == pytest.approx(0.03)  # horizon = the run's epochs
    assert snas_tau(opts, 200, 300) == 0.03  # past the 150-epoch horizon: the floor
    # DARTS and SNAS call scheduler.step() before each epoch, under PyTorch 0.3.1 / 0.4; AutoDL's GDAS steps its own
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts", "snas", "gdas"], "base": {"epochs": 4}})
    for cfg in expand(exp):
        cfg.data = config_from_dict(type(cfg.data), {"dataset": "digits", "limit_train": 64, "batch_size": 32})
        cfg.supernet = SupernetConfig("darts", 4, 3, cfg.supernet.style)
        cfg.eval_batches = 1
        s = SEARCHERS.get(cfg.searcher)(cfg, CPU)
        metrics = [s.train_epoch() for _ in range(4)]
        lrs = [m["lr"] for m in metrics]
        # the temperature each epoch trained at: SNAS' Temp_Scheduler steps before epoch e (1 - 0.97 (e + 1) / 150);
        # AutoDL's GDAS sets tau_max - (tau_max - tau_min) e / (epochs - 1)
        if cfg.searcher == "snas":
            assert [m["tau"] for m in metrics] == pytest.approx([1 - 0.97 * (e + 1) / 150 for e in range(4)])
        if cfg.searcher == "gdas":
            assert [m["tau"] for m in metrics] == pytest.approx([10 - 9.9 * e / 3 for e in range(4)])
        o = cfg.optim
        old = _Pytorch03Cosine(o.lr, 4, o.lr_min)
        published = []
        for _ in range(4):  # the originals' loop: scheduler.step(), then the epoch at the scheduler's rate
            old.step()
            published.append(old.lr)
        assert lrs == pytest.approx(published), cfg.searcher
        assert lrs[0] == o.lr and lrs[-1] > o.lr_min  # epoch e at cosine(e): the last just above lr_min
        if cfg.searcher == "darts":  # the same code under PyTorch >= 1.1: epoch e at cosine(e + 1)
            cfg.optim.lr_step_at_start = True
            s = SEARCHERS.get(cfg.searcher)(cfg, CPU)
            shifted = [s.train_epoch()["lr"] for _ in range(4)]
            cosine = [o.lr_min + (o.lr - o.lr_min) * (1 + math.cos(math.pi * (e + 1) / 4)) / 2 for e in range(4)]
            assert shifted == pytest.approx(cosine) and shifted[-1] == pytest.approx(o.lr_min)


class _Pytorch03Cosine:
    """``CosineAnnealingLR`` as PyTorch 0.3.1-1.0 define it (``_LRScheduler.__init__``: ``self.step(last_epoch + 1);
    self.last_epoch = last_epoch``; ``step(epoch=None)``: ``epoch = self.last_epoch + 1``), the rate it sets kept."""

    def __init__(self, base: float, t_max: int, eta_min: float, last_epoch: int = -1) -> None:
        self.base, self.t_max, self.eta_min = base, t_max, eta_min
        self.step(last_epoch + 1)
        self.last_epoch = last_epoch

    def step(self, epoch: int | None = None) -> None:
        if epoch is None:
            epoch = self.last_epoch + 1
        self.last_epoch = epoch
        self.lr = self.eta_min + (self.base - self.eta_min) * (1 + math.cos(math.pi * epoch / self.t_max)) / 2


# -- GDAS -------------------------------------------------------------------------------------------------------


def _force(searcher, cell_type: str, edges: list[int], op: str) -> None:
    with torch.no_grad():
        for edge in edges:
            searcher.net.alphas[cell_type][edge] = -30.0
            searcher.net.alphas[cell_type][edge, searcher.space.edge_ops(cell_type, edge).index(op)] = 30.0


@pytest.mark.parametrize("keep", [True, False])
def test_gdas_keeps_decaying_ops_sampled_before(keep: bool) -> None:
    """PyTorch 1.x's zero_grad() zeroed the gradients: an op sampled once keeps getting weight decay and momentum at
    every later step although it is not sampled (AutoDL's GDAS); freed gradients (PyTorch 2's default) leave it."""
    s = SEARCHERS.get("gdas")(tiny("gdas", optim={"keep_zero_grads": keep}), CPU)
    assert SEARCHERS.get("gdas").paper_defaults["darts"]["optim"]["keep_zero_grads"] is True
    s.net.tau = 0.1
    x, y = next(iter(s.data.train))
    cell = s.net.cells[0]
    assert isinstance(cell, SearchCell)
    group = cell.groups[0]  # the edges leaving input 0 of the normal cells: one parameter tensor per op
    assert isinstance(group, EdgeGroup)
    _force(s, "normal", group.edge_ids, "sep_conv_3x3")
    s.weight_step(x, y)
    sep = group.ops["sep_conv_3x3"]
    assert isinstance(sep, GroupSepConv)
    before = sep.pw1.detach().clone()
    _force(s, "normal", group.edge_ids, "dil_conv_3x3")  # now those edges run another op
    s.weight_step(x, y)
    assert (not torch.equal(sep.pw1.detach(), before)) == keep


def test_clip_all_counts_the_alphas_gradients(monkeypatch) -> None:
    import evoray.searchers.base as base

    seen: list[int] = []

    def count(grads: list[torch.Tensor], norm: float) -> None:
        seen.append(len(grads))

    monkeypatch.setattr(base, "clip_gradient_tensors", count)
    for clip_all in (False, True):  # the same seed: the same samples, the same weights with gradients
        s = SEARCHERS.get("gdas")(tiny("gdas", optim={"clip_all": clip_all}), CPU)
        x, y = next(iter(s.data.train))
        s.step(x, y, x, y)  # the weights, then the alphas: the alphas now hold gradients
        s.weight_step(x, y)
    assert seen[3] == seen[1] + len(s.net.arch_parameters())  # clip_all: the alphas count in the norm


# -- DARTS as AutoDL's NAS-Bench-201 baseline --------------------------------------------------------------------


def test_darts_on_nb201_is_autodls_baseline(monkeypatch) -> None:
    exp = config_from_dict(
        ExperimentConfig, {"searchers": ["darts"], "base": {"supernet": {"space": "nb201", "layers": 1}}}
    )
    (cfg,) = expand(exp)
    assert cfg.optim.nesterov and cfg.optim.clip_all and cfg.optim.weight_decay == 5e-4
    assert not cfg.optim.lr_step_at_start  # AutoDL's scheduler: epoch e at cosine(e)
    order: list[str] = []

    def weight_step(*a: Any, **k: Any) -> tuple[float, int]:
        order.append("weights")
        return 0.0, 0

    def arch_update(*a: Any, **k: Any) -> None:
        order.append("arch")

    for darts_order, first in ((1, "weights"), (2, "arch")):
        s = SEARCHERS.get("darts")(tiny("darts", "nb201", darts={"order": darts_order}), CPU)
        monkeypatch.setattr(s, "weight_step", weight_step)
        monkeypatch.setattr(s, "arch_update", arch_update)
        x, y = next(iter(s.data.train))
        s.step(x, y, x, y)
        assert order[0] == first, darts_order  # DARTS-V1 steps the weights first; DARTS-V2 the alphas
        order.clear()
    s = SEARCHERS.get("darts")(tiny("darts", "darts"), CPU)
    assert s.order() == "arch_first"  # quark0/darts


def test_step_order_is_refused_for_single_level_searchers() -> None:
    with pytest.raises(ConfigError, match="step_order = 'arch_first' does not apply to searcher snas"):
        tiny("snas", step_order="arch_first")


# -- RSPS -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_rsps_trains_one_op_per_edge_and_picks_the_best_scored_candidate(space: str, monkeypatch) -> None:
    s = SEARCHERS.get("rsps")(tiny("rsps", space, rsps={"candidates": 5, "candidate_batch_size": 16}), CPU)
    assert isinstance(s, RSPS)
    runs = record_ops(s.net, monkeypatch) if space == "darts" else None
    before = [w.detach().clone() for w in s.weights]
    alphas = [a.detach().clone() for a in s.net.arch_parameters()]
    x, y = next(iter(s.data.train))
    s.step(x, y, x, y)
    if runs is not None:  # a DARTS cell: two edges per node with one op each; the other edges run nothing
        for c in range(len(s.net.cells)):
            ran = {e: ops for (cc, e), ops in runs.items() if cc == c}
            assert len(ran) == 2 * s.space.steps and all(len(ops) == 1 for ops in ran.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, s.weights))
    assert all(torch.equal(a, b) for a, b in zip(alphas, s.net.arch_parameters()))
    scored: list[list[str]] = []
    original = s.score_cells

    def spy(cells, batches):
        scores = original(cells, batches)
        scored.append([str(c) for c in cells] + [str(scores[0])])
        return scores

    monkeypatch.setattr(s, "score_cells", spy)
    s.end_epoch()
    assert len(scored) == 5
    best = max(scored, key=lambda r: float(r[1]))
    assert str(s.genotype()) == best[0] and s.chosen_acc == float(best[1])
    from evoray.evolution.individual import genotype_of

    assert str(genotype_of(s.space, s.alphas())) == best[0]  # its alphas stand for the chosen cell


def test_rsps_path_runs_exactly_one_op_per_nb201_edge(monkeypatch) -> None:
    """A training step runs, in every searching cell, exactly the sampled op on each edge (nothing for `none`)."""
    s = SEARCHERS.get("rsps")(tiny("rsps", "nb201"), CPU)
    assert isinstance(s, RSPS)
    paths: list[dict[str, EdgeWeights]] = []
    real = s.sample_path

    def recorded() -> dict[str, EdgeWeights]:
        paths.append(real())
        return paths[-1]

    monkeypatch.setattr(s, "sample_path", recorded)
    ran: list[tuple[int, int, str]] = []  # (cell, edge, op) of every op evaluation
    cells = [(c, cell) for c, cell in enumerate(s.net.cells) if isinstance(cell, SearchCell)]
    for c, cell in cells:
        for group in cell.groups:
            assert isinstance(group, EdgeGroup)
            for name, op in group.ops.items():

                def hook(module, args, output, c=c, group=group, name=name):  # type: ignore[no-untyped-def]
                    members = group.members[name]
                    slots = args[1] if len(args) > 1 and args[1] is not None else range(len(members))
                    ran.extend((c, group.edge_ids[members[i]], name) for i in slots)

                op.register_forward_hook(hook)
    s.data.train.set_epoch(0)
    x, y = next(iter(s.data.train))
    for _ in range(3):
        ran.clear()
        s.step(x, y, x, y)
        path = paths[-1]["cell"]
        assert path.active is not None and all(len(a) == 1 for a in path.active)
        space = s.space
        sampled = [space.edge_ops("cell", e)[k] for e, (k,) in enumerate(path.active)]
        want = sorted((c, e, op) for c, _ in cells for e, op in enumerate(sampled) if op != "none")
        assert sorted(ran) == want


def test_random_genotypes_are_uniform_over_the_space() -> None:
    rng = np.random.default_rng(0)
    space = get_space("nb201")
    counts = np.zeros(space.alpha_shape("cell"))
    from evoray.spaces import one_hot

    for _ in range(500):
        counts += one_hot(space, random_genotype(space, rng))["cell"]
    assert (counts.sum(1) == 500).all() and counts.min() > 60  # 100 expected per (edge, op)
    darts = random_genotype(get_space("darts"), rng)
    for node in darts.normal.nodes:
        assert len(node) == 2 and node[0][1] != node[1][1] and all(op != "none" for op, _ in node)


def test_rsps_options_on_another_searcher_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"option rsps\.candidates does not apply to searcher darts"):
        tiny("darts", rsps={"candidates": 3})
    with pytest.raises(ConfigError, match="RSPS' choice among its candidates"):
        tiny("rsps", data={"dataset": "digits", "train_portion": 1.0})


# -- XNAS as archai --------------------------------------------------------------------------------------------


def test_xnas_archai_preset_updates_per_example_without_clipping() -> None:
    exp = load_config(ExperimentConfig, ROOT / "configs" / "search-xnas-archai.yaml")
    (cfg,) = expand(exp)
    xnas = cfg.section("xnas")
    assert isinstance(xnas, XnasOptions)
    assert (xnas.update, xnas.clip_rewards, xnas.reward_bound, xnas.edge_rank) == (
        "example",
        False,
        1.0,
        "exp",
    )
    assert cfg.step_order == "arch_first" and cfg.optim.momentum == 0 and cfg.optim.weight_decay == 0
    assert cfg.optim.grad_clip == 1.0
    s = SEARCHERS.get("xnas")(tiny("xnas", xnas={"update": "example", "clip_rewards": False}), CPU)
    assert isinstance(s, XNAS) and s.data.valid is not None
    steps = s.steps_per_epoch() * 3
    cells = {ct: sum(c.cell_type == ct for c in s.net.cells) for ct in ("normal", "reduce")}
    assert s.total == {ct: steps * 32 * n for ct, n in cells.items()}  # examples x epochs x cells of the type
    xv, yv = next(iter(s.data.valid))
    s.arch_update(xv, yv, xv, yv)
    assert s.updates == {ct: xv.shape[0] * n for ct, n in cells.items()}


def test_xnas_exp_edge_ranking_differs_from_softmax_on_a_hand_case() -> None:
    s = SEARCHERS.get("xnas")(tiny("xnas", xnas={"edge_rank": "exp"}), CPU)
    assert isinstance(s, XNAS)
    with torch.no_grad():
        a = s.net.alphas["normal"]
        a.zero_()
        # node 2: edge 0 has one strong expert among strong rivals; edge 1 one moderate expert among weak rivals
        a[0, 1:] = 2.0
        a[0, 4] = 2.5
        a[1, 4] = 1.0
    exp_cell = s.genotype().normal
    s.opts.edge_rank = "softmax"
    soft_cell = s.genotype().normal
    assert {j for _, j in exp_cell.nodes[0]} == {0, 1}
    assert exp_cell.nodes[0][0] == ("sep_conv_3x3", 0)  # exp(alpha): 2.5 beats 1.0
    assert soft_cell.nodes[0][0] == ("sep_conv_3x3", 1)  # softmax per edge: edge 1's expert holds more of its edge


# -- the README's table ----------------------------------------------------------------------------------------


def test_readme_names_every_divergence_from_the_originals() -> None:
    readme = (ROOT / "README.md").read_text()
    heading = "Where evoray differs from the original code, and why"
    assert heading in readme
    table = readme.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) >= 12
    for needle in (
        "drop-path",
        "edge_all",
        "top2_with_none",
        "1.5e-3",
        "2.66",
        "cutout",
        "Nesterov",
        "own shuffle",
        "GDAS-NASNet",
        "zero_grad",
        "DARTS-V1",
        "PyTorch they were published with",
        "1 - 0.97",
        "Algorithm 1",
        "archai",
        "reward",
        "RSPS",
    ):
        assert re.search(re.escape(needle), table, re.IGNORECASE), needle


def test_rsps_scores_each_candidate_on_its_own_batches(monkeypatch) -> None:
    """Each candidate reads ``candidate_batches`` batches of ``candidate_batch_size`` (the next ones of the
    validation half), and every training step draws a fresh path."""
    s = SEARCHERS.get("rsps")(
        tiny("rsps", "nb201", rsps={"candidates": 3, "candidate_batches": 2, "candidate_batch_size": 16}), CPU
    )
    assert isinstance(s, RSPS)
    seen: list[list[torch.Tensor]] = []

    def score(cells: list, batches: list) -> list[float]:
        seen.append([x for x, _ in batches])
        return [0.0]

    monkeypatch.setattr(s, "score_cells", score)
    s.end_epoch()
    assert [[int(x.shape[0]) for x in xs] for xs in seen] == [[16, 16]] * 3
    firsts = [xs[0] for xs in seen]
    assert not any(torch.equal(a, b) for i, a in enumerate(firsts) for b in firsts[i + 1 :])
    paths = [tuple(map(tuple, s.sample_path()["cell"].active or [])) for _ in range(5)]
    assert len(set(paths)) > 1
