"""Shifted test data generated locally: Gaussian noise, Gaussian blur and contrast at severities 1..5.

The corruptions act on *unnormalised* pixels in [0, 1] and clip back to [0, 1], as CIFAR-10-C does (Hendrycks &
Dietterich, 2019, https://arxiv.org/abs/1903.12261, whose CIFAR severities are used); a normalised batch is first
mapped back to pixels with the dataset's mean and std and normalised again afterwards. Noise is drawn from a
generator seeded by (seed, corruption, severity, batch index), so the shifted sets are the same in every process
and for every member.

Example::

    for x, y in corrupted(splits.test, "gaussian_noise", 3, splits.mean, splits.std, seed=0): ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from evoray.data import BatchSource
from evoray.data.sources import seeded_generator
from evoray.data.transforms import Stats
from evoray.ensemble.config import CORRUPTIONS
from evoray.errors import ConfigError

NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # gaussian_noise: std of the added noise, per severity
BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # gaussian_blur: kernel sigma in pixels
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # contrast: factor towards each channel's spatial mean
SHIFT_STREAM = 7  # keeps the noise generators apart from the data's streams


def gaussian_noise(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """x + N(0, s^2) per pixel, clipped; x (B, C, H, W) in [0, 1]."""
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return (x + NOISE_STD[severity - 1] * noise).clamp(0.0, 1.0)


def gaussian_kernel(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian of radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """Separable Gaussian blur with edge replication; x (B, C, H, W) in [0, 1]."""
    k = gaussian_kernel(BLUR_SIGMA[severity - 1]).to(x.dtype)
    r, C = (len(k) - 1) // 2, x.shape[1]
    h = F.pad(x, (r, r, 0, 0), mode="replicate")
    h = F.conv2d(h, k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)  # along W
    h = F.pad(h, (0, 0, r, r), mode="replicate")
    h = F.conv2d(h, k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)  # along H
    return h.clamp(0.0, 1.0)


def contrast(x: Tensor, severity: int, gen: torch.Generator) -> Tensor:
    """(x - m) c + m, clipped, with m the mean over the pixels of each channel of each image (CIFAR-10-C's
    ``np.mean(x, axis=(0, 1))`` of an HWC image); x (B, C, H, W) in [0, 1]."""
    m = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return ((x - m) * CONTRAST[severity - 1] + m).clamp(0.0, 1.0)


CORRUPTION_FNS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
}
assert tuple(CORRUPTION_FNS) == CORRUPTIONS


def corrupt(x: Tensor, name: str, severity: int, gen: torch.Generator) -> Tensor:
    """Corruption ``name`` at ``severity`` (1..5) of pixels x (B, C, H, W) in [0, 1]."""
    if name not in CORRUPTION_FNS:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTION_FNS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"corruption severity must be in 1..5, got {severity}")
    return CORRUPTION_FNS[name](x, severity, gen)


def corrupted(
    source: BatchSource, name: str, severity: int, mean: Stats, std: Stats, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of an unshuffled, normalised ``source`` with corruption ``name`` applied to their pixels."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    index = list(CORRUPTION_FNS).index(name)
    source.set_epoch(0)
    for b, (x, y) in enumerate(source):
        gen = seeded_generator(seed, SHIFT_STREAM, index, severity, b)
        pixels = (x.float() * s + m).clamp(0.0, 1.0)
        yield (corrupt(pixels, name, severity, gen) - m) / s, y


def shift_key(name: str, severity: int) -> str:
    """The name of a shifted test set in results and logits files, e.g. ``gaussian_noise-3``."""
    return f"{name}-{severity}"
