"""A committee run: resolve the member pool, check the committees, train the members in parallel, select the
committees on validation logits, measure everything, write the results.

Output in ``ensembles/<name>/`` (or ``--out``), never over results already there:
``spec.yaml`` (the resolved spec), ``members/<member>/`` (config.yaml, weights.pt, member.json, history.json,
train.log of each member trained here), ``logits.npz`` (every member's validation, test and shifted test logits),
``report.json``, ``report.md`` and the plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoray.config import save_config
from evoray.ensemble.committees import (
    Committee,
    LogitPool,
    check_committee,
    committee_names,
    measure,
    select_committee,
)
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.members import run_members
from evoray.ensemble.predict import MemberLogits
from evoray.ensemble.report import shift_by_severity, write_report
from evoray.ensemble.sources import MEMBER_FILE, DataInfo, MemberSpec, describe_data, member_train_config, resolve_pool
from evoray.errors import ConfigError

Log = Callable[[str], None]
METRIC_KEYS = ("accuracy", "nll", "ece")


def output_dir(cfg: EnsembleConfig, out_dir: Path | None, spec_name: str) -> Path:
    """``out_dir``, or ``ensembles/<name>`` (``<spec>-<time stamp>`` without a name); it must not hold results."""
    if out_dir is None:
        out_dir = Path("ensembles") / (cfg.name or f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"output directory {str(out_dir)!r} already holds results; give another --out or name")
    return out_dir


def plan(cfg: EnsembleConfig, log: Log = print) -> tuple[DataInfo, list[MemberSpec], list[str]]:
    """The data, the member pool and the committee labels, with every bad input reported before training."""
    info = describe_data(cfg)
    pool = resolve_pool(cfg, info, log)
    names = [m.name for m in pool]
    labels = committee_names(cfg.committees)
    for i, c in enumerate(cfg.committees):
        check_committee(c, names, f"committees[{i}]")
    return info, pool, labels


def save_member(cfg: EnsembleConfig, spec: MemberSpec, result: MemberLogits, root: Path) -> None:
    """A trained member's directory: the train command's config.yaml and weights.pt (so it can serve again as a
    checkpoint member), member.json (what it is, how it fared, its validation split), history and log."""
    d = root / spec.name
    d.mkdir(parents=True, exist_ok=True)
    info = {k: v for k, v in result.info.items() if k not in ("history", "log")}
    meta = {"name": spec.name, **info, "split_seed": cfg.seed, "train_portion": cfg.data.train_portion}
    if spec.kind == "genotype" and result.state is not None:
        save_config(member_train_config(cfg, spec.genotype, spec.seed), d / "config.yaml")
        torch.save(result.state, d / "weights.pt")
        (d / "history.json").write_text(json.dumps(result.info.get("history", []), indent=1))
    else:
        meta["source"] = spec.path
    (d / MEMBER_FILE).write_text(json.dumps(meta, indent=1, default=str))
    if result.info.get("log"):
        (d / "train.log").write_text("\n".join(result.info["log"]) + "\n")


def _shift_mean(metrics: dict[str, Any], keys: Sequence[str]) -> dict[str, float]:
    if not keys:
        return {}
    return {m: float(np.mean([metrics[k][m] for k in keys])) for m in METRIC_KEYS}


def build_report(
    cfg: EnsembleConfig, name: str, info: DataInfo, pool_specs: list[MemberSpec], pool: LogitPool, measured: dict
) -> dict[str, Any]:
    """report.json: everything measured, independent of timings and paths (same spec and seed, same report)."""
    keys = sorted(pool.shifted)
    members = []
    for spec in pool_specs:
        m = measured["members"][spec.name]
        members.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "origin": spec.origin,
                "genotype": spec.genotype,
                "seed": spec.seed,
                "params_m": m.get("params_m"),
                "valid_overlap": spec.valid_overlap,
                "valid": m["valid"],
                "test": m["test"],
                "shift": {k: m[k] for k in keys},
                "shift_mean": _shift_mean(m, keys),
                "by_severity": shift_by_severity(m, keys),
                "reliability": m["reliability"],
            }
        )
    committees = []
    for c in measured["committees"]:
        row = {k: c[k] for k in ("name", "combiner", "metric", "size", "picks", "members", "valid", "test")}
        row.update(
            shift={k: c[k] for k in keys},
            shift_mean=_shift_mean(c, keys),
            by_severity=shift_by_severity(c, keys),
            curve=c["curve"],
            reliability=c["reliability"],
        )
        committees.append(row)
    best_member = min(members, key=lambda m: m["valid"]["nll"])
    best_committee = min(committees, key=lambda c: c["valid"]["nll"])
    on_test = max(members, key=lambda m: (m["test"]["accuracy"], -m["test"]["nll"]))
    summary = {
        "best_member": best_member,
        "best_committee": best_committee,
        "best_member_on_test": on_test,
        "accuracy_gain": best_committee["test"]["accuracy"] - best_member["test"]["accuracy"],
        "nll_gain": best_member["test"]["nll"] - best_committee["test"]["nll"],
    }
    data = {
        "dataset": cfg.data.dataset,
        "classes": info.num_classes,
        "train": info.num_train - info.num_valid,
        "valid": info.num_valid,
        "test": info.num_test,
    }
    shift = {"corruptions": list(cfg.shift.corruptions), "severities": list(cfg.shift.severities)}
    return {
        "name": name,
        "seed": cfg.seed,
        "data": data,
        "shift": shift,
        "members": members,
        "committees": committees,
        "summary": summary,
    }


def summary_line(report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The --json object: each committee's members and metrics, each member's metrics, the headline gains."""
    s = report["summary"]
    return {
        "name": report["name"],
        "out_dir": str(out_dir),
        "members": {
            m["name"]: {"valid": m["valid"], "test": m["test"], "shift_mean": m["shift_mean"]}
            for m in report["members"]
        },
        "committees": [
            {k: c[k] for k in ("name", "combiner", "size", "members", "valid", "test", "shift_mean")}
            for c in report["committees"]
        ],
        "best_member": s["best_member"]["name"],
        "best_committee": s["best_committee"]["name"],
        "accuracy_gain": s["accuracy_gain"],
        "nll_gain": s["nll_gain"],
    }


def run_ensemble(
    cfg: EnsembleConfig,
    out_dir: Path | None = None,
    spec_name: str = "ensemble",
    address: str | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Run the committee spec ``cfg``; returns the --json summary (report.json holds everything)."""
    if address:
        cfg.resources.address = address
    info, pool_specs, labels = plan(cfg, log)
    out = output_dir(cfg, out_dir, spec_name)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "spec.yaml")
    log(
        f"ensemble: {len(pool_specs)} members ({', '.join(m.name for m in pool_specs)}), "
        f"{len(labels)} committees, on {cfg.data.dataset} -> {out}"
    )
    start = time.perf_counter()
    results = run_members(cfg, pool_specs, log)
    log(f"members done in {time.perf_counter() - start:.0f} s")
    for spec, result in zip(pool_specs, results):
        save_member(cfg, spec, result, out / "members")
    pool = LogitPool.from_members(results)
    pool.save(out / "logits.npz")
    committees: list[Committee] = [
        select_committee(c, label, pool.names, pool.valid, pool.valid_labels)
        for c, label in zip(cfg.committees, labels)
    ]
    measured = measure(pool, committees, cfg.ece_bins)
    for r in results:
        measured["members"][r.name]["params_m"] = r.info.get("params_m")
    report = build_report(cfg, out.name, info, pool_specs, pool, measured)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    write_report(report, out)
    s = report["summary"]
    bm, bc = s["best_member"], s["best_committee"]
    log(
        f"best member {bm['name']}: test top1 {bm['test']['accuracy']:.2f}% NLL {bm['test']['nll']:.4f}; "
        f"best committee {bc['name']}: test top1 {bc['test']['accuracy']:.2f}% NLL {bc['test']['nll']:.4f} "
        f"-> {out / 'report.md'}"
    )
    return summary_line(report, out)
