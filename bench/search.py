"""Do the gradient searchers find cells that beat random ones? Each searcher searches on real CIFAR-10 at a CPU proxy
size; its cell and a few random cells of the same space are then retrained the same brief way and tested.

    OMP_NUM_THREADS=1 python bench/search.py [--seed 0] [--searchers darts,snas,gdas,xnas] [--random 3]

Reads ../shared/data/cifar10-train-10k.npz (search: ``--search-images`` of it, half for the weights, half for the
alphas, all of them for single-level SNAS as in its original code; retraining: ``--train-images``) and
cifar10-test-2k.npz (test). Every searcher's alphas step at ten times its paper's CIFAR-10 rate (a few hundred steps
instead of tens of thousands). DARTS runs second order, as its published cell was searched and as
configs/search-cifar10.yaml runs it (``--darts-order 1``: first order; the results name them darts2 and darts1).
GDAS runs four times the epochs of the others (its epochs compute one op per edge; its paper runs 240 epochs to
DARTS' 50); SNAS keeps its paper's 150-epoch temperature horizon and first warms the weights up on random single
paths for ``--snas-pretrain-epochs`` (the original's ``--random_sample_pretrain``). Prints per searcher the
search time, the genotype and its test accuracy against the random cells' mean and best. Two single-thread processes
(``--searchers`` split, ``--random 0 --baseline`` with the first one's random accuracies) use two cores without
oversubscribing them.

Retraining is noisy (a cell's accuracy moves by a point or two with the retraining seed), so a verdict wants several
search seeds and ``--retrain-seeds``: ``--cells F`` then retrains the saved cells of every search seed and prints,
besides each seed's comparison, every searcher's cells pooled against every random cell.
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
            "image_size": args.search_image_size,
            "limit_train": args.search_images,
            "batch_size": 64,
            "train_portion": 1.0 if name == "snas" else 0.5,  # single-level SNAS: every image; the others: halves
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
    if name == "darts":
        data["darts"] = {"order": args.darts_order}
    cfg = config_from_dict(SearchConfig, data)
    searcher = SEARCHERS.get(name)(cfg, torch.device("cpu"))
    t0 = time.perf_counter()
    while not searcher.done():
        m = searcher.train_epoch()
        print(f"  {name} epoch {m['epoch']}/{epochs}: valid {m['valid_acc']:.1f}%", file=sys.stderr, flush=True)
    return format_genotype(searcher.genotype()), time.perf_counter() - t0


def retrain(genotype: str, args: argparse.Namespace, seed: int) -> float:
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"seed={seed}",
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


SETTINGS = ("train_epochs", "train_images", "train_channels", "image_size")  # what a saved retraining depends on


def retrain_settings(args: argparse.Namespace) -> dict[str, int]:
    return {k: getattr(args, k) for k in SETTINGS}


def done_key(genotype: str, retrain_seed: int, settings: dict[str, int]) -> tuple[str, int, str]:
    """A retraining's key in ``done``, for the runs of this process and the rows of a --save file alike."""
    return genotype, retrain_seed, json.dumps(settings, sort_keys=True)


def retrain_seeds(args: argparse.Namespace) -> list[int]:
    return [int(v) for v in args.retrain_seeds.split(",") if v.strip()] if args.retrain_seeds else [args.seed]


def retrain_all(name: str, seed: int, genotype: str, args: argparse.Namespace, done: dict) -> float:
    """The cell's mean test accuracy over the retraining seeds; retrainings already in ``done`` are reused."""
    accs = []
    for rs in retrain_seeds(args):
        key = done_key(genotype, rs, retrain_settings(args))
        if key not in done:
            done[key] = retrain(genotype, args, rs)
            if args.save:
                row = {"name": name, "seed": seed, "genotype": genotype, "test_top1": done[key], "retrain_seed": rs}
                with open(args.save, "a") as f:
                    f.write(json.dumps({**row, **retrain_settings(args)}) + "\n")
        accs.append(done[key])
    return statistics.mean(accs)


def load_done(path: str) -> dict:
    """Retrainings of a --save file, by (genotype, retraining seed, retraining settings)."""
    done = {}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if "retrain_seed" not in row or any(k not in row for k in SETTINGS):
                    continue  # a row of an older format: its retraining seed is unknown, so it is retrained
                done[done_key(row["genotype"], row["retrain_seed"], {k: row[k] for k in SETTINGS})] = row["test_top1"]
    return done


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
    parser.add_argument(
        "--search-image-size", type=int, default=0, help="the search's image side, if not --image-size (results: @N)"
    )
    parser.add_argument("--random", type=int, default=3, help="random cells retrained as the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--darts-order", type=int, default=2, choices=(1, 2), help="DARTS' gradient order (results: darts1, darts2)"
    )
    parser.add_argument("--snas-arch-lr", type=float, default=3e-3, help="SNAS' SGD learning rate of the alphas")
    parser.add_argument(
        "--snas-tau-epochs", type=int, default=150, help="SNAS' temperature horizon (0: this search's epochs)"
    )
    parser.add_argument(
        "--snas-pretrain-epochs", type=int, default=4, help="SNAS' single-path warm-up epochs, added to its search"
    )
    parser.add_argument("--baseline", default="", help="comma-separated random-cell accuracies measured earlier")
    parser.add_argument(
        "--retrain-seeds", default="", help="comma-separated retraining seeds; a cell scores its mean (default: --seed)"
    )
    parser.add_argument(
        "--save", default="", help="append each retraining (cell, seeds, settings, accuracy) to this JSONL; reused"
    )
    parser.add_argument("--cells", default="", help="retrain the cells of a --save file (no search)")
    args = parser.parse_args()
    args.search_image_size = args.search_image_size or args.image_size
    if not (DATA / "cifar10-train-10k.npz").is_file():
        print(f"skipped: {DATA / 'cifar10-train-10k.npz'} is absent (real data lives in ../shared/data)")
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; search C={args.search_channels} 5 cells on "
        f"{args.search_images} images {args.search_image_size}px; retrain C={args.train_channels} "
        f"5 cells, {args.train_epochs} epochs on {args.train_images} images at seeds {retrain_seeds(args)}; test on "
        "cifar10-test-2k"
    )
    done = load_done(args.save)
    if args.cells:
        rescore(args, done)
        return
    space = get_space("darts")
    rng = np.random.default_rng(args.seed + 1)
    randoms = []
    for i in range(args.random):
        g = format_genotype(
            derive_genotype(space, {ct: softmax(rng.normal(size=space.alpha_shape(ct))) for ct in space.cell_types})
        )
        acc = retrain_all("random", args.seed, g, args, done)
        randoms.append(acc)
        print(f"random cell {i}: test {acc:.2f}%  {g}", flush=True)
    if args.baseline:  # random-cell accuracies of an earlier run with the same settings
        randoms += [float(v) for v in args.baseline.split(",")]
    if randoms:
        print_baseline(randoms)
    for name in [n for n in args.searchers.split(",") if n]:
        genotype, seconds = search(name, args)
        label = label_of(name, args)
        acc = retrain_all(label, args.seed, genotype, args, done)
        print(f"{label:6s} search {seconds:6.0f} s  {verdict(acc, randoms)}  {genotype}", flush=True)


def label_of(name: str, args: argparse.Namespace) -> str:
    """The searcher's name in the results, where DARTS' two orders are told apart, as are searches at another image
    size than the retraining's."""
    label = f"darts{args.darts_order}" if name == "darts" else name
    size = args.search_image_size
    return f"{label}@{size}" if size != args.image_size else label


def print_baseline(randoms: list[float]) -> None:
    print(
        f"random cells: mean {statistics.mean(randoms):.2f}% (min {min(randoms):.2f}, max {max(randoms):.2f})",
        flush=True,
    )


def verdict(acc: float, randoms: list[float]) -> str:
    if not randoms:
        return f"test {acc:.2f}%"
    base = statistics.mean(randoms)
    return (
        f"test {acc:.2f}%  ({acc - base:+.2f} vs random mean; {'beats' if acc > base else 'does not beat'} it; "
        f"{'beats' if acc > max(randoms) else 'below'} the best random)"
    )


def rescore(args: argparse.Namespace, done: dict) -> None:
    """Retrain saved cells under this run's retraining settings and seeds; compare every searcher's cells with the
    random cells, per search seed and pooled over seeds (random cells do not depend on the search seed)."""
    cells: dict[tuple[str, int, str], None] = {}  # each distinct cell once, in file order
    for line in Path(args.cells).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            cells[(row["name"], row["seed"], row["genotype"])] = None
    scores: dict[tuple[int, str], list[float]] = {}
    for name, seed, genotype in cells:
        acc = retrain_all(name, seed, genotype, args, done)
        scores.setdefault((seed, name), []).append(acc)
        print(f"{name:6s} (search seed {seed}): test {acc:.2f}%", flush=True)
    margins: dict[str, list[float]] = {}  # per searcher, its margin over the random mean of each search seed
    for seed in sorted({s for s, _ in scores}):
        randoms = scores.get((seed, "random"), [])
        if not randoms:
            continue
        print(f"search seed {seed}:", end=" ")
        print_baseline(randoms)
        for (s, name), accs in sorted(scores.items()):
            if s == seed and name != "random":
                print(f"  {name:6s} {verdict(statistics.mean(accs), randoms)}", flush=True)
                margins.setdefault(name, []).append(statistics.mean(accs) - statistics.mean(randoms))
    for name, m in sorted(margins.items()):
        if len(m) > 1:
            print(
                f"{name:6s} over {len(m)} search seeds: mean margin {statistics.mean(m):+.2f} (sd "
                f"{statistics.stdev(m):.2f}); above its seed's random mean at {sum(v > 0 for v in m)} of {len(m)}"
            )
    pooled(scores)


def pooled(scores: dict[tuple[int, str], list[float]]) -> None:
    """Every searcher's cells against every random cell: means, Welch's t of the difference, and the share of
    (searcher cell, random cell) pairs the searcher wins."""
    groups: dict[str, list[float]] = {}
    for (_, name), accs in sorted(scores.items()):
        groups.setdefault(name, []).extend(accs)
    randoms = groups.pop("random", [])
    if len(randoms) < 2:
        return
    r_mean, r_var = statistics.mean(randoms), statistics.variance(randoms)
    print(f"pooled: {len(randoms)} random cells, mean {r_mean:.2f}% (sd {r_var**0.5:.2f})")
    for name, accs in groups.items():
        mean = statistics.mean(accs)
        se = (r_var / len(randoms) + (statistics.variance(accs) / len(accs) if len(accs) > 1 else r_var)) ** 0.5
        wins = sum((a > r) + 0.5 * (a == r) for a in accs for r in randoms) / (len(accs) * len(randoms))
        print(
            f"  {name:6s} {len(accs)} cells, mean {mean:.2f}%: {mean - r_mean:+.2f} over random "
            f"(t {(mean - r_mean) / se:.2f}); wins {100 * wins:.0f}% of cell pairs",
            flush=True,
        )


if __name__ == "__main__":
    main()
