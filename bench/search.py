"""Do the gradient searchers find cells that beat random ones? Each searcher searches on real CIFAR-10 at a CPU proxy
size; its cell and a few random cells of the same space are then retrained the same brief way and tested.

    OMP_NUM_THREADS=1 python bench/search.py [--seed 0] [--searchers darts,snas,gdas,xnas] [--random 3]

Reads ../shared/data/cifar10-train-10k.npz (search: the first ``--search-images`` of it, half for the weights, half
for the alphas; retraining: ``--train-images``) and cifar10-test-2k.npz (test). Every searcher's alphas step at ten
times its paper's CIFAR-10 rate (a few hundred steps instead of tens of thousands). GDAS runs four times the epochs of
the others (its epochs compute one op per edge; its paper runs 240 epochs to DARTS' 50); SNAS keeps its paper's
150-epoch temperature horizon and first warms the weights up on random single paths for ``--snas-pretrain-epochs``
(the original's ``--random_sample_pretrain``). Prints per searcher the search time, the genotype and its test
accuracy against the random cells' mean and best. Two single-thread processes (``--searchers`` split, ``--random 0
--baseline`` with the first one's random accuracies) use two cores without oversubscribing them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evoray.config import config_from_dict, load_config
from evoray.searchers import SEARCHERS, SearchConfig
from evoray.spaces import format_genotype, get_space
from evoray.spaces.derive import derive_genotype, softmax
from evoray.training import TrainConfig, train_genotype

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def search(name: str, args: argparse.Namespace) -> tuple[str, float]:
    epochs = args.search_epochs * (4 if name == "gdas" else 1) + (args.snas_pretrain_epochs if name == "snas" else 0)
    data = {
        "searcher": name,
        "seed": args.seed,
        "epochs": epochs,
        "supernet": {"space": "darts", "init_channels": args.search_channels, "layers": 5},
        "data": {
            "dataset": "npz",
            "root": str(DATA / "cifar10-train-10k.npz"),
            "image_size": args.image_size,
            "limit_train": args.search_images,
            "batch_size": 64,
        },
        "arch": {"lr": 3e-3},
        **(
            {"snas": {"tau_epochs": args.snas_tau_epochs, "pretrain_epochs": args.snas_pretrain_epochs}}
            if name == "snas"
            else {}
        ),
    }
    if name == "snas":
        data["arch"] = {"optimizer": "sgd", "lr": args.snas_arch_lr, "weight_decay": 0.0, "grad_clip": 10.0}
    if name == "gdas":
        data["optim"] = {"nesterov": True, "weight_decay": 5e-4}
    cfg = config_from_dict(SearchConfig, data)
    searcher = SEARCHERS.get(name)(cfg, torch.device("cpu"))
    t0 = time.perf_counter()
    while not searcher.done():
        m = searcher.train_epoch()
        print(f"  {name} epoch {m['epoch']}/{epochs}: valid {m['valid_acc']:.1f}%", file=sys.stderr, flush=True)
    return format_genotype(searcher.genotype()), time.perf_counter() - t0


def retrain(genotype: str, args: argparse.Namespace) -> float:
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"seed={args.seed}",
            f"model.genotype={json.dumps(genotype)}",
            f"model.init_channels={args.train_channels}",
            "model.layers=5",
            "model.auxiliary=false",
            "model.drop_path_prob=0.0",
            "data.dataset=npz",
            f"data.root={DATA / 'cifar10-train-10k.npz'}",
            f"data.test_root={DATA / 'cifar10-test-2k.npz'}",
            f"data.image_size={args.image_size}",
            f"data.limit_train={args.train_images}",
            "data.batch_size=64",
            "data.cutout=0",
            f"optim.epochs={args.train_epochs}",
            "optim.lr=0.05",
        ],
    )
    t0 = time.perf_counter()
    acc = float(train_genotype(cfg, None, log=lambda _: None)["test_top1"])
    print(f"  retrained in {time.perf_counter() - t0:.0f} s: test {acc:.2f}%", file=sys.stderr, flush=True)
    return acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searchers", default="darts,snas,gdas,xnas")
    parser.add_argument("--search-epochs", type=int, default=8)
    parser.add_argument("--search-images", type=int, default=4000)
    parser.add_argument("--search-channels", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=5000)
    parser.add_argument("--train-channels", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--random", type=int, default=3, help="random cells retrained as the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snas-arch-lr", type=float, default=3e-3, help="SNAS' SGD learning rate of the alphas")
    parser.add_argument(
        "--snas-tau-epochs", type=int, default=150, help="SNAS' temperature horizon (0: this search's epochs)"
    )
    parser.add_argument(
        "--snas-pretrain-epochs", type=int, default=4, help="SNAS' single-path warm-up epochs, added to its search"
    )
    parser.add_argument("--baseline", default="", help="comma-separated random-cell accuracies measured earlier")
    parser.add_argument("--save", default="", help="append each cell (name, seed, genotype, accuracy) to this JSONL")
    parser.add_argument(
        "--cells", default="", help="retrain the cells of a --save file (no search; --seed seeds the retraining)"
    )
    args = parser.parse_args()
    if not (DATA / "cifar10-train-10k.npz").is_file():
        print(f"skipped: {DATA / 'cifar10-train-10k.npz'} is absent (real data lives in ../shared/data)")
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; search C={args.search_channels} 5 cells on "
        f"{args.search_images} images {args.image_size}x{args.image_size}; retrain C={args.train_channels} 5 cells, "
        f"{args.train_epochs} epochs on {args.train_images} images; test on cifar10-test-2k"
    )
    if args.cells:
        rescore(args)
        return
    space = get_space("darts")
    rng = np.random.default_rng(args.seed + 1)
    randoms = []
    for i in range(args.random):
        g = format_genotype(
            derive_genotype(space, {ct: softmax(rng.normal(size=space.alpha_shape(ct))) for ct in space.cell_types})
        )
        acc = retrain(g, args)
        randoms.append(acc)
        save(args, "random", args.seed, g, acc)
        print(f"random cell {i}: test {acc:.2f}%  {g}", flush=True)
    if args.baseline:  # random-cell accuracies of an earlier run with the same settings
        randoms += [float(v) for v in args.baseline.split(",")]
    print_baseline(randoms)
    for name in [n for n in args.searchers.split(",") if n]:
        genotype, seconds = search(name, args)
        acc = retrain(genotype, args)
        save(args, name, args.seed, genotype, acc)
        print(f"{name:5s} search {seconds:6.0f} s  {verdict(acc, randoms)}  {genotype}", flush=True)


def save(args: argparse.Namespace, name: str, seed: int, genotype: str, acc: float) -> None:
    if args.save:
        row = {"name": name, "seed": seed, "genotype": genotype, "test_top1": acc, "train_epochs": args.train_epochs}
        with open(args.save, "a") as f:
            f.write(json.dumps(row) + "\n")


def print_baseline(randoms: list[float]) -> None:
    print(
        f"random cells: mean {statistics.mean(randoms):.2f}% (min {min(randoms):.2f}, max {max(randoms):.2f})",
        flush=True,
    )


def verdict(acc: float, randoms: list[float]) -> str:
    base = statistics.mean(randoms)
    return (
        f"test {acc:.2f}%  ({acc - base:+.2f} vs random mean; {'beats' if acc > base else 'does not beat'} it; "
        f"{'beats' if acc > max(randoms) else 'below'} the best random)"
    )


def rescore(args: argparse.Namespace) -> None:
    """Retrain saved cells under this run's retraining settings; compare each search seed's cells with its randoms."""
    rows = [json.loads(line) for line in Path(args.cells).read_text().splitlines() if line.strip()]
    scores: dict[tuple[int, str], list[float]] = {}
    for row in rows:
        acc = retrain(row["genotype"], args)
        save(args, row["name"], row["seed"], row["genotype"], acc)
        scores.setdefault((row["seed"], row["name"]), []).append(acc)
        print(f"{row['name']:6s} (search seed {row['seed']}): test {acc:.2f}%", flush=True)
    margins: dict[str, list[float]] = {}  # per searcher, its margin over the random mean of each search seed
    for seed in sorted({s for s, _ in scores}):
        randoms = scores.get((seed, "random"), [])
        if not randoms:
            continue
        print(f"search seed {seed}:", end=" ")
        print_baseline(randoms)
        for (s, name), accs in sorted(scores.items()):
            if s == seed and name != "random":
                print(f"  {name:5s} {verdict(statistics.mean(accs), randoms)}", flush=True)
                margins.setdefault(name, []).append(statistics.mean(accs) - statistics.mean(randoms))
    for name, m in sorted(margins.items()):
        if len(m) > 1:
            print(
                f"{name:5s} over {len(m)} search seeds: mean margin {statistics.mean(m):+.2f} (sd "
                f"{statistics.stdev(m):.2f}); above its seed's random mean at {sum(v > 0 for v in m)} of {len(m)}"
            )


if __name__ == "__main__":
    main()
