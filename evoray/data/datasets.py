"""Datasets of a run and their splits: scikit-learn's digits (the embedded default), CIFAR-10/100 through torchvision,
image arrays in .npz files, all held in memory; ImageNet folders through a loader (``evoray.data.imagenet``)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from evoray.data.config import DataConfig
from evoray.data.sources import Augment, BatchSource, TensorSource, seeded_generator
from evoray.data.transforms import Stats, channel_stats, resize
from evoray.errors import ConfigError

SPLITS = ("train", "search")
# streams: which generator a seed feeds, so the draws of one purpose never shift those of another
TRAIN_STREAM, VALID_STREAM, LIMIT_STREAM, SPLIT_STREAM = 1, 2, 3, 4
CIFAR = {  # dataset: (name in messages, folder under root, torchvision class, classes, mean, std)
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("CIFAR-100", "cifar-100-python", "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# (classes, input channels, image side, training images) of the datasets whose shape is known without loading them
KNOWN_SHAPES = {
    "digits": (10, 1, 8, 1438),
    "cifar10": (10, 3, 32, 50_000),
    "cifar100": (100, 3, 32, 50_000),
    "imagenet": (1000, 3, 224, 1_281_167),
}


@dataclass(frozen=True)
class DataShape:
    """What a network needs to know of a dataset, and how many training images a batch can hold at most."""

    num_classes: int
    in_channels: int
    side: int  # the side of the (square) images a run feeds its networks
    num_train: int


def describe(cfg: DataConfig, split: str = "train", check: bool = True) -> DataShape:
    """The shape of the configured dataset's ``split``. ``check``: the data is built here once, in the command's own
    process before a run starts, so that a setting it cannot take (a cutout larger than the images, a split that leaves
    a side empty, a malformed file) is one line now rather than a worker's traceback later; an ImageNet folder, too
    large to index twice, is checked as it is built. Without ``check`` (what needs the shape alone, as a profile), the
    named datasets' known shape, nothing loaded. ``num_train``: the images that step the weights (the training half
    of a search split)."""
    if cfg.dataset != "npz" and (cfg.dataset == "imagenet" or not check):
        classes, channels, side, n = KNOWN_SHAPES[cfg.dataset]
        return DataShape(classes, channels, cfg.image_size or side, min(n, cfg.limit_train or n))
    splits = build_data(cfg, seed=0, split=split)
    return DataShape(splits.num_classes, splits.in_channels, splits.image_size, splits.train.num_examples)


@dataclass
class DataSplits:
    """The batches of one run and the shape of its inputs."""

    train: BatchSource  # batches for weight training (shuffled, augmented)
    # search split only: the rest of the training set (metrics, fitness), or the test set where train_portion is 1;
    # shuffled, plain
    valid: BatchSource | None
    test: BatchSource  # held-out test set, in order, plain
    num_classes: int
    in_channels: int
    image_size: int  # side of the square images the sources yield
    mean: Stats  # per-channel normalisation applied to every batch
    std: Stats
    # Search split only: the images of ``valid`` augmented as ``train`` is, for the architecture steps, as the original
    # DARTS and GDAS code draw both halves from one augmented training set. Metrics and fitness read ``valid`` plain.
    # None where train_portion is 1 (no validation half: single-level searches).
    arch: BatchSource | None = None


@dataclass
class Arrays:
    """An in-memory dataset before limits, resizing and batching."""

    train_x: Tensor  # (N, C, H, W) uint8 or float32
    train_y: Tensor  # (N,) int64
    test_x: Tensor  # (M, C, H, W), same dtype
    test_y: Tensor  # (M,) int64
    scale: float  # stored value that means 1.0
    num_classes: int
    mean: Stats  # per-channel normalisation
    std: Stats


def build_data(cfg: DataConfig, seed: int, split: str = "train") -> DataSplits:
    """The batches of a run.

    ``split="train"``: train = the whole training set (retraining), valid = None. ``split="search"``: train and
    valid = a ``train_portion`` split of the training set, drawn with ``seed``, and arch = valid's images augmented as
    train's are; with ``train_portion`` 1, train = the whole training set, valid = the test set and arch = None. The
    test set never depends on ``seed``.

    Example::

        splits = build_data(DataConfig(dataset="digits", batch_size=32), seed=0, split="search")
        x, y = next(iter(splits.train))  # (32, 1, 8, 8) float32, (32,) int64
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown data split {split!r}; valid: {', '.join(SPLITS)}")
    if seed < 0:
        raise ConfigError(f"seed = {seed} must be >= 0")
    cfg.validate()
    if cfg.dataset == "imagenet":
        from evoray.data.imagenet import build_imagenet

        return build_imagenet(cfg, seed, split)
    data = LOADERS[cfg.dataset](cfg)
    train_x, train_y = limit(data.train_x, data.train_y, cfg.limit_train, seed)
    test_x, test_y = limit(data.test_x, data.test_y, cfg.limit_test, 0)  # seed 0: the test set is fixed
    if cfg.image_size:
        train_x, test_x = resize(train_x, cfg.image_size), resize(test_x, cfg.image_size)
    side = int(train_x.shape[-1])
    if cfg.cutout > side:
        raise ConfigError(f"data.cutout = {cfg.cutout} exceeds the image side {side}; use at most {side}")
    augment = Augment(
        crop_pad=side // 8 if cfg.augment else 0,  # 4 on 32-pixel CIFAR, as in DARTS
        flip=cfg.augment and cfg.dataset != "digits",  # digits are not mirror-invariant
        cutout=cfg.cutout,
    )

    def source(x: Tensor, y: Tensor, batch_size: int, **kw: Any) -> TensorSource:
        return TensorSource(x, y, batch_size, scale=data.scale, mean=data.mean, std=data.std, seed=seed, **kw)

    test = source(test_x, test_y, cfg.eval_batch_size)
    valid = arch = None
    if split == "search" and cfg.whole_train:  # single level: every training image steps the weights
        valid = source(test_x, test_y, cfg.batch_size, shuffle=True, stream=VALID_STREAM)
    elif split == "search":
        keep, held = search_split(int(train_x.shape[0]), cfg.train_portion, seed)
        held_x, held_y = train_x[held], train_y[held]
        valid = source(held_x, held_y, cfg.batch_size, shuffle=True, stream=VALID_STREAM)
        arch = source(held_x, held_y, cfg.batch_size, shuffle=True, augment=augment, stream=VALID_STREAM)
        train_x, train_y = train_x[keep], train_y[keep]
    train = source(train_x, train_y, cfg.batch_size, shuffle=True, augment=augment, stream=TRAIN_STREAM)
    channels = int(train_x.shape[1])
    return DataSplits(train, valid, test, data.num_classes, channels, side, data.mean, data.std, arch)


def limit(x: Tensor, y: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """At most ``n`` examples (0 = all), a random subset drawn with ``seed`` (not stratified)."""
    if n <= 0 or n >= x.shape[0]:
        return x, y
    keep = torch.randperm(x.shape[0], generator=seeded_generator(seed, LIMIT_STREAM))[:n]
    return x[keep], y[keep]


def search_split(n: int, train_portion: float, seed: int) -> tuple[Tensor, Tensor]:
    """Disjoint index sets (weights, validation) of a seeded ``train_portion`` split of ``n`` training examples."""
    k = round(n * train_portion)
    if not 0 < k < n:
        raise ConfigError(f"data.train_portion = {train_portion} of {n} training images leaves one side empty")
    order = torch.randperm(n, generator=seeded_generator(seed, SPLIT_STREAM))
    return order[:k], order[k:]


def stratified_holdout(labels: np.ndarray, portion: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``portion`` of every class held out, drawn with the fixed seed 0."""
    rng = np.random.default_rng(0)
    kept, held = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        cut = round(len(members) * portion)
        held.append(members[:cut])
        kept.append(members[cut:])
    kept_idx, held_idx = np.concatenate(kept), np.concatenate(held)
    if len(kept_idx) == 0 or len(held_idx) == 0:
        raise ConfigError(f"data.test_portion = {portion} of {len(labels)} images leaves one side empty")
    return rng.permutation(kept_idx), rng.permutation(held_idx)  # mixed classes, so test batches are too


def load_digits(cfg: DataConfig) -> Arrays:
    """scikit-learn's 8x8 digits (1797 images, values 0..16, 10 classes); a fixed stratified test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images.astype(np.float32))[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    kept, held = stratified_holdout(digits.target, cfg.test_portion)
    train_x, test_x = images[kept], images[held]
    mean, std = channel_stats(train_x, 16.0)
    return Arrays(train_x, labels[kept], test_x, labels[held], 16.0, 10, mean, std)


def require_files(cfg: DataConfig) -> None:
    """The configured dataset's files are where ``data.root`` says (an .npz file is checked as it is read): a run
    checks this before it starts, not in a worker minutes later."""
    if cfg.dataset in CIFAR and not cfg.download:
        name, folder = CIFAR[cfg.dataset][:2]
        root = Path(cfg.root or ".")
        if not (root / folder).is_dir():
            raise ConfigError(
                f"{name} not found under {str(root)!r} (expected {folder}/ there); "
                "set data.root to its directory or data.download=true"
            )
    elif cfg.dataset == "imagenet":
        from evoray.data.imagenet import require_folders

        require_folders(Path(cfg.root))


def load_cifar(cfg: DataConfig) -> Arrays:
    """CIFAR-10 or CIFAR-100 via torchvision (the python-pickle release under ``root``), kept as uint8."""
    name, _, class_name, num_classes, mean, std = CIFAR[cfg.dataset]
    root = Path(cfg.root or ".")
    require_files(cfg)
    import torchvision

    dataset_cls = getattr(torchvision.datasets, class_name)
    try:
        train = dataset_cls(str(root), train=True, download=cfg.download)
        test = dataset_cls(str(root), train=False, download=cfg.download)
    except (RuntimeError, OSError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{name} under {str(root)!r} could not be loaded: {reason}") from exc

    def arrays(ds: Any) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    (train_x, train_y), (test_x, test_y) = arrays(train), arrays(test)
    return Arrays(train_x, train_y, test_x, test_y, 255.0, num_classes, mean, std)


NPZ_EXPECTED = "expected an .npz (numpy.savez) with arrays images (N, H, W[, C]) uint8 or float, labels (N,) int"
NPZ_ARRAYS = {"images": "(N, H, W[, C]) uint8 or float", "labels": "(N,) int", "classes": "(K,) class names as str"}


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"[:160]


def read_npz(path: str) -> tuple[Tensor, Tensor, int | None]:
    """(images (N, C, H, W), labels (N,) int64, number of class names or None) of an .npz with ``images`` (N, H, W[, C])
    uint8 or float in [0, 1], ``labels`` (N,) and optional ``classes``; rows in a fixed shuffled order."""
    if not Path(path).is_file():
        raise ConfigError(f"npz file {path!r} does not exist")
    damaged = (OSError, EOFError, zipfile.BadZipFile, zlib.error)  # a truncated or corrupt zip, read or inflated
    try:
        archive = np.load(path, allow_pickle=False)
    except (*damaged, ValueError) as exc:
        raise ConfigError(f"npz file {path!r} is damaged or not an .npz ({_reason(exc)}); {NPZ_EXPECTED}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"npz file {path!r} holds a single array; expected an .npz with keys images and labels")

    def read(key: str) -> np.ndarray:
        objects = f"npz file {path!r}: {key!r} is an array of Python objects; expected {key} {NPZ_ARRAYS[key]}"
        try:
            array = archive[key]
        except ValueError as exc:  # allow_pickle=False: an object array, or a damaged header
            if "allow_pickle" in str(exc):
                raise ConfigError(objects) from None
            raise ConfigError(f"npz file {path!r} is damaged: {key!r} could not be read ({_reason(exc)})") from None
        except damaged as exc:
            raise ConfigError(f"npz file {path!r} is damaged: {key!r} could not be read ({_reason(exc)})") from None
        if array.dtype.hasobject:
            raise ConfigError(objects)
        return array

    with archive:
        for key in ("images", "labels"):
            if key not in archive.files:
                raise ConfigError(f"npz file {path!r} lacks key {key!r} (has: {', '.join(archive.files)})")
        images, labels = read("images"), read("labels")
        classes = None
        if "classes" in archive.files:
            names = read("classes")
            if names.ndim != 1:
                raise ConfigError(
                    f"npz file {path!r}: classes must be a 1-d array of class names (K,), got shape {names.shape}"
                )
            classes = len(names)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] > 4:
        raise ConfigError(f"npz file {path!r}: images must be (N, H, W[, C]) channels-last, got {images.shape}")
    if len(images) == 0:
        raise ConfigError(f"npz file {path!r} holds no images")
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ConfigError(f"npz file {path!r}: labels must be {images.shape[0]} non-negative ints, got {labels.shape}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ConfigError(f"npz file {path!r}: images are {images.dtype}; expected uint8 (0..255) or float (0..1)")
    if images.dtype != np.uint8 and not np.isfinite(images).all():
        bad = int((~np.isfinite(images)).sum())
        raise ConfigError(f"npz file {path!r}: images hold {bad} NaN or infinite values; every pixel must be finite")
    order = np.random.default_rng(0).permutation(len(labels))  # rows may be grouped by class
    x = torch.from_numpy(np.ascontiguousarray(images[order].transpose(0, 3, 1, 2)))
    if x.dtype != torch.uint8:
        x = x.float()
    return x, torch.from_numpy(labels[order].astype(np.int64)), classes


def _as_stored(x: Tensor) -> str:
    """The kind and (H, W, C) shape of images read from an .npz file, as the file holds them."""
    kind = "uint8" if x.dtype == torch.uint8 else "float"
    return f"{kind} images {(*x.shape[2:], x.shape[1])}"


def load_npz(cfg: DataConfig) -> Arrays:
    """Images from ``root`` (and ``test_root``, or a fixed stratified ``test_portion`` of ``root``); normalised with
    the training images' per-channel mean and std."""
    train_x, train_y, classes = read_npz(cfg.root)
    if cfg.test_root:
        test_x, test_y, _ = read_npz(cfg.test_root)
        if test_x.shape[1:] != train_x.shape[1:] or test_x.dtype != train_x.dtype:
            raise ConfigError(
                f"npz file {cfg.test_root!r} holds {_as_stored(test_x)} but {cfg.root!r} holds {_as_stored(train_x)}"
            )
    else:
        kept, held = stratified_holdout(train_y.numpy(), cfg.test_portion)
        train_x, train_y, test_x, test_y = train_x[kept], train_y[kept], train_x[held], train_y[held]
    if train_x.shape[2] != train_x.shape[3] and not cfg.image_size:
        raise ConfigError(f"npz file {cfg.root!r} has {tuple(train_x.shape[2:])} images; set data.image_size")
    top = int(max(train_y.max(), test_y.max())) + 1
    num_classes = classes or top
    if top > num_classes:
        raise ConfigError(f"npz file {cfg.root!r} names {num_classes} classes but has label {top - 1}")
    scale = 255.0 if train_x.dtype == torch.uint8 else 1.0
    mean, std = channel_stats(train_x, scale)
    return Arrays(train_x, train_y, test_x, test_y, scale, num_classes, mean, std)


LOADERS: dict[str, Callable[[DataConfig], Arrays]] = {
    "digits": load_digits,
    "cifar10": load_cifar,
    "cifar100": load_cifar,
    "npz": load_npz,
}
