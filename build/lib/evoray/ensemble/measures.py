"""What ensemble papers measure: accuracy, NLL, expected calibration error, oracle NLL and member disagreement.

Arrays: member logits ``(M, N, K)`` (M members, N examples, K classes), probabilities ``(N, K)``, labels ``(N,)``.
Accuracy, ECE and disagreements are in percent; NLLs in nats. Pure numpy (float64 inside); no Ray, no torch state.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from evoray.metrics import expected_calibration_error

PROB_FLOOR = 1e-12  # a zero probability on the true class costs -log(1e-12) = 27.6 nats, as evoray.metrics.nll


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def true_class_probs(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p[..., n, y_n] for probabilities (..., N, K): shape (..., N)."""
    idx = np.broadcast_to(labels, probs.shape[:-1])[..., None]
    return np.take_along_axis(probs, idx, axis=-1)[..., 0]


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under probabilities (N, K)."""
    return float(-np.log(np.maximum(true_class_probs(probs, labels), PROB_FLOOR)).mean())


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (%) of probabilities or scores (N, K); ties go to the lower class index."""
    return float((np.argmax(probs, axis=-1) == labels).mean() * 100.0)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (%): 15 equal-width bins over the top probability (Guo et al., 2017)."""
    return 100.0 * expected_calibration_error(np.array(probs, dtype=np.float64), np.array(labels), n_bins)


def oracle_nll(member_probs: np.ndarray, labels: np.ndarray) -> float:
    """Per example the lowest NLL of any member, averaged: the NLL of an oracle that picks the right member.

    Members (M, N, K) probabilities. NES (Zaidi et al., 2021, https://arxiv.org/abs/2006.08573) reports it as a
    measure of how much the members' errors differ.
    """
    p = np.maximum(true_class_probs(member_probs, labels), PROB_FLOOR)  # (M, N)
    return float(-np.log(p.max(axis=0)).mean())


def disagreement(member_preds: np.ndarray) -> float:
    """Mean over member pairs of the share (%) of examples where their top-1 predictions differ; 0 for one member."""
    pairs = list(itertools.combinations(range(len(member_preds)), 2))
    if not pairs:
        return 0.0
    return float(np.mean([(member_preds[a] != member_preds[b]).mean() for a, b in pairs]) * 100.0)


def disagreement_with(member_preds: np.ndarray, committee_pred: np.ndarray) -> float:
    """Mean over members of the share (%) of examples where a member's top-1 differs from the committee's."""
    return float((member_preds != committee_pred[None]).mean() * 100.0)


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, list[float | None]]:
    """Per equal-width confidence bin (lo, hi]: mean confidence, accuracy (fractions; None for an empty bin) and
    share of the examples."""
    conf, pred = probs.max(axis=-1), probs.argmax(axis=-1)
    correct = (pred == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out: dict[str, list[float | None]] = {"lo": [], "hi": [], "confidence": [], "accuracy": [], "share": []}
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        out["lo"].append(float(lo))
        out["hi"].append(float(hi))
        out["confidence"].append(float(conf[in_bin].mean()) if n else None)
        out["accuracy"].append(float(correct[in_bin].mean()) if n else None)
        out["share"].append(n / len(labels))
    return out


def member_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL and ECE of one member's logits (N, K)."""
    p = softmax(logits)
    return {"accuracy": accuracy(p, labels), "nll": nll(p, labels), "ece": ece(p, labels, n_bins)}


def committee_metrics(
    probs: np.ndarray, member_logits: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> dict[str, Any]:
    """Accuracy, NLL, ECE of a committee's probabilities (N, K), with the oracle NLL and the disagreements of its
    distinct members' logits (m, N, K)."""
    member_probs = softmax(member_logits)  # (m, N, K)
    preds = member_probs.argmax(axis=-1)  # (m, N)
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels, n_bins),
        "oracle_nll": oracle_nll(member_probs, labels),
        "disagreement": disagreement(preds),
        "disagreement_committee": disagreement_with(preds, probs.argmax(axis=-1)),
    }
