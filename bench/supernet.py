"""Throughput of the DARTS search supernet: training steps and evaluation, in images per second.

Every weighting mode at two sizes: the paper's (C=16, 8 cells, 32x32, batch 64) and a CPU size (C=8, 5 cells,
16x16, batch 64). With ``--original DIR`` (the ``cnn/`` folder of a checkout of the original DARTS code) the original
search network is measured at the same size and thread count, interleaved round by round with evoray's softmax mode,
and the ratios are printed; the original runs in a process of its own, as it runs by itself. evoray runs as a default
run does: the runtime of ``RuntimeConfig()`` (its ``channels_last``, ``--no-channels-last`` turns it off; its
``reuse_memory``; cuDNN's autotuner on a GPU), inference mode for evaluation. ``--device cuda`` measures both codes on
the GPU (the original's ``.cuda()`` calls then run as written), ``--precision bf16`` both under bf16 autocast.

Each row also gives the achieved GFLOP/s, from the multiply-adds of one forward counted by thop (``bench/measure.py``:
in training mode, BatchNorms included, for the evaluation columns too; the sampled paths averaged in the gumbel-hard
mode), x2 FLOPs each, x3 for a training step, and its share of this machine's fp32 matmul peak measured at the same
thread count.

    python bench/supernet.py --sizes cpu --original /path/to/darts/cnn
    python bench/supernet.py --sizes paper --original /path/to/darts/cnn --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from measure import Child, count_macs, describe_device, gflops, import_original, interleave, peak_line, sync
from torch import nn

from evoray.nn.supernet import DartsSupernet
from evoray.nn.weighting import WEIGHTINGS
from evoray.runtime import RuntimeConfig, apply_runtime, autocast
from evoray.spaces import get_space

SIZES = {"paper": (16, 8, 32, 64), "cpu": (8, 5, 16, 64)}  # C, cells, image side, batch


def _timed(fn: Callable[[], None], steps: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def _train_step(
    net: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, precision: str
) -> Callable[[], None]:
    opt = torch.optim.SGD(params, 0.025, momentum=0.9, weight_decay=3e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    return step


def _eval_step(net: nn.Module, x: torch.Tensor, inference: bool, precision: str) -> Callable[[], None]:
    def step() -> None:
        net.eval()
        ctx = torch.inference_mode() if inference else torch.no_grad()
        with ctx, autocast(x.device, precision):
            net(x)

    return step


def evoray_net(mode: str, C: int, cells: int, channels_last: bool, device: str = "cpu") -> nn.Module:
    net = DartsSupernet(get_space("darts"), C=C, layers=cells, weighting=mode).to(device)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def original_net(src: Path, C: int, cells: int, device: str = "cpu") -> nn.Module:
    """The original DARTS search network, imported from its source folder (on the CPU its ``.cuda()`` calls made
    no-ops; on a GPU they run as written and place its alphas there)."""
    module = import_original(src, "model_search", "model_search.py", cpu=device == "cpu")
    return module.Network(C, 10, cells, nn.CrossEntropyLoss()).to(device)  # type: ignore[no-any-return]


def _batch(size: str, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    _, _, side, batch = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, side, side, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    return x.to(device), y.to(device)


def _jobs(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, precision: str
) -> dict[str, Callable[[], object]]:
    """Timed training steps and evaluations of ``net``, warmed up (twice: cuDNN's autotuner tries its kernels on a
    GPU's first pass)."""
    is_evoray = isinstance(net, DartsSupernet)
    params = list(net.weight_parameters()) if isinstance(net, DartsSupernet) else list(net.parameters())
    train = _train_step(net, params, x, y, precision)
    evaluate = _eval_step(net, x, inference=is_evoray, precision=precision)
    device = str(x.device)
    for _ in range(2):  # warm-up
        net.train()
        train()
        evaluate()

    def timed_train() -> float:
        net.train()
        return _timed(train, steps, device)

    return {"train": timed_train, "eval": functools.partial(_timed, evaluate, steps, device)}


def original_jobs(
    src: Path, size: str, threads: int, steps: int, device: str = "cpu", precision: str = "fp32"
) -> tuple[dict[str, Callable[[], object]], float]:
    """The original's network in a process of its own (``measure.Child``): its jobs and multiply-adds per image."""
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True  # as the original's train_search.py sets it
    C, cells, _, _ = SIZES[size]
    x, y = _batch(size, device)
    torch.manual_seed(0)
    net = original_net(src, C, cells, device)
    return _jobs(net, x, y, steps, precision), count_macs(net, (x[:2],))


def measure(
    builders: dict[str, Callable[[], nn.Module]],
    size: str,
    rounds: int,
    steps: int,
    channels_last: bool,
    original: Child | None = None,
    precision: str = "fp32",
    device: str = "cpu",
) -> dict[str, tuple[float, float, float]]:
    """Median images/s (train, eval) of each named network (and of the ``original``'s, run in its process), measured
    round-robin so that load drifts evenly, and the multiply-adds of one forward per image."""
    x, y = _batch(size, device)
    batch = x.shape[0]
    jobs: dict[str, Callable[[], object]] = {}
    macs = {}
    for name, build in builders.items():
        torch.manual_seed(0)
        net = build()
        xi = x.to(memory_format=torch.channels_last) if channels_last else x
        sampled = isinstance(net, DartsSupernet) and net.weighting == "gumbel-hard"  # one op per edge: mean of paths
        macs[name] = count_macs(net, (xi[:2],), draws=16 if sampled else 1)
        jobs.update({f"{name}/{kind}": job for kind, job in _jobs(net, xi, y, steps, precision).items()})
    names = list(builders)
    if original is not None:
        names.append("original/softmax")
        macs["original/softmax"] = original.info
        jobs.update({f"original/softmax/{kind}": original.job(kind) for kind in ("train", "eval")})
    times = interleave(jobs, rounds, log=False)
    med = {job: statistics.median(t) / steps for job, t in times.items()}
    return {n: (batch / med[f"{n}/train"], batch / med[f"{n}/eval"], macs[n]) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="cpu,paper", help="comma-separated: cpu, paper")
    parser.add_argument("--modes", default=",".join(WEIGHTINGS.names()), help="weighting modes to measure")
    parser.add_argument("--original", type=Path, default=None, help="cnn/ folder of the original DARTS code")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the default runtime's, PyTorch's)")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median reported)")
    parser.add_argument("--steps", type=int, default=0, help="steps per round (0: 5 at cpu size, 1 at paper size)")
    parser.add_argument("--no-channels-last", action="store_true", help="evoray in NCHW whatever RuntimeConfig says")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: both codes run there")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast of both codes")
    args = parser.parse_args()
    runtime = RuntimeConfig(device=args.device, precision=args.precision)  # what a default run uses, on that device
    if args.threads:
        runtime.threads = args.threads
    device = str(apply_runtime(runtime))
    channels_last = runtime.channels_last and not args.no_channels_last
    modes = [m for m in args.modes.split(",") if m]
    peak, peak_words = peak_line(device, args.precision)
    print(
        f"torch {torch.__version__}, {describe_device(device)}, precision {args.precision}, evoray channels_last "
        f"{channels_last} (RuntimeConfig default {RuntimeConfig().channels_last}), {peak_words}"
    )
    for size in [s for s in args.sizes.split(",") if s]:
        C, cells, side, batch = SIZES[size]
        builders: dict[str, Callable[[], nn.Module]] = {
            f"evoray/{m}": functools.partial(evoray_net, m, C, cells, channels_last, device) for m in modes
        }
        steps = args.steps or (5 if size == "cpu" else 1)
        original = None
        if args.original is not None:
            if not (args.original / "model_search.py").is_file():
                raise SystemExit(f"--original {args.original}: no model_search.py there")
            original = Child(original_jobs, args.original, size, torch.get_num_threads(), steps, device, args.precision)
        res = measure(builders, size, args.rounds, steps, channels_last, original, args.precision, device)
        if original is not None:
            original.close()
        print(f"\n{size} size: C={C}, {cells} cells, {side}x{side}, batch {batch}  (median of {args.rounds})")
        print(
            f"{'network':24s} {'MACs/img':>9s} {'train/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s} "
            f"{'eval/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}"
        )
        for name, (train, evaluate, macs) in res.items():
            tg, eg = gflops(macs, 3, train), gflops(macs, 1, evaluate)
            print(
                f"{name:24s} {macs / 1e6:8.2f}M {train:9.1f} {tg:8.2f} {100 * tg / peak:7.1f}% "
                f"{evaluate:9.1f} {eg:8.2f} {100 * eg / peak:7.1f}%"
            )
        if "original/softmax" in res and "evoray/softmax" in res:
            (ot, oe, _), (et, ee, _) = res["original/softmax"], res["evoray/softmax"]
            print(f"speed-up over the original (softmax): train {et / ot:.2f}x, eval {ee / oe:.2f}x")


if __name__ == "__main__":
    main()
