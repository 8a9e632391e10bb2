"""Throughput of the DARTS search supernet: training steps and evaluation, in images per second.

Every weighting mode at two sizes: the paper's (C=16, 8 cells, 32x32, batch 64) and a CPU size (C=8, 5 cells,
16x16, batch 64). With ``--original DIR`` (the ``cnn/`` folder of a checkout of the original DARTS code) the original
search network is measured at the same size and thread count, interleaved round by round with evoray's softmax mode,
and the ratios are printed.

    python bench/supernet.py --sizes cpu --original /path/to/darts/cnn
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from evoray.nn.supernet import DartsSupernet
from evoray.nn.weighting import WEIGHTINGS
from evoray.spaces import get_space

SIZES = {"paper": (16, 8, 32, 64), "cpu": (8, 5, 16, 64)}  # C, cells, image side, batch


def _timed(fn: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def _train_step(net: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(params, 0.025, momentum=0.9, weight_decay=3e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    return step


def _eval_step(net: nn.Module, x: torch.Tensor, inference: bool) -> Callable[[], None]:
    def step() -> None:
        net.eval()
        ctx = torch.inference_mode() if inference else torch.no_grad()
        with ctx:
            net(x)

    return step


def evoray_net(mode: str, C: int, cells: int, channels_last: bool) -> nn.Module:
    net = DartsSupernet(get_space("darts"), C=C, layers=cells, weighting=mode)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def original_net(src: Path, C: int, cells: int) -> nn.Module:
    """The original DARTS search network, imported from its source folder (its ``.cuda()`` calls made no-ops)."""
    sys.path.insert(0, str(src))
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    module = importlib.import_module("model_search")
    return module.Network(C, 10, cells, nn.CrossEntropyLoss())  # type: ignore[no-any-return]


def measure(
    builders: dict[str, Callable[[], nn.Module]], size: str, rounds: int, steps: int, channels_last: bool
) -> dict[str, tuple[float, float]]:
    """Median images/s (train, eval) of each named network, measured round-robin so that load drifts evenly."""
    _, _, side, batch = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, side, side, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    runs = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        net = build()
        is_evoray = isinstance(net, DartsSupernet)
        xi = x.to(memory_format=torch.channels_last) if (channels_last and is_evoray) else x
        params = list(net.weight_parameters()) if is_evoray else list(net.parameters())
        train, evaluate = _train_step(net, params, xi, y), _eval_step(net, xi, inference=is_evoray)
        train()
        evaluate()  # warm-up
        runs[name] = (net, train, evaluate)
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in runs}
    for _ in range(rounds):
        for name, (net, train, evaluate) in runs.items():
            net.train()
            times[name][0].append(_timed(train, steps))
            times[name][1].append(_timed(evaluate, steps))
    return {n: (batch / statistics.median(t), batch / statistics.median(e)) for n, (t, e) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="cpu,paper", help="comma-separated: cpu, paper")
    parser.add_argument("--modes", default=",".join(WEIGHTINGS.names()), help="weighting modes to measure")
    parser.add_argument("--original", type=Path, default=None, help="cnn/ folder of the original DARTS code")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median reported)")
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: 5 at cpu size, 1 at paper size)")
    parser.add_argument("--no-channels-last", action="store_true", help="keep evoray in NCHW memory format")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    channels_last = not args.no_channels_last
    modes = [m for m in args.modes.split(",") if m]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, channels_last {channels_last}")
    for size in [s for s in args.sizes.split(",") if s]:
        C, cells, side, batch = SIZES[size]
        builders: dict[str, Callable[[], nn.Module]] = {
            f"evoray/{m}": (lambda m=m, C=C, cells=cells: evoray_net(m, C, cells, channels_last)) for m in modes
        }
        if args.original is not None:
            if not (args.original / "model_search.py").is_file():
                raise SystemExit(f"--original {args.original}: no model_search.py there")
            builders["original/softmax"] = lambda C=C, cells=cells: original_net(args.original, C, cells)
        steps = args.steps or (5 if size == "cpu" else 1)
        res = measure(builders, size, args.rounds, steps, channels_last)
        print(f"\n{size} size: C={C}, {cells} cells, {side}x{side}, batch {batch}  (images/s, median of {args.rounds})")
        print(f"{'network':24s} {'train':>10s} {'eval':>10s}")
        for name, (train, evaluate) in res.items():
            print(f"{name:24s} {train:10.1f} {evaluate:10.1f}")
        if "original/softmax" in res and "evoray/softmax" in res:
            (ot, oe), (et, ee) = res["original/softmax"], res["evoray/softmax"]
            print(f"speed-up over the original (softmax): train {et / ot:.2f}x, eval {ee / oe:.2f}x")


if __name__ == "__main__":
    main()
