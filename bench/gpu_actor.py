"""EvNAS generations through a Ray actor placed on a GPU, against the same generations on the CPU.

    python bench/gpu_actor.py [--generations 2] [--population 8] [--set KEY=VALUE ...]

The embedded default's supernet (``configs/evolve-default.yaml``: the DARTS space, C=8, 5 cells, digits) held by one
:class:`~evoray.distributed.fleet.SupernetFleet` actor that reserves a GPU (``resources.gpus=1``) and by one that
reserves none (``resources.gpus=0``, the CPU), both from the same seed, each given the same random population for
``--generations`` generations (a training pass, then every individual's fitness). Checks, each printed with its
figures: the GPU actor sees exactly one CUDA device and holds its supernet there, the CPU actor none; the training
losses agree to ``--loss-rtol`` and every individual's fitness (top-1 %, on the same validation images in the same
order) to ``--fitness-atol`` points. The two are not bitwise equal: a GPU sums in another order, and cuDNN's
convolutions run in TF32 by default. Exits 1 if a check fails; needs a machine with a GPU.
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

from evoray.config import load_config
from evoray.distributed.fleet import SupernetFleet
from evoray.evolution.config import EvolveConfig
from evoray.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]


def population(cfg: EvolveConfig, size: int) -> list[dict[str, np.ndarray]]:
    space, rng = get_space(cfg.supernet.space), np.random.default_rng(cfg.seed)
    return [{ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types} for _ in range(size)]


def run(name: str, cfg: EvolveConfig, pop: list[dict[str, np.ndarray]], generations: int) -> dict[str, Any]:
    """Placement, per-generation training loss and fitness, and seconds, of one single-actor fleet."""
    start = time.perf_counter()
    fleet = SupernetFleet(cfg)
    try:
        where = fleet.placements()
        print(f"{name}: actor up after {time.perf_counter() - start:.1f} s: {where[0]}", flush=True)
        losses, fitness, seconds = [], [], []
        for g in range(generations):
            t = time.perf_counter()
            losses.append(fleet.train(pop, g)["train_loss"])
            print(f"{name}: generation {g} trained in {time.perf_counter() - t:.1f} s", flush=True)
            fitness.append(fleet.fitness(pop, g, list(range(len(pop)))))
            seconds.append(time.perf_counter() - t)
    finally:
        fleet.shutdown()
    total = time.perf_counter() - start
    return {"where": where, "loss": losses, "fitness": fitness, "seconds": seconds, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--loss-rtol", type=float, default=0.02, help="relative tolerance of each training loss")
    parser.add_argument("--fitness-atol", type=float, default=2.0, help="tolerance of each fitness, in % points")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an evolve config override")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: this check needs a CUDA GPU; this machine has none")
    overrides = [f"evolution.population={args.population}", "distributed.num_actors=1", *args.set]
    base = load_config(EvolveConfig, ROOT / "configs/evolve-default.yaml", overrides)
    gpu_cfg = load_config(EvolveConfig, None, ["resources.gpus=1", "resources.cpus=1"], base=base)
    cpu_cfg = load_config(EvolveConfig, None, ["resources.gpus=0"], base=base)
    ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False)
    gpu = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, ray {ray.__version__}, {gpu}; Ray's resources {ray.cluster_resources()}")
    pop = population(base, args.population)
    res = {"gpu": run("gpu", gpu_cfg, pop, args.generations), "cpu": run("cpu", cpu_cfg, pop, args.generations)}
    failures = []
    for name, r in res.items():
        w = r["where"][0]
        print(
            f"{name} actor: device {w['device']}, sees {w['cuda_devices']} CUDA device(s); generations "
            + ", ".join(f"{s:.2f} s" for s in r["seconds"])
            + f" (fleet start and all: {r['total']:.1f} s)"
        )
    gw, cw = res["gpu"]["where"][0], res["cpu"]["where"][0]
    if not (gw["device"].startswith("cuda") and gw["cuda_devices"] == 1):
        failures.append(f"the GPU actor holds its supernet on {gw['device']} and sees {gw['cuda_devices']} GPUs")
    if cw["device"] != "cpu":
        failures.append(f"the CPU actor holds its supernet on {cw['device']}")
    for g in range(args.generations):
        lg, lc = res["gpu"]["loss"][g], res["cpu"]["loss"][g]
        fg, fc = np.array(res["gpu"]["fitness"][g]), np.array(res["cpu"]["fitness"][g])
        diff = np.abs(fg - fc)
        print(
            f"generation {g}: training loss gpu {lg:.5f} cpu {lc:.5f} (rel. diff {abs(lg - lc) / abs(lc):.2e}); "
            f"fitness max |diff| {diff.max():.2f} points, mean {diff.mean():.2f}"
        )
        print("  gpu fitness " + " ".join(f"{v:6.2f}" for v in fg))
        print("  cpu fitness " + " ".join(f"{v:6.2f}" for v in fc))
        if abs(lg - lc) > args.loss_rtol * abs(lc):
            failures.append(f"generation {g}: training losses differ by more than {args.loss_rtol:g} (relative)")
        if diff.max() > args.fitness_atol:
            failures.append(f"generation {g}: a fitness differs by {diff.max():.2f} > {args.fitness_atol:g} points")
    ray.shutdown()
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
