"""ImageNet from class folders (``root/train``, ``root/val``) with the DARTS ImageNet transforms, through a DataLoader.

Random transforms draw from torch's RNG forked and seeded per image by (seed, stream, epoch, index), so batches
repeat for a seed whatever the number of loader workers, and after resuming at any epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from evoray.data.config import DataConfig
from evoray.data.datasets import (
    LIMIT_STREAM,
    TRAIN_STREAM,
    VALID_STREAM,
    DataSplits,
    search_split,
)
from evoray.data.sources import batch_indices, derive_seed, num_batches, seeded_generator
from evoray.data.transforms import cutout
from evoray.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FolderImages(Dataset):
    """(image tensor, label) of files ``samples``; ``rng_key`` (seed, stream, *epoch) seeds random transforms."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Any], Tensor], random: bool) -> None:
        self.samples, self.transform, self.random = samples, transform, random
        self.rng_key: tuple[int, ...] = (0, 0, 0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[i]
        try:
            image = default_loader(path)
        except OSError as err:  # PIL's UnidentifiedImageError among them: a truncated or foreign file
            raise ConfigError(f"image {path!r} cannot be read ({type(err).__name__}); remove or replace it") from None
        if not self.random:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(*self.rng_key, i))
            return self.transform(image), label


class LoaderSource:
    """Batches of a FolderImages through a DataLoader; shuffled sources follow a (seed, stream, epoch) generator."""

    def __init__(
        self,
        images: FolderImages,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        stream: int,
        workers: int,
        cutout: int = 0,  # side of the zeroed square on normalised training images (0 = off)
    ) -> None:
        assert not cutout or shuffle, "cutout needs a shuffled source's generator"
        self.images, self.batch_size, self.shuffle = images, batch_size, shuffle
        self.seed, self.stream, self.workers, self.cutout = seed, stream, workers, cutout
        self.num_examples = len(images)
        self.epoch: tuple[int, ...] = (0,)

    def set_epoch(self, *key: int) -> None:
        self.epoch = tuple(int(k) for k in key) or (0,)

    def __len__(self) -> int:
        return num_batches(self.num_examples, self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = seeded_generator(self.seed, self.stream, *self.epoch) if self.shuffle else None
        self.images.rng_key = (self.seed, self.stream, *self.epoch)  # workers get a copy made below
        batches = [b.tolist() for b in batch_indices(self.num_examples, self.batch_size, gen)]
        loader = DataLoader(
            self.images, batch_sampler=batches, num_workers=self.workers, pin_memory=torch.cuda.is_available()
        )
        batches_of = iter(loader)
        while True:
            try:
                x, y = next(batches_of)
            except StopIteration:
                return
            except ConfigError as err:  # from a worker, its traceback's text: the one line is its last
                raise ConfigError(_worker_error_line(str(err))) from None
            if gen is not None and self.cutout > 0:
                x = cutout(x, self.cutout, gen)
            yield x, y


def _worker_error_line(text: str) -> str:
    """The message of a ``ConfigError`` that a DataLoader worker raised (re-raised here with the worker's traceback
    as its text); a message raised in this process is kept as it is."""
    prefix = f"{ConfigError.__module__}.{ConfigError.__name__}: "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1].removeprefix(prefix) if lines else text


def _subset(samples: list[tuple[str, int]], n: int, seed: int) -> list[tuple[str, int]]:
    if n <= 0 or n >= len(samples):
        return samples
    keep = torch.randperm(len(samples), generator=seeded_generator(seed, LIMIT_STREAM))[:n]
    return [samples[i] for i in keep.tolist()]


def require_folders(root: Path) -> None:
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise ConfigError(f"ImageNet folder {str(root / part)!r} does not exist (expected {part}/ under data.root)")


def build_imagenet(cfg: DataConfig, seed: int, split: str) -> DataSplits:
    """ImageNet splits; ``image_size`` (default 224) is the crop side, evaluation resizes to 256/224 of it first."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root)
    require_folders(root)
    try:
        train_folder, val_folder = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
    except FileNotFoundError as exc:
        raise ConfigError(f"ImageNet under {str(root)!r}: {exc}") from exc
    if train_folder.classes != val_folder.classes:
        raise ConfigError(f"ImageNet under {str(root)!r}: train/ and val/ hold different class folders")
    size = cfg.image_size or 224
    if cfg.cutout > size:
        raise ConfigError(f"data.cutout = {cfg.cutout} exceeds the image side {size}; use at most {size}")
    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    plain = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), *normalise])
    augmented = T.Compose(
        [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.2), *normalise]
    )
    train_samples = _subset(train_folder.samples, cfg.limit_train, seed)
    test_samples = _subset(val_folder.samples, cfg.limit_test, 0)  # seed 0: the test set is fixed
    test = LoaderSource(
        FolderImages(test_samples, plain, random=False),
        cfg.eval_batch_size,
        shuffle=False,
        seed=0,
        stream=0,
        workers=cfg.num_workers,
    )

    def training(samples: list[tuple[str, int]], stream: int) -> LoaderSource:
        return LoaderSource(
            FolderImages(samples, augmented if cfg.augment else plain, random=cfg.augment),
            cfg.batch_size,
            shuffle=True,
            seed=seed,
            stream=stream,
            workers=cfg.num_workers,
            cutout=cfg.cutout,
        )

    def validation(samples: list[tuple[str, int]]) -> LoaderSource:
        return LoaderSource(
            FolderImages(samples, plain, random=False),
            cfg.batch_size,
            shuffle=True,
            seed=seed,
            stream=VALID_STREAM,
            workers=cfg.num_workers,
        )

    valid = arch = None
    if split == "search" and cfg.whole_train:  # single level: the validation set validates
        valid = validation(test_samples)
    elif split == "search":
        keep, held = search_split(len(train_samples), cfg.train_portion, seed)
        held_samples = [train_samples[i] for i in held.tolist()]
        valid, arch = validation(held_samples), training(held_samples, VALID_STREAM)
        train_samples = [train_samples[i] for i in keep.tolist()]
    train = training(train_samples, TRAIN_STREAM)
    classes = len(train_folder.classes)
    return DataSplits(train, valid, test, classes, 3, size, IMAGENET_MEAN, IMAGENET_STD, arch)
