"""A member's logits: train it (or load it), then run it over the validation set, the test set and every shifted
test set. Plain torch on one device; the Ray layer (``evoray.ensemble.members``) calls :func:`member_logits` in a
task, and the local executor calls it in-process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.config import config_from_dict
from evoray.data import BatchSource, DataSplits, TensorSource, build_data
from evoray.data.datasets import TRAIN_STREAM
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.shift import corrupted, shift_key
from evoray.ensemble.sources import MemberSpec, member_train_config
from evoray.errors import ConfigError, DivergedError
from evoray.nn.supernet import SupernetConfig, build_supernet
from evoray.nn.weighting import EdgeWeights
from evoray.profiling import count_parameters
from evoray.runtime import apply_runtime, autocast, seed_everything
from evoray.spaces import get_space, one_hot, parse_genotype
from evoray.training import TrainConfig, build_model, fit_model, model_outputs

Log = Callable[[str], None]


@dataclass
class MemberLogits:
    """What a member leaves behind: logits of every split (float32, (N, K)), the labels they were computed on, and
    facts for the report."""

    name: str
    valid: np.ndarray  # (N_valid, K)
    valid_labels: np.ndarray  # (N_valid,)
    test: np.ndarray  # (N_test, K)
    test_labels: np.ndarray  # (N_test,)
    shifted: dict[str, np.ndarray]  # "gaussian_noise-3" -> (N_test, K)
    info: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Tensor] | None = field(default=None, repr=False)  # weights trained here (CPU), to be saved


def ensemble_splits(cfg: EnsembleConfig, train_seed: int) -> DataSplits:
    """The ensemble's data: its validation split is drawn with ``cfg.seed`` (the same for every member); the order
    and augmentation of the training batches follow ``train_seed`` (in-memory datasets)."""
    splits = build_data(cfg.data, seed=cfg.seed, split="search")
    train = splits.train
    if isinstance(train, TensorSource) and train_seed != cfg.seed:
        splits.train = TensorSource(
            train.images,
            train.labels,
            train.batch_size,
            scale=train.scale,
            mean=splits.mean,
            std=splits.std,
            shuffle=True,
            augment=train.augment,
            seed=train_seed,
            stream=TRAIN_STREAM,
        )
    return splits


def in_order(source: BatchSource, batch_size: int, splits: DataSplits) -> BatchSource:
    """An in-memory source unshuffled and unaugmented (validation logits in a fixed order); others as they are."""
    if isinstance(source, TensorSource) and source.shuffle:
        return TensorSource(
            source.images, source.labels, batch_size, scale=source.scale, mean=splits.mean, std=splits.std
        )
    source.set_epoch(0)
    return source


def predict(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, precision: str, bn_batch: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) float32 and labels (N,) of ``model`` over ``batches``; eval mode unless ``bn_batch`` (batch
    statistics in BatchNorm, running statistics left untouched)."""
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    model.train(bn_batch)
    out, labels = [], []
    with torch.inference_mode():
        for x, y in batches:
            with autocast(device, precision):
                logits, _ = model_outputs(model, x.to(device, non_blocking=True))
            out.append(logits.float().cpu())
            labels.append(y)
    if bn_batch:
        model.load_state_dict(saved, strict=False)
    model.eval()
    return torch.cat(out).numpy().astype(np.float32), torch.cat(labels).numpy().astype(np.int64)


class DecodedSupernet(nn.Module):
    """One architecture's view of a supernet's shared weights: the supernet with fixed edge weights."""

    def __init__(self, net: nn.Module, weights: dict[str, EdgeWeights]) -> None:
        super().__init__()
        self.net, self.weights = net, weights

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.weights)  # type: ignore[no-any-return]


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, limit: int) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as plain averages over ``limit`` training
    batches (0 = all); returns the number of batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    model.train()
    n = 0
    with torch.no_grad():
        for x, _ in batches:
            if limit and n >= limit:
                break
            model(x.to(device, non_blocking=True))
            n += 1
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.eval()
    return n


def _genotype_model(
    cfg: EnsembleConfig, member: MemberSpec, splits: DataSplits, device: torch.device, log: Log
) -> tuple[nn.Module, dict[str, Any]]:
    train_cfg = member_train_config(cfg, member.genotype, member.seed)
    seed_everything(member.seed)
    model = build_model(train_cfg, parse_genotype(member.genotype), splits.num_classes, splits.in_channels)
    model = model.to(device)
    log(f"{member.name}: training {train_cfg.optim.epochs} epochs on {splits.train.num_examples} images, {device}")
    start = time.perf_counter()
    try:
        history = fit_model(train_cfg, model, splits.train, device, log)
    except DivergedError as err:
        raise DivergedError(f"member {member.name}: {err} (train.optim in the committee config)") from None
    return model, {"history": history, "train_time_s": time.perf_counter() - start}


def _checkpoint_model(member: MemberSpec, splits: DataSplits, device: torch.device) -> nn.Module:
    train_cfg = config_from_dict(TrainConfig, member.config)
    model = build_model(train_cfg, parse_genotype(member.genotype), splits.num_classes, splits.in_channels)
    assert member.state is not None, f"checkpoint member {member.name} carries no weights"
    model.load_state_dict(member.state)
    return model.to(device).eval()


def _supernet_model(
    cfg: EnsembleConfig, member: MemberSpec, splits: DataSplits, device: torch.device, log: Log
) -> nn.Module:
    net_cfg = config_from_dict(SupernetConfig, member.config)
    net = build_supernet(net_cfg, splits.num_classes, splits.in_channels)
    assert member.state is not None, f"supernet member {member.name} carries no weights"
    net.load_state_dict(member.state)
    space = get_space(net_cfg.space)
    decoded = one_hot(space, parse_genotype(member.genotype))  # the EvNAS decoding: softmax of the one-hot
    weights = {ct: EdgeWeights(F.softmax(torch.from_numpy(a), dim=-1).to(device)) for ct, a in decoded.items()}
    model = DecodedSupernet(net, weights).to(device)
    if cfg.supernet.bn == "recalibrate":
        splits.train.set_epoch(0)
        n = recalibrate_bn(model, splits.train, device, cfg.supernet.bn_batches)
        log(f"{member.name}: BatchNorm statistics re-estimated on {n} training batches")
    return model.eval()


def check_finite(name: str, split: str, logits: np.ndarray) -> None:
    """A one-line error for a member whose logits on ``split`` hold NaN or infinities (a diverged or corrupt model):
    one such row would turn every committee's mean, and the choice of the best, into NaN."""
    bad = int((~np.isfinite(logits)).any(axis=-1).sum())
    if bad:
        raise ConfigError(
            f"member {name} gives non-finite logits on {bad} of {len(logits)} {split} examples (a diverged or corrupt "
            "model); leave it out of the members"
        )


def member_logits(cfg: EnsembleConfig, member: MemberSpec, device: torch.device, log: Log = print) -> MemberLogits:
    """Train or load ``member`` on ``device`` and compute its logits on validation, test and shifted test data."""
    apply_runtime(dataclasses.replace(cfg.train.runtime, device=str(device), threads=0))  # determinism, cuDNN
    splits = ensemble_splits(cfg, member.seed if member.kind == "genotype" else cfg.seed)
    assert splits.valid is not None
    info: dict[str, Any] = {"kind": member.kind, "origin": member.origin, "genotype": member.genotype}
    info["valid_overlap"] = member.valid_overlap
    state = None
    model: nn.Module
    if member.kind == "genotype":
        model, facts = _genotype_model(cfg, member, splits, device, log)
        info.update(seed=member.seed, history=facts["history"], train_time_s=facts["train_time_s"])
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    elif member.kind == "checkpoint":
        model = _checkpoint_model(member, splits, device)
    else:
        model = _supernet_model(cfg, member, splits, device, log)
    info["params_m"] = count_parameters(model) / 1e6
    precision = cfg.train.runtime.precision if member.kind == "genotype" else "fp32"
    bn_batch = member.kind == "supernet" and cfg.supernet.bn == "batch"
    valid, valid_y = predict(
        model, in_order(splits.valid, cfg.data.eval_batch_size, splits), device, precision, bn_batch
    )
    test_source = in_order(splits.test, cfg.data.eval_batch_size, splits)
    test, test_y = predict(model, test_source, device, precision, bn_batch)
    shifted = {}
    for name in cfg.shift.corruptions:
        for severity in cfg.shift.severities:
            batches = corrupted(test_source, name, severity, splits.mean, splits.std, cfg.seed)
            shifted[shift_key(name, severity)], y = predict(model, batches, device, precision, bn_batch)
            assert np.array_equal(y, test_y), "a shifted test set must keep the test labels in order"
    for split, logits in {"validation": valid, "test": test, **{f"shifted {k}": v for k, v in shifted.items()}}.items():
        check_finite(member.name, split, logits)
    log(
        f"{member.name}: validation top1 {100 * (valid.argmax(1) == valid_y).mean():.2f}%, "
        f"test top1 {100 * (test.argmax(1) == test_y).mean():.2f}%"
    )
    return MemberLogits(member.name, valid, valid_y, test, test_y, shifted, info, state)
