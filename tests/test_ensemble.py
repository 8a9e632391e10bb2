"""``evoray.ensemble`` logic without training: every combiner against hand-worked logits, the metrics against hand
computations, greedy selection against a written-out greedy search, validation-only selection, committees restricted by
globs, metrics against committee size, corruptions, BatchNorm statistics of predictions, the report's summary, committee
checks, deduplication of the pool, members reused on resume, saved and torn logits files."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from evoray.data import TensorSource
from evoray.ensemble.combiners import COMBINERS, make_combiner
from evoray.ensemble.committees import Committee, LogitPool, check_committee, measure, select_committee
from evoray.ensemble.config import CommitteeConfig, EnsembleConfig
from evoray.ensemble.measures import (
    committee_metrics,
    disagreement,
    disagreement_with,
    ece,
    member_metrics,
    nll,
    oracle_nll,
    reliability,
    softmax,
)
from evoray.ensemble.members import LOGITS_FILE, load_member, run_members, save_member
from evoray.ensemble.predict import MemberLogits, check_finite, predict, recalibrate_bn
from evoray.ensemble.report import shift_by_severity
from evoray.ensemble.runner import build_report, lowest_valid_nll
from evoray.ensemble.shift import (
    BLUR_SIGMA,
    NOISE_STD,
    contrast,
    corrupt,
    corrupted,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
)
from evoray.ensemble.sources import (
    DataInfo,
    MemberSpec,
    archive_genotypes,
    genotype_key,
    resolve_pool,
    validation_overlap,
)
from evoray.errors import ConfigError
from evoray.runs import individual_row, write_archive
from evoray.spaces.genotype import CellGenotype, Genotype, parse_genotype
from evoray.spaces.published import published_genotype

E2 = math.exp(2.0)
# Two members, two examples, three classes.
A = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
B = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
AB = np.stack([A, B])  # (M=2, N=2, K=3)
ONES = np.array([1, 1])


def test_logit_sum_is_the_softmax_of_the_mean_logit_and_the_argmax_of_the_plain_sum() -> None:
    p = make_combiner("logit_sum").combine(AB, ONES)
    # mean logits: row 0 (1, 1, 0); row 1 (0.5, 0.5, 0)
    e, h = math.e, math.exp(0.5)
    assert p[0] == pytest.approx([e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)])
    assert p[1] == pytest.approx([h / (2 * h + 1), h / (2 * h + 1), 1 / (2 * h + 1)])
    # counts weight the members: 2 A + 1 B -> row 0 mean logits (4/3, 2/3, 0): class 0 wins, as the plain sum's argmax
    p = make_combiner("logit_sum").combine(AB, np.array([2, 1]))
    z = np.array([4 / 3, 2 / 3, 0.0])
    assert p[0] == pytest.approx(np.exp(z) / np.exp(z).sum())
    assert p.argmax(1).tolist() == (2 * A + B).argmax(1).tolist() == [0, 1]


def test_prob_mean_averages_the_softmaxes() -> None:
    p = make_combiner("prob_mean").combine(AB, ONES)
    big, small = E2 / (E2 + 2), 1 / (E2 + 2)  # softmax(2, 0, 0) = (0.787, 0.107, 0.107)
    assert p[0] == pytest.approx([(big + small) / 2, (big + small) / 2, small])
    p = make_combiner("prob_mean").combine(AB, np.array([3, 1]))
    assert p[0] == pytest.approx([0.75 * big + 0.25 * small, 0.75 * small + 0.25 * big, small])


def test_vote_gives_the_vote_shares_and_breaks_ties_by_mean_probability() -> None:
    C = np.array([[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]])  # predicts class 1 twice
    p = make_combiner("vote").combine(np.stack([A, B, C]), np.array([1, 1, 1]))
    # row 0: A votes 0, B votes 1, C votes 1 -> (1/3, 2/3, 0); row 1: A 1, B 0, C 1 -> (1/3, 2/3, 0)
    assert p == pytest.approx(np.array([[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.0]]), abs=1e-6)
    # a tie (one vote each) goes to the class with the higher mean probability
    D = np.array([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])  # row 0: class 1 at 0.45
    tie = make_combiner("vote").combine(np.stack([A, D]), ONES)
    assert tie[0, :2] == pytest.approx([0.5, 0.5], abs=1e-6) and tie[0].argmax() == 0  # A's 0.787 beats D's 0.45
    assert tie[0].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", COMBINERS.names())
def test_every_combiner_gives_probabilities_on_random_logits(name: str) -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(4, 20, 5)) * 3, rng.integers(0, 5, 20)
    comb = make_combiner(name)
    picks = comb.select(logits, labels, 3)
    assert len(picks) == 3 and all(0 <= i < 4 for i in picks)
    p = comb.combine(logits, np.bincount(picks, minlength=4))
    assert p.shape == (20, 5) and np.isfinite(p).all() and np.allclose(p.sum(1), 1.0)


@pytest.mark.parametrize("name", COMBINERS.names())
def test_a_committee_of_identical_members_equals_the_member(name: str) -> None:
    rng = np.random.default_rng(1)
    z, labels = rng.normal(size=(30, 4)) * 2, rng.integers(0, 4, 30)
    same = np.stack([z, z, z])
    comb = make_combiner(name)
    p = comb.combine(same, np.bincount(comb.select(same, labels, 3), minlength=3))
    if name == "vote":  # the vote shares of identical members are the member's one-hot prediction
        assert p.argmax(1).tolist() == z.argmax(1).tolist()
        assert p.max(1) == pytest.approx(1.0, abs=1e-6)
    else:
        assert p == pytest.approx(softmax(z))
    member = committee_metrics(softmax(z), z[None], labels)
    committee = committee_metrics(p, same, labels)
    assert committee["accuracy"] == member["accuracy"]
    assert committee["disagreement"] == 0.0 and committee["disagreement_committee"] == 0.0


@pytest.mark.parametrize("name", COMBINERS.names())
def test_a_member_left_out_takes_no_part_in_the_committee(name: str) -> None:
    """A member with count 0 is not in the arithmetic at all: its NaN logits (0 x NaN is NaN) change nothing."""
    comb = make_combiner(name)
    broken = np.stack([A, B, np.full_like(A, np.nan)])
    assert comb.combine(broken, np.array([1, 1, 0])) == pytest.approx(comb.combine(AB, ONES))


def test_vote_counts_a_member_picked_twice_as_two_votes() -> None:
    """A member's vote weighs its count among the picks."""
    p = make_combiner("vote").combine(AB, np.array([2, 1]))
    # row 0: A (twice) votes 0, B votes 1; row 1: A (twice) votes 1, B votes 0
    assert p == pytest.approx(np.array([[2 / 3, 1 / 3, 0.0], [1 / 3, 2 / 3, 0.0]]), abs=1e-6)


def test_a_tied_vote_goes_to_the_higher_mean_probability_even_on_a_higher_class() -> None:
    """A 1-1 vote goes to the class of the higher mean probability, here class 1 over class 0; the shares move by
    at most 1e-6."""
    P = np.array([[1.0, 0.0, 0.0]])  # votes class 0 at 0.58
    Q = np.array([[0.0, 3.0, 0.0]])  # votes class 1 at 0.91
    p = make_combiner("vote").combine(np.stack([P, Q]), ONES)
    mean = (softmax(P) + softmax(Q)) / 2  # class 0 at 0.31, class 1 at 0.56
    assert p[0, :2] == pytest.approx([0.5, 0.5], abs=1e-6) and p[0].argmax() == 1
    assert p == pytest.approx((np.array([[0.5, 0.5, 0.0]]) + 1e-6 * mean) / (1 + 1e-6), rel=1e-12)


def test_softmax_is_exact_for_large_logits() -> None:
    """Logits of 1000 give exact probabilities, and every combiner stays finite on them."""
    z = np.array([[1000.0, 1000.0 - math.log(3.0), -1000.0]])
    assert softmax(z) == pytest.approx(np.array([[0.75, 0.25, 0.0]]))
    for name in COMBINERS.names():
        p = make_combiner(name).combine(np.stack([z, 0.5 * z]), ONES)
        assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0), name


def test_a_member_with_non_finite_logits_is_a_one_line_error() -> None:
    check_finite("GDAS_V1", "test", A)
    bad = A.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ConfigError, match=r"member GDAS_V1 gives non-finite logits on 1 of 2 test examples") as err:
        check_finite("GDAS_V1", "test", bad)
    assert "\n" not in str(err.value)


def test_the_best_is_the_lowest_finite_validation_nll() -> None:
    rows = [{"name": n, "valid": {"nll": v}} for n, v in (("nan", math.nan), ("none", None), ("b", 0.7), ("a", 0.5))]
    assert min(rows, key=lowest_valid_nll)["name"] == "a"
    assert min(rows[:2], key=lowest_valid_nll)["name"] == "nan"  # none finite: the first, as min keeps ties


def _library() -> tuple[np.ndarray, np.ndarray]:
    """Member 0 is right and confident, member 1 confidently wrong, member 2 right but unsure."""
    labels = np.array([0, 1, 2, 0])
    good = np.eye(3)[labels] * 4.0
    bad = np.eye(3)[(labels + 1) % 3] * 4.0
    unsure = np.eye(3)[labels] * 0.3
    return np.stack([bad, good, unsure]), labels  # the best is at index 1


def test_caruana_picks_the_best_member_first_and_can_pick_it_twice() -> None:
    logits, labels = _library()
    picks = make_combiner("caruana").select(logits, labels, 4)
    assert picks[0] == 1  # the best single member
    assert picks.count(1) >= 2  # with replacement: adding it again beats any other member
    assert picks == [1, 1, 1, 1]
    assert make_combiner("caruana", metric="accuracy").select(logits, labels, 2)[0] == 1


def test_caruana_mixes_complementary_members_and_follows_the_validation_nll() -> None:
    labels = np.array([0, 0, 1, 1])
    left = np.array([[3.0, 0.0], [3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # sure of class 0, so wrong on 2 and 3
    right = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [0.0, 3.0]])  # the mirror image
    logits = np.stack([left, right])
    picks = make_combiner("caruana").select(logits, labels, 2)
    assert sorted(picks) == [0, 1]
    for counts in ([2, 0], [1, 1], [0, 2]):  # the greedy choice is the lowest NLL over every 2-pick committee
        p = make_combiner("caruana").combine(logits, np.array(counts))
        assert nll(p, labels) >= nll(make_combiner("caruana").combine(logits, np.bincount(picks, minlength=2)), labels)


def test_caruana_sorted_initialisation_starts_from_the_n_best() -> None:
    logits, labels = _library()
    assert make_combiner("caruana", init_best=2).select(logits, labels, 3)[:2] == [1, 2]


def test_forward_select_never_picks_a_member_twice() -> None:
    logits, labels = _library()
    picks = make_combiner("forward_select").select(logits, labels, 3)
    assert picks[0] == 1 and len(set(picks)) == 3
    rng = np.random.default_rng(2)
    many, y = rng.normal(size=(6, 40, 4)), rng.integers(0, 4, 40)
    for size in range(1, 7):
        picks = make_combiner("forward_select").select(many, y, size)
        assert len(set(picks)) == size
    with pytest.raises(ConfigError, match="exceeds the member pool of 6"):
        make_combiner("forward_select").select(many, y, 7)


def test_forward_select_adds_the_member_that_most_lowers_the_ensemble_nll() -> None:
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(size=(5, 50, 3)) * 2, rng.integers(0, 3, 50)
    picks = make_combiner("forward_select").select(logits, labels, 2)
    probs = softmax(logits)
    assert picks[0] == int(np.argmin([nll(p, labels) for p in probs]))
    second = [nll((probs[picks[0]] + probs[m]) / 2, labels) if m != picks[0] else np.inf for m in range(5)]
    assert picks[1] == int(np.argmin(second))


def _ranked_library() -> tuple[np.ndarray, np.ndarray]:
    """Member 2 is the most accurate (75%) but sure where it is wrong; members 0 and 1 tie at 50%, member 1 unsure
    where it is wrong. Validation NLLs 3.0025, 0.6579 and 5.0019."""
    labels = np.array([0, 1, 0, 1])
    m0 = np.array([[3.0, -3.0], [-3.0, 3.0], [-3.0, 3.0], [3.0, -3.0]])
    m1 = np.array([[3.0, -3.0], [-3.0, 3.0], [-0.5, 0.5], [0.5, -0.5]])
    m2 = np.array([[3.0, -3.0], [-3.0, 3.0], [3.0, -3.0], [10.0, -10.0]])
    return np.stack([m0, m1, m2]), labels


def test_selection_by_accuracy_puts_accuracy_first_and_breaks_its_ties_by_nll() -> None:
    """Ranked by accuracy: 75% first, then the two at 50% by NLL; by NLL the order differs, and so does the first
    greedy pick and the sorted initialisation."""
    logits, labels = _ranked_library()
    assert [nll(p, labels) for p in softmax(logits)] == pytest.approx([3.0025, 0.6579, 5.0019], abs=1e-4)
    assert make_combiner("prob_mean", metric="accuracy").select(logits, labels, 3) == [2, 1, 0]
    assert make_combiner("prob_mean", metric="nll").select(logits, labels, 3) == [1, 0, 2]
    assert make_combiner("caruana", metric="accuracy").select(logits, labels, 1) == [2]
    assert make_combiner("caruana", metric="nll").select(logits, labels, 1) == [1]
    # the sorted initialisation takes the n best by the committee's metric
    assert make_combiner("caruana", metric="accuracy", init_best=2).select(logits, labels, 2) == [2, 1]
    assert make_combiner("caruana", metric="nll", init_best=2).select(logits, labels, 2) == [1, 0]


def test_greedy_selection_breaks_ties_by_the_lower_library_index() -> None:
    """Identical members tie at every step: the first one wins each tie."""
    rng = np.random.default_rng(4)
    z, labels = rng.normal(size=(10, 3)), rng.integers(0, 3, 10)
    same = np.stack([z, z, z])
    assert make_combiner("caruana").select(same, labels, 3) == [0, 0, 0]
    assert make_combiner("forward_select").select(same, labels, 3) == [0, 1, 2]
    assert make_combiner("prob_mean").select(same, labels, 3) == [0, 1, 2]


def _greedy(logits: np.ndarray, labels: np.ndarray, size: int, replace: bool) -> list[int]:
    """Greedy forward selection written out over counts: each step tries every allowed member and keeps the first
    one whose addition gives the count-weighted probability mean the lowest validation NLL."""
    probs = softmax(logits)
    counts = np.zeros(len(logits))
    picks: list[int] = []
    for _ in range(size):
        scores = {}
        for m in range(len(logits)):
            if counts[m] and not replace:
                continue
            c = counts.copy()
            c[m] += 1
            scores[m] = nll(sum(c[i] * probs[i] for i in range(len(c))) / c.sum(), labels)
        best = min(scores, key=lambda m: scores[m])
        picks.append(best)
        counts[best] += 1
    return picks


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_greedy_selection_equals_a_written_out_greedy_search(seed: int) -> None:
    """Caruana (with replacement) and ForwardSelect (without) pick what the written-out greedy search picks."""
    rng = np.random.default_rng(seed)
    logits, labels = rng.normal(size=(8, 40, 4)) * 2, rng.integers(0, 4, 40)
    assert make_combiner("caruana").select(logits, labels, 10) == _greedy(logits, labels, 10, replace=True)
    assert make_combiner("forward_select").select(logits, labels, 8) == _greedy(logits, labels, 8, replace=False)


def test_selection_reads_validation_logits_only() -> None:
    for name in COMBINERS.names():  # structurally: select is given validation arrays and a size, nothing else
        params = list(inspect.signature(COMBINERS.get(name).select).parameters)
        assert params == ["self", "valid_logits", "valid_labels", "size"], name
    valid, labels = _library()
    test = valid[[1, 0, 2]]  # on the test set member 0 would be the best one
    members = [MemberLogits(f"m{i}", valid[i], labels, test[i], labels, {"contrast-1": test[i]}) for i in range(3)]
    clean = LogitPool.from_members(members)
    poisoned = LogitPool.from_members(members)
    poisoned.test[:] = np.nan
    for name in COMBINERS.names():
        cfg = CommitteeConfig(combiner=name, size=2)
        a = select_committee(cfg, name, clean.names, clean.valid, clean.valid_labels)
        b = select_committee(cfg, name, poisoned.names, poisoned.valid, poisoned.valid_labels)
        assert a.picks == b.picks and a.picks[0] == 1, name
    report = measure(
        clean, [select_committee(CommitteeConfig(combiner="caruana", size=2), "c", clean.names, clean.valid, labels)]
    )
    assert report["committees"][0]["picks"] == ["m1", "m1"]


def test_nll_and_ece_against_hand_computations() -> None:
    probs = np.array([[0.92, 0.08], [0.38, 0.62], [0.30, 0.70], [0.28, 0.72], [0.82, 0.18]])
    labels = np.array([0, 0, 1, 0, 0])
    # confidences 0.92 (right), 0.62 (wrong), 0.70 (right), 0.72 (wrong), 0.82 (right)
    expected_nll = -(math.log(0.92) + math.log(0.38) + math.log(0.70) + math.log(0.28) + math.log(0.82)) / 5
    assert nll(probs, labels) == pytest.approx(expected_nll)
    # bins of width 1/15: (0.867, 0.933] {0.92}, (0.6, 0.667] {0.62}, (0.667, 0.733] {0.70, 0.72}, (0.8, 0.867] {0.82}
    gaps = [abs(1 - 0.92) * 1, abs(0 - 0.62) * 1, abs(0.5 - 0.71) * 2, abs(1 - 0.82) * 1]
    assert ece(probs, labels) == pytest.approx(100 * sum(gaps) / 5)
    r = reliability(probs, labels)
    assert r["share"][10] == pytest.approx(0.4) and r["accuracy"][10] == pytest.approx(0.5)
    assert r["accuracy"][0] is None
    assert nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-12))


def test_oracle_nll_and_disagreement_against_hand_computations() -> None:
    member_probs = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.6, 0.4], [0.2, 0.8]]])  # (2 members, 2 examples, 2)
    labels = np.array([0, 1])
    assert oracle_nll(member_probs, labels) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    preds = np.array([[0, 1, 2, 2], [0, 1, 1, 0], [1, 1, 2, 2]])
    # pairs: (0,1) differ on 2 of 4, (0,2) on 1 of 4, (1,2) on 3 of 4 -> mean 0.5
    assert disagreement(preds) == pytest.approx(50.0)
    assert disagreement(preds[:1]) == 0.0
    # against the committee's (0, 1, 2, 2): member 0 differs on 0, member 1 on 2, member 2 on 1 -> 3 / 12
    assert disagreement_with(preds, np.array([0, 1, 2, 2])) == pytest.approx(25.0)


def test_committee_and_member_metrics_against_hand_computations() -> None:
    """Members predicting (0, 1) and (1, 1), a committee predicting (0, 0), labels (0, 1); with one bin the ECE is
    |accuracy - mean confidence|."""
    labels = np.array([0, 1])
    m0, m1 = np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [0.0, 2.0]])
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    s1, s2 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-2.0))  # softmax of a margin of 1 and 2: 0.731, 0.881
    got = committee_metrics(probs, np.stack([m0, m1]), labels, n_bins=1)
    assert got["accuracy"] == 50.0
    assert got["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
    assert got["ece"] == pytest.approx(100 * abs(0.5 - 0.7))
    assert got["oracle_nll"] == pytest.approx(-math.log(s2))  # on each example one member gives the label 0.881
    assert got["disagreement"] == 50.0  # the members differ on example 0
    # against the committee's (0, 0): member 0 differs on example 1, member 1 on both: 3 of 4
    assert got["disagreement_committee"] == 75.0
    assert committee_metrics(probs, np.stack([m0, m1]), labels)["ece"] == pytest.approx(100 * (0.2 + 0.6) / 2)
    # member 1 alone: wrong at confidence 0.731, right at 0.881
    want = {"accuracy": 50.0, "nll": -(math.log(1 - s1) + math.log(s2)) / 2, "ece": 100 * abs(0.5 - (s1 + s2) / 2)}
    assert member_metrics(m1, labels, n_bins=1) == pytest.approx(want)
    assert member_metrics(m1, labels)["ece"] == pytest.approx(100 * (s1 + (1 - s2)) / 2)


def test_reliability_bins_are_closed_on_the_right() -> None:
    """Bins (lo, hi]: a confidence of 0.5 falls in the first of two bins, a confidence of 1 in the last."""
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    labels = np.array([0, 0, 1])
    r = reliability(probs, labels, n_bins=2)
    assert r["lo"] == [0.0, 0.5] and r["hi"] == [0.5, 1.0]
    assert r["share"] == pytest.approx([1 / 3, 2 / 3])
    assert r["confidence"] == pytest.approx([0.5, 0.875]) and r["accuracy"] == pytest.approx([1.0, 0.5])
    assert ece(probs, labels, n_bins=2) == pytest.approx(100 * (0.5 / 3 + 0.375 * 2 / 3))


def test_committee_checks_are_one_line_errors() -> None:
    names = ["a", "b", "c"]
    with pytest.raises(ConfigError, match="committee size 5 exceeds the member pool of 3") as err:
        check_committee(CommitteeConfig(combiner="prob_mean", size=5), names, "committees[0]")
    assert "\n" not in str(err.value)
    check_committee(CommitteeConfig(combiner="caruana", size=5), names, "committees[0]")  # with replacement
    with pytest.raises(ConfigError, match="init_best = 4 exceeds the member pool of 3; start from at most 3"):
        check_committee(CommitteeConfig(combiner="caruana", size=10, init_best=4), names, "committees[0]")
    with pytest.raises(ConfigError, match="init_best = 4 exceeds the member pool of 3"):
        check_committee(CommitteeConfig(combiner="caruana", init_best=4), names, "committees[0]")  # size 0: the pool
    check_committee(CommitteeConfig(combiner="caruana", init_best=3), names, "committees[0]")
    with pytest.raises(ConfigError, match="unknown member 'z'"):
        check_committee(CommitteeConfig(members=["a", "z"]), names, "committees[0]")
    with pytest.raises(ConfigError, match="unknown combiner 'median'; valid: caruana, forward_select"):
        check_committee(CommitteeConfig(combiner="median"), names, "committees[0]")
    ten = MemberLogits("ten", A, np.array([0, 1]), A, np.array([0, 1]), {})
    four = MemberLogits("four", np.zeros((2, 4)), np.array([0, 1]), np.zeros((2, 4)), np.array([0, 1]), {})
    with pytest.raises(ConfigError, match="different class counts"):
        LogitPool.from_members([ten, four])


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"combiner": "forward_select", "metric": "accuracy"}, "forward_select (NES) selects by validation NLL"),
        ({"combiner": "prob_mean", "init_best": 2}, "init_best applies to the caruana combiner only, not prob_mean"),
        ({"combiner": "caruana", "size": 2, "init_best": 3}, "init_best = 3 exceeds its size 2"),
        ({"metric": "brier"}, "metric = 'brier' is not one of nll, accuracy"),
        ({"size": -1}, "size and init_best must be >= 0, got -1 and 0"),
    ],
)
def test_a_committee_spec_that_cannot_work_is_a_one_line_error(fields: dict, words: str) -> None:
    """Metric, ForwardSelect's NLL, init_best's combiner and size, and negative sizes are checked at load."""
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        CommitteeConfig(**fields).check("committees[0]")
    assert "\n" not in str(err.value) and "committees[0]" in str(err.value)
    CommitteeConfig(combiner="caruana", size=3, init_best=3).check("committees[0]")


def test_a_committee_restricted_by_a_glob_chooses_among_those_members_only() -> None:
    """The library is the members the glob matches; picks are indices into the whole pool."""
    names = ["s-a", "b", "s-c"]
    labels = np.array([0, 1])
    logits = np.stack([np.eye(2) * 1.0, np.eye(2) * 5.0, np.eye(2) * 3.0])  # b is the best, then s-c, then s-a
    cfg = CommitteeConfig(combiner="prob_mean", members=["s-*"])
    check_committee(cfg, names, "committees[0]")  # size 0: both members the glob matches
    assert select_committee(cfg, "c", names, logits, labels).picks == [2, 0]
    for name in ("caruana", "forward_select"):
        cfg = CommitteeConfig(combiner=name, size=2, members=["s-c", "s-a"])
        picks = select_committee(cfg, name, names, logits, labels).picks
        assert picks[0] == 2 and 1 not in picks, (name, picks)


def test_measure_gives_each_size_of_the_committee_its_own_metrics() -> None:
    """The curve at size s measures the first s picks alone (one pick: that member's metrics, an oracle NLL equal to
    its NLL, no disagreement); every split is measured against its own labels; reliability diagrams are of the test
    split, in the bins asked for."""
    rng = np.random.default_rng(8)
    valid, test = rng.normal(size=(3, 20, 4)) * 2, rng.normal(size=(3, 30, 4)) * 2
    vy, ty = rng.integers(0, 4, 20), rng.integers(0, 4, 30)
    members = [MemberLogits(f"m{i}", valid[i], vy, test[i], ty, {"contrast-1": 0.5 * test[i]}) for i in range(3)]
    pool = LogitPool.from_members(members)
    out = measure(pool, [Committee("c", CommitteeConfig(combiner="prob_mean"), [2, 0, 2])], bins=5)
    row = out["committees"][0]
    assert [p["size"] for p in row["curve"]] == [1, 2, 3]
    assert row["members"] == pytest.approx({"m0": 1 / 3, "m2": 2 / 3})
    alone = member_metrics(test[2], ty, n_bins=5)
    assert out["members"]["m2"]["test"] == pytest.approx(alone)
    assert out["members"]["m2"]["valid"] == pytest.approx(member_metrics(valid[2], vy, n_bins=5))
    first = row["curve"][0]
    assert {k: first[k] for k in alone} == pytest.approx(alone)
    assert first["oracle_nll"] == pytest.approx(first["nll"]) and first["disagreement"] == 0.0
    two = committee_metrics((softmax(test[2]) + softmax(test[0])) / 2, test[[0, 2]], ty, 5)
    assert row["curve"][1] == pytest.approx({"size": 2, **two})
    three = (2 * softmax(test[2]) + softmax(test[0])) / 3
    assert row["test"] == pytest.approx(committee_metrics(three, test[[0, 2]], ty, 5))
    assert row["curve"][2] == pytest.approx({"size": 3, **row["test"]})
    shifted = (2 * softmax(0.5 * test[2]) + softmax(0.5 * test[0])) / 3
    assert row["contrast-1"] == pytest.approx(committee_metrics(shifted, 0.5 * test[[0, 2]], ty, 5))
    assert row["valid"] == pytest.approx(
        committee_metrics((2 * softmax(valid[2]) + softmax(valid[0])) / 3, valid[[0, 2]], vy, 5)
    )
    assert row["reliability"]["share"] == pytest.approx(reliability(three, ty, 5)["share"])
    assert out["members"]["m1"]["reliability"] == reliability(softmax(test[1]), ty, 5)


def test_corruptions_are_seeded_clipped_and_grow_with_severity() -> None:
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(5)

    assert torch.equal(gaussian_noise(x, 3, gen()), gaussian_noise(x, 3, gen()))
    noise = [float((gaussian_noise(x, s, gen()) - x).std()) for s in range(1, 6)]
    assert noise == sorted(noise) and noise[0] == pytest.approx(0.04, rel=0.15)
    spread = [float(contrast(x, s, gen()).std()) for s in range(1, 6)]
    assert spread == sorted(spread, reverse=True)
    flat = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(flat, 5, gen()), flat)  # a blurred constant image is that image
    sharp = [float(gaussian_blur(x, s, gen()).diff(dim=-1).abs().mean()) for s in range(1, 6)]
    assert sharp == sorted(sharp, reverse=True)
    for name in ("gaussian_noise", "gaussian_blur", "contrast"):
        y = corrupt(x, name, 5, gen())
        assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    with pytest.raises(ConfigError, match=r"severity must be in 1\.\.5"):
        corrupt(x, "contrast", 6, gen())


def test_contrast_moves_each_channel_towards_its_own_mean() -> None:
    """CIFAR-10-C: ``means = np.mean(x, axis=(0, 1))`` of an HWC image, i.e. one mean per channel of each image."""
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    assert torch.equal(contrast(red, 5, torch.Generator()), red)  # each channel is constant: a pure red stays red
    x = torch.tensor([[[[0.0, 0.2], [0.4, 1.0]], [[0.8, 0.8], [0.8, 0.8]]]])  # (1, 2, 2, 2); channel means 0.4, 0.8
    # severity 1, factor 0.75: (x - 0.4) * 0.75 + 0.4 in channel 0; channel 1 is constant and stays 0.8
    want = torch.tensor([[[[0.1, 0.25], [0.4, 0.85]], [[0.8, 0.8], [0.8, 0.8]]]])
    assert torch.allclose(contrast(x, 1, torch.Generator()), want)
    assert torch.allclose(contrast(torch.cat([x, red[:, :2, :2, :2]]), 1, torch.Generator())[0], want[0])


def test_gaussian_blur_spreads_a_point_into_the_outer_product_of_its_kernel() -> None:
    """Kernels of radius ceil(3 sigma) at CIFAR-10-C's sigmas, applied along both axes."""
    assert [len(gaussian_kernel(s)) for s in BLUR_SIGMA] == [5, 5, 7, 7, 7]
    for sigma in BLUR_SIGMA:
        t = np.arange(-math.ceil(3 * sigma), math.ceil(3 * sigma) + 1)
        want = np.exp(-0.5 * (t / sigma) ** 2)
        assert gaussian_kernel(sigma).numpy() == pytest.approx(want / want.sum(), rel=1e-5)
    point = torch.zeros(1, 1, 11, 11)
    point[0, 0, 5, 5] = 1.0
    k = gaussian_kernel(BLUR_SIGMA[4])  # 7 taps
    spread = torch.zeros(11, 11)
    spread[2:9, 2:9] = torch.outer(k, k)
    assert torch.allclose(gaussian_blur(point, 5, torch.Generator())[0, 0], spread, atol=1e-7)


def test_shifted_batches_are_the_normalised_corruptions_of_the_pixels() -> None:
    """A normalised batch is mapped back to pixels, corrupted and normalised again; the noise differs from batch to
    batch (here two batches of the same images) and is the same on every pass."""
    half = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    images = torch.cat([half, half])
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    source = TensorSource(images, torch.arange(4), 2, scale=1.0, mean=mean, std=std)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    out = list(corrupted(source, "contrast", 2, mean, std, seed=0))
    assert [y.tolist() for _, y in out] == [[0, 1], [2, 3]]
    want = (contrast(half, 2, torch.Generator()) - m) / s
    assert all(torch.allclose(x, want, atol=1e-5) for x, _ in out)
    noisy = [x for x, _ in corrupted(source, "gaussian_noise", 3, mean, std, seed=0)]
    again = [x for x, _ in corrupted(source, "gaussian_noise", 3, mean, std, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(noisy, again))
    assert not torch.allclose(noisy[0], noisy[1])
    assert float((noisy[0] * s + m - half).std()) == pytest.approx(NOISE_STD[2], rel=0.3)


def _reversed(genotype: Genotype) -> Genotype:
    """The same architecture written differently: every node's edges and every concat in reverse order."""
    return Genotype(
        tuple(
            (name, CellGenotype(tuple(node[::-1] for node in cell.nodes), cell.concat[::-1]))
            for name, cell in genotype.cells
        )
    )


def _archive(path: Path, genotypes: list[str]) -> Path:
    """A population archive whose rows are ``genotypes``, fittest first."""
    rows = [
        individual_row(0, i, [], "init", g, 90.0 - 10 * i, None, {}, "darts", "ga", None, 0)
        for i, g in enumerate(genotypes)
    ]
    path.mkdir(parents=True, exist_ok=True)
    write_archive(path / "archive.parquet", rows)
    return path


def test_a_genotype_with_its_edges_listed_in_another_order_is_a_duplicate(tmp_path) -> None:
    darts = published_genotype("DARTS_V2")
    flipped = _reversed(darts)
    assert str(flipped) != str(darts) and str(parse_genotype(str(flipped))) == str(flipped)
    assert genotype_key(parse_genotype(str(flipped))) == genotype_key(darts)
    assert genotype_key(published_genotype("GDAS_V1")) != genotype_key(darts)
    gdas = str(published_genotype("GDAS_V1"))
    archive = _archive(tmp_path / "evo", [str(darts), str(flipped), gdas])
    top = archive_genotypes(str(archive), 2, "last", "members.archives[0]")
    assert [g for _, g, _ in top] == [str(darts), gdas]  # the flipped copy takes no top_k slot

    cfg = EnsembleConfig()
    cfg.members.published = ["DARTS_V2"]
    cfg.members.archives = [str(_archive(tmp_path / "other", [str(flipped)]))]
    lines: list[str] = []
    pool = resolve_pool(cfg, DataInfo(10, 3, 100, 20, 50), lines.append)
    assert [m.name for m in pool] == ["DARTS_V2"]  # trained once
    assert "member other-g0-i0 has the genotype of DARTS_V2; trained once" in lines


def test_archive_members_are_the_fittest_of_the_last_generation_with_unscored_rows_last(tmp_path) -> None:
    """Scope last passes over an older generation's fittest, scope all takes it; unscored rows (None, NaN) come after
    every scored one, in archive order; exactly top_k genotypes are taken."""
    g = {n: str(published_genotype(n)) for n in ("DARTS_V1", "DARTS_V2", "EvNAS_A", "EvNAS_B", "GDAS_V1")}
    rows = [
        individual_row(gen, i, [], "init", g[name], fitness, None, {}, "darts", "ga", None, 0)
        for gen, i, name, fitness in [
            (0, 0, "DARTS_V2", 97.0),
            (1, 1, "GDAS_V1", None),
            (1, 2, "EvNAS_B", math.nan),
            (1, 3, "EvNAS_A", 80.0),
            (1, 4, "DARTS_V1", 85.0),
        ]
    ]
    (tmp_path / "evo").mkdir()
    write_archive(tmp_path / "evo" / "archive.parquet", rows)

    def names(top_k: int, scope: str) -> list[str]:
        return [n for n, _, _ in archive_genotypes(str(tmp_path / "evo"), top_k, scope, "members.archives[0]")]

    assert names(2, "last") == ["evo-g1-i4", "evo-g1-i3"]
    assert names(4, "last") == ["evo-g1-i4", "evo-g1-i3", "evo-g1-i1", "evo-g1-i2"]
    assert names(1, "all") == ["evo-g0-i0"]


def test_seeded_copies_of_a_genotype_train_with_consecutive_seeds() -> None:
    cfg = EnsembleConfig(seed=5)
    cfg.members.published, cfg.members.seeds = ["DARTS_V2"], 2
    pool = resolve_pool(cfg, DataInfo(10, 3, 100, 20, 50), lambda _: None)
    assert [(m.name, m.seed) for m in pool] == [("DARTS_V2-s5", 5), ("DARTS_V2-s6", 6)]


def test_validation_overlap_is_the_share_of_validation_images_seen_in_training() -> None:
    """Splits with one seed share a permutation of the 100 training images: a model trained on the first 90% saw half
    of the ensemble's validation images (the last 20%), one trained on the first 50% none, one trained on the whole
    training set all; another dataset is not comparable."""
    cfg = EnsembleConfig()
    cfg.data.train_portion = 0.8
    info = DataInfo(10, 3, 100, 20, 50)

    def overlap(split: str = "search", **fields: Any) -> float | None:
        return validation_overlap(cfg, info, dataclasses.replace(cfg.data, **fields), cfg.seed, split)

    assert overlap(train_portion=0.9) == pytest.approx(0.5)
    assert overlap(train_portion=0.5) == 0.0
    assert overlap("train") == 1.0
    assert overlap(dataset="cifar100") is None


def _member(name: str = "m") -> tuple[MemberSpec, MemberLogits]:
    spec = MemberSpec(name, "checkpoint", "checkpoint /x", str(published_genotype("DARTS_V2")), path="/x")
    y = np.array([0, 1])
    info = {"kind": spec.kind, "genotype": spec.genotype, "origin": spec.origin}
    return spec, MemberLogits(name, A, y, B, y, {"contrast-1": A}, info)


@pytest.mark.parametrize(
    "damage",
    [
        "empty",  # EOFError
        "truncated",  # zipfile.BadZipFile
        "flipped",  # zlib.error (or a bad CRC: BadZipFile)
        "garbage",
    ],
)
def test_a_torn_member_logits_file_is_a_one_line_error(damage: str, tmp_path) -> None:
    spec, result = _member()
    save_member(EnsembleConfig(), spec, result, tmp_path)
    path = tmp_path / "m" / LOGITS_FILE
    saved = load_member(spec, tmp_path)
    assert saved is not None and np.array_equal(saved.test, B) and np.array_equal(saved.shifted["contrast-1"], A)
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # a byte in the middle of the first member's compressed data
        k = data.index(b"PK\x03\x04") + 30 + len("shift/contrast-1.npy") + 20
        path.write_bytes(data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1 :])
    else:
        path.write_bytes(b"not a zip file at all")
    with pytest.raises(ConfigError) as err:
        load_member(spec, tmp_path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "unreadable" in message
    assert "delete that file" in message and "start the committee run afresh" in message


def test_the_pool_logits_are_saved_atomically(tmp_path, monkeypatch) -> None:
    """A save that fails halfway leaves the previous logits.npz whole (and no stray file once it succeeds)."""
    _, result = _member("m")
    pool = LogitPool.from_members([result])
    path = tmp_path / "logits.npz"
    pool.save(path)
    assert LogitPool.load(path).names == ["m"] and [p.name for p in tmp_path.iterdir()] == ["logits.npz"]

    def torn(file, **arrays) -> None:  # the disk fills after a few bytes
        if isinstance(file, (str, Path)):
            Path(file).write_bytes(b"PK\x03\x04")
        else:
            file.write(b"PK\x03\x04")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez_compressed", torn)
    with pytest.raises(OSError, match="no space left"):
        LogitPool.from_members([_member("n")[1]]).save(path)
    monkeypatch.undo()
    again = LogitPool.load(path)
    assert again.names == ["m"] and np.array_equal(again.test[0], B)


def _bn_net() -> nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def test_predict_with_batch_statistics_leaves_the_running_statistics_alone() -> None:
    """With batch statistics the logits are the train-mode outputs, the running statistics stay as they were and
    the model is left in eval mode; without, the logits are the eval-mode outputs."""
    net, cpu = _bn_net(), torch.device("cpu")
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(4, 1, 2, 2, generator=g) + i for i in range(2)]
    batches = [(x, torch.arange(4)) for x in xs]
    before = copy.deepcopy(net.state_dict())
    logits, labels = predict(net, batches, cpu, "fp32", bn_batch=True)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and not net.training
    train_mode = copy.deepcopy(net).train()
    with torch.no_grad():
        assert logits == pytest.approx(torch.cat([train_mode(x) for x in xs]).numpy(), abs=1e-6)
        assert predict(net, batches, cpu, "fp32", bn_batch=False)[0] == pytest.approx(
            torch.cat([net(x) for x in xs]).numpy(), abs=1e-6
        )
    assert labels.tolist() == [0, 1, 2, 3] * 2


def test_recalibrated_batchnorm_statistics_are_plain_averages_over_the_first_batches() -> None:
    """``limit`` batches are used (0: all), the running mean is the plain average of their batch means and the
    momentum is restored."""
    net, cpu = _bn_net(), torch.device("cpu")
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 1, 2, 2, generator=g) * (i + 1) + i, torch.zeros(4)) for i in range(5)]
    assert recalibrate_bn(net, batches, cpu, limit=2) == 2 and not net.training
    with torch.no_grad():
        means = [net[0](x).mean(dim=(0, 2, 3)) for x, _ in batches[:2]]  # what the BatchNorm saw
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None
    assert torch.allclose(bn.running_mean, (means[0] + means[1]) / 2, atol=1e-6) and bn.momentum == 0.1
    assert recalibrate_bn(net, batches, cpu, limit=0) == 5


def test_shift_by_severity_averages_the_corruptions_of_each_severity() -> None:
    """Severity 0 is the clean test set; each other severity averages the corruptions at that severity only."""

    def row(acc: float) -> dict[str, float]:
        return {"accuracy": acc, "nll": acc / 100, "ece": acc / 10}

    metrics = {"test": row(90.0), "contrast-1": row(80.0), "gaussian_noise-1": row(70.0), "contrast-3": row(40.0)}
    got = shift_by_severity(metrics, ["contrast-1", "contrast-3", "gaussian_noise-1"])
    assert list(got) == [0, 1, 3]
    assert got[0] == row(90.0) and got[1] == pytest.approx(row(75.0)) and got[3] == pytest.approx(row(40.0))


def test_the_report_summary_against_hand_computed_members_and_committees() -> None:
    """m0 is the best member on validation, m1 (as accurate on test, with the lower NLL) the best on test in
    hindsight; the gains are the committee's over m0; shift means average the shifted sets; the members' training
    images are the training set less the validation images."""
    y = np.array([0, 1])
    sure, unsure = np.eye(2) * 3.0, np.eye(2) * 1.0
    shifts = {"contrast-1": 0.5, "contrast-2": 0.25}
    members = [
        MemberLogits(name, v, y, t, y, {k: f * t for k, f in shifts.items()})
        for name, v, t in (("m0", sure, unsure), ("m1", unsure, sure))
    ]
    pool = LogitPool.from_members(members)
    committee = select_committee(CommitteeConfig(combiner="prob_mean"), "mean", pool.names, pool.valid, y)
    specs = [MemberSpec(n, "checkpoint", "checkpoint /x", str(published_genotype("DARTS_V2"))) for n in pool.names]
    report = build_report(EnsembleConfig(), "r", DataInfo(2, 3, 100, 20, 2), specs, pool, measure(pool, [committee]))
    s = report["summary"]
    assert s["best_member"]["name"] == "m0" and s["best_member_on_test"]["name"] == "m1"
    mean_test = (softmax(sure) + softmax(unsure)) / 2
    assert s["nll_gain"] == pytest.approx(nll(softmax(unsure), y) - nll(mean_test, y)) and s["nll_gain"] > 0
    assert s["accuracy_gain"] == 0.0
    assert report["data"]["train"] == 80 and report["data"]["valid"] == 20 and report["data"]["test"] == 2
    m0_shift = [nll(softmax(f * unsure), y) for f in shifts.values()]
    assert report["members"][0]["shift_mean"]["nll"] == pytest.approx(sum(m0_shift) / 2)
    c_shift = [nll((softmax(f * sure) + softmax(f * unsure)) / 2, y) for f in shifts.values()]
    assert report["committees"][0]["shift_mean"]["nll"] == pytest.approx(sum(c_shift) / 2)


def test_members_done_earlier_are_read_back_and_new_ones_saved_under_their_own_names(tmp_path) -> None:
    """A member done in an earlier attempt is not asked for again; the others are saved in their own directories,
    whatever their position among the members still to do."""
    specs = [_member(n)[0] for n in ("a", "b", "c")]
    y = np.array([0, 1])

    def logits_of(i: int) -> MemberLogits:
        info = {"kind": "checkpoint", "genotype": specs[i].genotype}
        return MemberLogits(specs[i].name, A + 10 * i, y, B, y, {}, info)

    save_member(EnsembleConfig(), specs[1], logits_of(1), tmp_path)  # b was done in an earlier attempt
    asked: list[str] = []

    def executor(cfg, todo, log, on_result) -> list[MemberLogits]:
        out = []
        for k, spec in enumerate(todo):
            asked.append(spec.name)
            out.append(logits_of(specs.index(spec)))
            on_result(k, out[-1])
        return out

    got = run_members(EnsembleConfig(), specs, tmp_path, executor, log=lambda _: None)
    assert asked == ["a", "c"] and [r.name for r in got] == ["a", "b", "c"]
    for i, spec in enumerate(specs):
        saved = load_member(spec, tmp_path)
        assert saved is not None and np.array_equal(saved.valid, A + 10 * i), spec.name
