"""One EvNAS generation's time, split into training, fitness and everything else: in-process and on 1 and 2 Ray
actors, at a CPU size (DARTS supernet C=8, 5 cells, 16x16 digits, batch 64).

    python bench/evolve.py [--population 8] [--generations 3]

Prints the split per mode, the Ray overhead (1 actor against in-process, same thread count) and the fitness
throughput of 2 actors of 1 thread against 1 actor of 1 thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from evoray.commands.evolve import evolve
from evoray.config import load_config
from evoray.evolution.config import EvolveConfig
from evoray.runs import open_run

ROOT = Path(__file__).resolve().parents[1]


def measure(label: str, overrides: list[str], generations: int) -> dict[str, float]:
    cfg = load_config(EvolveConfig, ROOT / "configs/evolve-default.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        evolve(cfg, Path(tmp), log=lambda _: None)
        rows = open_run(tmp).curves()[1:]  # the first generation warms up
    out = {k: statistics.median(r[k] for r in rows) for k in ("train_s", "fitness_s", "time_s")}
    out["other_s"] = out["time_s"] - out["train_s"] - out["fitness_s"]
    print(
        f"{label:28s} train {out['train_s']:7.2f} s  fitness {out['fitness_s']:7.2f} s  "
        f"other {out['other_s']:6.2f} s  total {out['time_s']:7.2f} s"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3, help="generations per mode; the first is a warm-up")
    args = parser.parse_args()
    base = [
        f"evolution.population={args.population}",
        f"evolution.generations={args.generations}",
        "evolution.tournament=2",
        "supernet.init_channels=8",
        "supernet.layers=5",
        "data.image_size=16",
        "data.batch_size=64",
        "distributed.batch_shards=2",
    ]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores; population {args.population}, CPU size C=8, 5 cells, 16x16"
    )
    local = measure("in-process, 1 thread", [*base, "distributed.num_actors=0", "runtime.threads=1"], args.generations)
    one = measure("1 actor x 1 thread", [*base, "distributed.num_actors=1", "resources.cpus=1"], args.generations)
    two = measure("2 actors x 1 thread", [*base, "distributed.num_actors=2", "resources.cpus=1"], args.generations)
    overhead = (one["time_s"] - local["time_s"]) / local["time_s"]
    print(f"Ray overhead, 1 actor vs in-process: {100 * overhead:+.1f}% of a generation")
    print(f"fitness throughput, 2 actors vs 1 actor: {one['fitness_s'] / two['fitness_s']:.2f}x")
    print(f"training throughput, 2 actors vs 1 actor: {one['train_s'] / two['train_s']:.2f}x")


if __name__ == "__main__":
    main()
