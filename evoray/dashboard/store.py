"""What the dashboard knows about runs: the roots it serves, run ids and their refusal outside the roots, and every
file read through one cache keyed by the file's modification time and size (a page over runs that did not change
reads nothing twice; a run that writes is read again on the next look).

The dashboard only reads: every read goes through :mod:`evoray.runs` (the public reader) or a read-only open.

Example::

    store = RunStore(["runs"])
    rows, problems = store.listing()
    run = store.open(rows[0].id)  # a path outside the roots raises OutsideRootsError
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from evoray.errors import ConfigError
from evoray.runs import Run, list_runs, open_run
from evoray.runs.archive import ARCHIVE
from evoray.runs.directory import MANIFEST
from evoray.runs.reader import CURVES, TUNE_STATE

T = TypeVar("T")
CACHE_SIZE = 4096  # cached reads kept (each a parsed file or a value derived from files)


class OutsideRootsError(ConfigError):
    """A request for a path that is not a run under the dashboard's roots."""


Stamp = tuple[tuple[str, int, int], ...]


def stamp(paths: Sequence[Path]) -> Stamp:
    """(path, mtime_ns, size) of each path; a missing file stamps as (path, 0, -1)."""
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), 0, -1))
    return tuple(out)


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    id: str  # "<root index>/<path inside the root>": the only way a page names a run
    root: str
    command: str
    name: str
    space: str
    method: str  # the searcher(s) or evolution strategy or combiners
    seed: int | None
    status: str  # running | done | failed | interrupted (running, but its process is gone) | unreadable
    started: str
    duration_s: float | None
    progress: str
    result: float | None  # the headline number (fitness, best validation accuracy, test top-1, committee accuracy)
    headline: str  # the headline result in words, or why the run is unreadable
    problem: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunStore:
    """The runs under ``roots``, read through a cache keyed by file stamps. Thread-safe (the web server's threads
    share one store)."""

    def __init__(self, roots: Sequence[Path | str], depth: int = 4) -> None:
        self.roots = [Path(r) for r in roots]
        self.depth = depth
        self._cache: OrderedDict[tuple[str, str], tuple[Stamp, Any]] = OrderedDict()
        self._lock = threading.Lock()

    # -- the cache ----------------------------------------------------------------------------------------------
    def cached(self, kind: str, key: str, files: Sequence[Path], load: Callable[[], T]) -> T:
        """``load()``'s value, reused while every file in ``files`` keeps its mtime and size."""
        s = stamp(files)
        with self._lock:
            hit = self._cache.get((kind, key))
            if hit is not None and hit[0] == s:
                self._cache.move_to_end((kind, key))
                return hit[1]  # type: ignore[no-any-return]
        value = load()
        with self._lock:
            self._cache[(kind, key)] = (s, value)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return value

    # -- ids and the roots --------------------------------------------------------------------------------------
    def run_id(self, path: Path) -> str:
        for i, root in enumerate(self.roots):
            base = root.resolve()
            p = path.resolve()
            if p == base or base in p.parents:
                return f"{i}/{p.relative_to(base).as_posix()}"
        raise OutsideRootsError(f"{str(path)!r} is not under the dashboard's roots")

    def resolve(self, run_id: str) -> Path:
        """The directory a run id names; anything that leaves its root (``..``, an absolute path, a link out of the
        root) or names no root is ``OutsideRootsError``."""
        head, _, rel = str(run_id).partition("/")
        if not head.isdigit() or int(head) >= len(self.roots):
            raise OutsideRootsError(f"run id {run_id!r} names no root of this dashboard")
        part = PurePosixPath(rel or ".")
        if part.is_absolute() or ".." in part.parts or "\\" in rel or "\x00" in rel:
            raise OutsideRootsError(f"run id {run_id!r} leaves the dashboard's roots")
        base = self.roots[int(head)].resolve()
        path = (base / part).resolve()
        if path != base and base not in path.parents:
            raise OutsideRootsError(f"run id {run_id!r} resolves outside the dashboard's roots")
        return path

    def open(self, run_id: str) -> Run:
        """The run a run id names (``OutsideRootsError`` outside the roots; ``ConfigError`` when it is unreadable)."""
        path = self.resolve(run_id)
        return self.cached("open", str(path), [path / MANIFEST], lambda: open_run(path))

    # -- the runs table -----------------------------------------------------------------------------------------
    def listing(self) -> tuple[list[RunRow], list[str]]:
        """Every run under the roots (newest first) and the problems of roots that cannot be read."""
        rows: list[RunRow] = []
        problems: list[str] = []
        seen: set[str] = set()  # a run under two roots (one inside the other) is one run, listed once
        for root in self.roots:
            try:
                runs = list_runs(root, self.depth)
            except ConfigError as err:
                problems.append(str(err))
                continue
            for run in runs:
                try:
                    row = self.row(run)
                except OutsideRootsError:  # a link under the root to a run elsewhere: never served
                    problems.append(f"{str(run.path)!r} links outside the dashboard's roots; not listed")
                    continue
                if row.id not in seen:
                    seen.add(row.id)
                    rows.append(row)
        rows.sort(key=lambda r: r.started, reverse=True)
        return rows, problems

    def row(self, run: Run) -> RunRow:
        """The runs-table line of ``run`` (cached with its manifest and archive). A running run's status and
        duration are looked at anew each time: its process can end, and its clock runs, without a write. A search
        run's progress comes from its trials' own reports (``result.json``), cached with them."""
        row = self.cached("row", str(run.path), [run.path / MANIFEST, run.path / ARCHIVE], lambda: self._row(run))
        if run.command == "search" and not row.problem:  # its trials report to Tune's files, not to the manifest
            files = result_files(run)
            remote = not files and "://" in str(run.manifest.get("tune") or "")  # nothing here to count
            progress = self.cached(  # the manifest holds the epochs planned
                "progress", str(run.path), [run.path / MANIFEST, *files], lambda: search_progress(run.manifest, files)
            )
            progress = "" if remote else progress
            headline = progress if row.headline == row.status and progress else row.headline
            row = replace(row, progress=progress, headline=headline)
        if row.status != "running":
            return row
        status = _status(run.manifest)
        if status == "interrupted":  # its last sign of life is its manifest's last write
            try:
                end = dt.datetime.fromtimestamp((run.path / MANIFEST).stat().st_mtime, dt.timezone.utc)
            except OSError:
                end = None
            duration = _duration(run.manifest, end)
        else:
            duration = _duration(run.manifest)
        headline = status if row.headline == "running" else row.headline
        return replace(row, status=status, duration_s=duration, headline=headline)

    def _row(self, run: Run) -> RunRow:
        problem = run.problem or archive_problem(run)
        m = run.manifest
        started = str(m.get("started") or "")
        rid = self.run_id(run.path)
        return RunRow(
            id=rid,
            root=str(self.roots[int(rid.split("/")[0])]),
            command=run.command if not problem or m.get("command") else "?",
            name=run.name,
            space=str(m.get("space") or ""),
            method=str(m.get("method") or ""),
            seed=run.seed if not run.problem else None,
            status="unreadable" if problem else str(m.get("status", "?")),
            started=started,
            duration_s=_duration(m),
            progress=_progress(m),
            result=None if problem else headline_value(run.command, run.result),
            headline=problem or headline_text(run.command, run.result, m),
            problem=problem,
        )

    # -- contents -----------------------------------------------------------------------------------------------
    def archive(self, run: Run) -> list[dict[str, Any]]:
        return self.cached("archive", str(run.path), [run.path / ARCHIVE], run.archive)

    def curves(self, run: Run) -> list[dict[str, Any]]:
        if run.command == "search":
            return self.cached("curves", str(run.path), result_files(run), run.curves)
        return self.cached("curves", str(run.path), [run.path / CURVES], run.curves)

    def json(self, run: Run, name: str) -> dict[str, Any]:
        return self.cached("json", str(run.path / name), [run.path / name], lambda: run.json(name))

    def config(self, run: Run) -> dict[str, Any]:
        return self.cached("config", str(run.path), [run.path / "config.yaml"], run.config)

    def derived(self, kind: str, run: Run, files: Sequence[Path], make: Callable[[], T]) -> T:
        """A value computed from a run's files (figures' data), cached with those files' stamps."""
        return self.cached(kind, str(run.path), files, make)

    def version(self, run_id: str) -> str:
        """A digest of the stamps of everything a run page shows, and of the run's status: a page redraws only when
        it changes (a string: nanosecond times do not survive the browser's numbers). The status counts because a
        running run whose process ends turns interrupted without writing a file."""
        path = self.resolve(run_id)
        files = [path / MANIFEST, path / ARCHIVE, path / CURVES, path / "report.json", path / "results.json"]
        status = "unreadable"
        with contextlib.suppress(ConfigError):  # an unreadable run: its page shows the problem, stamped by its manifest
            run = self.open(run_id)
            files += result_files(run) + tune_state_files(run)  # a trial's status can change with no new result
            status = self.row(run).status
        return hashlib.sha1(repr((stamp(files), status)).encode()).hexdigest()


def tune_files(run: Run, pattern: str) -> list[Path]:
    """The files ``pattern`` names in every trial folder of a search run's Tune experiment, wherever it lies."""
    tune = run.tune_path() if run.command == "search" else None
    return sorted(tune.glob(f"*/{pattern}")) if tune is not None else []


def tune_state_files(run: Run) -> list[Path]:
    """Tune's experiment state files of a search run (every trial's status; one per session, a restored experiment
    adds one), oldest first: their names hold the session's start time."""
    tune = run.tune_path() if run.command == "search" else None
    return sorted(tune.glob(TUNE_STATE)) if tune is not None else []


def result_files(run: Run) -> list[Path]:
    return tune_files(run, "result.json")


def archive_problem(run: Run) -> str | None:
    """Why an evolve or search run's archive cannot be read (a finished run without one, or a corrupt file)."""
    if run.command not in ("evolve", "search"):
        return None
    path = run.path / ARCHIVE
    if not path.is_file():
        if run.manifest.get("status") == "done":
            return f"{ARCHIVE} is missing from a finished {run.command} run"
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        return f"{ARCHIVE} is not a readable Parquet file ({reason})"
    missing = [c for c in ("generation", "genotype", "fitness", "alphas") if c not in schema.names]
    return f"{ARCHIVE} lacks columns {missing} (an older evoray?)" if missing else None


def _status(m: dict[str, Any]) -> str:
    status = str(m.get("status", "?"))
    if status == "running" and m.get("host") == socket.gethostname() and isinstance(m.get("pid"), int):
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            return "interrupted"
        except OSError:
            pass
    return status


def _parse_time(text: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _duration(m: dict[str, Any], until: dt.datetime | None = None) -> float | None:
    """Seconds from the start to the end (a running run: to ``until``, by default now)."""
    start = _parse_time(m.get("started"))
    if start is None:
        return None
    end = _parse_time(m.get("ended")) if m.get("ended") else None
    if end is None:
        if m.get("status") != "running":
            return None
        end = until or dt.datetime.now(dt.timezone.utc)
    return max((end - start).total_seconds(), 0.0)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def last_epoch(path: Path, tail: int = 1 << 16) -> int:
    """The ``epoch`` of the last whole line of a trial's ``result.json`` (0 when there is none). Its last ``tail``
    bytes are read first (every line holds the trial's config, and a line is added each epoch); the whole file only
    when they hold no whole line."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            for start in dict.fromkeys((max(size - tail, 0), 0)):
                f.seek(start)
                for line in reversed(f.read().decode("utf-8", errors="replace").splitlines()):
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line being written, or cut by the tail
                    if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                        return int(row["epoch"])
    except OSError:
        pass
    return 0


def search_progress(m: dict[str, Any], results: Sequence[Path]) -> str:
    """A search run's progress: its trials' epochs done (each trial's last report) out of every trial's planned
    epochs (``run.json``'s ``epochs``, written at the start; a run of an older evoray gives the count alone). A
    finished search whose trials stopped early (ASHA) gives the count and the plan."""
    done = sum(last_epoch(p) for p in results)
    total = m.get("epochs")
    if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
        return f"trial epochs {done}" if done else ""
    if m.get("status") == "done" and done < total:
        return f"trial epochs {done} ({total} planned; trials stopped early)"
    return f"trial epochs {done}/{total}"


def _progress(m: dict[str, Any]) -> str:
    p = m.get("progress")
    if not isinstance(p, dict):
        return ""
    for unit in ("generation", "epoch"):
        if unit in p:
            return f"{unit} {p[unit]}/{p.get('of', '?')}"
    return ""


HEADLINE_KEYS = {
    "evolve": "fitness",
    "search": "best_valid_acc",
    "train": "test_top1",
    "ensemble": "best_committee_accuracy",
}


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def headline_value(command: str, result: dict[str, Any]) -> float | None:
    key = HEADLINE_KEYS.get(command)
    return None if key is None else _num(result.get(key))


def format_number(v: float) -> str:
    """Three decimals, or three significant digits below 0.1 (a parameter count of 0.00177 M, not 0.002)."""
    return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.3f}"


def counted(n: Any, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is one: "1 trial", "3 trials"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _millions(x: Any) -> str:
    v = _num(x)
    return "?" if v is None else format_number(v)


def _fmt(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "?" if v is None else f"{v:.{digits}f}"


def headline_text(command: str, result: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The run's result in a few words (a running run: its progress; a failed one: its error)."""
    if manifest.get("status") == "failed":
        return f"failed: {str(manifest.get('error') or '')[:200]}"
    if not result:
        return _progress(manifest) or str(manifest.get("status", ""))
    if command == "evolve":
        return f"fitness {_fmt(result.get('fitness'))}, {_millions(result.get('params_m'))} M params"
    if command == "search":
        return (
            f"best valid {_fmt(result.get('best_valid_acc'))}% ({result.get('searcher')}), "
            f"{counted(result.get('trials'), 'trial')}, {result.get('failed', 0)} failed"
        )
    if command == "train":
        if "test_top1" not in result:
            return f"profile: {_millions(result.get('params_m'))} M params, {_fmt(result.get('flops_m'), 1)} M FLOPs"
        return f"test top-1 {_fmt(result.get('test_top1'))}%, {_millions(result.get('params_m'))} M params"
    if command == "ensemble":
        return (
            f"{result.get('best_committee')} {_fmt(result.get('best_committee_accuracy'))}% "
            f"({float(result.get('accuracy_gain') or 0):+.2f} vs member {result.get('best_member') or '?'}; both of "
            "lowest validation NLL)"
        )
    return ""
