"""Classification metrics shared by every module: accuracy, negative log-likelihood, calibration error.

Each takes scores of shape (N, K) (N samples, K classes) and integer targets of shape (N,), as torch tensors or numpy
arrays, and returns Python floats. They are pure functions of their inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _scores_and_targets(scores: ArrayLike, targets: ArrayLike) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(scores).detach()
    t = torch.as_tensor(targets, device=s.device).detach().long()
    if s.dim() != 2 or t.dim() != 1 or s.shape[0] != t.shape[0]:
        raise ValueError(f"expected scores (N, K) and targets (N,), got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[0] == 0:
        raise ValueError("expected at least one sample, got scores of shape (0, K)")
    return s, t


def accuracy(logits: ArrayLike, targets: ArrayLike, topk: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracy in percent for each k in ``topk``; logits (N, K) (or probabilities), targets (N,).

    A k larger than K counts every sample as correct.
    """
    s, t = _scores_and_targets(logits, targets)
    maxk = min(max(topk), s.shape[1])
    pred = s.topk(maxk, dim=1).indices  # (N, maxk), best first
    hit = pred == t[:, None]  # (N, maxk)
    return [hit[:, : min(k, maxk)].any(dim=1).float().mean().item() * 100.0 for k in topk]


def nll(scores: ArrayLike, targets: ArrayLike, from_probs: bool = False) -> float:
    """Mean negative log-likelihood of the targets; scores are logits (N, K), or probabilities with ``from_probs``
    (clamped at 1e-12 so a confident miss costs about 27.6 nats rather than infinity)."""
    s, t = _scores_and_targets(scores, targets)
    s = s.double()
    if from_probs:
        p = s.gather(1, t[:, None]).squeeze(1).clamp_min(1e-12)  # (N,)
        return float(-p.log().mean().item())
    return float(F.cross_entropy(s, t).item())


def expected_calibration_error(probs: ArrayLike, targets: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017, https://arxiv.org/abs/1706.04599) as a fraction in [0, 1].

    Confidence is the top probability; samples fall into ``n_bins`` equal-width bins (lo, hi] over (0, 1], and
    ECE = sum_b |B_b| / N * |acc_b - conf_b|. Probabilities (N, K), targets (N,).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, t = _scores_and_targets(probs, targets)
    conf, pred = p.max(dim=1)  # (N,), (N,)
    correct = (pred == t).to(conf.dtype)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges.tolist()):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = (correct[in_bin].mean() - conf[in_bin].mean()).abs().item()
            ece += in_bin.float().mean().item() * gap
    return float(ece)


class AverageMeter:
    """Running sum, count and mean of a value reported batch by batch.

    >>> m = AverageMeter()
    >>> m.update(2.0, n=3); m.update(4.0)
    >>> m.avg
    2.5
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, value: Any, n: int = 1) -> None:
        """Add ``value`` (a mean over ``n`` samples; a float or a one-element tensor) with weight ``n``."""
        self.val = float(value)
        self.sum += self.val * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0
