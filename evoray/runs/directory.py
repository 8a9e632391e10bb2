"""The run directory: one shape for what every command writes, and the rules that keep it safe.

A run directory (``--out DIR``, or ``runs/<command>/<name>/``) holds ``run.json`` (the manifest: command, status,
times, seed, versions, command line, headline result), the resolved ``config.yaml``, the command's results and
``checkpoints/``. Rules:

- a new run refuses a directory that holds a run (``--resume`` continues it; ``--overwrite`` moves it aside to
  ``DIR.old-<time>`` when the new run starts, so that a new run refused by a later check leaves the old one where
  it was), and refuses a path that is a file; a run stopped between writing its ``config.yaml`` and its
  ``run.json`` has nothing to continue, and ``--overwrite`` moves it aside likewise;
- a run holds an exclusive lock on its directory (``flock`` on the directory itself, so nothing is written for it
  and a killed run's lock goes with its process): a second run into the same directory is refused;
- files are written atomically (a temporary file, then a rename), so a killed run never leaves a torn file;
- checkpoints hold tensors and plain containers only and are read back with ``weights_only=True``: a crafted file
  cannot run code; the state that is not tensors is JSON.

Example::

    with RunDir.open("evolve", out, name="nb201-ga-s0", resume=False, overwrite=False) as run:
        run.start(config_to_dict(cfg), seed=cfg.seed, summary={"space": "nb201", "method": "ga"})
        run.write_json("best.json", best)
        run.finish({"fitness": 93.1})
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import io
import json
import os
import platform
import shutil
import socket
import sys
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from evoray.errors import ConfigError

FORMAT = 1  # the version of the run directory's layout, in run.json
MANIFEST = "run.json"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
COMMANDS = ("evolve", "search", "train", "ensemble")
DEFAULT_ROOT = Path("runs")


def _article(word: str) -> str:
    """'a train', 'an evolve'."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """The versions that made a run: evoray, Python, torch, ray."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("evoray", "torch", "ray"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; once the block ends, the file is flushed to the disk
    and renamed over ``path``. A block that fails (a full disk) leaves ``path`` as it was and no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # on the disk before the rename
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (:func:`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing or unreadable file is a one-line ``ConfigError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{what} {str(path)!r} is not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} holds no JSON object")
    return data


def manifest_seed(value: Any) -> int | None:
    """``run.json``'s seed as an int; a ``ValueError`` when it is not a whole number."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return int(value)
    raise ValueError(value)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What makes a ``run.json`` unreadable to this evoray (no format, a newer one, an unknown command, times that
    are not text, a seed that is not a whole number), or None."""
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        return f"{MANIFEST} has no run format (format {fmt!r}; this evoray writes {FORMAT})"
    if fmt > FORMAT:
        return f"run format {fmt} is newer than this evoray reads ({FORMAT})"
    if manifest.get("command") not in COMMANDS:
        return f"unknown command {manifest.get('command')!r} in {MANIFEST}"
    for key in ("started", "ended"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            return f"{key} {manifest[key]!r} in {MANIFEST} is not a time (ISO 8601 text)"
    try:
        manifest_seed(manifest.get("seed"))
    except ValueError:
        return f"seed {manifest.get('seed')!r} in {MANIFEST} is not a whole number"
    for key in ("result", "progress"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            return f"{key} {str(manifest[key])[:40]!r} in {MANIFEST} is not a mapping"
    return None


def is_run(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def is_unstarted(path: Path) -> bool:
    """A run stopped in :meth:`RunDir.start` after writing its ``config.yaml`` and before its ``run.json``: the
    directory holds that config and nothing but leftovers of an atomic write."""
    try:
        names = [p.name for p in path.iterdir()] if path.is_dir() and not is_run(path) else []
    except OSError:
        return False
    return CONFIG in names and all(n == CONFIG or (n.startswith(".") and n.endswith(".tmp")) for n in names)


def _unstarted_error(path: Path, resume: bool) -> ConfigError:
    if resume:
        return ConfigError(
            f"--resume {str(path)!r}: no evoray run there ({CONFIG} without {MANIFEST}: a run stopped before it "
            f"started); start afresh with --out {path} --overwrite"
        )
    return ConfigError(
        f"output {str(path)!r} holds a run stopped before it started ({CONFIG} without {MANIFEST}); pass "
        "--overwrite to move it aside and start afresh"
    )


class RunDir:
    """One command's run directory, locked while this object holds it. Use :meth:`open` as a context manager."""

    def __init__(self, command: str, path: Path, fd: int, created: bool, resumed: bool) -> None:
        self.command, self.path, self._fd, self._created, self.resumed = command, path, fd, created, resumed
        self.started = False
        self._aside = False  # --overwrite: the old run here moves aside when this one starts
        self.manifest: dict[str, Any] = {}
        self._finished: dict[str, Any] | None = None  # a finished run's manifest, kept while --resume checks it

    # -- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        command: str,
        out: Path | str | None,
        name: str,
        *,
        resume: bool = False,
        overwrite: bool = False,
        root: Path = DEFAULT_ROOT,
    ) -> RunDir:
        """Lock and return the run directory ``out`` (default ``root/<command>/<name>``) for a new run or, with
        ``resume``, for continuing the run it holds. Nothing is written here but the directory itself."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}")
        if out is None and (Path(name).name != name or name in ("", ".", "..")):
            raise ConfigError(
                f"run name {name!r} must be a plain folder name (no '/' or '..'); give --out DIR to write elsewhere"
            )
        path = Path(out) if out is not None else root / command / name
        if out is None and not resume:  # a default name that is taken: the next free one (name-2, name-3, ...)
            k = 2
            while path.exists():
                path, k = root / command / f"{name}-{k}", k + 1
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output {str(path)!r} is a file, not a directory; give --out a directory")
        if resume:
            if is_unstarted(path):
                raise _unstarted_error(path, resume=True)
            if not is_run(path):
                raise ConfigError(f"--resume {str(path)!r}: no evoray run there ({MANIFEST} missing)")
            fd = cls._lock(path)
            run = cls(command, path, fd, created=False, resumed=True)
            try:
                run.manifest = read_json(path / MANIFEST, "run manifest")
                other = run.manifest.get("command")
                if other != command and other in COMMANDS:
                    raise ConfigError(
                        f"--resume {str(path)!r} holds a {other!r} run, not {_article(command)} run; "
                        f"continue it with python -m evoray.{other} --resume"
                    )
                problem = manifest_problem(run.manifest)
                if problem is not None:
                    raise ConfigError(f"--resume {str(path)!r}: {problem}; restore it, or start afresh (--overwrite)")
            except BaseException:
                run.release()
                raise
            return run
        if is_run(path) and not overwrite:
            raise ConfigError(
                f"output {str(path)!r} already holds a run; continue it with --resume {path}, or pass --overwrite to "
                "move it aside and start afresh"
            )
        try:  # created here, or there already (perhaps made a moment ago by another run: not ours to remove)
            path.mkdir(parents=True)
            created = True
        except FileExistsError:
            created = False
        except OSError as err:  # a parent that is a file, a read-only or virtual file system, no permission
            raise ConfigError(
                f"output {str(path)!r} cannot be created ({err.strerror or err}); give --out a writable directory"
            ) from None
        try:
            fd = cls._lock(path)
        except ConfigError:
            if created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        run = cls(command, path, fd, created, resumed=False)
        try:  # decided under the lock: another run may have written here since the check above
            if is_run(path):
                if not overwrite:
                    raise ConfigError(
                        f"output {str(path)!r} already holds a run; continue it with --resume {path}, or pass "
                        "--overwrite to move it aside and start afresh"
                    )
                run._refuse_moving_cwd()
                run._aside = True
            elif is_unstarted(path):
                if not overwrite:
                    raise _unstarted_error(path, resume=False)
                run._refuse_moving_cwd()
                run._aside = True
            elif any(path.iterdir()):
                raise ConfigError(
                    f"output {str(path)!r} holds files that are not an evoray run; give --out an empty or new directory"
                )
        except BaseException:
            run.release()
            raise
        return run

    @staticmethod
    def _lock(path: Path) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"run directory {str(path)!r} is in use by another run; wait for it to end or give another --out"
                ) from None
            raise
        return fd

    def _refuse_moving_cwd(self) -> None:
        """--overwrite of the current directory, or of one holding it, is refused: its run is not moved out from
        under the user."""
        path = self.path.resolve()  # '.', '..', 'a/..' name no folder of their own
        cwd = Path.cwd().resolve()
        if path == cwd or path in cwd.parents:
            where = "the current directory" if path == cwd else "a directory holding the current directory"
            raise ConfigError(
                f"--overwrite will not move aside the run in {str(self.path)!r} ({where}); give --out another "
                f"directory, or continue the run with --resume {self.path}"
            )

    def _move_aside(self) -> None:
        """--overwrite: the old run moves to ``<dir>.old-<time>``; the directory itself stays (it is locked)."""
        self._refuse_moving_cwd()
        path = self.path.resolve()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.name}.old-{stamp}")
        k = 1
        while aside.exists():
            aside, k = path.with_name(f"{path.name}.old-{stamp}-{k}"), k + 1
        aside.mkdir()
        for child in list(self.path.iterdir()):
            shutil.move(str(child), str(aside / child.name))

    # -- the manifest -------------------------------------------------------------------------------------------
    def start(self, config: dict[str, Any], seed: int | None, summary: dict[str, Any] | None = None) -> None:
        """Write the resolved config and mark the run running (a resumed run keeps its first start time)."""
        if self.resumed:
            if self.manifest.get("status") == "done":
                self._finished = json.loads(json.dumps(self.manifest))
            self.manifest["status"] = "running"
            self.manifest.setdefault("resumed", []).append(now())
            self.manifest["ended"] = None
            self.manifest["error"] = None
        else:
            if self._aside:  # every check before the start passed: only now does the old run move aside
                self._move_aside()
                self._aside = False
            self.write_text(CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
            self.manifest = {
                "format": FORMAT,
                "command": self.command,
                "name": self.path.name,
                "status": "running",
                "started": now(),
                "ended": None,
                "seed": seed,
                "versions": versions(),
                "argv": list(getattr(sys, "orig_argv", sys.argv)),  # as typed: python -m evoray.evolve ...
                "host": socket.gethostname(),
                "result": None,
                "error": None,
                **(summary or {}),
            }
        self.manifest["pid"] = os.getpid()
        self._write_manifest()
        self.started = True

    def refuse_lost_checkpoint(self) -> None:
        """A resumed run without a checkpoint starts over; refused where the run got past its first checkpoint (it
        finished, or its manifest counts progress): a deleted or lost checkpoint never wipes the results written."""
        if not self.resumed:
            return
        progress = self.manifest.get("progress")
        counted = isinstance(progress, dict) and any(
            isinstance(v, int) and v > 0 for k, v in progress.items() if k != "of"
        )
        if self.manifest.get("status") == "done" or counted:
            where = "it finished" if self.manifest.get("status") == "done" else f"its progress is {progress}"
            raise ConfigError(
                f"--resume {str(self.path)!r}: {CHECKPOINTS}/last.pt is gone but {where}; nothing to continue from "
                "(restore the checkpoint, or start afresh with --overwrite)"
            )

    def update(self, **fields: Any) -> None:
        """Record progress in the manifest (e.g. ``progress={"generation": 3, "of": 50}``)."""
        self.manifest.update(fields)
        self._write_manifest()

    def finish(self, result: dict[str, Any]) -> None:
        self.manifest.update(status="done", ended=now(), result=result, error=None)
        self._write_manifest()

    def fail(self, error: str) -> None:
        self.manifest.update(status="failed", ended=now(), error=error[:2000])
        self._write_manifest()

    def _write_manifest(self) -> None:
        self.write_json(MANIFEST, self.manifest)

    # -- files --------------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        atomic_write(self.path / name, text.encode("utf-8"))
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=1, default=str, allow_nan=True))

    def saved_config(self) -> dict[str, Any]:
        return read_config(self.path)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], tensors: dict[str, Any], name: str = "last") -> None:
        """``state`` (JSON-able) and ``tensors`` (tensors and plain containers) as one checkpoint; the tensors file
        carries the state too, so a resume never pairs the tensors of one save with the state of another."""
        save_checkpoint(self.path / CHECKPOINTS, state, tensors, name)

    def load_checkpoint(self, name: str = "last") -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The last checkpoint's (state, tensors), or None when the run stopped before its first one; a new run has
        none (what ``--overwrite`` will move aside is not its own)."""
        if not self.resumed:
            return None
        return load_checkpoint(self.path / CHECKPOINTS, name)

    # -- closing ------------------------------------------------------------------------------------------------
    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if isinstance(err, ConfigError) and self._finished is not None:
                # --resume of a finished run refused its files (a corrupt member, Tune state, ...): the run stays
                # as it was, not failed; the error is the command's one line
                self.manifest = self._finished
                self._write_manifest()
            elif err is not None and self.started and self.manifest.get("status") == "running":
                self.fail("interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}")
            elif err is not None and not self.started and self._created:
                with contextlib.suppress(OSError):  # refused before anything was written: leave no directory
                    self.path.rmdir()
        finally:
            self.release()


def saved_run(path: Path, command: str) -> dict[str, Any]:
    """The resolved config of the ``command`` run in ``path`` (for ``--resume``), read-only; a directory that holds
    no run, or another command's run, is a one-line ``ConfigError``."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--resume {str(path)!r} is a file, not a run directory")
    if is_unstarted(path):
        raise _unstarted_error(path, resume=True)
    if not is_run(path):
        raise ConfigError(f"--resume {str(path)!r}: no evoray run there ({MANIFEST} missing)")
    manifest = read_json(path / MANIFEST, "run manifest")
    other = manifest.get("command")
    if other != command and other in COMMANDS:
        raise ConfigError(
            f"--resume {str(path)!r} holds a {other!r} run, not {_article(command)} run; "
            f"continue it with python -m evoray.{other} --resume {path}"
        )
    problem = manifest_problem(manifest)
    if problem is not None:
        raise ConfigError(f"--resume {str(path)!r}: {problem}; restore it, or start afresh (--overwrite)")
    return read_config(path)


def read_config(path: Path) -> dict[str, Any]:
    """The resolved config a run saved, as plain data."""
    file = path / CONFIG
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"run {str(path)!r} has no {CONFIG}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{str(file)!r} is not readable YAML ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(file)!r} holds no mapping of config keys")
    return data


# -- checkpoints: tensors (weights_only) beside JSON ----------------------------------------------------------------


# The tensors file holds its own copy of the state: a process killed between writing the tensors and the JSON leaves
# a JSON one save older than the tensors, and resuming from that pair would mix two saves.
_STATE = "__state__"


def save_checkpoint(folder: Path, state: dict[str, Any], tensors: dict[str, Any], name: str = "last") -> None:
    """``tensors`` (with ``state`` as JSON text) in ``name.pt``, then ``state`` in ``name.json`` for people and tools;
    each written atomically."""
    import torch

    text = json.dumps(state, allow_nan=True)
    buf = io.BytesIO()
    torch.save({**tensors, _STATE: text}, buf)
    atomic_write(folder / f"{name}.pt", buf.getvalue())
    atomic_write(folder / f"{name}.json", text.encode("utf-8"))


def load_checkpoint(folder: Path, name: str = "last") -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(state, tensors) of checkpoint ``name`` in ``folder``, the state the tensors file was saved with; None when
    there is none; a corrupt or unsafe file is a one-line ``ConfigError`` (the tensors are read with
    ``weights_only=True``: no code runs)."""
    meta, weights = folder / f"{name}.json", folder / f"{name}.pt"
    if not meta.is_file() and not weights.is_file():
        return None
    state: dict[str, Any] | None = None
    if meta.is_file():
        try:
            state = read_json(meta, "checkpoint")
        except ConfigError as err:
            raise ConfigError(f"{err}: the checkpoint is corrupt") from None
    tensors = load_tensors(weights, "checkpoint")
    saved = tensors.pop(_STATE, None)
    if isinstance(saved, str):
        try:
            state = json.loads(saved)  # the JSON file may be one save older (killed between the two writes)
        except json.JSONDecodeError:
            raise ConfigError(f"checkpoint {str(weights)!r} is corrupt (its state is not JSON)") from None
    if state is None:
        raise ConfigError(f"checkpoint {str(meta)!r} does not exist beside its tensors file")
    return state, tensors


def load_tensors(path: Path, what: str) -> dict[str, Any]:
    """A tensors file read with ``weights_only=True``; anything else (a pickle of code, a torn file) is refused."""
    import torch

    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    damaged = _damaged_record(path)  # torch.load reads a damaged tensor record without a word
    if damaged:
        raise ConfigError(f"{what} {str(path)!r} is corrupt ({damaged})")
    try:
        with warnings.catch_warnings():  # torch warns of odd pickle protocols in random bytes before failing
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling or format failure: one line, nothing executed
        raise ConfigError(
            f"{what} {str(path)!r} is corrupt or not a tensors-only file ({_load_failure(err)})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} holds {type(data).__name__}, not a mapping of tensors")
    return data


def _load_failure(err: BaseException) -> str:
    """Why ``torch.load`` refused a file, in a few words: the unpickler's own reason where torch wraps it in advice
    (about ``weights_only=False``, which evoray never takes), else the error's type and first line."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        return (detail[0] if detail else "refused by the weights-only unpickler")[:160]
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _damaged_record(path: Path) -> str | None:
    """Why the zip container of a tensors file (what ``torch.save`` writes) fails its CRC-32 checks, or None when
    it passes them or is not a zip file (``torch.load`` judges those)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    return None if bad is None else f"record {bad} fails its CRC-32 check"
