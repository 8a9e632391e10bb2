"""One GDAS search step (a weight step on a training batch, then an architecture step on a validation batch), evoray
against AutoDL-Projects' GDAS code, on NAS-Bench-201 and on the DARTS space, at the same size and thread count,
interleaved round by round.

    python bench/gdas.py --original /path/to/AutoDL-Projects [--threads 2] [--rounds 5] [--steps 20] [--floor]

evoray: the ``gdas`` searcher built as an ``evoray search`` trial is (``trial_config``: the searcher's paper settings
for the space, then the size below; the default ``RuntimeConfig()``, its ``channels_last`` included, which
``--no-channels-last`` turns off), its ``step`` driven on fixed batches. Original: AutoDL-Projects' search networks
(``TinyNetworkGDAS``, ``NASNetworkGDAS``) built by its ``get_cell_based_tiny_net`` from the configs its scripts name
(NAS-Bench-201-algos/GDAS.sh, NASNet-space-search-by-GDAS.sh), its optimiser and scheduler
(``get_optim_scheduler``: SGD, Nesterov, weight decay 5e-4), Adam on the alphas (lr 3e-4, betas (0.5, 0.999), weight
decay 1e-3), tau 10 (the first epoch's), and the body of ``search_func`` of exps/NAS-Bench-201-algos/GDAS.py (clip 5
over every parameter), on the same batches, on the CPU (``.cuda()`` made a no-op; no DataParallel), in a process of
its own, so that evoray's process-wide runtime settings (``runtime.reuse_memory``) do not reach it. The CPU size: C=8,
N cells per stage (NAS-Bench-201: 3N cells and two residual blocks; DARTS space: 3N cells, as AutoDL counts N),
16x16 images, and by default the batch a default ``evoray search`` of GDAS runs on the space (the searcher's paper
settings: 64 on NAS-Bench-201, GDAS-NASNet-CIFAR's 256 on the DARTS space; ``--batch`` sets one for both), the same
for both codes. ``--device cuda`` runs both codes on the GPU
(the original's ``.cuda()`` calls then run as written; its batches are placed there once), ``--precision bf16`` runs
evoray under bf16 autocast (``runtime.precision``; the original has no such option and runs in fp32).

Departures from the original, none of which changes its arithmetic: its ``obtain_accuracy`` is replaced by the same
computation with ``reshape`` (its ``view`` fails on PyTorch >= 1.7); on the DARTS space its candidate ops are listed in
evoray's order. Each round of either code starts from the same torch seed, and both draw the Gumbel noise alike, so
they time the same sampled paths.

``--floor`` also times both codes' step at batch 2, 8x8, where the arithmetic all but vanishes, and splits each
code's step into that fixed cost (dispatch, autograd, module calls, kernel launches) and the rest, with evoray's
speed-up on each part.

Prints images/s (two batches per step), the ratio, and the achieved GFLOP/s: the multiply-adds of one forward of the
sampled single path (thop, averaged over the same sampled paths for both), x2 FLOPs each, x3 for each of the two
training halves.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from measure import (
    Child,
    count_macs,
    describe_device,
    gflops,
    import_original,
    interleave,
    peak_line,
    synced,
    synthetic_npz,
)
from torch import Tensor, nn

from evoray.runtime import RuntimeConfig, apply_runtime
from evoray.searchers import SEARCHERS
from evoray.searchers.base import Searcher
from evoray.searchers.experiment import ExperimentConfig, trial_config
from evoray.spaces import get_space

AUTODL_SPACE = {"nb201": "nas-bench-201", "darts": "darts"}
# the configs that AutoDL-Projects' search scripts pass: (optimiser config, model config or None)
AUTODL_CONFIGS = {
    "nb201": ("configs/nas-benchmark/algos/GDAS.config", None),
    "darts": ("configs/search-opts/GDAS-NASNet-CIFAR.config", "configs/search-archs/GDAS-NASNet-CIFAR.config"),
}
AUTODL_OP = {  # evoray's DARTS op names -> AutoDL-Projects'
    "sep_conv_3x3": "dua_sepc_3x3",
    "sep_conv_5x5": "dua_sepc_5x5",
    "dil_conv_3x3": "dil_sepc_3x3",
    "dil_conv_5x5": "dil_sepc_5x5",
}
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


def paper_batch(space: str) -> int:
    """The training batch of an ``evoray search`` trial of GDAS on ``space`` that sets none (the paper settings)."""
    exp = ExperimentConfig(searchers=["gdas"], base={"supernet": {"space": space}})
    return int(trial_config(exp, "gdas", 0, {}).data.batch_size)


def evoray_searcher(space: str, args: argparse.Namespace, folder: Path) -> Searcher:
    """The gdas searcher of an ``evoray search`` trial on ``space`` at the bench size, over a synthetic npz."""
    n = 4 * args.batch  # halves of 2 batches: weights and alphas
    base: dict[str, Any] = {
        "supernet": {"space": space, "init_channels": args.C, "layers": args.N if space == "nb201" else 3 * args.N},
        "data": {
            "dataset": "npz",
            "root": str(synthetic_npz(folder / "train.npz", n, args.side, seed=0)),
            "test_root": str(synthetic_npz(folder / "test.npz", args.batch, args.side, seed=1)),
            "batch_size": args.batch,
        },
    }
    base["runtime"] = {"device": args.device, "precision": args.precision}
    if args.no_channels_last:
        base["runtime"]["channels_last"] = False
    cfg = trial_config(ExperimentConfig(searchers=["gdas"], base=base), "gdas", 0, {})
    # as a trial does: the allocator, cuDNN's autotuner (threads stay the bench's: runtime.threads 0)
    device = apply_runtime(cfg.runtime, autotune=SEARCHERS.get("gdas").autotune)
    searcher = SEARCHERS.get("gdas")(cfg, device)
    searcher.begin_epoch()  # tau of the first epoch
    searcher.net.train()
    return searcher


class AutodlGdas:
    """AutoDL-Projects' GDAS search network, optimisers and the body of ``search_func`` for one step."""

    def __init__(self, root: Path, space: str, args: argparse.Namespace) -> None:
        # the models live in the xautodl package: its root goes on sys.path (no optional dependency blocks the
        # imports below, so nothing is stubbed)
        import_original(root, "xautodl", "xautodl/models/cell_searchs/search_model_gdas.py", cpu=args.device == "cpu")
        from xautodl.config_utils import dict2config, load_config
        from xautodl.log_utils import AverageMeter
        from xautodl.models import get_cell_based_tiny_net, get_search_spaces
        from xautodl.procedures import get_optim_scheduler

        self.obtain_accuracy = top_k_accuracy
        optim_path, model_path = AUTODL_CONFIGS[space]
        config = load_config(root / optim_path, {"class_num": 10, "xshape": (1, 3, args.side, args.side)}, None)
        search_space = get_search_spaces("cell", AUTODL_SPACE[space])
        # the same candidates listed in evoray's order (AutoDL lists the DARTS ops in another), so that the same
        # Gumbel noise picks the same op in both codes; the order of the list changes nothing else in GDAS
        ours = [AUTODL_OP.get(op, op) for op in get_space(space).edge_ops(get_space(space).cell_types[0], 0)]
        assert sorted(ours) == sorted(search_space), f"{space}: {ours} vs {search_space}"
        search_space = ours
        extra = {
            "num_classes": 10,
            "space": search_space,
            "affine": False,
            "track_running_stats": bool(args.track_running_stats),
        }
        if model_path is None:  # GDAS.py's model config for NAS-Bench-201
            model_config = dict2config({"name": "GDAS", "C": args.C, "N": args.N, "max_nodes": 4, **extra}, None)
        else:  # the GDAS-NASNet config, at the bench's C and N
            model_config = load_config(root / model_path, {**extra, "C": args.C, "N": args.N}, None)
        self.model = get_cell_based_tiny_net(model_config).to(args.device)
        self.w_optimizer, self.w_scheduler, self.criterion = get_optim_scheduler(self.model.get_weights(), config)
        self.a_optimizer = torch.optim.Adam(self.model.get_alphas(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        self.model.set_tau(10.0)  # tau_max at epoch 0
        self.w_scheduler.update(0, 0.0)
        self.model.train()
        self.meters = [AverageMeter() for _ in range(6)]
        self.step_index, self.steps_per_epoch = 0, 100

    def step(self, base_inputs: Tensor, base_targets: Tensor, arch_inputs: Tensor, arch_targets: Tensor) -> None:
        """The body of search_func's loop (GDAS.py), minus its timers and logging."""
        network, criterion, accuracy = self.model, self.criterion, self.obtain_accuracy
        base_losses, base_top1, base_top5, arch_losses, arch_top1, arch_top5 = self.meters
        self.w_scheduler.update(None, 1.0 * self.step_index / self.steps_per_epoch)
        self.step_index = (self.step_index + 1) % self.steps_per_epoch
        base_targets = base_targets.cuda(non_blocking=True)
        arch_targets = arch_targets.cuda(non_blocking=True)
        # update the weights
        self.w_optimizer.zero_grad()
        _, logits = network(base_inputs)
        base_loss = criterion(logits, base_targets)
        base_loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5)
        self.w_optimizer.step()
        base_prec1, base_prec5 = accuracy(logits.data, base_targets.data, topk=(1, 5))
        base_losses.update(base_loss.item(), base_inputs.size(0))
        base_top1.update(base_prec1.item(), base_inputs.size(0))
        base_top5.update(base_prec5.item(), base_inputs.size(0))
        # update the architecture-weight
        self.a_optimizer.zero_grad()
        _, logits = network(arch_inputs)
        arch_loss = criterion(logits, arch_targets)
        arch_loss.backward()
        self.a_optimizer.step()
        arch_prec1, arch_prec5 = accuracy(logits.data, arch_targets.data, topk=(1, 5))
        arch_losses.update(arch_loss.item(), arch_inputs.size(0))
        arch_top1.update(arch_prec1.item(), arch_inputs.size(0))
        arch_top5.update(arch_prec5.item(), arch_inputs.size(0))


def top_k_accuracy(output: Tensor, target: Tensor, topk: tuple[int, ...] = (1,)) -> list[Tensor]:
    """xautodl.utils.obtain_accuracy's percentages, with ``reshape`` where it calls ``view`` on a transposed tensor,
    which PyTorch >= 1.7 refuses (the one change made to the original's step)."""
    _, pred = output.topk(max(topk), 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.size(0)) for k in topk]


class _Logits(nn.Module):
    """AutoDL's search networks return (features, logits); thop is given the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[1]  # type: ignore[no-any-return]


def same_paths(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` with torch's generator seeded by its call count: the k-th timed round of either code draws the Gumbel
    noise of seed k, and both codes draw it alike (an alpha tensor per cell type, per forward), so each round times
    the same sampled paths in both (up to the alphas' small differences; a path's cost varies from seed to seed by
    up to 2x at a few steps a round). Warm-ups call ``fn`` itself, not this."""
    calls = itertools.count()

    def run() -> None:
        torch.manual_seed(next(calls))
        fn()

    return run


def original_job(
    root: Path, space: str, args: argparse.Namespace, batch: Batch
) -> tuple[dict[str, Callable[[], None]], float]:
    """AutoDL's GDAS in its own process (:class:`measure.Child`): built there, its multiply-adds counted on the paths
    of seed 0 on (as evoray's), warmed up; returns ``--steps`` steps on ``batch`` and the multiply-adds per image."""
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False  # as GDAS.py's main sets
    original = AutodlGdas(root, space, args)
    batch = tuple(t.to(args.device) for t in batch)  # type: ignore[assignment]

    def original_steps() -> None:
        for _ in range(args.steps):
            original.step(*batch)

    torch.manual_seed(0)
    macs = count_macs(_Logits(original.model), (batch[0][:2],), draws=args.draws)
    warm_up = synced(original_steps, args.device)
    torch.manual_seed(-1)  # a seed no round draws
    warm_up()
    return {"run": same_paths(warm_up)}, macs


def bench_space(space: str, args: argparse.Namespace, peak: float) -> dict[str, float]:
    """Measure one space; returns each code's median milliseconds a step."""
    if args.batch is None:
        args = argparse.Namespace(**{**vars(args), "batch": paper_batch(space)})
    with tempfile.TemporaryDirectory() as tmp:
        searcher = evoray_searcher(space, args, Path(tmp))
    assert searcher.data.arch is not None
    searcher.data.train.set_epoch(0)
    searcher.data.arch.set_epoch(0)
    (x, y), (xv, yv) = next(iter(searcher.data.train)), next(iter(searcher.data.arch))
    batch: Batch = (x, y, xv, yv)  # normalised and augmented by evoray's pipeline; NCHW for the original
    original = Child(original_job, args.original, space, args, batch)

    def evoray_steps() -> None:
        for _ in range(args.steps):
            searcher.step(*searcher.to_device(x, y), *searcher.to_device(xv, yv))

    x2 = x[:2]
    torch.manual_seed(0)  # the same seed, so both codes count the same sampled paths
    evoray_macs = count_macs(searcher.net, (x2.to(searcher.device, memory_format=searcher.fmt),), draws=args.draws)
    macs = {"evoray": evoray_macs, "original": original.info}
    cells = args.N if space == "nb201" else 3 * args.N
    net = f"C={args.C}, N={args.N} ({3 * args.N} cells)" if space == "nb201" else f"C={args.C}, {cells} cells"
    print(
        f"\n{space}: {net}, {args.side}x{args.side}, batch {args.batch}; {args.steps} steps per round; "
        f"evoray channels_last {searcher.fmt == torch.channels_last}, evoray precision {args.precision}"
    )
    print(
        f"multiply-adds of one forward of a sampled path per image (thop, mean of the same {args.draws} paths): "
        + ", ".join(f"{k} {v / 1e6:.3f} M" for k, v in macs.items())
    )
    warm_up = synced(evoray_steps, searcher.device)
    torch.manual_seed(-1)  # a seed no round draws
    warm_up()  # warm-up (the original warmed up in its process)
    warm_up()
    evoray_job = same_paths(warm_up)
    times = interleave({"evoray": evoray_job, "original": original.job("run")}, args.rounds)
    original.close()
    images = 2 * args.batch * args.steps
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'':10s} {'ms/step':>8s} {'images/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}   (median of {args.rounds})")
    for name, sec in medians.items():
        rate = gflops(macs[name], 3, images / sec)
        print(f"{name:10s} {1000 * sec / args.steps:8.1f} {images / sec:9.1f} {rate:8.2f} {100 * rate / peak:7.1f}%")
    ratio = medians["original"] / medians["evoray"]
    per_round = [o / e for e, o in zip(times["evoray"], times["original"], strict=True)]
    print(f"evoray / original (images/s): {ratio:.2f}x median; per round " + ", ".join(f"{r:.2f}x" for r in per_round))
    return {name: 1000 * sec / args.steps for name, sec in medians.items()}


def print_floor(space: str, full: dict[str, float], floor: dict[str, float]) -> None:
    """Split each code's step into its fixed cost (the same step at batch 2, 8x8: dispatch, autograd, module calls,
    kernel launches, all that does not grow with the batch) and the rest (the arithmetic and memory traffic)."""
    print(f"\n{space}: where a step's time goes (ms; fixed = the step at batch 2, 8x8; the rest = the difference)")
    print(f"{'':10s} {'step':>8s} {'fixed':>8s} {'rest':>8s}")
    for name in full:
        print(f"{name:10s} {full[name]:8.1f} {floor[name]:8.1f} {full[name] - floor[name]:8.1f}")
    for what, a, b in (
        ("step", full["original"], full["evoray"]),
        ("fixed", floor["original"], floor["evoray"]),
        ("rest", full["original"] - floor["original"], full["evoray"] - floor["evoray"]),
    ):
        print(f"evoray's speed-up, {what}: {a / b:.2f}x" if b > 0 else f"evoray's speed-up, {what}: -")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", type=Path, required=True, help="root of an AutoDL-Projects checkout")
    parser.add_argument("--spaces", default="nb201,darts", help="comma-separated: nb201, darts")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both codes")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median reported)")
    # a round of 4 NAS-Bench-201 steps lasts 0.14 s on the CPU size: its ratio swung 1.48x-2.35x round to round
    parser.add_argument("--steps", type=int, default=20, help="search steps per round")
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--N", type=int, default=2, help="cells per stage (AutoDL's N; evoray's DARTS layers = 3N)")
    parser.add_argument("--side", type=int, default=16)
    parser.add_argument(
        "--batch", type=int, default=None, help="both codes' batch (default: GDAS' paper setting for the space)"
    )
    parser.add_argument("--draws", type=int, default=64, help="sampled paths averaged in the thop count")
    parser.add_argument(
        "--track-running-stats",
        type=int,
        default=1,
        choices=(0, 1),
        help="the original's BN flag (evoray's BatchNorms always track; GDAS.sh's example passes 0 on NB201)",
    )
    parser.add_argument("--no-channels-last", action="store_true", help="evoray in NCHW whatever RuntimeConfig says")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: both codes run there")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="evoray's autocast")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time the step at batch 2, 8x8 (the fixed cost of a step) and split each code's time into that and "
        "the rest",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak, peak_words = peak_line(args.device, args.precision)
    print(
        f"torch {torch.__version__}, {describe_device(args.device)}, RuntimeConfig().channels_last "
        f"{RuntimeConfig().channels_last}, {peak_words}"
    )
    print("a step: weight step on a training batch + architecture step on a validation batch (2 batches, 2 x fwd+bwd)")
    for space in [s for s in args.spaces.split(",") if s]:
        full = bench_space(space, args, peak)
        if args.floor:
            floor = bench_space(space, argparse.Namespace(**{**vars(args), "batch": 2, "side": 8}), peak)
            print_floor(space, full, floor)


if __name__ == "__main__":
    main()
