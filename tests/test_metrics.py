import math

import numpy as np
import pytest
import torch

from evoray.metrics import AverageMeter, accuracy, expected_calibration_error, nll


def test_accuracy_top1_top5() -> None:
    # 6 classes; each row's scores are ranked 0 > 1 > 2 > 3 > 4 > 5 after the permutation below
    order = torch.tensor(
        [
            [3, 1, 0, 2, 4, 5],  # target 3: rank 1
            [0, 1, 2, 3, 4, 5],  # target 4: rank 5
            [5, 4, 3, 2, 1, 0],  # target 0: rank 6
            [2, 0, 1, 3, 4, 5],  # target 1: rank 3
        ]
    )
    logits = torch.empty(4, 6)
    logits.scatter_(1, order, torch.arange(6, 0, -1, dtype=torch.float).expand(4, 6))
    targets = torch.tensor([3, 4, 0, 1])
    top1, top3, top5 = accuracy(logits, targets, topk=(1, 3, 5))
    assert top1 == pytest.approx(25.0)
    assert top3 == pytest.approx(50.0)
    assert top5 == pytest.approx(75.0)
    assert accuracy(logits.numpy(), targets.numpy(), topk=(10,)) == [pytest.approx(100.0)]


def test_accuracy_shape_error() -> None:
    with pytest.raises(ValueError, match=r"\(4, 6\) and \(3,\)"):
        accuracy(torch.zeros(4, 6), torch.zeros(3, dtype=torch.long))


def test_nll_from_probs_and_logits() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    targets = np.array([0, 1])
    expected = -(math.log(0.7) + math.log(0.25)) / 2
    assert nll(probs, targets, from_probs=True) == pytest.approx(expected)
    assert nll(torch.tensor(probs).log(), torch.tensor(targets)) == pytest.approx(expected)  # log-probs are logits
    assert nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), from_probs=True) == pytest.approx(-math.log(1e-12))


def test_ece_hand_computed() -> None:
    probs = torch.tensor(
        [
            [0.95, 0.05],  # conf 0.95, correct     -> bin (0.9, 1.0]
            [0.85, 0.15],  # conf 0.85, wrong       -> bin (0.8, 0.9]
            [0.15, 0.85],  # conf 0.85, correct     -> bin (0.8, 0.9]
            [0.55, 0.45],  # conf 0.55, wrong       -> bin (0.5, 0.6]
        ]
    )
    targets = torch.tensor([0, 1, 1, 1])
    expected = 1 / 4 * abs(1.0 - 0.95) + 2 / 4 * abs(0.5 - 0.85) + 1 / 4 * abs(0.0 - 0.55)
    assert expected_calibration_error(probs, targets, n_bins=10) == pytest.approx(expected, abs=1e-6)
    # one bin: |overall accuracy - mean confidence|
    assert expected_calibration_error(probs.numpy(), targets.numpy(), n_bins=1) == pytest.approx(
        abs(0.5 - (0.95 + 0.85 + 0.85 + 0.55) / 4), abs=1e-6
    )
    perfect = torch.eye(3)
    assert expected_calibration_error(perfect, torch.arange(3)) == pytest.approx(0.0)
    # confidences on the bin edges (4 bins): (lo, hi] puts 0.5, 0.75 and 1.0 each in its own bin, the top one
    # included; [lo, hi) would drop 1.0 and give (0.5 + 0.75) / 3
    edges = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])  # a tie predicts class 0
    hand = (abs(1.0 - 0.5) + abs(0.0 - 0.75) + abs(0.0 - 1.0)) / 3
    assert expected_calibration_error(edges, torch.tensor([0, 1, 1]), n_bins=4) == pytest.approx(hand, abs=1e-6)


def test_average_meter() -> None:
    meter = AverageMeter()
    assert meter.avg == 0.0
    meter.update(2.0, n=3)
    meter.update(torch.tensor(4.0))
    assert (meter.sum, meter.count, meter.avg, meter.val) == (10.0, 4, 2.5, 4.0)
    meter.reset()
    assert (meter.sum, meter.count) == (0.0, 0)


def test_metrics_refuse_empty_inputs_and_zero_bins() -> None:
    """No sample, no metric (a mean over nothing would be NaN); ECE needs at least one bin."""
    for metric in (accuracy, nll, expected_calibration_error):
        with pytest.raises(ValueError, match="at least one sample"):
            metric(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="n_bins must be >= 1, got 0"):
        expected_calibration_error(torch.eye(2), torch.arange(2), n_bins=0)


def test_metrics_are_per_sample_means() -> None:
    """Accuracy and NLL average over samples, so a batch of one sample counts once among many; the meter weighs a
    batch's mean by its size."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, targets) == [pytest.approx(50.0)]
    meter = AverageMeter()
    for lo, hi in ((0, 1), (1, 4)):  # batches of 1 and 3 samples: 100% and 33.3%
        meter.update(accuracy(logits[lo:hi], targets[lo:hi])[0], n=hi - lo)
    assert meter.avg == pytest.approx(50.0) and meter.count == 4
    hit, miss = math.log1p(math.exp(-2.0)), math.log1p(math.exp(2.0))  # cross-entropy of a hit and a miss
    assert nll(logits, targets) == pytest.approx((2 * hit + 2 * miss) / 4)


def test_accuracy_follows_the_order_of_topk_and_nll_keeps_tiny_losses() -> None:
    """Accuracies come back in the order of ``topk``; NLL is computed in float64, so a near-certain hit's loss of
    1e-10 nats is not rounded to 0."""
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    assert accuracy(logits, torch.tensor([1, 0]), topk=(2, 1)) == [pytest.approx(100.0), pytest.approx(50.0)]
    probs = np.array([[1 - 1e-10, 1e-10]])
    assert nll(probs, np.array([0]), from_probs=True) == pytest.approx(1e-10, rel=1e-4)
    assert nll(np.log(probs), np.array([0])) == pytest.approx(1e-10, rel=1e-4)
