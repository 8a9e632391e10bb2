"""Ensemble combiners, one registry: how a committee is selected from a library of members and how their outputs
are merged.

A combiner does two things. ``select`` reads the library's *validation* logits (M, N, K) and labels (N,) only and
returns the picks in order (indices into the library, repeats allowed for Caruana); the committee of size s is the
first s picks, and a member's weight is its count among them divided by s. ``combine`` merges any split's logits
(M, N, K) with those counts into probabilities (N, K). Selection never sees a test split: it is not passed one.

Example::

    comb = COMBINERS.get("caruana")(metric="nll")
    picks = comb.select(valid_logits, valid_labels, size=10)
    counts = np.bincount(picks, minlength=len(valid_logits))
    test_probs = comb.combine(test_logits, counts)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from evoray.ensemble.measures import PROB_FLOOR, softmax, true_class_probs
from evoray.errors import ConfigError
from evoray.registry import Registry

VOTE_TIE_WEIGHT = 1e-6  # weight of the mean probability added to the vote shares: breaks ties, never a majority


def losses(probs: np.ndarray, labels: np.ndarray, metric: str) -> np.ndarray:
    """Sort keys (lower is better) of candidate committees' probabilities (C, N, K): shape (C, 2).

    ``nll``: (NLL, 0). ``accuracy``: (-accuracy, NLL), so ties in accuracy go to the lower NLL.
    """
    p = np.maximum(true_class_probs(probs, labels), PROB_FLOOR)  # (C, N)
    nlls = -np.log(p).mean(axis=-1)  # (C,)
    if metric == "nll":
        return np.stack([nlls, np.zeros_like(nlls)], axis=1)
    if metric == "accuracy":
        acc = (probs.argmax(axis=-1) == labels).mean(axis=-1)  # (C,)
        return np.stack([-acc, nlls], axis=1)
    raise ConfigError(f"unknown selection metric {metric!r}; valid: nll, accuracy")


def argbest(keys: np.ndarray) -> int:
    """Index of the lowest key row (lexicographic); the first one on ties."""
    return int(np.lexsort(keys.T[::-1])[0])


def rank_members(valid_logits: np.ndarray, valid_labels: np.ndarray, metric: str) -> list[int]:
    """Library indices from best to worst by each member's own validation metric (stable on ties)."""
    keys = losses(softmax(valid_logits), valid_labels, metric)
    return [int(i) for i in np.lexsort(keys.T[::-1])]


def _check_library(valid_logits: np.ndarray, valid_labels: np.ndarray) -> None:
    assert valid_logits.ndim == 3 and valid_labels.shape == valid_logits.shape[1:2], (
        f"validation logits (M, N, K) and labels (N,), got {valid_logits.shape} and {valid_labels.shape}"
    )


class Combiner(ABC):
    """Selects a committee on validation data and merges member outputs. Subclasses set ``combine``; the default
    ``select`` ranks the members by their own validation metric and takes the best ``size``."""

    with_replacement = False  # may a member be picked more than once

    def __init__(self, metric: str = "nll", init_best: int = 0) -> None:
        self.metric, self.init_best = metric, init_best

    def check_size(self, size: int, library: int) -> None:
        """A one-line error for a committee that the library cannot fill."""
        if size < 1:
            raise ConfigError(f"committee size must be >= 1, got {size}")
        if size > library and not self.with_replacement:
            raise ConfigError(
                f"committee size {size} exceeds the member pool of {library}; use a size of at most {library}"
            )
        if self.init_best > library:
            raise ConfigError(
                f"init_best = {self.init_best} exceeds the member pool of {library}; start from at most {library}"
            )

    def select(self, valid_logits: np.ndarray, valid_labels: np.ndarray, size: int) -> list[int]:
        """The picks, in order, made from validation logits (M, N, K) and labels (N,) alone."""
        _check_library(valid_logits, valid_labels)
        self.check_size(size, len(valid_logits))
        return rank_members(valid_logits, valid_labels, self.metric)[:size]

    @abstractmethod
    def combine(self, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Probabilities (N, K) of the committee whose member m appears ``counts[m]`` times; logits (M, N, K)."""


COMBINERS: Registry[type[Combiner]] = Registry("combiner")


def _weights(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    assert c.ndim == 1 and c.sum() > 0 and (c >= 0).all(), f"counts must be >= 0 with a positive sum, got {c}"
    return c / c.sum()


def _members(logits: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The logits (M', N, K) and weights (M',) of the members with a positive count: a member left out of the
    committee takes no part in its arithmetic (not even as 0 x its logits)."""
    w = _weights(counts)
    used = w > 0
    return np.asarray(logits)[used], w[used]


@COMBINERS.register("logit_sum")
class LogitSum(Combiner):
    """CoNAS (a committee of architectures searched in different spaces): the prediction is the argmax of the
    plain sum of the members' raw logits. Its probabilities are the softmax of the (count-weighted) mean logit, the
    sum at temperature M, so they do not sharpen with the committee's size and M identical members equal one.
    """

    def combine(self, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
        members, w = _members(logits, counts)
        return softmax(np.tensordot(w, members.astype(np.float64), axes=1))  # (N, K)


@COMBINERS.register("prob_mean")
class ProbMean(Combiner):
    """Deep ensembles (Lakshminarayanan et al., 2017, https://arxiv.org/abs/1612.01474): the (count-weighted) mean
    of the members' softmax probabilities."""

    def combine(self, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
        members, w = _members(logits, counts)
        return np.tensordot(w, softmax(members), axes=1)  # (N, K)


@COMBINERS.register("vote")
class MajorityVote(ProbMean):
    """Majority vote of the members' top-1 predictions; the output is the vote share of each class, with ties
    broken by the mean probability (a weight of 1e-6, so a share is off by at most that)."""

    def combine(self, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
        members, w = _members(logits, counts)
        preds = members.argmax(axis=-1)  # (M', N)
        shares = np.tensordot(w, np.eye(logits.shape[-1])[preds], axes=1)  # (N, K)
        return (shares + VOTE_TIE_WEIGHT * super().combine(logits, counts)) / (1.0 + VOTE_TIE_WEIGHT)


@COMBINERS.register("caruana")
class CaruanaSelection(ProbMean):
    """Ensemble selection (Caruana et al., 2004, https://doi.org/10.1145/1015330.1015432): greedy forward
    selection *with replacement*; each step adds the library member that most improves the validation metric of
    the probability mean; a member's weight is its count over the committee size. ``init_best`` starts from the n
    best members instead of an empty committee (the paper's sorted initialisation).
    """

    with_replacement = True

    def select(self, valid_logits: np.ndarray, valid_labels: np.ndarray, size: int) -> list[int]:
        _check_library(valid_logits, valid_labels)
        self.check_size(size, len(valid_logits))
        probs = softmax(valid_logits)  # (M, N, K)
        picks = rank_members(valid_logits, valid_labels, self.metric)[: min(self.init_best, size)]
        total = probs[picks].sum(axis=0) if picks else np.zeros(probs.shape[1:])  # (N, K)
        while len(picks) < size:
            candidates = (total[None] + probs) / (len(picks) + 1)  # (M, N, K): the committee with each member added
            best = argbest(losses(candidates, valid_labels, self.metric))
            picks.append(best)
            total = total + probs[best]
        return picks


@COMBINERS.register("forward_select")
class ForwardSelect(ProbMean):
    """NES ForwardSelect (Zaidi et al., 2021, https://arxiv.org/abs/2006.08573): start from the best single member
    by validation NLL, then greedily add, *without replacement*, the member that most lowers the validation NLL of
    the probability mean, until the committee has ``size`` members."""

    def select(self, valid_logits: np.ndarray, valid_labels: np.ndarray, size: int) -> list[int]:
        _check_library(valid_logits, valid_labels)
        self.check_size(size, len(valid_logits))
        probs = softmax(valid_logits)  # (M, N, K)
        picks = rank_members(valid_logits, valid_labels, self.metric)[:1]
        total = probs[picks[0]].copy()
        while len(picks) < size:
            rest = [m for m in range(len(probs)) if m not in picks]
            candidates = (total[None] + probs[rest]) / (len(picks) + 1)  # (R, N, K)
            best = rest[argbest(losses(candidates, valid_labels, self.metric))]
            picks.append(best)
            total = total + probs[best]
        return picks


def make_combiner(name: str, metric: str = "nll", init_best: int = 0) -> Combiner:
    """The registered combiner ``name``; an unknown name lists the valid ones."""
    return COMBINERS.get(name)(metric=metric, init_best=init_best)
