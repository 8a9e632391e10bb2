"""A whole EvNAS generation (the training pass and the fitness of the population), evoray against the original EvNAS
code (nightstorm0909/EvNAS), at the same size and thread count, interleaved round by round.

    python bench/evnas.py --original /path/to/EvNAS [--threads 2] [--rounds 3] [--population 8]

evoray: what a default evolve run does each generation: a :class:`SupernetTrainer` built from evoray's configs (the
DARTS supernet, the default SGD, ``FitnessConfig(bn_mode="train", batch_size=1024)``, an npz dataset of synthetic
images) with the runtime defaults of ``RuntimeConfig()`` (its ``channels_last``; ``--no-channels-last`` turns it off),
then ``train_generation`` and ``fitness``; its batches come from its own in-memory pipeline (augmentation included).
Original: its ``model_search.Network`` and ``utils.discretize`` on the CPU (``.cuda()`` made a no-op), driven by the
``train`` and ``validation`` loops of its ``train_search.py`` as written there, fed the same images as pre-built
normalised tensors (no DataLoader workers), in a process of its own: evoray's runtime (``runtime.reuse_memory``: the
allocator keeps freed memory) is set in evoray's process only, so the original runs as it runs by itself. Prints per
round and the median: seconds per generation (and its split
into the training pass and the fitness), images/s (the training images plus P x the validation images), the ratio,
and the achieved GFLOP/s (multiply-adds of one supernet forward counted by thop, x2 FLOPs each, x3 for a training
step) beside the measured fp32 matmul peak. At the defaults a run takes about 5 minutes on 2 cores. ``--device cuda``
runs both codes on the GPU (the original as its train_search.py runs there: cuDNN deterministic, its autotuner off,
each batch moved to the GPU as it is used), ``--precision bf16`` runs evoray under bf16 autocast
(``runtime.precision``; the original has no such option and runs in fp32).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from measure import (
    Child,
    count_macs,
    describe_device,
    gflops,
    import_original,
    interleave,
    peak_line,
    synced,
    synthetic_npz,
)
from torch import Tensor, nn

from evoray.data import DataConfig
from evoray.evolution.fitness import FitnessConfig
from evoray.evolution.strategies import EvolutionConfig
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.nn.supernet import SupernetConfig
from evoray.optim import OptimConfig
from evoray.runtime import RuntimeConfig, apply_runtime
from evoray.spaces import get_space

Alphas = dict[str, np.ndarray]
Batches = list[tuple[Tensor, Tensor]]


def population(size: int, seed: int = 0, space_name: str = "darts") -> list[Alphas]:
    """Random individuals: U(0, 1) alphas per cell type (the original's ``chromosome`` draws ``torch.rand``)."""
    space, rng = get_space(space_name), np.random.default_rng(seed)
    return [{ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types} for _ in range(size)]


def evoray_trainer(args: argparse.Namespace, folder: Path, channels_last: bool) -> SupernetTrainer:
    """A default evolve run's trainer over a synthetic npz: ``train_images`` for the weights, ``valid_images`` for
    the fitness (``data.train_portion`` splits them exactly)."""
    n = args.train_images + args.valid_images
    train = synthetic_npz(folder / "train.npz", n, args.side, seed=0)
    test = synthetic_npz(folder / "test.npz", args.batch, args.side, seed=1)
    data = DataConfig(
        dataset="npz",
        root=str(train),
        test_root=str(test),
        batch_size=args.batch,
        train_portion=args.train_images / n,
    )
    runtime = RuntimeConfig(device=args.device, precision=args.precision)
    # as a run's actor does (threads stay the bench's)
    device = apply_runtime(runtime, autotune=SupernetTrainer.autotune)
    return SupernetTrainer(
        SupernetConfig(space="darts", init_channels=args.C, layers=args.cells),
        OptimConfig(),
        FitnessConfig(bn_mode="train", batch_size=args.fitness_batch),
        data,
        EvolutionConfig().generations,
        seed=0,
        device=device,
        precision=runtime.precision,
        channels_last=channels_last,
        reuse_memory=runtime.reuse_memory and not args.no_reuse_memory,
    )


class Chromosome:
    """What train_search.py reads of an individual of the original's population: its alphas and three meters."""

    def __init__(self, utils: ModuleType, alphas: Alphas) -> None:
        self.arch_parameters = [torch.from_numpy(alphas["normal"]), torch.from_numpy(alphas["reduce"])]
        self.objs, self.top1, self.top5 = utils.AvgrageMeter(), utils.AvgrageMeter(), utils.AvgrageMeter()


class OriginalGeneration:
    """One generation of the original EvNAS search: ``train`` then ``validation`` of its train_search.py."""

    def __init__(self, folder: Path, args: argparse.Namespace, alphas: list[Alphas]) -> None:
        cpu = args.device == "cpu"
        model_search = import_original(folder, "model_search", "model_search.py", cpu=cpu)
        self.utils = import_original(folder, "utils", "utils.py", cpu=cpu)
        self.device = torch.device(args.device)
        self.criterion = nn.CrossEntropyLoss()
        self.model = model_search.Network(args.C, 10, args.cells, self.criterion, self.device).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, 50, eta_min=0.001)
        self.population = [Chromosome(self.utils, a) for a in alphas]

    def train(self, train_queue: Batches) -> None:
        model, utils, pop = self.model, self.utils, self.population
        model.train()
        for step, (inputs, targets) in enumerate(train_queue):
            ind = pop[step % len(pop)]
            discrete_alphas = utils.discretize(ind.arch_parameters, self.device)
            model.copy_arch_parameters(discrete_alphas)
            assert utils.check_equality(model, discrete_alphas)
            n = inputs.size(0)
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            self.optimizer.zero_grad()
            logits = model(inputs)
            loss = self.criterion(logits, targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5)
            self.optimizer.step()
            prec1, prec5 = utils.accuracy(logits, targets, topk=(1, 5))
            ind.objs.update(loss.data, n)
            ind.top1.update(prec1.data, n)
            ind.top5.update(prec5.data, n)

    def validation(self, valid_queue: Batches) -> None:
        model, utils = self.model, self.utils
        for ind in self.population:  # the model stays in train mode, as in the original
            discrete_alphas = utils.discretize(ind.arch_parameters, self.device)
            model.copy_arch_parameters(discrete_alphas)
            assert utils.check_equality(model, discrete_alphas)
            ind.objs.reset()
            ind.top1.reset()
            ind.top5.reset()
            with torch.no_grad():
                for inputs, targets in valid_queue:
                    n = inputs.size(0)
                    inputs, targets = inputs.to(self.device), targets.to(self.device)
                    logits = model(inputs)
                    loss = self.criterion(logits, targets)
                    prec1, prec5 = utils.accuracy(logits, targets, topk=(1, 5))
                    ind.objs.update(loss.data, n)
                    ind.top1.update(prec1.data, n)
                    ind.top5.update(prec5.data, n)


def original_job(
    folder: Path, args: argparse.Namespace, alphas: list[Alphas], queues: tuple[Batches, Batches]
) -> tuple[dict[str, Callable[[], float]], float]:
    """The original in its own process (:class:`measure.Child`): built and warmed up there; returns one generation
    (answering with the seconds of its training pass) and its multiply-adds per image."""
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # as its train_search.py sets
    original = OriginalGeneration(folder, args, alphas)
    train_queue, valid_queue = queues
    original.train(train_queue[:1])
    original.validation([(valid_queue[0][0][: args.batch], valid_queue[0][1][: args.batch])])

    def generation() -> float:
        start = time.perf_counter()
        original.train(train_queue)
        original.scheduler.step()
        train_s = time.perf_counter() - start
        original.validation(valid_queue)
        return train_s

    x2 = valid_queue[0][0][:2].to(original.device)
    return {"run": synced(generation, original.device)}, count_macs(original.model, (x2,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="folder of the original EvNAS code")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both codes")
    parser.add_argument("--rounds", type=int, default=3, help="timed generations of each code (median reported)")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--C", type=int, default=8, help="supernet channels")
    parser.add_argument("--cells", type=int, default=5)
    parser.add_argument("--side", type=int, default=16, help="image side")
    parser.add_argument("--batch", type=int, default=64, help="training batch")
    parser.add_argument("--train-images", type=int, default=640)
    parser.add_argument("--valid-images", type=int, default=1024)
    parser.add_argument("--fitness-batch", type=int, default=1024, help="the original's valid_queue batch")
    parser.add_argument("--no-channels-last", action="store_true", help="evoray in NCHW whatever RuntimeConfig says")
    parser.add_argument("--no-reuse-memory", action="store_true", help="evoray without RuntimeConfig's reuse_memory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: both codes run there")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="evoray's autocast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default_cl = RuntimeConfig().channels_last
    trainer_reuse = RuntimeConfig().reuse_memory and not args.no_reuse_memory
    channels_last = default_cl and not args.no_channels_last
    alphas = population(args.population)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = evoray_trainer(args, Path(tmp), channels_last)
    # the same images for the original, normalised, as plain NCHW tensors
    train_queue: Batches = list(trainer.batches(0))
    assert trainer.data.valid is not None
    trainer.data.valid.set_epoch(0)
    valid_queue: Batches = list(trainer.data.valid)
    n_train = sum(int(y.shape[0]) for _, y in train_queue)
    n_valid = sum(int(y.shape[0]) for _, y in valid_queue)
    per_gen = n_train + args.population * n_valid

    x2 = valid_queue[0][0][:2]
    decoded = trainer.decode(alphas[0])
    original = Child(original_job, args.original, args, alphas, (train_queue, valid_queue))
    x2 = x2.to(trainer.device, memory_format=trainer.fmt)
    macs = {"evoray": count_macs(trainer.net, (x2, decoded)), "original": original.info}
    peak, peak_words = peak_line(args.device, args.precision)
    print(
        f"torch {torch.__version__}, {describe_device(args.device)}, evoray channels_last {channels_last} "
        f"(RuntimeConfig default {default_cl}), reuse_memory {trainer_reuse}, evoray precision {args.precision}, "
        f"{peak_words}"
    )
    print(
        f"EvNAS generation: DARTS space, C={args.C}, {args.cells} cells, {args.side}x{args.side}, population "
        f"{args.population}: {n_train} training images ({len(train_queue)} steps of {args.batch}) + "
        f"{args.population} x {n_valid} validation images (fitness batch {args.fitness_batch}) = {per_gen} images"
    )
    print(
        "multiply-adds of one forward per image (thop): "
        + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in macs.items())
        + "  (GFLOP/s: 2 x 3 x MACs per training image + 2 x MACs per validation image)"
    )

    # warm-up: a training step and a fitness batch of each code
    x, y = train_queue[0]
    trainer.compute_grads(x, y, decoded)
    trainer.apply_grads()
    trainer.net.train()
    with torch.inference_mode():
        trainer.net(valid_queue[0][0][: args.batch].to(trainer.device, memory_format=trainer.fmt), decoded)

    generation = iter(range(1, 1_000_000))
    train_s: dict[str, list[float]] = {"evoray": [], "original": []}  # the training pass's share of each round

    def evoray_generation() -> Any:
        g, start = next(generation), time.perf_counter()
        trainer.train_generation(alphas, g)
        train_s["evoray"].append(time.perf_counter() - start)
        return trainer.fitness(alphas, g)

    def original_generation() -> None:
        train_s["original"].append(original())

    jobs: dict[str, Callable[[], object]] = {
        "evoray": synced(evoray_generation, trainer.device),
        "original": original_generation,
    }
    times = interleave(jobs, args.rounds)
    original.close()

    def work(name: str) -> float:  # multiply-adds of one generation
        return 3 * macs[name] * n_train + macs[name] * args.population * n_valid

    print(
        f"\n{'':10s} {'s/gen':>8s} {'images/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s} {'train s':>8s} {'fitness s':>9s}"
        f"   (median of {args.rounds})"
    )
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, sec in medians.items():
        rate = gflops(work(name), 1, 1.0 / sec)
        tr = statistics.median(train_s[name])
        fit = statistics.median(t - s for t, s in zip(times[name], train_s[name], strict=True))
        print(f"{name:10s} {sec:8.2f} {per_gen / sec:9.1f} {rate:8.2f} {100 * rate / peak:7.1f}% {tr:8.2f} {fit:9.2f}")
    ratios = [o / e for e, o in zip(times["evoray"], times["original"], strict=True)]
    print(
        f"evoray / original (images/s): {medians['original'] / medians['evoray']:.2f}x median; per round "
        + ", ".join(f"{r:.2f}x" for r in ratios)
    )


if __name__ == "__main__":
    main()
