"""Do the gradient searchers find cells that beat random ones? Each searcher searches on real CIFAR-10 at a CPU proxy
size; its cell and a few random cells of the same space are then retrained the same brief way and tested.

    python bench/search.py [--search-epochs 4] [--train-epochs 8] [--random 3] [--image-size 16]

Reads ../shared/data/cifar10-train-10k.npz (search: the first ``--search-images`` of it, half for the weights, half
for the alphas; retraining: ``--train-images``) and cifar10-test-2k.npz (test). GDAS runs four times the epochs of
the others (its epochs compute one op per edge; its paper runs 240 epochs to DARTS' 50). Prints per searcher the
search time, the genotype and its test accuracy against the random cells' mean.
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
    epochs = args.search_epochs * (4 if name == "gdas" else 1)
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
        **({"snas": {"tau_epochs": args.snas_tau_epochs}} if name == "snas" else {}),
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
    parser.add_argument("--search-epochs", type=int, default=4)
    parser.add_argument("--search-images", type=int, default=3000)
    parser.add_argument("--search-channels", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--train-channels", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--random", type=int, default=3, help="random cells retrained as the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snas-arch-lr", type=float, default=3e-2, help="SNAS' SGD learning rate of the alphas")
    parser.add_argument(
        "--snas-tau-epochs", type=int, default=0, help="SNAS' temperature horizon (0: this search's epochs; paper: 150)"
    )
    parser.add_argument("--baseline", default="", help="comma-separated random-cell accuracies measured earlier")
    args = parser.parse_args()
    if not (DATA / "cifar10-train-10k.npz").is_file():
        print(f"skipped: {DATA / 'cifar10-train-10k.npz'} is absent (real data lives in ../shared/data)")
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; search C={args.search_channels} 5 cells on "
        f"{args.search_images} images {args.image_size}x{args.image_size}; retrain C={args.train_channels} 5 cells, "
        f"{args.train_epochs} epochs on {args.train_images} images; test on cifar10-test-2k"
    )
    space = get_space("darts")
    rng = np.random.default_rng(args.seed + 1)
    randoms = []
    for i in range(args.random):
        g = format_genotype(
            derive_genotype(space, {ct: softmax(rng.normal(size=space.alpha_shape(ct))) for ct in space.cell_types})
        )
        acc = retrain(g, args)
        randoms.append(acc)
        print(f"random cell {i}: test {acc:.2f}%  {g}", flush=True)
    if args.baseline:  # random-cell accuracies of an earlier run with the same settings
        randoms += [float(v) for v in args.baseline.split(",")]
    base = statistics.mean(randoms)
    print(f"random cells: mean {base:.2f}% (min {min(randoms):.2f}, max {max(randoms):.2f})", flush=True)
    for name in [n for n in args.searchers.split(",") if n]:
        genotype, seconds = search(name, args)
        acc = retrain(genotype, args)
        verdict = "beats" if acc > base else "does not beat"
        print(
            f"{name:5s} search {seconds:6.0f} s  test {acc:.2f}%  ({acc - base:+.2f} vs random mean; {verdict} it; "
            f"{'beats' if acc > max(randoms) else 'below'} the best random)  {genotype}",
            flush=True,
        )


if __name__ == "__main__":
    main()
