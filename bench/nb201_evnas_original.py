"""The original EvNAS supernet at bench/nb201.py's CPU proxy: how well its shared weights rank NAS-Bench-201 cells,
and what EvNAS finds on them, at the budget where evoray's EvNAS is judged.

    python bench/nb201_evnas_original.py --original /path/to/EvNAS [--seed 0] [--size cpu|cpu3] [--every 10]

The original's search network (``TinyNetwork`` of search_model_NAS201.py: affine-free BN with running statistics, as
searchNAS201.sh's ``--track_running_stats``) at the proxy's C and N, trained and scored as the bodies of its
train_searchNAS201.py ``train`` and ``validation`` do: step s writes individual s mod P into the network, discretizes
it (the one-hot that the forward passes through softmax), and takes one SGD step (Nesterov, lr 0.025 cosine to 0.001
over the generations, weight decay 3e-4, clip 5: configs/EvNAS.config); fitness is each individual's top-1 on the
validation half in eval mode. The GA, the individuals and the batches are evoray's for the same seed (bench/nb201.py's
EvNAS: population 20, tournaments of 4, 50 generations), so the two runs differ only in the supernet code. Every
``--every`` generations it prints the Kendall tau between the network's accuracy and the table's 12-epoch validation
accuracy on bench/nb201.py's 64 fixed cells, and the best individual's cell with its 12-epoch test accuracy; the last
line is the found cell. Compare with ``python bench/nb201.py --searchers evnas --seeds S``. One seed takes about an
hour on one core at ``--size cpu``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from measure import import_original
from nb201 import SIZES, TABLE, evnas_config, kendall, kendall_cells, load_table
from torch import nn

from evoray.evolution.fitness import FitnessBackend
from evoray.evolution.individual import Individual
from evoray.evolution.search import run_evolution
from evoray.evolution.strategies import build_strategy
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.spaces import get_space, parse_arch


def one_hot(model: Any, genotype: str, ops: list[str]) -> torch.Tensor:
    """The original's (edge, op) matrix with a 1 at each op of ``genotype`` (a NAS-Bench-201 cell string)."""
    out = torch.zeros(model.num_edge, len(ops))
    for i, node in enumerate(genotype.strip("|").split("|+|"), start=1):
        for entry in node.split("|"):
            op, j = entry.split("~")
            out[model.edge2index[f"{i}<-{j}"], ops.index(op)] = 1.0
    return out


class OriginalSupernet(FitnessBackend):
    """The original's network, optimizer and schedule behind evoray's fitness interface."""

    def __init__(self, original: Path, cfg: Any, trainer: SupernetTrainer) -> None:
        search_model = import_original(original, "search_model_NAS201", needs="search_model_NAS201.py")
        operations = import_original(original, "cell_operationsNAS201", needs="cell_operationsNAS201.py")
        self.ops = list(operations.NAS_BENCH_201)
        self.model = search_model.TinyNetwork(
            C=cfg.supernet.init_channels, N=cfg.supernet.layers, max_nodes=4, num_classes=10, search_space=self.ops,
            affine=False, track_running_stats=True,
        )  # fmt: skip
        o = cfg.optim
        self.optimizer = torch.optim.SGD(
            self.model.get_weights(), o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, cfg.evolution.generations, eta_min=o.lr_min
        )
        self.trainer = trainer  # evoray's data pipeline: the same batches as evoray's EvNAS
        self.clip = o.grad_clip

    def write(self, genotype: str) -> None:
        self.model.update_alphas(one_hot(self.model, genotype, self.ops))
        discrete = self.model.discretize()
        assert self.model.genotype().tostr() == genotype, (self.model.genotype().tostr(), genotype)
        assert self.model.check_alphas(discrete)

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        self.model.train()
        loss_sum, n = 0.0, 0
        for step, (x, y) in enumerate(self.trainer.batches(generation)):
            self.write(individuals[step % len(individuals)].genotype)
            self.optimizer.zero_grad()
            _, logits = self.model(x.contiguous())
            loss = F.cross_entropy(logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()
            loss_sum, n = loss_sum + float(loss.detach()) * len(y), n + len(y)
        self.scheduler.step()
        return {"train_loss": loss_sum / max(n, 1)}

    def scores(self, genotypes: list[str], keys: list[int], generation: int) -> list[float]:
        source = self.trainer.data.valid
        assert source is not None
        self.model.eval()
        out = []
        for genotype, key in zip(genotypes, keys, strict=True):
            self.write(genotype)
            source.set_epoch(generation, key)
            correct, total = 0, 0
            with torch.no_grad():
                for x, y in source:
                    _, logits = self.model(x.contiguous())
                    correct += int((logits.argmax(1) == y).sum())
                    total += len(y)
            out.append(100.0 * correct / max(total, 1))
        return out

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return self.scores([i.genotype for i in individuals], [i.id for i in individuals], generation)


def evoray_state(backend: OriginalSupernet, net: nn.Module) -> dict[str, torch.Tensor]:
    """The original network's weights and statistics as a state of evoray's NAS-Bench-201 supernet (whose edges
    leaving one state are stacked per op; evoray's conv biases, cancelled by the affine-free BN, set to zero)."""
    space = get_space("nb201")
    theirs = backend.model.state_dict()
    out = {}
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] != "cells" or parts[2] != "groups":
            for ours, orig in (("conv_a.conv.", "conv_a.op.1."), ("conv_b.conv.", "conv_b.op.1."),
                               ("conv_a.bn.", "conv_a.op.2."), ("conv_b.bn.", "conv_b.op.2.")):  # fmt: skip
                key = key.replace(ours, orig)
            out[".".join(parts)] = theirs.get(key, value)  # the alphas and evoray's masks stay evoray's
            continue
        cell, source, op, rest = parts[1], int(parts[3]), parts[5], ".".join(parts[6:])
        names = [f"cells.{cell}.edges.{i}<-{j}.{backend.ops.index(op)}.op" for i, j in space.edges if j == source]
        if rest == "bias":
            out[".".join(parts)] = torch.zeros_like(value)
        elif rest == "bn.num_batches_tracked":
            out[".".join(parts)] = theirs[names[0] + ".2.num_batches_tracked"]
        else:
            inner = "1.weight" if rest == "weight" else "2." + rest.removeprefix("bn.")
            out[".".join(parts)] = torch.cat([theirs[f"{name}.{inner}"] for name in names])
    return out


def check_parity(backend: OriginalSupernet, trainer: SupernetTrainer, cells: list[str]) -> float:
    """Evoray's supernet with the original's weights: the largest logit difference over ``cells`` (decoded as EvNAS
    decodes them), with batch statistics and with running statistics, on one validation batch."""
    from evoray.evolution.run import alphas_for

    space = get_space("nb201")
    trainer.net.load_state_dict(evoray_state(backend, trainer.net))
    source = trainer.data.valid
    assert source is not None
    source.set_epoch(0)
    x, _ = next(iter(source))
    x = x[:64]
    rng = np.random.default_rng(0)
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    worst = 0.0
    for train in (True, False):
        backend.model.train(train)
        trainer.net.train(train)
        for genotype in cells:
            backend.write(genotype)
            weights = trainer.decode(alphas_for(space, parse_arch(genotype), rng))
            with torch.no_grad():
                _, theirs = backend.model(x.contiguous())
                ours = trainer.net(x.contiguous(memory_format=torch.channels_last), weights)
            worst = max(worst, float((theirs - ours).abs().max()))
    backend.model.load_state_dict(before)  # the training-mode passes moved its running statistics
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="root of a nightstorm0909/EvNAS checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu", help="bench/nb201.py's proxy size")
    parser.add_argument("--every", type=int, default=10, help="generations between Kendall tau measurements")
    args = parser.parse_args()
    if not TABLE.is_file():
        print(f"skipped: {TABLE} is absent (the real data lives in ../shared/data)")
        return
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg = evnas_config(args.seed, SIZES[args.size])
    space = get_space("nb201")
    trainer = SupernetTrainer(
        cfg.supernet, cfg.optim, cfg.fitness, cfg.data, cfg.evolution.generations, args.seed, torch.device("cpu")
    )
    torch.manual_seed(args.seed)
    backend = OriginalSupernet(args.original, cfg, trainer)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0])
    strategy = build_strategy(cfg.evolution, space, rng)
    table = load_table(TABLE)
    cells = [str(c) for c in kendall_cells()]
    worst = check_parity(backend, trainer, cells[:8])
    print(f"parity: evoray's supernet with the original's weights, 8 cells: max |logit difference| {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit("error: evoray's NAS-Bench-201 supernet does not compute the original's function")
    start = time.perf_counter()
    total = cfg.evolution.generations

    def on_generation(g: int, individuals: list[Individual], stats: dict[str, float]) -> None:
        if (g + 1) % args.every and g + 1 != total:
            return
        tau = kendall(backend.scores(cells, list(range(len(cells))), g), kendall_cells(), table)
        best = max(individuals, key=lambda i: -math.inf if i.fitness is None else i.fitness)
        print(
            f"generation {g + 1}/{total}: best {stats['best']:.2f} mean {stats['mean']:.2f} tau {tau:+.3f} "
            f"test@12 {table[best.genotype][1]:.2f} {best.genotype} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    found = run_evolution(strategy, backend, on_generation).best.genotype
    valid, test = table[found]
    print(f"found: {found} test@12 {test:.2f} (valid@12 {valid:.2f})")


if __name__ == "__main__":
    main()
