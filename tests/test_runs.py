"""The run directory every command writes: its manifest, refusals (an existing run, a file, a locked directory),
``--overwrite``, resume of a run killed before its first checkpoint, the public reader, and every command's
``--resume`` refusing bad input in one line with nothing in the directory changed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import pandas as pd
import pytest

from evoray.commands.evolve import evolve
from evoray.commands.evolve import main as evolve_main
from evoray.commands.search import main as search_main
from evoray.commands.train import main as train_main
from evoray.commands.train import train
from evoray.config import load_config
from evoray.errors import ConfigError
from evoray.runs import RunDir, list_runs, open_run
from evoray.training import TrainConfig
from tests.test_evolve import TINY, tiny

ROOT = Path(__file__).resolve().parents[1]
QUIET = lambda _: None  # noqa: E731
TRAIN_TINY = [
    "optim.epochs=3",
    "model.init_channels=4",
    "model.layers=3",
    "model.auxiliary=false",
    "data.limit_train=256",
    "profile.repeats=1",
    "profile.warmup=0",
    "runtime.threads=1",
]


class _OpenFlags(TypedDict, total=False):
    """Keyword flags of ``RunDir.open``."""

    resume: bool


def digest(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def tiny_train(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, ROOT / "configs/train-default.yaml", [*TRAIN_TINY, *extra])


@pytest.fixture(scope="module")
def evolve_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "evo"
    evolve(tiny("evolution.generations=2"), out, log=QUIET)
    return out


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "train"
    train(tiny_train(), out, log=QUIET)
    return out


# -- the directory --------------------------------------------------------------------------------------------


def test_manifest_and_reader(evolve_run: Path, train_run: Path) -> None:
    run = open_run(evolve_run)
    assert (run.command, run.status, run.seed) == ("evolve", "done", 0)
    assert run.started and run.ended and run.manifest["versions"]["evoray"]
    assert run.result["genotype"] == run.best_rows(1)[0]["genotype"]
    assert [row["generation"] for row in run.curves()] == [0.0, 1.0]
    assert run.config()["evolution"]["generations"] == 2
    runs = list_runs(evolve_run.parent.parent)
    by_path = {r.path: r for r in runs}  # the session's folder also holds other tests' runs, some broken on purpose
    assert by_path[evolve_run].problem is None and by_path[train_run].problem is None
    assert open_run(train_run).command == "train" and len(open_run(train_run).curves()) == 3


def test_an_existing_run_is_refused_moved_aside_or_resumed(tmp_path, evolve_run: Path) -> None:
    before = digest(evolve_run)
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        evolve(tiny("evolution.generations=2"), evolve_run, log=QUIET)
    assert digest(evolve_run) == before
    copy = tmp_path / "evo"
    subprocess.run(["cp", "-r", str(evolve_run), str(copy)], check=True)
    evolve(tiny("evolution.generations=1"), copy, overwrite=True, log=QUIET)  # the old run moves aside, kept
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("evo.old-")]
    assert len(aside) == 1 and digest(aside[0]) == before
    assert open_run(copy).config()["evolution"]["generations"] == 1
    resumed = evolve(tiny("evolution.generations=1"), copy, resume=True, log=QUIET)  # a finished run: nothing to do
    assert resumed["genotype"] == open_run(copy).result["genotype"]


def test_a_file_or_foreign_files_are_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        RunDir.open("evolve", tmp_path / "file", "x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files that are not an evoray run"):
        RunDir.open("train", tmp_path / "other", "x")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_locked_directory_is_refused_and_the_lock_goes_with_the_process(tmp_path) -> None:
    with RunDir.open("train", tmp_path / "r", "x") as run:
        run.start({"a": 1}, 0)
        with pytest.raises(ConfigError, match="in use by another run"):
            RunDir.open("train", tmp_path / "r", "x", resume=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(tmp_path / "r")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="in use by another run"):
        RunDir.open("train", tmp_path / "r", "x", resume=True)
    holder.kill()  # SIGKILL: the lock is released with the process
    holder.wait()
    RunDir.open("train", tmp_path / "r", "x", resume=True).release()


def test_a_new_run_is_refused_while_another_holds_the_directory_before_its_manifest(tmp_path) -> None:
    """The window the manifest check cannot see: the first run holds the lock but has written nothing yet. A second
    new run into the same --out (with or without --overwrite) is refused by the lock and leaves the directory."""
    with RunDir.open("evolve", tmp_path / "r", "x") as first:
        assert not (tmp_path / "r" / "run.json").exists()
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match="in use by another run"):
                RunDir.open("evolve", tmp_path / "r", "x", overwrite=overwrite)
        assert (tmp_path / "r").is_dir()
        first.start({"a": 1}, 0)
    assert (tmp_path / "r" / "run.json").is_file()


def test_default_names_never_collide(tmp_path) -> None:
    first = RunDir.open("train", None, "same", root=tmp_path)
    first.start({}, 0)
    second = RunDir.open("train", None, "same", root=tmp_path)
    assert first.path == tmp_path / "train" / "same" and second.path == tmp_path / "train" / "same-2"
    first.release()
    second.release()


def test_a_run_refused_for_its_input_leaves_no_directory(tmp_path) -> None:
    bad_genotype = tiny_train("model.genotype=NOPE")
    missing_data = tiny_train("data.dataset=npz", "data.root=/no/file.npz")  # both load; the runs refuse them
    with pytest.raises(ConfigError, match="unknown published genotype"):
        train(bad_genotype, tmp_path / "t", log=QUIET)
    with pytest.raises(ConfigError, match=r"npz file '/no/file\.npz' does not exist"):
        train(missing_data, tmp_path / "u", log=QUIET)
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()


# -- resume ---------------------------------------------------------------------------------------------------


def _cli(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"evoray.{command}", *args]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed (exit {proc.returncode})")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_checkpoint_killed_between_its_two_files_resumes_from_one_save(tmp_path) -> None:
    """A process killed after a checkpoint's tensors file and before its JSON leaves the JSON of the save before: the
    resume takes the state the tensors were saved with, never the tensors of one save with the state of another."""
    import torch

    from evoray.runs.directory import load_checkpoint, save_checkpoint

    folder = tmp_path / "checkpoints"
    assert load_checkpoint(folder) is None
    save_checkpoint(folder, {"generation": 0}, {"w": torch.zeros(3)})
    older = (folder / "last.json").read_bytes()
    save_checkpoint(folder, {"generation": 1}, {"w": torch.ones(3)})
    (folder / "last.json").write_bytes(older)  # the second save's JSON never written
    loaded = load_checkpoint(folder)
    assert loaded is not None
    state, tensors = loaded
    assert state == {"generation": 1} and set(tensors) == {"w"} and torch.equal(tensors["w"], torch.ones(3))
    (folder / "last.json").unlink()  # killed within the first save
    loaded = load_checkpoint(folder)
    assert loaded is not None
    state, tensors = loaded
    assert state == {"generation": 1} and torch.equal(tensors["w"], torch.ones(3))


def test_evolve_killed_before_its_first_checkpoint_starts_over_to_the_same_result(tmp_path) -> None:
    ref = tmp_path / "ref"
    evolve(tiny("evolution.generations=2"), ref, log=QUIET)
    killed = tmp_path / "killed"
    p = subprocess.Popen(
        _cli("evolve", "--out", str(killed), *_sets([*TINY, "evolution.generations=2"])),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _kill_when(p, lambda: (killed / "run.json").is_file())
    assert not (killed / "checkpoints" / "last.json").is_file(), "killed too late: a checkpoint was written"
    proc = subprocess.run(_cli("evolve", "--resume", str(killed)), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(ref / "archive.parquet"), pd.read_parquet(killed / "archive.parquet"))


def test_train_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    cfg = tiny_train("optim.epochs=4")
    ref = train(cfg, tmp_path / "ref", log=QUIET)
    killed = tmp_path / "killed"
    p = subprocess.Popen(
        _cli("train", "--out", str(killed), *_sets([*TRAIN_TINY, "optim.epochs=4"])),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _kill_when(p, lambda: (killed / "checkpoints" / "last.json").is_file())
    done = json.loads((killed / "checkpoints" / "last.json").read_text())["epoch"]
    assert done < 3, "killed too late to test resume"
    proc = subprocess.run(_cli("train", "--resume", str(killed), "--json"), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # it continued after its checkpoint's epoch (a run that started over would give the same history)
    assert f"resuming {killed} after epoch {done + 1}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    resumed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (resumed["test_top1"], resumed["test_loss"]) == (ref["test_top1"], ref["test_loss"])
    history = json.loads((killed / "history.json").read_text())
    assert history == json.loads((tmp_path / "ref" / "history.json").read_text())


@pytest.mark.parametrize("command", ["evolve", "train", "search"])
def test_bad_resume_is_one_line_and_changes_nothing(command: str, evolve_run: Path, train_run: Path, tmp_path, capsys):
    main = {"evolve": evolve_main, "train": train_main, "search": search_main}[command]
    own = {"evolve": evolve_run, "train": train_run, "search": None}[command]
    other = train_run if command != "train" else evolve_run
    cases = [
        (["--resume", str(other)], f"not {'an' if command[0] in 'aeiou' else 'a'} {command} run"),
        (["--resume", str(tmp_path / "nothing")], "no evoray run there"),
        (["--resume", str(train_run / "run.json")], "is a file"),
    ]
    for args, message in cases:
        before = digest(other)
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (args, err)
        assert digest(other) == before
    if own is None:
        return
    for broken in ("checkpoints/last.pt", "checkpoints/last.json", "archive.parquet"):
        if not (own / broken).is_file():
            continue
        copy = tmp_path / f"copy-{broken.replace('/', '-')}"
        subprocess.run(["cp", "-r", str(own), str(copy)], check=True)
        torn = (copy / broken).read_bytes()
        (copy / broken).write_bytes(torn[: len(torn) // 2] + b"\x00torn")  # a torn file
        before = digest(copy)
        assert main(["--resume", str(copy)]) == 2, broken
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and ("corrupt" in err or "not a" in err), (broken, err)
        assert digest(copy) == before, broken


def _resume_refused(main: Any, run: Path, capsys: Any, message: str) -> None:
    """``--resume run`` is one line holding ``message``, exit 2, and nothing in the run changes."""
    before = digest(run)
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert digest(run) == before


def _copy(run: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(run), str(to)], check=True)
    return to


def test_a_run_that_lost_its_checkpoint_or_archive_is_not_started_over(evolve_run, train_run, tmp_path, capsys):
    """A resume that finds no checkpoint starts over (a run killed before its first); one whose manifest says it got
    further (finished, or progress counted) is refused instead, with every result kept. An evolve checkpoint whose
    archive is gone or lacks generations it has done is refused too: the run would go on without them."""
    from evoray.runs.archive import read_archive, write_archive

    for command, run, main in (("evolve", evolve_run, evolve_main), ("train", train_run, train_main)):
        copy = _copy(run, tmp_path / f"{command}-no-checkpoint")
        subprocess.run(["rm", "-r", str(copy / "checkpoints")], check=True)
        _resume_refused(main, copy, capsys, "checkpoints/last.pt is gone but it finished; nothing to continue from")
        manifest = json.loads((copy / "run.json").read_text())
        manifest.update(status="running")  # killed mid-run: its progress says how far it got
        (copy / "run.json").write_text(json.dumps(manifest))
        _resume_refused(main, copy, capsys, "checkpoints/last.pt is gone but its progress is {")
    copy = _copy(evolve_run, tmp_path / "no-archive")
    (copy / "archive.parquet").unlink()
    _resume_refused(evolve_main, copy, capsys, "its checkpoint has done 2 generations but archive.parquet is gone")
    copy = _copy(evolve_run, tmp_path / "half-archive")
    write_archive(copy / "archive.parquet", [r for r in read_archive(copy) if r["generation"] != 0])
    _resume_refused(evolve_main, copy, capsys, "archive.parquet lacks generations 0; restore the archive")


def test_a_resume_refuses_a_manifest_this_evoray_cannot_read(train_run, tmp_path, capsys) -> None:
    copy = _copy(train_run, tmp_path / "bare")
    (copy / "run.json").write_text(json.dumps({"command": "train"}))
    _resume_refused(train_main, copy, capsys, "run.json has no run format (format None; this evoray writes 1)")
    (copy / "run.json").write_text(json.dumps({"command": "train", "format": 1, "seed": "x"}))
    _resume_refused(train_main, copy, capsys, "seed 'x' in run.json is not a whole number")


def test_train_resumed_after_its_last_checkpoint_writes_its_whole_curves(train_run, tmp_path, capsys) -> None:
    """Killed after its last epoch's checkpoint: the resume runs no epoch, and still leaves every epoch's curve."""
    from evoray.runs.curves import read_curves, write_curves

    copy = _copy(train_run, tmp_path / "killed")
    whole = read_curves(copy / "curves.parquet")
    write_curves(copy / "curves.parquet", whole[:-1])
    manifest = json.loads((copy / "run.json").read_text())
    manifest.update(status="running")
    (copy / "run.json").write_text(json.dumps(manifest))
    assert train_main(["--resume", str(copy)]) == 0
    assert read_curves(copy / "curves.parquet") == whole
    assert json.loads((copy / "run.json").read_text())["status"] == "done"


def test_overwrite_refuses_the_current_directory_and_resolves_relative_paths(tmp_path, monkeypatch, capsys) -> None:
    with RunDir.open("train", tmp_path / "r", "x") as run:
        run.start({"a": 1}, 0)
    before = digest(tmp_path)
    monkeypatch.chdir(tmp_path / "r")
    for out in (".", "./", str(tmp_path / "r")):
        with pytest.raises(ConfigError, match=r"will not move aside the run in .* \(the current directory\)"):
            RunDir.open("train", out, "x", overwrite=True)
    assert digest(tmp_path) == before
    assert train_main(["--out", ".", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "current directory" in err, err
    (tmp_path / "r" / "checkpoints").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "r" / "checkpoints")
    before = digest(tmp_path)
    with pytest.raises(ConfigError, match="a directory holding the current directory"):
        RunDir.open("train", "..", "x", overwrite=True)
    assert digest(tmp_path) == before
    monkeypatch.chdir(tmp_path)
    (tmp_path / "other").mkdir()
    RunDir.open("train", "other/../r", "x", overwrite=True).release()  # moved aside beside r, not inside other
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and (tmp_path / aside[0] / "run.json").is_file() and not any((tmp_path / "other").iterdir())


def test_a_damaged_archive_or_curves_file_is_refused_not_read_with_wrong_values(tmp_path) -> None:
    """Bytes damaged inside a data page (the footer intact): one line naming the file, never rows with other alphas;
    an archive written without page checksums (an older evoray) still reads."""
    import numpy as np
    import pyarrow.parquet as pq

    from evoray.runs.archive import individual_row, read_archive, write_archive
    from evoray.runs.curves import read_curves, write_curves

    rng = np.random.default_rng(0)
    rows = [individual_row(0, i, [], "init", f"g{i}", 50.0 + i, 1.0, {"n": rng.random((14, 8))}) for i in range(20)]
    archive, curves = tmp_path / "archive.parquet", tmp_path / "curves.parquet"
    write_archive(archive, rows)
    write_curves(curves, [{"generation": float(g), "best": rng.random()} for g in range(200)])
    for path, read, what in ((archive, read_archive, "population archive"), (curves, read_curves, "curves")):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] + bytes(16) + data[len(data) // 3 + 16 :])
        with pytest.raises(ConfigError, match=f"{what} '{path}' .*checksum"):
            read(path)
    plain = tmp_path / "plain.parquet"
    write_archive(archive, rows)
    pq.write_table(pq.read_table(archive), plain)
    assert [r["genotype"] for r in read_archive(plain)] == [r["genotype"] for r in rows]


def test_a_checkpoint_damaged_inside_its_tensors_is_refused_not_resumed_with_wrong_weights(tmp_path) -> None:
    """Bytes damaged inside a tensor record of ``last.pt`` (its zip structure intact): one line naming the file and
    the record, never a resume from other weights."""
    import torch

    from evoray.runs.directory import load_checkpoint, save_checkpoint

    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, {"generation": 1}, {"w": torch.arange(50_000, dtype=torch.float32)})
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2] + bytes(16) + data[len(data) // 2 + 16 :])
    with pytest.raises(ConfigError, match=r"checkpoint '.*last.pt' is corrupt \(record .*data/0 fails its CRC-32"):
        load_checkpoint(folder)


def _hand_run(path: Path, **fields) -> Path:
    path.mkdir(parents=True)
    manifest = {"format": 1, "command": "search", "status": "done", "started": "2024-01-01T00:00:00+00:00", "seed": 0}
    (path / "run.json").write_text(json.dumps({**manifest, **fields}))
    return path


def test_train_curves_number_epochs_from_one_as_search_curves_do(tmp_path) -> None:
    """A train run's epochs are numbered from 1, as a search's are (the dashboard's compare page overlays them by
    epoch); curves written before that (first epoch 0) read the same way."""
    from evoray.runs.curves import write_curves

    path = _hand_run(tmp_path / "old", command="train")
    write_curves(path / "curves.parquet", [{"epoch": 0, "train_loss": 2.0}, {"epoch": 1, "train_loss": 1.5}])
    assert [r["epoch"] for r in open_run(path).curves()] == [1, 2]
    train(tiny_train("optim.epochs=2"), tmp_path / "new", log=lambda _: None)
    assert [r["epoch"] for r in open_run(tmp_path / "new").curves()] == [1, 2]
    assert [h["epoch"] for h in json.loads((tmp_path / "new" / "history.json").read_text())] == [1, 2]


def test_search_curves_are_read_where_the_run_records_its_tune_storage(tmp_path) -> None:
    storage = tmp_path / "storage" / "exp"
    (storage / "darts-t1").mkdir(parents=True)
    (storage / "darts-t1" / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    run = open_run(_hand_run(tmp_path / "run", tune=str(storage)))
    assert [(r["trial"], r["epoch"]) for r in run.curves()] == [("darts-t1", 1), ("darts-t1", 2)]
    moved = _hand_run(tmp_path / "moved", tune=str(tmp_path / "gone" / "tune"))  # a run directory moved since
    (moved / "tune" / "xnas-t2").mkdir(parents=True)
    (moved / "tune" / "xnas-t2" / "result.json").write_text('{"epoch": 1}\n')
    assert [r["trial"] for r in open_run(moved).curves()] == ["xnas-t2"]


def test_a_hand_edited_manifest_marks_only_its_run_unreadable(tmp_path) -> None:
    good = _hand_run(tmp_path / "good")
    bad_time = _hand_run(tmp_path / "bad-time", started=5)
    bad_seed = _hand_run(tmp_path / "bad-seed", seed="abc")
    runs = {r.path: r for r in list_runs(tmp_path)}
    assert runs[good].problem is None and runs[good].seed == 0
    for path, key in ((bad_time, "started"), (bad_seed, "seed")):
        run = runs[path]
        assert run.status == "unreadable" and key in (run.problem or "") and "\n" not in (run.problem or "")
        assert run.seed is None or isinstance(run.seed, int)
        with pytest.raises(ConfigError, match=f"is unreadable: .*{key}"):
            open_run(path)


def test_a_missing_run_path_is_said_not_to_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"'.*nothing' does not exist$"):
        open_run(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a run directory"):
        open_run(tmp_path / "file")
    with pytest.raises(ConfigError, match=r"holds no evoray run \(run.json missing\)"):
        open_run(tmp_path)


def test_a_run_stopped_between_its_config_and_its_manifest_can_be_overwritten(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "r"

    def killed(self) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunDir, "_write_manifest", killed)
        with pytest.raises(KeyboardInterrupt), RunDir.open("train", out, "x") as run:
            run.start({"a": 1}, 0)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    every_flags: tuple[_OpenFlags, ...] = ({}, {"resume": True})
    for flags in every_flags:
        with pytest.raises(ConfigError, match=r"stopped before it started.*--overwrite"):
            RunDir.open("train", out, "x", **flags)
    assert train_main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "stopped before it started" in err, err
    with RunDir.open("train", out, "x", overwrite=True) as run:
        run.start({"a": 2}, 0)
        run.finish({})
    assert open_run(out).status == "done" and open_run(out).config() == {"a": 2}
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and (aside[0] / "config.yaml").is_file()


def test_a_relative_tune_storage_is_recorded_as_an_absolute_path(tmp_path, monkeypatch) -> None:
    """A search whose experiment config names a relative local storage records it absolute (the manifest's "tune" is
    read from any working directory); a URI is kept as written."""
    from types import SimpleNamespace

    from evoray.distributed.search import tune_location
    from evoray.searchers.experiment import ExperimentConfig

    monkeypatch.chdir(tmp_path)
    run: Any = SimpleNamespace(path=tmp_path / "run")  # the location reads only the run's folder
    storage, name = tune_location(ExperimentConfig(storage="results/tune"), run)
    assert storage == str(tmp_path.resolve() / "results" / "tune") and name == "run"
    assert tune_location(ExperimentConfig(storage="s3://bucket/exp"), run) == ("s3://bucket/exp", "run")


def test_a_finished_run_whose_resume_is_refused_stays_finished(tmp_path) -> None:
    """--resume of a finished run reads its files after marking it running: when they are refused (a corrupt
    member, Tune state), the manifest returns to what it was, byte for byte; any other end still marks it failed."""
    with RunDir.open("train", tmp_path / "r", "r") as run:
        run.start({"a": 1}, 0)
        run.finish({"test_top1": 50.0})
    before = (tmp_path / "r" / "run.json").read_bytes()
    with pytest.raises(ConfigError), RunDir.open("train", tmp_path / "r", "r", resume=True) as run:
        run.start({"a": 1}, 0)
        raise ConfigError("member x: logits.npz is corrupt")
    assert (tmp_path / "r" / "run.json").read_bytes() == before
    with pytest.raises(RuntimeError), RunDir.open("train", tmp_path / "r", "r", resume=True) as run:
        run.start({"a": 1}, 0)
        raise RuntimeError("out of memory")
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("content", [bytes(range(256)) * 20, b"echo this is not a checkpoint\n"])
def test_a_garbage_checkpoint_is_one_plain_line_without_torchs_advice(content: bytes, tmp_path) -> None:
    import warnings

    from evoray.runs.directory import load_tensors

    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ConfigError) as err:
        warnings.simplefilter("always")
        load_tensors(path, "checkpoint")
    message = str(err.value)
    assert message.startswith(f"checkpoint {str(path)!r} is corrupt or not a tensors-only file (")
    assert "\n" not in message and "weights_only" not in message and "Re-running" not in message, message
    assert not caught, [str(w.message) for w in caught]


CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.02 GiB is "
    "free. Including non-PyTorch memory, this process has 78.16 GiB memory in use. Of the allocated memory 77.5 GiB "
    "is allocated by PyTorch."
)


def test_out_of_memory_is_one_line_and_the_run_is_failed(tmp_path, capsys, monkeypatch) -> None:
    """A GPU that runs out of memory mid-run (here raised by hand where an epoch is measured) ends the command with
    one line saying what could not be allocated and what to lower, exit 2, and the run directory says failed; the
    same line comes from a Ray worker's error, whose message carries the worker's traceback."""
    import ray
    import torch

    from evoray import training
    from evoray.cli import out_of_memory, out_of_memory_line

    def oom(*_: Any, **__: Any) -> Any:
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(training, "evaluate", oom)
    out = tmp_path / "run"
    assert train_main([*(f"--set={s}" for s in TRAIN_TINY), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    want = (
        "error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 "
        "GiB of which 1.02 GiB is free; lower"
    )
    assert err.startswith(want) and "\n" not in err and "Including non-PyTorch" not in err, err
    assert err.endswith("lower the batch size (data.batch_size, fitness.batch_size) or the network's size "
                        "(init_channels, layers), or run where there is more memory")  # fmt: skip
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed" and "out of memory" in manifest["error"]

    cause = torch.OutOfMemoryError(CUDA_OOM)
    remote = ray.exceptions.RayTaskError(
        "fitness",
        f'Traceback (most recent call last):\n  File "x.py", line 1\ntorch.OutOfMemoryError: {CUDA_OOM}',
        cause,
    ).as_instanceof_cause()
    assert out_of_memory(remote) and out_of_memory_line(remote) == err.removeprefix("error: ")
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


# -- files: atomic writes ----------------------------------------------------------------------------------


def test_a_write_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch) -> None:
    """A manifest, checkpoint or archive write that fails before its rename (here the disk is full) leaves the file it
    was to replace as it was."""
    import errno

    import numpy as np
    import torch

    from evoray.runs.archive import individual_row, write_archive

    out = tmp_path / "r"
    run = RunDir.open("evolve", out, "r")
    run.start({"a": 1}, 0)
    run.save_checkpoint({"generation": 1}, {"w": torch.zeros(2)})
    row = individual_row(0, 0, [], "init", "g", 1.0, 1.0, {"n": np.zeros(2)})
    write_archive(out / "archive.parquet", [row])
    before = digest(out)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for write in (
        lambda: run.update(progress={"generation": 2, "of": 3}),
        lambda: run.save_checkpoint({"generation": 2}, {"w": torch.ones(2)}),
        lambda: write_archive(out / "archive.parquet", [row, row]),
    ):
        with pytest.raises(OSError, match="No space left"):
            write()
    monkeypatch.undo()
    run.release()
    assert digest(out) == before  # no temporary file left behind either


def test_a_run_whose_first_write_fails_leaves_no_directory(tmp_path, monkeypatch) -> None:
    """The disk full at the run's first file (config.yaml): the directory it made is removed, temporary file and all,
    so the same --out takes the next try."""
    import errno

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError, match="No space left"), RunDir.open("train", out, "r") as run:
            run.start({"a": 1}, 0)
    assert not out.exists()
    with RunDir.open("train", out, "r") as run:
        run.start({"a": 1}, 0)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.json"]
