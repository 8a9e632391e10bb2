"""Batch sources: what training and evaluation loops iterate, one epoch at a time.

A shuffled source draws the order and augmentation of epoch ``e`` from a generator seeded by (seed, stream, e), so
the same seed gives the same batches in a fresh process and after resuming at any epoch. The epoch key may be several
ints, ``set_epoch(generation, individual)``, for passes that need an order of their own (each EvNAS individual reads
its own shuffle of the validation half). Unshuffled sources
(evaluation) give the examples in stored order, unaugmented.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from evoray.data.transforms import Stats, cutout, random_crop, random_flip


@runtime_checkable
class BatchSource(Protocol):
    """An iterable of (images float32 (B, C, H, W) normalised, labels int64 (B,)); ``len`` is batches per epoch."""

    num_examples: int  # examples per epoch, before a lone last one is dropped
    batch_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, *key: int) -> None: ...


def with_batch_size(source: BatchSource, batch_size: int) -> BatchSource:
    """The same examples, order and augmentation in batches of ``batch_size`` (a shallow copy: nothing is copied)."""
    out = copy.copy(source)
    out.batch_size = batch_size
    return out


def derive_seed(*key: int) -> int:
    """A 63-bit seed mixed from non-negative ints (SeedSequence), so nearby keys give unrelated streams."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU torch.Generator seeded from ``key``, e.g. (seed, stream, epoch)."""
    return torch.Generator().manual_seed(derive_seed(*key))


def num_batches(n: int, batch_size: int, shuffle: bool) -> int:
    """Batches per epoch; a shuffled epoch drops a lone last example, which would break BatchNorm in train mode."""
    full, rest = divmod(n, batch_size)
    if shuffle and rest == 1 and full > 0:
        rest = 0
    return full + (rest > 0)


def batch_indices(n: int, batch_size: int, gen: torch.Generator | None) -> list[Tensor]:
    """Index batches of one epoch: a permutation drawn from ``gen`` (shuffled), or 0..n-1 in order (``gen=None``)."""
    order = torch.arange(n) if gen is None else torch.randperm(n, generator=gen)
    return list(order.split(batch_size))[: num_batches(n, batch_size, gen is not None)]


@dataclass(frozen=True)
class Augment:
    crop_pad: int = 0  # random crop after zero padding by this many pixels (0 = off)
    flip: bool = False  # random horizontal flip, p = 0.5
    cutout: int = 0  # side of the zeroed square, applied after normalisation (0 = off)


class TensorSource:
    """Batches from images held in memory as one tensor (N, C, H, W), uint8 or float, and int64 labels (N,).

    Each batch is scaled to [0, 1], cropped and flipped there (so padding is black, as with torchvision), normalised,
    then cut out.

    Example::

        src = TensorSource(x, y, 64, scale=255.0, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, seed=0)
        src.set_epoch(3)
        for images, labels in src: ...
    """

    def __init__(
        self,
        images: Tensor,  # (N, C, H, W) uint8 or float32
        labels: Tensor,  # (N,) int64
        batch_size: int,
        *,
        scale: float,  # stored value that means 1.0 (255 for uint8 images)
        mean: Stats,
        std: Stats,
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        stream: int = 0,  # tells apart the generators of sources sharing a seed (train, valid)
    ) -> None:
        assert images.ndim == 4 and images.shape[0] == labels.shape[0], f"{tuple(images.shape)} vs {labels.shape}"
        assert len(mean) == len(std) == images.shape[1], f"{len(mean)} means for {images.shape[1]} channels"
        assert augment is None or shuffle, "augmentation needs a shuffled source's generator"
        self.images, self.labels, self.batch_size, self.scale = images, labels, batch_size, scale
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.shuffle, self.augment, self.seed, self.stream = shuffle, augment, seed, stream
        self.num_examples = int(images.shape[0])
        self.epoch: tuple[int, ...] = (0,)

    def set_epoch(self, *key: int) -> None:
        """Choose the pass: its order and augmentation follow (seed, stream, *key)."""
        self.epoch = tuple(int(k) for k in key) or (0,)

    def __len__(self) -> int:
        return num_batches(self.num_examples, self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = seeded_generator(self.seed, self.stream, *self.epoch) if self.shuffle else None
        aug = self.augment
        for idx in batch_indices(self.num_examples, self.batch_size, gen):
            x = self.images[idx].float() / self.scale  # (B, C, H, W) in [0, 1]
            if aug is not None and gen is not None:
                x = random_crop(x, aug.crop_pad, gen) if aug.crop_pad > 0 else x
                x = random_flip(x, gen) if aug.flip else x
            x = (x - self.mean) / self.std
            if aug is not None and gen is not None and aug.cutout > 0:
                x = cutout(x, aug.cutout, gen)
            yield x, self.labels[idx]
