"""A committee run: resolve the member pool, check the committees, train the members (an executor: in this process,
or Ray tasks from ``evoray.distributed``), select the committees on validation logits, measure everything, write the
results into the run directory: ``config.yaml`` (the resolved spec), ``latest.json`` (the runs that
``members.latest_run`` and ``latest_supernet`` picked at the first start), ``members/<member>/`` (logits.npz,
member.json and, for members trained here, config.yaml, weights.pt, history.json, train.log), ``logits.npz`` (every
member's validation, test and shifted test logits), ``report.json``, ``report.md`` and the plots. A resumed run draws
its members from the runs recorded in ``latest.json`` (not from runs finished since) and reuses every member an
earlier attempt finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evoray.config import config_to_dict
from evoray.ensemble.committees import (
    Committee,
    LogitPool,
    check_committee,
    committee_names,
    measure,
    select_committee,
)
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.members import Executor, run_members, run_members_locally
from evoray.ensemble.report import shift_by_severity, write_report
from evoray.ensemble.sources import LATEST, DataInfo, Latest, MemberSpec, describe_data, resolve_pool
from evoray.errors import ConfigError
from evoray.runs import RunDir
from evoray.runs.directory import read_json
from evoray.spaces import parse_genotype

Log = Callable[[str], None]
METRIC_KEYS = ("accuracy", "nll", "ece")
LATEST_FILE = "latest.json"  # {"latest_run": run dir | null, "latest_supernet": run dir | null}, at the first start


def plan(
    cfg: EnsembleConfig, log: Log = print, latest: Latest | None = None
) -> tuple[DataInfo, list[MemberSpec], list[str]]:
    """The data, the member pool and the committee labels, with every bad input reported before training;
    ``latest`` pins (or receives) the runs of ``members.latest_run`` / ``latest_supernet`` (see ``resolve_pool``)."""
    info = describe_data(cfg)
    pool = resolve_pool(cfg, info, log, latest)
    names = [m.name for m in pool]
    labels = committee_names(cfg.committees)
    for i, c in enumerate(cfg.committees):
        check_committee(c, names, f"committees[{i}]")
    return info, pool, labels


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
    best_member = min(members, key=lowest_valid_nll)
    best_committee = min(committees, key=lowest_valid_nll)
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
    cfg: EnsembleConfig, run: RunDir, executor: Executor = run_members_locally, log: Log = print
) -> dict[str, Any]:
    """Run the committee spec ``cfg`` in ``run`` (a resumed run reuses its finished members); returns the --json
    summary (report.json holds everything)."""
    latest = recorded_latest(run.path, cfg, log) if run.resumed else {}
    info, pool_specs, labels = plan(cfg, log, latest)
    run.start(
        config_to_dict(cfg),
        cfg.seed,
        {
            "space": _space_of(pool_specs),
            "method": ",".join(c.combiner for c in cfg.committees),
            "members": len(pool_specs),
        },
    )
    run.write_json(LATEST_FILE, latest)
    log(
        f"ensemble: {len(pool_specs)} members ({', '.join(m.name for m in pool_specs)}), "
        f"{len(labels)} committees, on {cfg.data.dataset} -> {run.path}"
    )
    start = time.perf_counter()
    results = run_members(cfg, pool_specs, run.path / "members", executor, log)
    log(f"members done in {time.perf_counter() - start:.0f} s")
    pool = LogitPool.from_members(results)
    pool.save(run.path / "logits.npz")
    committees: list[Committee] = [
        select_committee(c, label, pool.names, pool.valid, pool.valid_labels)
        for c, label in zip(cfg.committees, labels)
    ]
    measured = measure(pool, committees, cfg.ece_bins)
    for r in results:
        measured["members"][r.name]["params_m"] = r.info.get("params_m")
    report = build_report(cfg, run.path.name, info, pool_specs, pool, measured)
    run.write_json("report.json", report)
    write_report(report, run.path)
    s = report["summary"]
    bm, bc = s["best_member"], s["best_committee"]
    log(
        f"best member {bm['name']}: test top1 {bm['test']['accuracy']:.2f}% NLL {bm['test']['nll']:.4f}; "
        f"best committee {bc['name']}: test top1 {bc['test']['accuracy']:.2f}% NLL {bc['test']['nll']:.4f} "
        f"(each the lowest validation NLL) -> {run.path / 'report.md'}"
    )
    summary = summary_line(report, run.path)
    run.finish(
        {
            "best_member": bm["name"],
            "best_member_accuracy": bm["test"]["accuracy"],
            "best_committee": bc["name"],
            "best_committee_accuracy": bc["test"]["accuracy"],
            "accuracy_gain": s["accuracy_gain"],
            "nll_gain": s["nll_gain"],
        }
    )
    return summary


def recorded_latest(run_path: Path, cfg: EnsembleConfig, log: Log = print) -> Latest:
    """The runs that ``members.latest_run`` / ``latest_supernet`` picked at the first start of the committee run in
    ``run_path`` (empty for a run started by an older evoray: those options are resolved afresh)."""
    path = run_path / LATEST_FILE
    if not path.is_file():
        if any(getattr(cfg.members, k) for k in LATEST):
            log(f"resume: {path} is missing (an older evoray started this run); members.latest_* resolved afresh")
        return {}
    data = read_json(path, "record of the runs members were drawn from")
    if any(k not in LATEST or not (v is None or isinstance(v, str)) for k, v in data.items()):
        raise ConfigError(
            f"{str(path)!r} is not a record of the runs members were drawn from (expected {{{', '.join(LATEST)}: "
            "run directory or null}); restore it, or start the committee run afresh"
        )
    return data


def lowest_valid_nll(entry: dict[str, Any]) -> tuple[bool, float]:
    """Sort key of the best member or committee: the lowest validation NLL, a non-finite one last."""
    nll = entry["valid"]["nll"]
    return (nll is None or not math.isfinite(nll), nll if nll is not None else math.inf)


def _space_of(pool: list[MemberSpec]) -> str:
    kinds = {"nb201" if parse_genotype(m.genotype).is_nb201 else "darts" for m in pool}
    return kinds.pop() if len(kinds) == 1 else "mixed"
