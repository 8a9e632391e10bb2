"""EvNAS generations through a Ray actor placed on a GPU, against the same generations on the CPU.

    python bench/gpu_actor.py [--generations 2] [--population 8] [--set KEY=VALUE ...]

The embedded default's supernet (``configs/evolve-default.yaml``: the DARTS space, C=8, 5 cells, digits) is held by
three fleets of one actor each (:class:`~evoray.distributed.fleet.SupernetFleet`), all from the same seed: one whose
actor reserves a GPU (``resources.gpus=1``), the run's own CPU actor (``resources.gpus=0``, its configured threads) and
a CPU actor of one thread. Each scores the same random population on the untrained supernet, then runs
``--generations`` generations (a training pass, then every individual's fitness: top-1 %, on the same validation
images in the same order).

Checks, each printed with its figures: the GPU actor holds its supernet on the GPU and sees exactly one CUDA device,
the CPU actors hold theirs on the CPU; on the untrained supernet every fitness agrees with the CPU's to
``--untrained-atol`` points (a forward pass: only rounding differs); after training, the GPU's training losses and
fitness differ from the CPU's by no more than ``--slack`` times what the one-thread CPU actor's differ (runs that
differ only in the order of their sums: training amplifies rounding), with floors of 1e-3 (relative loss) and
``--untrained-atol``. The GPU sums in other orders, and cuDNN's convolutions run in TF32 by default, so no check is
bitwise. Exits 1 if a check fails; needs a machine with a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from evnas import population

from evoray.config import load_config
from evoray.distributed.fleet import SupernetFleet
from evoray.evolution.config import EvolveConfig

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, cfg: EvolveConfig, pop: list[dict[str, np.ndarray]], generations: int) -> dict[str, Any]:
    """Placement, the untrained fitness, per-generation training loss and fitness, and seconds, of one single-actor
    fleet. Scoring the untrained supernet changes nothing the training reads (no weight, statistic or generator)."""
    start = time.perf_counter()
    fleet = SupernetFleet(cfg)
    keys = list(range(len(pop)))
    try:
        where = fleet.placements()[0]
        print(f"{name}: actor up after {time.perf_counter() - start:.1f} s: {where}", flush=True)
        untrained = fleet.fitness(pop, 0, keys)
        losses, fitness, seconds = [], [], []
        for g in range(generations):
            t = time.perf_counter()
            losses.append(fleet.train(pop, g)["train_loss"])
            fitness.append(fleet.fitness(pop, g, keys))
            seconds.append(time.perf_counter() - t)
            print(f"{name}: generation {g} in {seconds[-1]:.1f} s", flush=True)
    finally:
        fleet.shutdown()
    total = time.perf_counter() - start
    return {
        "where": where,
        "untrained": untrained,
        "loss": losses,
        "fitness": fitness,
        "seconds": seconds,
        "total": total,
    }


def _row(label: str, values: list[float]) -> str:
    return f"  {label:22s}" + " ".join(f"{v:6.2f}" for v in values)


def compare(res: dict[str, dict[str, Any]], generations: int, untrained_atol: float, slack: float) -> list[str]:
    """Print the figures of the checks the module names; return the failures."""
    failures = []
    gw = res["gpu"]["where"]
    if not (gw["device"].startswith("cuda") and gw["cuda_devices"] == 1):
        failures.append(f"the GPU actor holds its supernet on {gw['device']} and sees {gw['cuda_devices']} GPUs")
    for name in ("cpu", "cpu1"):
        if res[name]["where"]["device"] != "cpu":
            failures.append(f"the {name} actor holds its supernet on {res[name]['where']['device']}")
    gpu, cpu, cpu1 = (np.array(res[n]["untrained"]) for n in ("gpu", "cpu", "cpu1"))
    diff = np.abs(gpu - cpu)
    print(f"untrained: fitness max |gpu - cpu| {diff.max():.2f} points (|cpu1 - cpu| {np.abs(cpu1 - cpu).max():.2f})")
    for label, values in (("gpu", gpu), ("cpu", cpu)):
        print(_row(label, list(values)))
    if diff.max() > untrained_atol:
        failures.append(f"untrained: a fitness differs by {diff.max():.2f} > {untrained_atol:g} points")
    for g in range(generations):
        lg, lc, l1 = (res[n]["loss"][g] for n in ("gpu", "cpu", "cpu1"))
        fg, fc, f1 = (np.array(res[n]["fitness"][g]) for n in ("gpu", "cpu", "cpu1"))
        loss_gap, loss_ref = abs(lg - lc) / abs(lc), abs(l1 - lc) / abs(lc)
        fit_gap, fit_ref = np.abs(fg - fc).max(), np.abs(f1 - fc).max()
        print(
            f"generation {g}: training loss gpu {lg:.5f}, cpu {lc:.5f}, cpu 1 thread {l1:.5f} (relative gaps to cpu "
            f"{loss_gap:.2e} and {loss_ref:.2e}); fitness max |gap| to cpu {fit_gap:.2f} and {fit_ref:.2f} points"
        )
        for label, values in (("gpu", fg), ("cpu", fc), ("cpu 1 thread", f1)):
            print(_row(label, list(values)))
        if loss_gap > max(slack * loss_ref, 1e-3):
            failures.append(
                f"generation {g}: the GPU's loss is {loss_gap:.2e} off the CPU's (1 thread: {loss_ref:.2e})"
            )
        if fit_gap > max(slack * fit_ref, untrained_atol):
            failures.append(f"generation {g}: a GPU fitness is {fit_gap:.2f} points off (1 thread: {fit_ref:.2f})")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--untrained-atol", type=float, default=0.5, help="fitness tolerance untrained, in points")
    parser.add_argument("--slack", type=float, default=3.0, help="the GPU's gaps over the 1-thread CPU actor's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an evolve config override")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this check needs a CUDA GPU; this machine has none")
    overrides = [f"evolution.population={args.population}", "distributed.num_actors=1", *args.set]
    base = load_config(EvolveConfig, ROOT / "configs/evolve-default.yaml", overrides)
    configs = {
        "gpu": load_config(EvolveConfig, None, ["resources.gpus=1", "resources.cpus=1"], base=base),
        "cpu": load_config(EvolveConfig, None, ["resources.gpus=0"], base=base),
        "cpu1": load_config(EvolveConfig, None, ["resources.gpus=0", "resources.cpus=1"], base=base),
    }
    ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False)
    gpu = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, ray {ray.__version__}, {gpu}; Ray's resources {ray.cluster_resources()}")
    pop = population(args.population, base.seed, base.supernet.space)
    res = {name: run(name, cfg, pop, args.generations) for name, cfg in configs.items()}
    for name, r in res.items():
        w = r["where"]
        print(
            f"{name} actor: device {w['device']}, sees {w['cuda_devices']} CUDA device(s), autotuner "
            f"{w['autotune']}; generations "
            + ", ".join(f"{s:.2f} s" for s in r["seconds"])
            + f" (with the fleet's start and the untrained scores: {r['total']:.1f} s)"
        )
    failures = compare(res, args.generations, args.untrained_atol, args.slack)
    ray.shutdown()
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
