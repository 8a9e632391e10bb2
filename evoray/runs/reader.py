"""The public reader of run directories: what the ensemble, the benchmarks and the dashboard use to see runs.

Example::

    from evoray.runs import list_runs, open_run

    for run in list_runs("runs"):
        print(run.command, run.name, run.status, run.result)
    best = open_run("runs/evolve/nb201-ga-s0").best_rows(k=3)
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoray.errors import ConfigError
from evoray.runs.archive import ARCHIVE, read_archive
from evoray.runs.curves import read_curves
from evoray.runs.directory import MANIFEST, load_tensors, manifest_problem, manifest_seed, read_config, read_json

CURVES = "curves.parquet"
SUPERNET = "supernet.pt"
TUNE = "tune"
TUNE_STATE = "experiment_state-*.json"  # Tune's experiment snapshots (one per session; restore reads the newest name)
LEGACY_MARKERS = ("archive.parquet", "best.json", "results.json", "report.json", "summary.json")
SKIP = {TUNE, "checkpoints", "members", "tensorboard", "cells"}  # folders inside a run that hold no runs


@dataclass
class Run:
    """One run directory. ``problem`` says why it cannot be read (a corrupt manifest, an older evoray's layout);
    such a run keeps its path and whatever could be read."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    # -- the manifest -------------------------------------------------------------------------------------------
    @property
    def command(self) -> str:
        return str(self.manifest.get("command", "?"))

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def status(self) -> str:
        return "unreadable" if self.problem else str(self.manifest.get("status", "?"))

    @property
    def seed(self) -> int | None:
        try:
            return manifest_seed(self.manifest.get("seed"))
        except ValueError:
            return None  # such a run carries its problem

    @property
    def result(self) -> dict[str, Any]:
        result = self.manifest.get("result")
        return dict(result) if isinstance(result, dict) else {}  # not a mapping: the run carries its problem

    @property
    def started(self) -> str | None:
        started = self.manifest.get("started")
        return started if isinstance(started, str) else None

    @property
    def ended(self) -> str | None:
        ended = self.manifest.get("ended")
        return ended if isinstance(ended, str) else None

    def file(self, name: str) -> Path:
        return self.path / name

    # -- contents -----------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The resolved config (plain data)."""
        return read_config(self.path)

    def has_archive(self) -> bool:
        return (self.path / ARCHIVE).is_file()

    def archive(self) -> list[dict[str, Any]]:
        """Every archive row (evolve: every individual of every generation; search: every trial's final cell)."""
        return read_archive(self.path / ARCHIVE)

    def best_rows(self, k: int = 1, scope: str = "last") -> list[dict[str, Any]]:
        """The ``k`` fittest rows of distinct genotypes, of the last generation (``scope="last"``) or all."""
        rows = self.archive()
        if not rows:
            return []
        if scope == "last":
            last = max(int(r["generation"]) for r in rows)
            rows = [r for r in rows if int(r["generation"]) == last]
        rows = sorted(rows, key=lambda r: _fitness_key(r["fitness"]))
        out, seen = [], set()
        for r in rows:
            if r["genotype"] in seen:
                continue
            seen.add(r["genotype"])
            out.append(r)
            if len(out) == k:
                break
        return out

    def curves(self) -> list[dict[str, Any]]:
        """Per generation (evolve), epoch (train) or trial and epoch (search) statistics, oldest first; epochs
        numbered from 1."""
        if self.command == "search":
            tune = self.tune_path()
            return [] if tune is None else list(_tune_curves(tune))
        path = self.path / CURVES
        rows = read_curves(path) if path.is_file() else []
        if self.command == "train" and rows and rows[0].get("epoch") == 0:  # written before train numbered from 1
            rows = [{**r, "epoch": r["epoch"] + 1} if isinstance(r.get("epoch"), (int, float)) else r for r in rows]
        return rows

    def tune_path(self) -> Path | None:
        """A search run's Tune experiment on this machine: ``<run>/tune``, else where ``run.json`` records it (the
        experiment config's ``storage``); None when neither is here (e.g. storage at an ``s3://`` URI) or can be looked
        at (a folder without permission, a storage that fails to answer)."""
        recorded = self.manifest.get("tune")
        places = [self.path / TUNE]
        if isinstance(recorded, str) and recorded and "://" not in recorded:
            places.append(Path(recorded))
        for place in places:
            try:
                if place.is_dir():
                    return place
            except OSError:
                continue
        return None

    def supernet(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """An evolve run's final supernet: (its config section, its weights), weights read with weights_only."""
        if self.command != "evolve" or not (self.path / SUPERNET).is_file():
            raise ConfigError(f"run {str(self.path)!r} holds no supernet ({SUPERNET}: an evolve run on a supernet)")
        return dict(self.config().get("supernet") or {}), load_tensors(self.path / SUPERNET, "supernet weights")

    def json(self, name: str) -> dict[str, Any]:
        return read_json(self.path / name, name)


def _fitness_key(f: Any) -> float:
    """Sort key, fittest first; missing and NaN fitness last."""
    return math.inf if f is None or not math.isfinite(float(f)) else -float(f)


def open_run(path: Path | str) -> Run:
    """The run in ``path``; a directory that holds none is a one-line ``ConfigError``."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"run {str(p)!r} does not exist")
    if not p.is_dir():
        raise ConfigError(f"run {str(p)!r} is a file, not a run directory")
    if not (p / MANIFEST).is_file():
        if p.is_dir() and any((p / m).is_file() for m in LEGACY_MARKERS):
            raise ConfigError(f"{str(p)!r} was written by an older evoray (no {MANIFEST}); rerun it to read it here")
        raise ConfigError(f"{str(p)!r} holds no evoray run ({MANIFEST} missing)")
    run = _load(p)
    if run.problem:
        raise ConfigError(f"run {str(p)!r} is unreadable: {run.problem}")
    return run


def _load(path: Path) -> Run:
    try:
        manifest = read_json(path / MANIFEST, "run manifest")
    except ConfigError as err:
        return Run(path, {}, str(err))
    problem = manifest_problem(manifest)
    if problem is not None:
        return Run(path, manifest, problem)
    return Run(path, manifest)


def list_runs(root: Path | str, depth: int = 4) -> list[Run]:
    """Every run under ``root`` (``root`` itself included), newest first; unreadable ones carry their ``problem``,
    and a directory of an older evoray's layout is listed as unreadable. A missing root is a ``ConfigError``."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"runs root {str(base)!r} is not a directory")
    runs = [_load(p) if (p / MANIFEST).is_file() else _legacy(p) for p in _run_dirs(base, depth)]
    return sorted(runs, key=lambda r: (r.started or "", str(r.path)), reverse=True)


def _legacy(path: Path) -> Run:
    return Run(path, {"name": path.name}, f"written by an older evoray (no {MANIFEST})")


def _run_dirs(folder: Path, depth: int) -> Iterator[Path]:
    if (folder / MANIFEST).is_file() or any((folder / m).is_file() for m in LEGACY_MARKERS):
        yield folder
        return
    if depth <= 0:
        return
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        if child.name not in SKIP:
            yield from _run_dirs(child, depth - 1)


def tune_trial_states(experiment: Path) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
    """Per trial in Tune's newest experiment state under ``experiment`` (what ``Tuner.restore`` reads): its state
    (``status``, ``relative_logdir``, ...) and its runtime record, each decoded from the JSON Tune writes; what Tune
    pickled inside stays hex text, never unpickled. None when there is no state, or it cannot be read (being
    written); entries that do not decode are left out."""
    states = sorted(experiment.glob(TUNE_STATE))
    if not states:
        return None
    try:
        entries = json.loads(states[-1].read_text(encoding="utf-8"))["trial_data"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    out = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            trial, runtime = (json.loads(part) for part in entry)
        except (ValueError, TypeError):
            continue
        if isinstance(trial, dict) and isinstance(runtime, dict):
            out.append((trial, runtime))
    return out


def _tune_curves(storage: Path) -> Iterator[dict[str, Any]]:
    """Each trial's per-epoch results, from Tune's ``result.json`` (one JSON object a line) in every trial folder,
    one row an epoch (:func:`latest_reports`)."""
    if not storage.is_dir():
        return
    for result in sorted(storage.glob("*/result.json")):
        trial = result.parent.name
        rows = []
        for line in result.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if isinstance(row, dict):
                row.setdefault("trial", trial)
                rows.append(row)
        yield from latest_reports(rows)


def latest_reports(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's reports, one per ``training_iteration``: a trial resumed from a checkpoint older than its last report
    (Tune keeps the checkpoint its experiment state recorded) reports those iterations again, after the first ones;
    the later report of each stands, in iteration order. Rows without an iteration are kept as they are."""
    by_iteration: dict[int, dict[str, Any]] = {}
    for row in rows:
        it = row.get("training_iteration")
        if isinstance(it, bool) or not isinstance(it, numbers.Real) or not float(it).is_integer():
            return rows
        by_iteration[int(float(it))] = row
    return [by_iteration[it] for it in sorted(by_iteration)]
