"""AutoDL-Projects' own GDAS at bench/nb201.py's CPU proxy, on the same batches as evoray's GDAS there: what the
original code finds at that budget.

    python bench/nb201_gdas_original.py --original /path/to/AutoDL-Projects [--seed 0] [--epochs 250] [--size cpu|cpu3]

The original's search network (``TinyNetworkGDAS`` at the proxy's C=8, N=1 (``--size cpu3``: N=3), 16x16, built as
bench/gdas.py builds it), its SGD and cosine schedule (GDAS.config), Adam on the alphas at the proxy's scaled
learning rate (bench/nb201.py: 3e-4 x 391/78), tau from 10 to 0.1 over the epochs as its GDAS.py sets it, and the
body of its ``search_func``; the batches are evoray's for the same seed (the proxy's training half, and its
validation half drawn as shuffled passes). Every 25 epochs it prints tau, the mean entropy of softmax(alpha), the
mean |alpha|, the derived cell and that cell's NAS-Bench-201 12-epoch CIFAR-10 test accuracy; the last line is the
found cell (the original reports its last epoch's). Compare with ``python bench/nb201.py --searchers gdas --seeds
0``. One seed takes about 15 minutes of one core at ``--size cpu``, about an hour at ``cpu3``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from gdas import AutodlGdas
from nb201 import SIZES, TABLE, load_table, search_config

from evoray.runtime import reuse_freed_memory
from evoray.searchers import SEARCHERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="root of an AutoDL-Projects checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu", help="bench/nb201.py's proxy size")
    parser.add_argument("--epochs", type=int, default=250)
    args = parser.parse_args()
    if not TABLE.is_file():
        print(f"skipped: {TABLE} is absent (the real data lives in ../shared/data)")
        return
    torch.set_num_threads(1)
    reuse_freed_memory()  # as bench/nb201.py's searches run
    size = SIZES[args.size]
    cfg = search_config("gdas", args.seed, size)
    torch.manual_seed(args.seed)
    evoray = SEARCHERS.get("gdas")(cfg, torch.device("cpu"))  # its data pipeline: the same batches
    torch.manual_seed(args.seed)
    net_args = argparse.Namespace(C=size["C"], N=size["N"], side=size["side"], track_running_stats=0, device="cpu")
    original = AutodlGdas(args.original, "nb201", net_args)
    for group in original.a_optimizer.param_groups:
        group["lr"] = cfg.arch.lr
    original.steps_per_epoch = len(evoray.data.train)
    table = load_table(TABLE)
    print(f"arch lr {cfg.arch.lr:.3g}, {original.steps_per_epoch} steps per epoch, {args.epochs} epochs", flush=True)
    start = time.perf_counter()
    cell = ""
    for epoch in range(args.epochs):
        original.w_scheduler.update(epoch, 0.0)
        original.model.set_tau(10.0 - (10.0 - 0.1) * epoch / max(args.epochs - 1, 1))
        original.step_index = 0
        evoray.epoch = epoch  # the validation passes of this epoch
        evoray.data.train.set_epoch(epoch)
        valid = evoray._valid_batches()
        for x, y in evoray.data.train:
            original.step(x, y, *next(valid))
        if (epoch + 1) % 25 and epoch + 1 != args.epochs:
            continue
        with torch.no_grad():
            alpha = original.model.arch_parameters.detach()
            probs = torch.softmax(alpha, -1)
            entropy = float(-(probs * probs.log()).sum(-1).mean())
        cell = original.model.genotype().tostr()
        print(
            f"epoch {epoch + 1}: tau {original.model.get_tau():.2f}, entropy {entropy:.4f} (ln 5 = {math.log(5):.4f}), "
            f"mean |alpha| {float(alpha.abs().mean()):.3f}, test@12 {table[cell][1]:.2f} {cell} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    print(f"found: {cell} test@12 {table[cell][1]:.2f} (valid@12 {table[cell][0]:.2f})")


if __name__ == "__main__":
    main()
