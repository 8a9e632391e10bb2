"""Committees of five published genotypes on real CIFAR-10 at a CPU proxy size: do they beat their best member?

Five members (DARTS_V2, DARTS_V1, EvNAS_A, EvNAS_B, GDAS_V1) are trained from scratch as Ray tasks on
``../shared/data/cifar10-train-10k.npz`` (90% for training, 10% held out to select committees) at a CPU proxy size
(C=8, 5 cells, 16x16 images, 10 epochs) and measured on ``../shared/data/cifar10-test-2k.npz``, clean and corrupted.

    python bench/ensemble.py [--epochs 10] [--channels 8] [--image-size 16] [--out DIR]

Prints every member's and committee's test accuracy, NLL and ECE (and their means under shift), then whether the
best committee (chosen by validation NLL) beats the best single member on accuracy and on NLL. Skips with a message
when the data files are absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from evoray.commands.ensemble import ensemble
from evoray.config import load_config
from evoray.ensemble import EnsembleConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TRAIN, TEST = DATA / "cifar10-train-10k.npz", DATA / "cifar10-test-2k.npz"
MEMBERS = "[DARTS_V2, DARTS_V1, EvNAS_A, EvNAS_B, GDAS_V1]"
COMMITTEES = (
    "[{combiner: logit_sum}, {combiner: prob_mean}, {combiner: vote}, {combiner: caruana, size: 10},"
    " {combiner: forward_select, size: 3}]"
)


def spec(args: argparse.Namespace) -> EnsembleConfig:
    return load_config(
        EnsembleConfig,
        None,
        [
            "name=bench-cifar10",
            "data.dataset=npz",
            f"data.root={TRAIN}",
            f"data.test_root={TEST}",
            f"data.image_size={args.image_size}",
            "data.train_portion=0.9",
            "data.batch_size=96",
            "data.cutout=0",
            f"members.published={MEMBERS}",
            f"train.model.init_channels={args.channels}",
            "train.model.layers=5",
            "train.model.auxiliary=false",
            "train.model.drop_path_prob=0.0",
            f"train.optim.epochs={args.epochs}",
            "train.optim.lr=0.05",
            "train.runtime.device=cpu",
            f"committees={COMMITTEES}",
            "shift.severities=[1, 3, 5]",
            f"resources.cpus={args.cpus_per_member}",
        ],
    )


def table(report: dict) -> None:
    head = f"{'':34s} {'acc %':>7s} {'NLL':>7s} {'ECE %':>6s} | {'shift acc':>9s} {'shift NLL':>9s}"
    print(head)
    print("-" * len(head))
    rows = [(f"member {m['name']}", m) for m in report["members"]]
    rows += [(f"committee {c['name']} ({c['size']} picks)", c) for c in report["committees"]]
    for label, r in rows:
        t, s = r["test"], r["shift_mean"]
        print(
            f"{label:34s} {t['accuracy']:7.2f} {t['nll']:7.4f} {t['ece']:6.2f} | "
            f"{s.get('accuracy', float('nan')):9.2f} {s.get('nll', float('nan')):9.4f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--cpus-per-member", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the results here (default: a temporary dir)")
    args = parser.parse_args()
    missing = [str(p) for p in (TRAIN, TEST) if not p.is_file()]
    if missing:
        print(f"skipped: {', '.join(missing)} absent (real data lives in ../shared/data beside the checkout)")
        return 0
    cfg = spec(args)
    print(
        f"{os.cpu_count()} cores; members {MEMBERS} at C={args.channels}, 5 cells, {args.image_size}x{args.image_size},"
        f" {args.epochs} epochs; 9000 training, 1000 validation (selection), 2000 test images"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "bench"
        ensemble(cfg, out, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        report = json.loads((out / "report.json").read_text())
    print(f"wall time {time.perf_counter() - start:.0f} s\n")
    table(report)
    s = report["summary"]
    bc, bm, top = s["best_committee"], s["best_member"], s["best_member_on_test"]
    print(
        f"\nbest committee by validation NLL: {bc['name']}; best member by validation NLL: {bm['name']}; "
        f"best member on test (hindsight): {top['name']}"
    )
    for label, member in (("validation-chosen", bm), ("test-best", top)):
        acc = bc["test"]["accuracy"] - member["test"]["accuracy"]
        nll = member["test"]["nll"] - bc["test"]["nll"]
        verdict = "beats" if acc > 0 and nll > 0 else "does not beat"
        print(f"committee {verdict} the {label} member: accuracy {acc:+.2f} points, NLL {-nll:+.4f} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
