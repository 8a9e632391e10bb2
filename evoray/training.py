"""Retraining a genotype from scratch with the DARTS recipe, and evaluating classifiers.

The recipe (Liu et al., 2019): SGD with momentum, cosine learning rate to ``lr_min``, weight decay, gradient
clipping, an auxiliary head weighted 0.4, drop path ramped linearly from 0 to its final probability, cutout.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evoray.config import SEED_RANGE, config_to_dict
from evoray.data import BatchSource, DataConfig, build_data, describe
from evoray.errors import ConfigError, diverged
from evoray.metrics import AverageMeter, accuracy
from evoray.nn.networks import build_network
from evoray.optim import OptimConfig, build_schedule, build_sgd, clip_gradients, step_schedule_first
from evoray.profiling import PROFILE_KEYS, profile_model
from evoray.runs import RunDir
from evoray.runs.curves import write_curves
from evoray.runs.directory import CHECKPOINTS, atomic_write, read_json
from evoray.runs.reader import CURVES
from evoray.runtime import RuntimeConfig, apply_runtime, autocast, memory_format, seed_everything
from evoray.spaces.genotype import Genotype, parse_genotype
from evoray.spaces.resolve import resolve_genotype

Log = Callable[[str], None]


@dataclass
class ModelConfig:
    genotype: str = "DARTS_V2"  # a published name, a .json file, a Genotype(...) string or an NB201 arch string
    network: str = field(default="cifar", metadata={"choices": ("cifar", "imagenet", "nb201")})  # network family
    init_channels: int = field(default=36, metadata={"min": 2})  # C of the first cells (NB201: 16)
    layers: int = field(default=20, metadata={"min": 1})  # cells (cifar/imagenet); cells per stage N (nb201)
    auxiliary: bool = True  # auxiliary head after the second reduction cell
    auxiliary_weight: float = field(default=0.4, metadata={"min": 0.0})  # its loss weight
    drop_path_prob: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})  # final drop-path probability
    pool_bn: bool = False  # an affine BatchNorm after each pool (SNAS' evaluation network; DARTS' has none)


@dataclass
class TrainOptimConfig(OptimConfig):
    """The shared SGD config plus what a retraining adds: its length and label smoothing (DARTS' recipe: cosine to 0
    over 600 epochs)."""

    lr_min: float = field(default=0.0, metadata={"min": 0.0})  # cosine schedule's final learning rate
    epochs: int = field(default=600, metadata={"min": 0})  # DARTS: 600 on CIFAR-10
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})  # DARTS ImageNet: 0.1


@dataclass
class ProfileConfig:
    batch_size: int = field(default=1, metadata={"min": 1})  # latency batch; reported per sample
    warmup: int = field(default=10, metadata={"min": 0})  # untimed forward passes first
    repeats: int = field(default=50, metadata={"min": 1})  # timed forward passes; the median is reported


@dataclass
class Recipe:
    """How a genotype is trained: its network, the optimiser and the runtime (a committee trains every genotype
    member with one recipe)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: TrainOptimConfig = field(default_factory=TrainOptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log_every: int = field(default=0, metadata={"min": 0})  # log every N steps within an epoch (0 = per epoch only)


@dataclass
class TrainConfig(Recipe):
    """Retrain a genotype from scratch: a recipe, its data and seed. Defaults are the DARTS CIFAR-10 evaluation
    recipe."""

    seed: int = field(default=0, metadata=SEED_RANGE)  # seeds weights, data order and augmentation
    name: str = ""  # run name: the run goes to runs/train/<name> unless --out is given
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", batch_size=96, cutout=16))
    profile: ProfileConfig = field(default_factory=ProfileConfig)


def check_network(cfg: TrainConfig, genotype: Genotype) -> None:
    m = cfg.model
    if genotype.is_nb201 != (m.network == "nb201"):
        kind = "an NB201 arch string" if genotype.is_nb201 else "a DARTS-family genotype"
        fix = "model.network=nb201" if genotype.is_nb201 else "model.network=cifar or imagenet"
        raise ConfigError(f"model.network={m.network} cannot build {kind}; use {fix}")


def build_model(cfg: TrainConfig, genotype: Genotype, num_classes: int, in_channels: int) -> nn.Module:
    m = cfg.model
    check_network(cfg, genotype)
    return build_network(
        genotype,
        family=m.network,
        C=m.init_channels,
        layers=m.layers,
        N=m.layers,
        num_classes=num_classes,
        in_channels=in_channels,
        auxiliary=m.auxiliary and m.network != "nb201",
        pool_bn=m.pool_bn,
    )


def profile_genotype(cfg: TrainConfig, log: Log = print) -> dict[str, Any]:
    """Params (M, auxiliary head excluded), FLOPs (M multiply-adds, thop) and latency (ms per sample)."""
    device = apply_runtime(cfg.runtime)
    seed_everything(cfg.seed)
    genotype = resolve_genotype(cfg.model.genotype)
    shape = describe(cfg.data, check=False)  # a profile reads no image
    classes, channels, size = shape.num_classes, shape.in_channels, shape.side
    model = build_model(cfg, genotype, classes, channels).to(device)
    stats = profile_model(
        model,
        (channels, size, size),
        device,
        warmup=cfg.profile.warmup,
        repeats=cfg.profile.repeats,
        batch_size=cfg.profile.batch_size,
    )
    log(
        f"{cfg.model.genotype}: params {stats['params_m']:.3f}M, FLOPs {stats['flops_m']:.1f}M, "
        f"latency {stats['latency_ms']:.2f} ms/sample on {device}"
    )
    return {"genotype": str(genotype), **stats}


def model_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, auxiliary logits or None) of an evaluation network or a plain classifier."""
    out = model(x)
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


def evaluate(
    model: nn.Module, source: Any, device: torch.device, precision: str = "fp32", channels_last: bool = False
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (%) of ``model`` over ``source`` in eval mode."""
    model.eval()
    loss_m, top1_m, top5_m = AverageMeter(), AverageMeter(), AverageMeter()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode():
        for x, y in source:
            x, y = x.to(device, non_blocking=True).to(memory_format=fmt), y.to(device, non_blocking=True)
            with autocast(device, precision):
                logits, _ = model_outputs(model, x)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top1, top5 = accuracy(logits, y, topk=(1, k))
            n = y.shape[0]
            loss_m.update(F.cross_entropy(logits, y).item(), n)
            top1_m.update(top1, n)
            top5_m.update(top5, n)
    return {"loss": loss_m.avg, "top1": top1_m.avg, "top5": top5_m.avg}


OnEpoch = Callable[[int, list[dict[str, Any]], Callable[[], dict[str, Any]]], None]
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "torch_rng", "history")  # what a fit's state holds


def check_resume(resume: dict[str, Any], where: str = "checkpoint") -> None:
    """A one-line ``ConfigError`` naming ``where`` unless ``resume`` holds every key of :func:`fit_model`'s state."""
    missing = [k for k in RESUME_KEYS if k not in resume]
    if missing:
        raise ConfigError(
            f"{where} lacks {', '.join(repr(k) for k in missing)} (a train checkpoint holds {', '.join(RESUME_KEYS)}); "
            "it is damaged or not a train checkpoint: start a new run"
        )
    if not isinstance(resume["history"], list) or not all(isinstance(h, dict) for h in resume["history"]):
        raise ConfigError(f"{where} holds a 'history' that is not a list of epoch records: start a new run")


def fit_model(
    cfg: Recipe,
    model: nn.Module,
    train: BatchSource,
    device: torch.device,
    log: Log = print,
    resume: dict[str, Any] | None = None,
    on_epoch: OnEpoch | None = None,
    *,
    where: str = "checkpoint",
    on_start: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` (already on ``device``) for ``cfg.optim.epochs`` epochs over ``train`` with the recipe of
    ``cfg``; returns the per-epoch history. After each epoch, ``on_epoch(epoch, history, state)`` may checkpoint
    ``state()`` (tensors and plain containers); ``resume`` takes such a state back and continues after its epoch, to
    the results of an uninterrupted run (a state that does not fit is a one-line ``ConfigError`` naming ``where``).
    ``on_start()`` runs once the state is restored, before the first epoch."""
    o = cfg.optim
    fmt = memory_format(cfg.runtime)
    model.to(memory_format=fmt)
    optimizer = build_sgd(model.parameters(), o)
    scheduler = build_schedule(optimizer, o, o.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.runtime.precision == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    history: list[dict[str, Any]] = []
    start = 0
    if resume is not None:
        check_resume(resume, where)
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            scaler.load_state_dict(resume["scaler"])
            torch.set_rng_state(resume["torch_rng"])
            if resume.get("cuda_rng") is not None and device.type == "cuda":  # absent in older checkpoints
                torch.cuda.set_rng_state_all(resume["cuda_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
            raise ConfigError(f"{where} does not fit this run ({reason}); start a new run") from None
        # the i-th record is epoch i + 1 (older runs numbered the first epoch 0)
        history = [{**h, "epoch": i + 1} for i, h in enumerate(resume["history"])]
        start = len(history)

    def state() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,  # drop path's masks
            "history": history,
        }

    if on_start is not None:
        on_start()
    for epoch in range(start, o.epochs):
        if o.lr_step_at_start:
            step_schedule_first(scheduler)
        model.train()
        drop = cfg.model.drop_path_prob * epoch / o.epochs
        for module in model.modules():
            if hasattr(module, "drop_path_prob"):
                module.drop_path_prob = drop  # type: ignore[assignment]
        train.set_epoch(epoch)
        loss_m, top1_m = AverageMeter(), AverageMeter()
        for step, (x, y) in enumerate(train):
            x, y = x.to(device, non_blocking=True).to(memory_format=fmt), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=not o.keep_zero_grads)
            with autocast(device, cfg.runtime.precision):
                logits, aux = model_outputs(model, x)
                loss = criterion(logits.float(), y)
                if aux is not None:
                    loss = loss + cfg.model.auxiliary_weight * criterion(aux.float(), y)
            scaler.scale(loss).backward()
            if o.grad_clip > 0:
                scaler.unscale_(optimizer)
                clip_gradients([p for p in model.parameters() if p.grad is not None], o.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            value = loss.item()
            if not math.isfinite(value):
                lr = optimizer.param_groups[0]["lr"]
                raise diverged(
                    f"training diverged: the loss became {value} at epoch {epoch} step {step}", lr, o.grad_clip
                )
            n = y.shape[0]
            loss_m.update(value, n)
            top1_m.update(accuracy(logits.detach().float(), y)[0], n)
            if cfg.log_every and step % cfg.log_every == 0:
                log(f"  epoch {epoch} step {step}/{len(train)} loss {loss_m.avg:.4f} top1 {top1_m.avg:.2f}")
        lr = optimizer.param_groups[0]["lr"]
        if not o.lr_step_at_start:
            scheduler.step()
        # numbered from 1, as a search's epochs are (the loop's epoch e is epoch e + 1)
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_m.avg, "train_top1": top1_m.avg})
        log(f"epoch {epoch + 1}/{o.epochs} lr {lr:.5f} loss {loss_m.avg:.4f} train top1 {top1_m.avg:.2f}%")
        if on_epoch is not None:
            on_epoch(epoch, history, state)
    return history


def resumed_genotype(cfg: TrainConfig, recorded: Any, where: str, log: Log = print) -> Genotype:
    """The genotype a resumed run started with (``recorded``, as its run.json or checkpoint holds it), not what
    ``model.genotype`` (perhaps a file, since edited or moved) gives now: a spec that now gives another genotype is a
    one-line ``ConfigError`` naming both; one that no longer resolves continues with the recorded genotype. A run
    that recorded none (an older run) takes ``model.genotype`` as it resolves now."""
    spec = cfg.model.genotype
    if not isinstance(recorded, str) or not recorded.strip():
        return resolve_genotype(spec)
    try:
        genotype = parse_genotype(recorded)
    except ConfigError:
        raise ConfigError(f"{where} records genotype {recorded!r}, which is not a genotype; start a new run") from None
    try:
        current = resolve_genotype(spec)
    except ConfigError as err:
        log(f"model.genotype {spec!r} no longer resolves ({err}); continuing with the run's genotype {genotype}")
        return genotype
    if str(current) != str(genotype):
        raise ConfigError(
            f"{where} was started with genotype {genotype}, but model.genotype {spec!r} now gives {current}; restore "
            "it to continue this run, or start a new run for the new genotype"
        )
    return genotype


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0.0


def _finished_results(run: RunDir | None) -> dict[str, Any] | None:
    """For a resumed run that had finished: the training time and profile (params, FLOPs, latency) its
    ``results.json`` recorded, or None (not finished, or the file is unreadable: then they are measured anew)."""
    if run is None or not run.resumed or run.manifest.get("status") != "done":
        return None
    try:
        recorded = read_json(run.path / "results.json", "results")
    except ConfigError:
        return None
    stats = {k: recorded[k] for k in PROFILE_KEYS if k in recorded}
    if len(stats) != len(PROFILE_KEYS) or "train_time_s" not in recorded:
        return None
    return {"stats": stats, "train_time_s": _seconds(recorded["train_time_s"])}


def train_genotype(cfg: TrainConfig, run: RunDir | None = None, log: Log = print) -> dict[str, Any]:
    """Train ``cfg.model.genotype`` from scratch and report test accuracy, params, FLOPs and latency. With a run
    directory: its config, a checkpoint and the curves after every epoch (a resumed run continues from the last, with
    the genotype it started with), then ``results.json``, ``history.json`` and ``weights.pt``."""
    device = apply_runtime(cfg.runtime)
    seed_everything(cfg.seed)
    checkpoint, resume, where = None, None, "checkpoint"
    finished = _finished_results(run)  # a finished run's measurements, kept when a resume rebuilds its files
    spent = 0.0  # training seconds of the run's earlier processes
    if run is not None:
        checkpoint = run.load_checkpoint()
        where = f"checkpoint {str(run.path / CHECKPOINTS / 'last.pt')!r}"
        if checkpoint is not None:
            resume = checkpoint[1]
            check_resume(resume, where)
            spent = _seconds(checkpoint[0].get("train_time_s") if isinstance(checkpoint[0], dict) else None)
        else:
            run.refuse_lost_checkpoint()
    if run is not None and run.resumed:
        recorded = run.manifest.get("genotype")
        if checkpoint is not None and isinstance(checkpoint[0], dict) and checkpoint[0].get("genotype") is not None:
            recorded = checkpoint[0]["genotype"]  # what the checkpoint's weights were trained for
        genotype = resumed_genotype(cfg, recorded, f"run {str(run.path)!r}", log)
    else:
        genotype = resolve_genotype(cfg.model.genotype)
    check_network(cfg, genotype)
    data = build_data(cfg.data, seed=cfg.seed, split="train")
    model = build_model(cfg, genotype, data.num_classes, data.in_channels).to(device)
    o = cfg.optim

    def on_start() -> None:  # the checkpoint fits: only now is the run directory written to
        if run is not None:
            run.start(
                config_to_dict(cfg),
                cfg.seed,
                {"space": "nb201" if genotype.is_nb201 else "darts", "method": "train", "genotype": str(genotype)},
            )
            if resume is not None:
                log(f"resuming {run.path} after epoch {len(resume['history'])}")
        n_train = data.train.num_examples
        log(f"training {genotype} on {cfg.data.dataset} ({n_train} images) for {o.epochs} epochs on {device}")

    def on_epoch(epoch: int, history: list[dict[str, Any]], state: Callable[[], dict[str, Any]]) -> None:
        if run is None:
            return
        write_curves(run.path / CURVES, history)  # before the checkpoint: a resume never skips an epoch's curve
        elapsed = spent + time.perf_counter() - start
        run.save_checkpoint({"epoch": epoch, "genotype": str(genotype), "train_time_s": elapsed}, state())
        run.update(progress={"epoch": epoch + 1, "of": o.epochs})

    start = time.perf_counter()
    history = fit_model(cfg, model, data.train, device, log, resume, on_epoch, where=where, on_start=on_start)
    if run is not None:  # whole, also where a resume found every epoch done and ran none
        write_curves(run.path / CURVES, history)
    train_time = spent + time.perf_counter() - start
    test = evaluate(model, data.test, device, cfg.runtime.precision, cfg.runtime.channels_last)
    log(f"test top1 {test['top1']:.2f}% top5 {test['top5']:.2f}% loss {test['loss']:.4f} ({train_time:.0f} s)")
    size = data.image_size
    if finished is not None:  # measured when the run finished, on the machine that ran it: not measured again
        stats, train_time = finished["stats"], finished["train_time_s"]
    else:
        stats = profile_model(
            model,
            (data.in_channels, size, size),
            device,
            warmup=cfg.profile.warmup,
            repeats=cfg.profile.repeats,
            batch_size=cfg.profile.batch_size,
        )
    result = {
        "genotype": str(genotype),
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "test_loss": test["loss"],
        "train_time_s": train_time,
        "epochs": o.epochs,
        **stats,
    }
    if run is not None:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write(run.path / "weights.pt", buf.getvalue())
        run.write_json("history.json", history)
        run.write_json("results.json", result)
        run.finish({k: result[k] for k in ("genotype", "test_top1", "params_m", "flops_m", "epochs")})
    return result
