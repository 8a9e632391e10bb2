"""Preprocessing and augmentation of whole image batches (B, C, H, W), with randomness from an explicit generator.

On a CPU one tensor op over a batch is far faster than a PIL transform per image, so in-memory datasets augment here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Stats = tuple[float, ...]


def random_crop(x: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """Zero-pad every image by ``pad`` and crop it back to (H, W) at a random offset, as RandomCrop(padding=pad)."""
    B, _, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H + 2p, W + 2p, C)
    top = torch.randint(0, 2 * pad + 1, (B, 1), generator=gen)
    left = torch.randint(0, 2 * pad + 1, (B, 1), generator=gen)
    rows = top + torch.arange(H)  # (B, H)
    cols = left + torch.arange(W)  # (B, W)
    batch = torch.arange(B)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], generator=gen) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """Zero one ``length`` x ``length`` square per image around a uniform random centre, clipped at the border.

    Cutout (DeVries & Taylor, https://arxiv.org/abs/1708.04552) as DARTS applies it: after normalisation.
    """
    B, _, H, W = x.shape
    top = torch.randint(0, H, (B, 1), generator=gen) - length // 2
    left = torch.randint(0, W, (B, 1), generator=gen) - length // 2
    ys, xs = torch.arange(H), torch.arange(W)
    in_rows = (ys >= top) & (ys < top + length)  # (B, H)
    in_cols = (xs >= left) & (xs < left + length)  # (B, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def resize(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Bilinear, antialiased resize of (N, C, H, W) to (N, C, size, size), ``chunk`` images at a time.

    uint8 images stay uint8 (rounded, as a PIL resize would), so a large upscaled set keeps a quarter of the memory.
    """
    N, C = images.shape[:2]
    if tuple(images.shape[2:]) == (size, size):
        return images
    out = torch.empty((N, C, size, size), dtype=images.dtype)
    for start in range(0, N, chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if images.dtype == torch.uint8:
            part = part.round_().clamp_(0, 255)
        out[start : start + chunk] = part.to(images.dtype)
    return out


CONSTANT_STD = 1e-3  # a channel whose std (of values in 0..1) is below this is constant: it is left unscaled


def channel_stats(images: Tensor, scale: float, chunk: int = 4096) -> tuple[Stats, Stats]:
    """Per-channel mean and std of ``images / scale`` over all pixels, accumulated in float64 chunk by chunk."""
    C = images.shape[1]
    total = torch.zeros(C, dtype=torch.float64)
    squares = torch.zeros(C, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].double() / scale
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    # a channel (all but) constant, as an alpha channel of 255 everywhere: centred, not scaled (dividing by its ~0 std
    # would send a crop's zero padding or any other value to millions)
    std = torch.where(std < CONSTANT_STD, torch.ones_like(std), std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
