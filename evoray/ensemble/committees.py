"""Committees over a pool of member logits: selection (validation logits only), then measurement on every split.

Example::

    pool = LogitPool.from_members(results)
    committee = select_committee(cfg.committees[0], "caruana", pool.names, pool.valid, pool.valid_labels)
    test_probs = committee.probs(pool.test)
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evoray.ensemble.combiners import make_combiner
from evoray.ensemble.config import CommitteeConfig
from evoray.ensemble.measures import committee_metrics, member_metrics, reliability, softmax
from evoray.ensemble.predict import MemberLogits
from evoray.errors import ConfigError
from evoray.runs.directory import atomic_write


@dataclass
class LogitPool:
    """Every member's logits, stacked: (M, N, K) per split, with the labels every member was evaluated on."""

    names: list[str]
    valid: np.ndarray  # (M, N_valid, K)
    valid_labels: np.ndarray  # (N_valid,)
    test: np.ndarray  # (M, N_test, K)
    test_labels: np.ndarray  # (N_test,)
    shifted: dict[str, np.ndarray]  # "contrast-2" -> (M, N_test, K)

    @classmethod
    def from_members(cls, members: Sequence[MemberLogits]) -> LogitPool:
        """Stack members' logits; members must agree on the class count and on the examples' labels."""
        first = members[0]
        for m in members[1:]:
            if m.test.shape[1] != first.test.shape[1]:
                raise ConfigError(
                    f"members {first.name} and {m.name} have different class counts "
                    f"({first.test.shape[1]} and {m.test.shape[1]}); a committee needs one class count"
                )
            if not (
                np.array_equal(m.valid_labels, first.valid_labels) and np.array_equal(m.test_labels, first.test_labels)
            ):
                raise ConfigError(f"members {first.name} and {m.name} were evaluated on different examples")
        return cls(
            [m.name for m in members],
            np.stack([m.valid for m in members]),
            np.array(first.valid_labels),
            np.stack([m.test for m in members]),
            np.array(first.test_labels),
            {k: np.stack([m.shifted[k] for m in members]) for k in first.shifted},
        )

    def save(self, path: Path) -> None:
        """All logits in one .npz: names, valid/test logits and labels, and ``shift/<corruption>-<severity>``."""
        arrays: dict[str, Any] = {f"shift/{k}": v for k, v in self.shifted.items()}
        arrays.update(
            names=np.array(self.names),
            valid=self.valid,
            valid_labels=self.valid_labels,
            test=self.test,
            test_labels=self.test_labels,
        )
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(path, buf.getvalue())  # an interrupted save never leaves a torn file

    @classmethod
    def load(cls, path: Path) -> LogitPool:
        with np.load(path) as f:
            shifted = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("shift/")}
            return cls(
                [str(n) for n in f["names"]], f["valid"], f["valid_labels"], f["test"], f["test_labels"], shifted
            )


@dataclass
class Committee:
    """A selected committee: pool indices in pick order (repeats = weight) and how its outputs are combined."""

    name: str
    cfg: CommitteeConfig
    picks: list[int]

    def counts(self, pool_size: int, size: int | None = None) -> np.ndarray:
        """How often each pool member appears among the first ``size`` picks (all by default)."""
        return np.bincount(self.picks[: size or len(self.picks)], minlength=pool_size)

    def probs(self, logits: np.ndarray, size: int | None = None) -> np.ndarray:
        """The committee's probabilities (N, K) from the pool's logits (M, N, K) of any split."""
        comb = make_combiner(self.cfg.combiner, self.cfg.metric, self.cfg.init_best)
        return comb.combine(logits, self.counts(len(logits), size))

    def weights(self, names: Sequence[str]) -> dict[str, float]:
        counts = self.counts(len(names))
        return {names[i]: float(c / counts.sum()) for i, c in enumerate(counts) if c}


def committee_names(cfgs: Sequence[CommitteeConfig]) -> list[str]:
    """Each committee's label: its name, or its combiner's, made unique with -2, -3, ..."""
    out: list[str] = []
    for c in cfgs:
        base = c.name or c.combiner
        name, k = base, 2
        while name in out:
            name, k = f"{base}-{k}", k + 1
        out.append(name)
    return out


def library(cfg: CommitteeConfig, names: Sequence[str], where: str) -> list[int]:
    """Pool indices a committee may choose from: the members named (or matched by a glob such as ``supernet-*``)
    in its ``members`` list, in pool order; the whole pool when the list is empty."""
    if not cfg.members:
        return list(range(len(names)))
    chosen: set[int] = set()
    for pattern in cfg.members:
        hits = {i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise ConfigError(f"{where}.members: unknown member {pattern!r}; the pool holds {', '.join(names)}")
        chosen |= hits
    return sorted(chosen)


def check_committee(cfg: CommitteeConfig, names: Sequence[str], where: str) -> None:
    """One-line errors for a committee the pool cannot form, before any member is trained."""
    lib = library(cfg, names, where)
    comb = make_combiner(cfg.combiner, cfg.metric, cfg.init_best)
    try:
        comb.check_size(cfg.size or len(lib), len(lib))
    except ConfigError as err:
        raise ConfigError(f"{where} ({cfg.combiner}): {err}") from None


def select_committee(
    cfg: CommitteeConfig, name: str, names: Sequence[str], valid_logits: np.ndarray, valid_labels: np.ndarray
) -> Committee:
    """Select a committee from the pool's validation logits (M, N, K) and labels (N,); no other split is read."""
    lib = library(cfg, names, name)
    comb = make_combiner(cfg.combiner, cfg.metric, cfg.init_best)
    picks = comb.select(valid_logits[lib], valid_labels, cfg.size or len(lib))
    return Committee(name, cfg, [lib[i] for i in picks])


def _split_metrics(
    committee: Committee, logits: np.ndarray, labels: np.ndarray, bins: int, size: int | None = None
) -> dict[str, Any]:
    distinct = np.flatnonzero(committee.counts(len(logits), size))
    return committee_metrics(committee.probs(logits, size), logits[distinct], labels, bins)


def measure(pool: LogitPool, committees: Sequence[Committee], bins: int = 15) -> dict[str, Any]:
    """Every member's and every committee's metrics on validation, test and each shifted test set, the committees'
    test metrics against their size, and reliability diagrams of the test predictions."""
    splits = {"valid": (pool.valid, pool.valid_labels), "test": (pool.test, pool.test_labels)}
    splits.update({k: (v, pool.test_labels) for k, v in pool.shifted.items()})
    members: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(pool.names):
        members[name] = {split: member_metrics(lg[i], y, bins) for split, (lg, y) in splits.items()}
        members[name]["reliability"] = reliability(softmax(pool.test[i]), pool.test_labels, bins)
    out = []
    for c in committees:
        row: dict[str, Any] = {
            "name": c.name,
            "combiner": c.cfg.combiner,
            "metric": c.cfg.metric,
            "size": len(c.picks),
            "picks": [pool.names[i] for i in c.picks],
            "members": c.weights(pool.names),
        }
        for split, (lg, y) in splits.items():
            row[split] = _split_metrics(c, lg, y, bins)
        row["curve"] = [
            {"size": s, **{k: v for k, v in _split_metrics(c, pool.test, pool.test_labels, bins, s).items()}}
            for s in range(1, len(c.picks) + 1)
        ]
        row["reliability"] = reliability(c.probs(pool.test), pool.test_labels, bins)
        out.append(row)
    return {"members": members, "committees": out}
