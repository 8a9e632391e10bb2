"""Every searcher on NAS-Bench-201, judged by the benchmark's own table: no retraining, the found cell's accuracy is a
lookup.

    python bench/nb201.py [--searchers evnas,darts1,darts2,gdas,xnas,rsps,random,ga] [--seeds 0,1,2] [--jobs 2]
                          [--save results.jsonl] [--archive DIR] [--size cpu|cpu3|paper] [--device cuda]
                          [--data DIR]

Data: ../shared/data/cifar10-train-10k.npz split in halves (weights / alphas and fitness) at 16x16 pixels, and the
NAS-Bench-201 12-epoch table ../shared/data/nb201-12epoch.csv. Each search runs in-process (plain PyTorch, one thread
per job; ``--jobs`` searches at a time). For every found cell it prints the table's 12-epoch CIFAR-10 test accuracy
beside the method's published 200-epoch number (the target: 200-epoch accuracy is held out from this project, and the
12-epoch column ranks slow-training conv-heavy cells low), the search time, the cell's op counts and, for the
weight-sharing searchers, the Kendall tau between the shared weights' accuracy and the table's 12-epoch validation
accuracy on 64 fixed random cells. Then mean and spread per searcher. ``--save`` appends every result as a JSON line
and skips the searches it already holds; ``--archive DIR`` writes every found cell as an evoray population archive
(``DIR/archive.parquet``: committees can be built from it).

The CPU proxy (``--size cpu``): the NAS-Bench-201 supernet at C=8 with N=1 cell per stage on 16x16 images, 5,000
images for the weights and 5,000 for the alphas (or fitness). Each method keeps its paper's epochs (DARTS, XNAS: 50;
GDAS, RSPS: 250; EvNAS: 50 generations) and schedules (cosine learning rate, GDAS' tau from 10 to 0.1 over the run);
an epoch is 78 steps instead of the paper's 391 (25,000 images), so every alpha learning rate is multiplied by
391 / 78 = 5: over the run the alphas can move as far as in the paper's search (Adam's step is about its rate).
XNAS' eta follows from its T. EvNAS keeps 50 generations with a population of 20 and tournaments of 4 (the
paper's 50 and 10; each individual's fitness reads the 5,000 validation images). ``--size paper`` is the papers'
search at full size (C=16, N=5, 32x32, the whole 10k file: a GPU's job, ``--device cuda``; each search then runs with
cuDNN's autotuner as a default run of its method does). ``--data DIR`` reads the two npz files and the table from DIR.

``--size cpu3`` is the same proxy with N=3 cells per stage (9 searching cells sharing one set of alphas, against the
paper's 15): every alpha's gradient then sums what three cells of a stage ask of it. At N=1 a search sees too little of
what the paper's network asks: GDAS drifts to skip connections and `none` there, and AutoDL-Projects' own GDAS does the
same on the same batches (bench/nb201_gdas_original.py: 78.5 and 78.8 at the 12-epoch test for seeds 0 and 1, cells
without a convolution); at N=3 both find cells of 3x3 convolutions, and land in the same part of the table: over
seeds 0-2, evoray 79.25 (84.37, 83.23, 70.16), the original 78.20 (81.86, 76.34, 76.41). DARTS (first order) ends on
the all-skip cell for all three seeds there, the collapse its NAS-Bench-201 number records; second order on two of
three (the third: five skips and one `none`), and XNAS on two of three.
Epochs, steps and every rate stay those of ``cpu``; a step costs about 2.5 times as much.
Table baselines: random search and the GA on the 12-epoch validation column, 150 distinct cells each.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_ENV = "EVORAY_NB201_DATA"  # --data, as the search processes see it
DATA = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")
TRAIN, TEST, TABLE = DATA / "cifar10-train-10k.npz", DATA / "cifar10-test-2k.npz", DATA / "nb201-12epoch.csv"
VALID_COLUMN, TEST_COLUMN = "cifar10_valid_12ep", "cifar10_test_12ep"
# CIFAR-10 test accuracy after 200 epochs that each method's paper reports on NAS-Bench-201 (mean, sd)
PUBLISHED = {
    "evnas": (92.18, 1.11),
    "darts1": (54.30, 0.0),
    "darts2": (54.30, 0.0),
    "gdas": (93.61, 0.09),
    "rsps": (87.66, 1.69),
    "random": (93.70, 0.36),  # random search on the table (NAS-Bench-201 paper)
    "ga": (93.92, 0.30),  # REA on the table: the closest published table search
    "xnas": (math.nan, math.nan),  # not published on NAS-Bench-201
}
SEARCHERS = ("evnas", "darts1", "darts2", "gdas", "xnas", "rsps", "random", "ga")
SIZES = {  # supernet C, cells per stage, image side, training images (before the halves), steps ratio to the paper
    "cpu": {"C": 8, "N": 1, "side": 16, "images": 10_000, "alpha_lr_scale": 391 / 78},
    "cpu3": {"C": 8, "N": 3, "side": 16, "images": 10_000, "alpha_lr_scale": 391 / 78},
    "paper": {"C": 16, "N": 5, "side": 32, "images": 10_000, "alpha_lr_scale": 391 / 78},
}
KENDALL_CELLS, KENDALL_SEED = 64, 201


def load_table(path: Path) -> dict[str, tuple[float, float]]:
    """arch -> (12-epoch validation, 12-epoch test) accuracy; a table without those columns is a one-line error."""
    import pandas as pd

    df = pd.read_csv(path)
    missing = [c for c in ("arch", VALID_COLUMN, TEST_COLUMN) if c not in df.columns]
    if missing:
        raise SystemExit(
            f"error: table {path} lacks the column(s) {', '.join(missing)}; needs arch, {VALID_COLUMN}, {TEST_COLUMN}"
        )
    return {str(a): (float(v), float(t)) for a, v, t in zip(df["arch"], df[VALID_COLUMN], df[TEST_COLUMN])}


def data_section(size: dict[str, Any]) -> dict[str, Any]:
    return {
        "dataset": "npz",
        "root": str(TRAIN),
        "test_root": str(TEST),  # unused by the search; keeps every image of TRAIN for the halves
        "image_size": size["side"],
        "limit_train": size["images"],
        "batch_size": 64,
        "train_portion": 0.5,
        "cutout": 0,
    }


def search_config(name: str, seed: int, size: dict[str, Any], budget: float = 1.0) -> Any:
    """The trial config of a gradient searcher on NAS-Bench-201: its paper settings, scaled as the module says;
    ``budget`` scales every run's epochs (and the alpha learning rates inversely, so the alphas can move as far)."""
    from evoray.config import config_from_dict
    from evoray.searchers.experiment import ExperimentConfig, expand

    searcher = "darts" if name.startswith("darts") else name
    base: dict[str, Any] = {
        "supernet": {"space": "nb201", "init_channels": size["C"], "layers": size["N"]},
        "data": data_section(size),
        "arch": {"lr": 3e-4 * size["alpha_lr_scale"] / budget, "weight_decay": 1e-3},
        "optim": {"lr": 0.025, "lr_min": 0.001, "weight_decay": 5e-4},
    }
    per: dict[str, Any] = {"epochs": max(1, round(50 * budget))}
    if name == "darts2":
        per["darts"] = {"order": 2}
    if name in ("gdas", "rsps"):
        per["epochs"] = max(1, round(250 * budget))
    if name == "rsps":
        per["rsps"] = {"candidates": 100, "candidate_batch_size": 512, "select": "last_epoch"}
    exp = config_from_dict(
        ExperimentConfig, {"searchers": [searcher], "seeds": [seed], "base": base, "per_searcher": {searcher: per}}
    )
    (cfg,) = expand(exp)
    return cfg


def kendall_cells() -> list[Any]:
    from evoray.spaces import get_space
    from evoray.spaces.derive import random_genotype

    rng = np.random.default_rng(KENDALL_SEED)
    return [random_genotype(get_space("nb201"), rng) for _ in range(KENDALL_CELLS)]


def kendall(scores: list[float], cells: list[Any], table: dict[str, tuple[float, float]]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(scores, [table[str(c)][0] for c in cells]).statistic)


def run_gradient(
    name: str, seed: int, size: dict[str, Any], budget: float, log: Any, device: str = "cpu"
) -> dict[str, Any]:
    from evoray.runtime import apply_runtime
    from evoray.searchers import SEARCHERS

    cfg = search_config(name, seed, size, budget)
    cfg.runtime.device = device
    method = SEARCHERS.get(cfg.searcher)
    s = method(cfg, apply_runtime(cfg.runtime, autotune=method.autotune))  # as the search's trial sets its runtime
    t0 = time.perf_counter()
    history = []
    while not s.done():
        m = s.train_epoch()
        dist = s.op_distributions()["cell"]
        history.append(
            {"epoch": m["epoch"], "valid_acc": m["valid_acc"], "entropy": m.get("entropy_cell"), "ops": dist.tolist()}
        )
        if m["epoch"] % 10 == 0 or m["epoch"] == cfg.epochs:
            log(
                f"{name} s{seed} epoch {m['epoch']}/{cfg.epochs}: valid {m['valid_acc']:.1f}% entropy "
                f"{m.get('entropy_cell', float('nan')):.3f} {m['genotype']}"
            )
    search_s = time.perf_counter() - t0
    cells = kendall_cells()
    batches = list(s.validation_batches(limit=0))
    scores = s.score_cells(cells, batches)
    return {
        "genotype": str(s.genotype()),
        "alphas": {k: v.tolist() for k, v in s.alphas().items()},
        "search_s": search_s,
        "kendall_scores": scores,
        "history": history,
    }


def evnas_config(seed: int, size: dict[str, Any], budget: float = 1.0) -> Any:
    """The EvNAS search of the module's proxy: population 20, tournaments of 4, 50 generations (scaled by
    ``budget``), the original's SGD (Nesterov, configs/EvNAS.config), fitness in BN eval mode on the validation half."""
    from evoray.config import config_from_dict
    from evoray.evolution.config import EvolveConfig

    return config_from_dict(
        EvolveConfig,
        {
            "seed": seed,
            "evolution": {
                "strategy": "ga",
                "population": 20,
                "generations": max(2, round(50 * budget)),
                "tournament": 4,
                "elites": 1,
            },
            "supernet": {"space": "nb201", "init_channels": size["C"], "layers": size["N"]},
            "optim": {"lr": 0.025, "lr_min": 0.001, "weight_decay": 3e-4, "nesterov": True},
            "fitness": {"backend": "supernet", "bn_mode": "eval", "batch_size": 1024},
            "data": data_section(size),
            "distributed": {"num_actors": 0},
        },
    )


def run_evnas(seed: int, size: dict[str, Any], budget: float, log: Any, device: str = "cpu") -> dict[str, Any]:
    from evoray.evolution.run import alphas_for
    from evoray.evolution.search import run_evolution
    from evoray.evolution.strategies import build_strategy
    from evoray.evolution.supernet_fitness import SupernetBackend, SupernetTrainer
    from evoray.runtime import apply_runtime
    from evoray.spaces import get_space

    cfg = evnas_config(seed, size, budget)
    cfg.runtime.device = device
    space = get_space("nb201")
    # what an evolve run's supernet does: its runtime (channels-last, the autotuner off) and settings
    where = apply_runtime(cfg.runtime, autotune=SupernetTrainer.autotune)
    trainer = SupernetTrainer(**cfg.trainer_kwargs(), device=where)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    strategy = build_strategy(cfg.evolution, space, rng)
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []

    def on_generation(g: int, individuals: list[Any], stats: dict[str, float]) -> None:
        history.append({"generation": g, "best": stats["best"], "mean": stats["mean"]})
        if (g + 1) % 10 == 0:
            log(f"evnas s{seed} generation {g + 1}/{cfg.evolution.generations}: best {stats['best']:.1f}")

    result = run_evolution(strategy, SupernetBackend(trainer), on_generation)
    search_s = time.perf_counter() - t0
    cells = kendall_cells()
    scores = trainer.fitness([alphas_for(space, c, rng) for c in cells], cfg.evolution.generations)
    return {
        "genotype": result.best.genotype,
        "alphas": {k: v.tolist() for k, v in result.best.alphas.items()},
        "search_s": search_s,
        "kendall_scores": scores,
        "history": history,
    }


def run_table(name: str, seed: int, table: dict[str, tuple[float, float]]) -> dict[str, Any]:
    from evoray.evolution.fitness import FitnessBackend
    from evoray.evolution.search import run_evolution
    from evoray.evolution.strategies import EvolutionConfig, build_strategy
    from evoray.spaces import get_space

    class Lookup(FitnessBackend):
        def evaluate(self, individuals: list[Any], generation: int = 0) -> list[float]:
            return [table[i.genotype][0] for i in individuals]

    space = get_space("nb201")
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if name == "random":  # 150 distinct random cells, the best by the validation column
        from evoray.spaces.derive import random_genotype

        seen: dict[str, float] = {}
        while len(seen) < 150:
            g = str(random_genotype(space, rng))
            seen[g] = table[g][0]
        genotype = max(seen, key=lambda g: seen[g])
    else:
        cfg = EvolutionConfig(population=20, generations=100, tournament=5, max_evaluations=150)
        genotype = run_evolution(build_strategy(cfg, space, rng), Lookup()).best.genotype
    return {"genotype": genotype, "alphas": None, "search_s": time.perf_counter() - t0, "kendall_scores": None}


def job(name: str, seed: int, size_name: str, budget: float = 1.0, device: str = "cpu") -> dict[str, Any]:
    from evoray.runtime import reuse_freed_memory

    torch.set_num_threads(1)
    reuse_freed_memory()  # the default runtime's allocator setting (runtime.reuse_memory)
    torch.manual_seed(seed)
    size = SIZES[size_name]

    def log(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    table = load_table(TABLE)
    if name in ("random", "ga"):
        out = run_table(name, seed, table)
    elif name == "evnas":
        out = run_evnas(seed, size, budget, log, device)
    else:
        out = run_gradient(name, seed, size, budget, log, device)
    valid, test = table[out["genotype"]]
    tau = None if out["kendall_scores"] is None else kendall(out["kendall_scores"], kendall_cells(), table)
    ops = Counter(
        op for node in out["genotype"].strip("|").split("|+|") for op in (e.split("~")[0] for e in node.split("|"))
    )
    return {
        "searcher": name,
        "seed": seed,
        "size": size_name,
        "budget": budget,
        "genotype": out["genotype"],
        "valid_12ep": valid,
        "test_12ep": test,
        "search_s": round(out["search_s"], 1),
        "kendall_tau": tau,
        "ops": dict(sorted(ops.items())),
        "alphas": out["alphas"],
        "history": out.get("history"),
    }


def job_of(task: tuple[str, int, str, float, str]) -> dict[str, Any]:
    return job(*task)


def summary(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'searcher':8} {'seed':>4} {'test@12':>8} {'valid@12':>8} {'paper@200':>10} {'tau':>6} {'time s':>7}  cell",
        "-" * 110,
    ]
    for r in sorted(rows, key=lambda r: (SEARCHERS.index(r["searcher"]), r["seed"])):
        paper = PUBLISHED[r["searcher"]][0]
        tau = "-" if r["kendall_tau"] is None else f"{r['kendall_tau']:.3f}"
        lines.append(
            f"{r['searcher']:8} {r['seed']:>4} {r['test_12ep']:>8.2f} {r['valid_12ep']:>8.2f} {paper:>10.2f} {tau:>6} "
            f"{r['search_s']:>7.0f}  {r['genotype']}"
        )
    lines += ["", f"{'searcher':8} {'seeds':>5} {'test@12 mean':>12} {'sd':>6} {'paper@200':>14} {'tau mean':>8}  ops"]
    for name in SEARCHERS:
        mine = [r for r in rows if r["searcher"] == name]
        if not mine:
            continue
        accs = [r["test_12ep"] for r in mine]
        taus = [r["kendall_tau"] for r in mine if r["kendall_tau"] is not None]
        ops: Counter[str] = Counter()
        for r in mine:
            ops.update(r["ops"])
        published, spread = PUBLISHED[name]
        lines.append(
            f"{name:8} {len(mine):>5} {statistics.mean(accs):>12.2f} {statistics.pstdev(accs):>6.2f} "
            f"{published:>7.2f} +- {spread:<4.2f} {(statistics.mean(taus) if taus else math.nan):>8.3f}  {dict(ops)}"
        )
    return "\n".join(lines)


def write_archive(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    """Every found cell as one individual of generation 0 (fitness: its 12-epoch validation accuracy)."""
    from evoray.profiling import genotype_params_m
    from evoray.runs.archive import individual_row
    from evoray.runs.archive import write_archive as write
    from evoray.spaces import get_space, one_hot, parse_genotype

    out_dir.mkdir(parents=True, exist_ok=True)
    space = get_space("nb201")
    archive = []
    for i, r in enumerate(rows):
        alphas = r["alphas"] or one_hot(space, parse_genotype(r["genotype"]))
        alphas = {k: np.asarray(v, dtype=np.float32) for k, v in alphas.items()}
        origin = f"nb201:{r['searcher']}:s{r['seed']}"
        params = genotype_params_m(r["genotype"])
        archive.append(
            individual_row(
                0, i, [], origin, r["genotype"], r["valid_12ep"], params, alphas, "nb201", r["searcher"], "", r["seed"]
            )
        )
    path = out_dir / "archive.parquet"
    write(path, archive)
    return path


def main() -> int:
    global TRAIN, TEST, TABLE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searchers", default=",".join(SEARCHERS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--jobs", type=int, default=2, help="searches at a time (one thread each)")
    parser.add_argument(
        "--budget", type=float, default=1.0, help="scale every search's epochs (alpha learning rates inversely)"
    )
    parser.add_argument("--save", type=Path, help="append results here (JSON lines); searches it holds are skipped")
    parser.add_argument("--archive", type=Path, help="write every found cell as an evoray archive in this directory")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the searches run")
    parser.add_argument("--data", type=Path, help=f"folder of {TRAIN.name}, {TEST.name} and {TABLE.name}")
    args = parser.parse_args()
    if args.data is not None:
        os.environ[DATA_ENV] = str(args.data.resolve())  # the search processes import this module anew
        TRAIN, TEST, TABLE = (args.data.resolve() / p.name for p in (TRAIN, TEST, TABLE))
    for path in (TRAIN, TEST, TABLE):
        if not path.is_file():
            print(f"skipped: {path} is absent (the real data lives in ../shared/data)")
            return 0
    names = [n.strip() for n in args.searchers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SEARCHERS))
    if unknown:
        print(f"error: unknown searcher {unknown[0]!r}; valid: {', '.join(SEARCHERS)}", file=sys.stderr)
        return 2
    load_table(TABLE)  # a table without the 12-epoch columns stops here
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    if args.save is not None and args.save.is_file():
        rows = [json.loads(line) for line in args.save.read_text().splitlines() if line.strip()]
    done = {(r["searcher"], r["seed"], r["size"], r.get("budget", 1.0)) for r in rows}
    todo = [
        (n, s, args.size, args.budget, args.device)
        for s in seeds
        for n in names
        if (n, s, args.size, args.budget) not in done
    ]
    print(f"{len(todo)} searches to run ({len(rows)} saved)", file=sys.stderr, flush=True)
    with mp.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        for row in pool.imap_unordered(job_of, todo) if args.jobs > 1 else map(job_of, todo):
            rows.append(row)
            print(
                f"done: {row['searcher']} s{row['seed']}: test@12 {row['test_12ep']:.2f} {row['genotype']}",
                file=sys.stderr,
                flush=True,
            )
            if args.save is not None:
                with args.save.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    mine = [
        r
        for r in rows
        if (r["size"], r.get("budget", 1.0)) == (args.size, args.budget)
        and r["searcher"] in names
        and r["seed"] in seeds
    ]
    print(summary(mine))
    if args.archive is not None:
        print(f"archive: {write_archive(mine, args.archive)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
