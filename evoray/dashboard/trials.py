"""A search run's trials as the dashboard shows them: one row per Tune trial (searcher, seed, grid point, status,
epoch, validation accuracy, best, genotype, params) with its per-epoch results, read from the trial folders of the
run's Tune storage (live: every epoch Tune appends to ``result.json``), then ``summary.json`` and the archive once the
experiment has ended."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoray.dashboard.store import RunStore, result_files, tune_files, tune_state_files
from evoray.runs import Run
from evoray.runs.archive import ARCHIVE
from evoray.runs.reader import tune_trial_states

SUMMARY = "summary.json"
ERROR = "error.txt"  # what Tune writes in a trial's folder when the trial fails (synced while the experiment runs)
TUNE_ERROR = "ERROR"  # a trial's status in Tune's experiment state once it has failed for good (no retry left)
IDENTITY = ("searcher", "seed")  # shown in their own columns, not in the grid point


@dataclass
class Trial:
    name: str  # the trial's folder in the Tune storage (the archive's ``trial``)
    searcher: str
    seed: int | None
    grid: str  # the settings that tell this trial from the others (``key=value, ...``)
    status: str  # pending | running | done | stopped | error
    epoch: int | None
    valid_acc: float | None
    best: float | None
    valid_on: str  # the set valid_acc and best were measured on: split (held out of training) or test ("" unknown)
    genotype: str
    params_m: float | None
    space: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # per-epoch results, oldest first

    def table_row(self) -> dict[str, Any]:
        return {
            "trial": self.name,
            "searcher": self.searcher,
            "seed": self.seed,
            "grid": self.grid,
            "status": self.status,
            "epoch": self.epoch,
            "valid_acc": _round(self.valid_acc),
            "best": _round(self.best),
            "valid_on": self.valid_on,
            "params_m": None if self.params_m is None else round(self.params_m, 4),
            "genotype": self.genotype,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _read_params(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data.get("search", {}) if isinstance(data, dict) else {}


def search_trials(store: RunStore, run: Run) -> list[Trial]:
    """Every trial of the search run ``run``, in trial-folder order; cached until any of its files changes (or its
    process ends: the trials of an interrupted search are stopped, not running)."""
    params_files, error_files = tune_files(run, "params.json"), tune_files(run, ERROR)
    state_files = tune_state_files(run)
    files = [
        *result_files(run),
        *params_files,
        *error_files,
        *state_files,
        run.path / SUMMARY,
        run.path / ARCHIVE,
        run.path / "run.json",
    ]
    running = store.row(run).status == "running"
    kind = "trials-running" if running else "trials"
    return store.derived(
        kind, run, files, lambda: _trials(store, run, params_files, _failed(run, error_files), running)
    )


def best_trial(trials: list[Trial]) -> Trial | None:
    """The trial with the best last-epoch validation accuracy on the held-out split: the rule of the run's headline
    (``evoray.searchers.results.best_trial``) and of its archive's fitness, not the best epoch's, which would favour
    the noisiest trials. Trials validated on the test set, failed trials, and NaN or missing accuracies never win;
    without one, the first trial."""
    scored = [
        t
        for t in trials
        if t.valid_acc is not None and math.isfinite(t.valid_acc) and t.valid_on != "test" and t.status != "error"
    ]
    if scored:
        return max(scored, key=lambda t: t.valid_acc or 0.0)
    return trials[0] if trials else None


def _tune_statuses(run: Run) -> dict[str, str] | None:
    """Each trial folder's status (PENDING, RUNNING, PAUSED, TERMINATED or ERROR) in Tune's newest experiment state,
    or None when there is none to read (or it is being written)."""
    tune = run.tune_path()
    states = tune_trial_states(tune) if tune is not None else None
    if states is None:
        return None
    return {str(t.get("relative_logdir")): str(t.get("status")) for t, _ in states}


def _failed(run: Run, error_files: list[Path]) -> set[str]:
    """The trials that failed for good: those Tune's experiment state marks ERROR (a trial Tune retries from its
    checkpoint keeps its ``error.txt`` but is pending or running again). Without a state to read: those whose
    ``error.txt`` is no older than their results (the retried ones have reported since); Tune's sync to its storage
    copies every file anew, so there these times say little and the state decides."""
    statuses = _tune_statuses(run)
    if statuses is not None:
        return {name for name, status in statuses.items() if status == TUNE_ERROR}
    out = set()
    for path in error_files:
        try:
            failed = path.stat().st_mtime_ns
            results = path.with_name("result.json")
            if not results.is_file() or results.stat().st_mtime_ns <= failed:
                out.add(path.parent.name)
        except OSError:
            continue
    return out


def _trials(store: RunStore, run: Run, params_files: list[Path], failed: set[str], running: bool) -> list[Trial]:
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in store.curves(run):
        by_trial.setdefault(str(row.get("trial")), []).append(row)
    params = {p.parent.name: _read_params(p) for p in params_files}
    summary = {Path(str(s.get("path", ""))).name: s for s in _read_list(run.path / SUMMARY)}
    archive = {}
    if run.has_archive():
        try:
            archive = {str(r.get("trial")): r for r in store.archive(run)}
        except Exception:  # a corrupt archive: the trials still show from Tune's files
            archive = {}
    # Tune's folders, or (a search whose Tune storage lies elsewhere) the run's own summary and archive
    names = sorted((set(params) | set(by_trial) | set(summary) | set(archive)) - {"", "None"})
    flat = {n: _flat(params.get(n, {})) for n in names}
    varying = _grid_keys(flat, {n: str(params.get(n, {}).get("searcher") or "") for n in names})
    out = []
    for name in names:
        # one row per epoch: a trial restored from its checkpoint reports again the epochs after it (the later kept)
        by_epoch = {_epoch(r): r for r in by_trial.get(name, [])}
        rows = [by_epoch[e] for e in sorted(by_epoch)]
        last = rows[-1] if rows else {}
        s, a, p = summary.get(name, {}), archive.get(name, {}), params.get(name, {})
        epochs = _int(p.get("epochs"))
        if s:
            status = str(s.get("status"))
        elif name in failed:  # failed while the rest of the search runs on (summary.json comes at its end)
            status = "error"
        elif not rows:
            status = "pending" if running else "stopped"
        elif epochs is not None:  # Tune marks done a trial its scheduler stopped early too
            status = "done" if _epoch(last) >= epochs else ("running" if running else "stopped")
        else:
            status = "done" if last.get("done") else ("running" if running else "stopped")
        accs = [float(r["valid_acc"]) for r in rows if isinstance(r.get("valid_acc"), (int, float))]
        accs = [a for a in accs if math.isfinite(a)]
        portion = _float((p.get("data") or {}).get("train_portion"))
        valid_on = str(s.get("valid_on") or ("" if portion is None else "test" if portion >= 1.0 else "split"))
        out.append(
            Trial(
                name=name,
                searcher=str(s.get("searcher") or p.get("searcher") or a.get("searcher") or "?"),
                seed=_int(s.get("seed", p.get("seed", a.get("seed")))),
                grid=", ".join(f"{k}={flat[name].get(k)}" for k in varying) or "-",
                status=status,
                epoch=_int(last.get("epoch", s.get("epochs"))),
                valid_acc=_float(last.get("valid_acc", s.get("valid_acc"))),
                best=_float(last.get("valid_acc_best", s.get("valid_acc_best", max(accs, default=None)))),
                valid_on=valid_on,
                genotype=str(last.get("genotype") or s.get("genotype") or a.get("genotype") or ""),
                params_m=_float(s.get("params_m", a.get("params_m"))),
                space=str(s.get("space") or (p.get("supernet") or {}).get("space") or a.get("space") or ""),
                rows=rows,
            )
        )
    return out


def _grid_keys(flat: dict[str, dict[str, Any]], searcher: dict[str, str]) -> list[str]:
    """The settings a search's grid varies: those that differ between two trials of one searcher (the searchers'
    own paper settings differ from searcher to searcher, and the searcher column already tells them apart)."""
    keys = {k for f in flat.values() for k in f} - set(IDENTITY)
    groups: dict[str, list[dict[str, Any]]] = {}
    for name, f in flat.items():
        groups.setdefault(searcher.get(name, ""), []).append(f)
    return sorted(
        k
        for k in keys
        if any(len({json.dumps(f.get(k), sort_keys=True, default=str) for f in g}) > 1 for g in groups.values())
    )


def _epoch(row: dict[str, Any]) -> int:
    """The epochs a trial's result row closes (Tune's iteration where the row lacks evoray's count)."""
    return _int(row.get("epoch") or row.get("training_iteration")) or 0


def _int(x: Any) -> int | None:
    try:
        return None if x is None else int(x)
    except (TypeError, ValueError):
        return None


def _float(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None
