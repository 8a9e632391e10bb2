"""Datasets as in-memory tensors with batched, seeded augmentation; ImageNet through a folder loader.

Every training batch order and augmentation draw comes from a generator seeded by (seed, epoch), so a run gives
the same batches in a fresh process and after resuming at any epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.errors import ConfigError

DATASETS = ("digits", "cifar10", "cifar100", "imagenet", "npz")
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class DataConfig:
    dataset: str = field(default="digits", metadata={"choices": DATASETS})  # which dataset
    root: str = ""  # dataset directory (cifar10/cifar100/imagenet) or the .npz file of the training split (npz)
    test_root: str = ""  # npz only: .npz file of the test split ("" = hold out test_portion of root)
    download: bool = False  # cifar only: let torchvision download into root
    image_size: int = field(default=0, metadata={"min": 0})  # resize to this side (0 = native)
    train_portion: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # search split: weights' share
    test_portion: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})  # digits / npz without test_root
    cutout: int = field(default=0, metadata={"min": 0})  # cutout side in pixels (0 = off), training only
    augment: bool = True  # random crop (padding side//8) + horizontal flip (no flips on digits), training only
    batch_size: int = field(default=64, metadata={"min": 1})  # training batch
    eval_batch_size: int = field(default=256, metadata={"min": 1})  # evaluation batch
    num_workers: int = field(default=0, metadata={"min": 0})  # ImageNet folder loader workers
    limit_train: int = field(default=0, metadata={"min": 0})  # keep at most this many training images (0 = all)
    limit_test: int = field(default=0, metadata={"min": 0})  # keep at most this many test images (0 = all)

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        for name in ("train_portion", "test_portion"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"config key 'data.{name}' = {value} must lie strictly between 0 and 1")
        if self.dataset == "npz" and not self.root:
            raise ConfigError("data.dataset=npz needs data.root, the path of an .npz file with images and labels")


class BatchSource(Protocol):
    num_examples: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class DataSplits:
    train: BatchSource  # batches for weight training
    valid: BatchSource | None  # search split only: the validation part (architecture steps, fitness)
    test: BatchSource
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _generator(seed: int, *salt: int) -> torch.Generator:
    ss = np.random.SeedSequence([seed, *salt])
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63)))


class TensorSource:
    """Batches of normalised float images (B, C, H, W) and int64 labels from tensors held in memory.

    Training sources shuffle and augment (random crop by padding + offset, flips, cutout) on whole batches; the
    generator is seeded from (seed, epoch), set with :meth:`set_epoch`.
    """

    def __init__(
        self,
        images: Tensor,  # (N, C, H, W) float32, normalised
        labels: Tensor,  # (N,) int64
        batch_size: int,
        train: bool,
        seed: int = 0,
        crop_pad: int = 0,
        flip: bool = False,
        cutout: int = 0,
        drop_last: bool = False,
    ) -> None:
        assert images.shape[0] == labels.shape[0], f"{images.shape[0]} images but {labels.shape[0]} labels"
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_pad, self.flip, self.cutout, self.drop_last = crop_pad, flip, cutout, drop_last
        self.epoch = 0
        self.num_examples = int(images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = _generator(self.seed, self.epoch)
        order = torch.randperm(self.num_examples, generator=gen) if self.train else torch.arange(self.num_examples)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.train:
                x = augment_batch(x, gen, self.crop_pad, self.flip, self.cutout)
            yield x, y


def augment_batch(x: Tensor, gen: torch.Generator, crop_pad: int, flip: bool, cutout: int) -> Tensor:
    """Random crop (zero padding ``crop_pad``), horizontal flip (p=0.5) and cutout on a batch (B, C, H, W)."""
    B, _, H, W = x.shape
    if crop_pad > 0:
        padded = F.pad(x, (crop_pad,) * 4)
        dy = torch.randint(0, 2 * crop_pad + 1, (B,), generator=gen)
        dx = torch.randint(0, 2 * crop_pad + 1, (B,), generator=gen)
        rows = (dy[:, None] + torch.arange(H)[None, :])[:, None, :, None].expand(B, x.shape[1], H, W + 2 * crop_pad)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(W)[None, :])[:, None, None, :].expand(B, x.shape[1], H, W)
        x = x.gather(3, cols)
    if flip:
        mask = torch.rand(B, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if cutout > 0:
        x = apply_cutout(x, cutout, gen)
    return x


def apply_cutout(x: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """Zero one ``length`` x ``length`` square per image at a random centre, clipped at the border (DARTS)."""
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B,), generator=gen)
    cx = torch.randint(0, W, (B,), generator=gen)
    ys, xs = torch.arange(H)[None, :], torch.arange(W)[None, :]
    in_y = (ys >= (cy[:, None] - length // 2)) & (ys < (cy[:, None] + length - length // 2))
    in_x = (xs >= (cx[:, None] - length // 2)) & (xs < (cx[:, None] + length - length // 2))
    hole = in_y[:, :, None] & in_x[:, None, :]  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def _to_float(images: np.ndarray, scale: float) -> Tensor:
    """(N, H, W, C) or (N, H, W) array -> (N, C, H, W) float32 in [0, 1]."""
    arr = images if images.ndim == 4 else images[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).float().div_(scale)


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def _resize(x: Tensor, size: int) -> Tensor:
    if size == 0 or x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _limit(x: Tensor, y: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    if n <= 0 or n >= x.shape[0]:
        return x, y
    keep = torch.randperm(x.shape[0], generator=_generator(seed, 7))[:n].sort().values
    return x[keep], y[keep]


def _stratified_split(labels: np.ndarray, portion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, second): ``portion`` of every class goes to the second part; order shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(len(idx) * portion)
        second.append(idx[:k])
        first.append(idx[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


Stats = tuple[float, ...]


def _load_arrays(cfg: DataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor, int, Stats, Stats]:
    """(train x, train y, test x, test y, classes, mean, std) as [0, 1] float tensors before normalisation."""
    if cfg.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images, labels = d.images.astype(np.float32), d.target.astype(np.int64)
        tr, te = _stratified_split(labels, cfg.test_portion, seed=0)  # fixed: the test set never depends on the run
        x = _to_float(images, 16.0)
        y = torch.from_numpy(labels)
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        mean: Stats = (float(xtr.mean()),)
        std: Stats = (float(xtr.std()),)
        return xtr, ytr, xte, yte, 10, mean, std
    if cfg.dataset in CIFAR_STATS:
        import torchvision

        root = Path(cfg.root or ".")
        folder = "cifar-10-batches-py" if cfg.dataset == "cifar10" else "cifar-100-python"
        if not cfg.download and not (root / folder).is_dir():
            name = "CIFAR-10" if cfg.dataset == "cifar10" else "CIFAR-100"
            raise ConfigError(
                f"{name} not found under {str(root)!r} (expected {folder}/ there); "
                "set data.root to its directory or data.download=true"
            )
        cls = torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=cfg.download)
        cifar_mean, cifar_std = CIFAR_STATS[cfg.dataset]
        return (
            _to_float(train.data, 255.0),
            torch.tensor(train.targets, dtype=torch.int64),
            _to_float(test.data, 255.0),
            torch.tensor(test.targets, dtype=torch.int64),
            10 if cfg.dataset == "cifar10" else 100,
            cifar_mean,
            cifar_std,
        )
    if cfg.dataset == "npz":
        xtr_np, ytr_np = _read_npz(cfg.root)
        if cfg.test_root:
            xte_np, yte_np = _read_npz(cfg.test_root)
        else:
            tr, te = _stratified_split(ytr_np, cfg.test_portion, seed=0)
            xtr_np, ytr_np, xte_np, yte_np = xtr_np[tr], ytr_np[tr], xtr_np[te], ytr_np[te]
        scale = 255.0 if xtr_np.dtype == np.uint8 else 1.0
        xtr, xte = _to_float(xtr_np, scale), _to_float(xte_np, scale)
        classes = int(max(ytr_np.max(), yte_np.max())) + 1
        npz_mean = tuple(float(v) for v in xtr.mean(dim=(0, 2, 3)))
        npz_std = tuple(float(v) for v in xtr.std(dim=(0, 2, 3)))
        return xtr, torch.from_numpy(ytr_np), xte, torch.from_numpy(yte_np), classes, npz_mean, npz_std
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"npz file {path!r} does not exist")
    with np.load(p, allow_pickle=False) as d:
        for key in ("images", "labels"):
            if key not in d.files:
                raise ConfigError(f"npz file {path!r} lacks key {key!r} (has: {', '.join(d.files)})")
        images, labels = d["images"], d["labels"].astype(np.int64)
    if images.ndim not in (3, 4) or images.shape[0] != labels.shape[0]:
        raise ConfigError(f"npz file {path!r}: images must be (N,H,W[,C]) with N labels, got {images.shape}")
    return images, labels


def build_data(cfg: DataConfig, seed: int, split: str = "train") -> DataSplits:
    """The batches of a run: ``split="train"`` (full training set, test set) or ``"search"`` (a seeded
    ``train_portion`` split of the training set into train and valid, and the test set)."""
    if split not in ("train", "search"):
        raise ValueError(f"split must be train or search, got {split!r}")
    cfg.validate()
    if cfg.dataset == "imagenet":
        return _imagenet(cfg, seed, split)
    xtr, ytr, xte, yte, classes, mean, std = _load_arrays(cfg)
    xtr, ytr = _limit(xtr, ytr, cfg.limit_train, seed)
    xte, yte = _limit(xte, yte, cfg.limit_test, 0)
    xtr, xte = _resize(xtr, cfg.image_size), _resize(xte, cfg.image_size)
    xtr, xte = _normalise(xtr, mean, std), _normalise(xte, mean, std)
    side = int(xtr.shape[-1])
    crop = side // 8 if cfg.augment else 0
    flip = cfg.augment and cfg.dataset != "digits"

    def source(x: Tensor, y: Tensor, train: bool, salt: int) -> TensorSource:
        return TensorSource(
            x,
            y,
            cfg.batch_size if train else cfg.eval_batch_size,
            train,
            seed * 1000 + salt,
            crop if train else 0,
            flip and train,
            cfg.cutout if train else 0,
        )

    test = source(xte, yte, False, 0)
    if split == "train":
        return DataSplits(source(xtr, ytr, True, 1), None, test, classes, int(xtr.shape[1]), side, mean, std)
    perm = torch.randperm(xtr.shape[0], generator=_generator(seed, 3))
    k = round(xtr.shape[0] * cfg.train_portion)
    a, b = perm[:k].sort().values, perm[k:].sort().values
    # the validation part is iterated like training data (shuffled, seeded) but without augmentation
    valid = TensorSource(xtr[b], ytr[b], cfg.batch_size, True, seed * 1000 + 2)
    train = source(xtr[a], ytr[a], True, 1)
    return DataSplits(train, valid, test, classes, int(xtr.shape[1]), side, mean, std)


class _LoaderSource:
    """A torch DataLoader as a BatchSource (ImageNet folders)."""

    def __init__(self, dataset: Any, batch_size: int, train: bool, seed: int, workers: int) -> None:
        self.dataset, self.batch_size, self.train, self.seed, self.workers = dataset, batch_size, train, seed, workers
        self.epoch = 0
        self.num_examples = len(dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset,
            self.batch_size,
            shuffle=self.train,
            num_workers=self.workers,
            generator=_generator(self.seed, self.epoch),
            pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)


def _imagenet(cfg: DataConfig, seed: int, split: str) -> DataSplits:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise ConfigError(f"ImageNet folder {str(root / sub)!r} does not exist (expected root/train and root/val)")
    size = cfg.image_size or 224
    mean, std = IMAGENET_STATS
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.4, 0.4, 0.4, 0.2),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    test_tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    train_set = ImageFolder(str(root / "train"), train_tf)
    test = _LoaderSource(ImageFolder(str(root / "val"), test_tf), cfg.eval_batch_size, False, seed, cfg.num_workers)
    classes = len(train_set.classes)
    if split == "train":
        return DataSplits(
            _LoaderSource(train_set, cfg.batch_size, True, seed, cfg.num_workers),
            None,
            test,
            classes,
            3,
            size,
            mean,
            std,
        )
    n = len(train_set)
    perm = torch.randperm(n, generator=_generator(seed, 3)).tolist()
    k = round(n * cfg.train_portion)
    tr = torch.utils.data.Subset(train_set, perm[:k])
    va = torch.utils.data.Subset(train_set, perm[k:])
    return DataSplits(
        _LoaderSource(tr, cfg.batch_size, True, seed, cfg.num_workers),
        _LoaderSource(va, cfg.batch_size, True, seed + 1, cfg.num_workers),
        test,
        classes,
        3,
        size,
        mean,
        std,
    )
