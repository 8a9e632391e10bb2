"""The run directory every command writes: its manifest, refusals (an existing run, a file, a locked directory),
``--overwrite``, resume of a run killed before its first checkpoint, the public reader, and every command's
``--resume`` refusing bad input in one line with nothing in the directory changed."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
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


def test_a_resume_keeps_the_training_time_and_profile_already_recorded(train_run, tmp_path) -> None:
    """A finished run resumed (to rebuild its files) keeps the training time and latency its results recorded; a
    run resumed mid-way adds the seconds its earlier processes spent (kept in the checkpoint) to its own."""
    import torch

    done = _copy(train_run, tmp_path / "done")
    before = json.loads((done / "results.json").read_text())
    assert train_main(["--resume", str(done)]) == 0
    after = json.loads((done / "results.json").read_text())
    assert {k: after[k] for k in ("train_time_s", "latency_ms", "params_m", "flops_m")} == {
        k: before[k] for k in ("train_time_s", "latency_ms", "params_m", "flops_m")
    }
    killed = _copy(train_run, tmp_path / "killed")
    manifest = json.loads((killed / "run.json").read_text())
    (killed / "run.json").write_text(json.dumps({**manifest, "status": "running"}))
    tensors = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    state = json.loads(tensors["__state__"])
    assert 0 < state["train_time_s"] <= before["train_time_s"]
    tensors["__state__"] = json.dumps({**state, "train_time_s": 1000.0})  # as if its first process took 1000 s
    torch.save(tensors, killed / "checkpoints" / "last.pt")
    assert train_main(["--resume", str(killed)]) == 0
    assert 1000.0 < json.loads((killed / "results.json").read_text())["train_time_s"] < 1000.0 + 600


def test_overwrite_moves_the_old_run_aside_only_when_the_new_one_starts(tmp_path, train_run) -> None:
    """A new run refused after its directory opened (a check of its own, a cluster that does not answer) leaves the
    run it would replace where it was; before it starts, the old run's checkpoint is not taken for its own."""
    out = _copy(train_run, tmp_path / "r")
    before = digest(out)
    with pytest.raises(ConfigError, match="refused"), RunDir.open("train", out, "r", overwrite=True) as run:
        assert run.load_checkpoint() is None
        raise ConfigError("refused")
    assert digest(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    with RunDir.open("train", out, "r", overwrite=True) as run:
        run.start({"a": 1}, 0)
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert digest(aside) == before and sorted(p.name for p in out.iterdir()) == ["config.yaml", "run.json"]


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
    with RunDir.open("train", "other/../r", "x", overwrite=True) as run:  # moved aside beside r, not inside other
        run.start({"a": 2}, 0)
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


# -- the manifest, written and read back ----------------------------------------------------------------------


def test_a_new_run_writes_its_config_and_a_running_manifest_then_its_result(tmp_path) -> None:
    """start() writes config.yaml as given (key order kept) and a run.json naming the command, the folder, the seed and
    the summary, running with no end, result or error; finish() records the result and the end."""
    out = tmp_path / "nb201-ga-s3"
    with RunDir.open("evolve", out, "ignored") as run:
        run.start({"seed": 3, "space": {"name": "nb201"}, "a": [1, 2]}, seed=3, summary={"space": "nb201"})
        assert (out / "config.yaml").read_text() == "seed: 3\nspace:\n  name: nb201\na:\n- 1\n- 2\n"
        manifest = json.loads((out / "run.json").read_text())
        assert list(manifest)[:4] == ["format", "command", "name", "status"]
        keys = ("format", "command", "name", "status", "ended", "seed", "result", "error")
        assert {k: manifest[k] for k in keys} == {
            "format": 1, "command": "evolve", "name": "nb201-ga-s3", "status": "running", "ended": None, "seed": 3,
            "result": None, "error": None,
        }  # fmt: skip
        assert (manifest["space"], manifest["pid"]) == ("nb201", os.getpid()) and manifest["started"]
        run.finish({"fitness": 93.1})
    manifest = json.loads((out / "run.json").read_text())
    assert (manifest["status"], manifest["result"], manifest["error"]) == ("done", {"fitness": 93.1}, None)
    assert isinstance(manifest["ended"], str) and manifest["ended"] >= manifest["started"]
    assert open_run(out).name == "nb201-ga-s3"


def test_a_resumed_run_keeps_its_first_start_and_clears_its_end_and_error(tmp_path) -> None:
    """A resume of a failed run marks it running again, keeps its first start time and config, appends the resume's
    time to "resumed", and clears the end and the error of the try before."""
    out = tmp_path / "r"
    with pytest.raises(RuntimeError), RunDir.open("train", out, "r") as run:
        run.start({"a": 1}, 0)
        raise RuntimeError("boom")
    manifest = json.loads((out / "run.json").read_text())
    manifest["started"] = "2024-01-01T00:00:00+00:00"
    (out / "run.json").write_text(json.dumps(manifest))
    assert (manifest["status"], manifest["error"]) == ("failed", "RuntimeError: boom") and manifest["ended"]
    config = (out / "config.yaml").read_bytes()
    with RunDir.open("train", out, "r", resume=True) as run:
        run.start({"a": 2}, 0)
    resumed = json.loads((out / "run.json").read_text())
    assert (resumed["started"], resumed["status"], resumed["ended"], resumed["error"]) == (
        "2024-01-01T00:00:00+00:00", "running", None, None,
    )  # fmt: skip
    assert len(resumed["resumed"]) == 1 and resumed["resumed"][0] > "2024"
    assert (out / "config.yaml").read_bytes() == config


def test_an_interrupted_run_is_marked_failed_with_what_stopped_it(tmp_path) -> None:
    """Ctrl-C marks the run failed with the error "interrupted"; another error is recorded as its type and message,
    cut at 2000 characters."""
    with pytest.raises(KeyboardInterrupt), RunDir.open("train", tmp_path / "a", "a") as run:
        run.start({}, 0)
        raise KeyboardInterrupt
    manifest = json.loads((tmp_path / "a" / "run.json").read_text())
    assert (manifest["status"], manifest["error"]) == ("failed", "interrupted") and isinstance(manifest["ended"], str)
    long = "x" * 3000
    with pytest.raises(ValueError), RunDir.open("train", tmp_path / "b", "b") as run:
        run.start({}, 0)
        raise ValueError(long)
    manifest = json.loads((tmp_path / "b" / "run.json").read_text())
    assert manifest["error"] == ("ValueError: " + long)[:2000] and len(manifest["error"]) == 2000


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"format": 2}, "run format 2 is newer than this evoray reads (1)"),
        ({"format": True}, "run.json has no run format (format True; this evoray writes 1)"),
        ({"command": "deploy"}, "unknown command 'deploy' in run.json"),
        ({"ended": 17}, "ended 17 in run.json is not a time (ISO 8601 text)"),
        ({"seed": 3.5}, "seed 3.5 in run.json is not a whole number"),
        ({"seed": True}, "seed True in run.json is not a whole number"),
        ({"seed": [1]}, "seed [1] in run.json is not a whole number"),
        ({"result": "x"}, "result 'x' in run.json is not a mapping"),
        ({"progress": [1]}, "progress '[1]' in run.json is not a mapping"),
    ],
)
def test_each_unreadable_manifest_says_what_is_wrong(fields: dict[str, Any], problem: str, tmp_path) -> None:
    path = _hand_run(tmp_path / "run", **fields)
    (run,) = list_runs(tmp_path)
    assert (run.path, run.problem, run.status) == (path, problem, "unreadable")
    with pytest.raises(ConfigError) as err:
        open_run(path)
    assert str(err.value) == f"run {str(path)!r} is unreadable: {problem}"


def test_a_seed_written_as_a_whole_float_or_as_text_reads_as_an_int(tmp_path) -> None:
    for seed, want in ((3.0, 3), ("7", 7), (None, None)):
        run = open_run(_hand_run(tmp_path / f"s-{seed}", seed=seed))
        assert run.seed == want and (want is None or type(run.seed) is int)


def test_a_saved_config_that_is_not_a_mapping_or_not_yaml_is_one_line(tmp_path) -> None:
    path = _hand_run(tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        open_run(path).config()
    assert str(err.value) == f"run {str(path)!r} has no config.yaml"
    (path / "config.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as err:
        open_run(path).config()
    assert str(err.value) == f"{str(path / 'config.yaml')!r} holds no mapping of config keys"
    (path / "config.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        open_run(path).config()
    assert str(err.value) == f"{str(path / 'config.yaml')!r} is not readable YAML (ParserError)"


# -- opening: names, foreign files, locks, --overwrite ----------------------------------------------------------


def test_default_names_count_up_past_every_taken_one(tmp_path) -> None:
    held = []
    for want in ("same", "same-2", "same-3", "same-4"):
        run = RunDir.open("train", None, "same", root=tmp_path)
        run.start({}, 0)
        held.append(run)
        assert run.path == tmp_path / "train" / want
    for run in held:
        run.release()


def test_a_config_beside_other_files_is_not_taken_for_a_run_stopped_before_it_started(tmp_path) -> None:
    """config.yaml with files that are not an atomic write's leftovers is someone else's folder: refused, never moved
    aside, even with --overwrite."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text("a: 1\n")
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="holds files that are not an evoray run"):
            RunDir.open("train", out, "r", overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "notes.txt"]


def test_a_refused_resume_releases_the_directory(tmp_path) -> None:
    """A resume refused for the run's command or its manifest lets go of the lock: the right command resumes it next."""
    out = tmp_path / "r"
    with RunDir.open("train", out, "r") as run:
        run.start({}, 0)
        run.finish({})
    with pytest.raises(ConfigError, match="holds a 'train' run, not an evolve run"):
        RunDir.open("evolve", out, "r", resume=True)
    RunDir.open("train", out, "r", resume=True).release()
    manifest = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ConfigError, match="run format 99 is newer"):
        RunDir.open("train", out, "r", resume=True)
    (out / "run.json").write_text(json.dumps(manifest))
    RunDir.open("train", out, "r", resume=True).release()


def test_overwrites_within_one_second_each_keep_the_run_they_moved_aside(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr("evoray.runs.directory.time", SimpleNamespace(strftime=lambda *_: "20240101-000000"))
    out = tmp_path / "r"
    for k in range(4):
        with RunDir.open("train", out, "r", overwrite=True) as run:
            run.start({"k": k}, 0)
            run.finish({})
    stamp = "r.old-20240101-000000"
    aside = {p.name: open_run(p).config()["k"] for p in tmp_path.iterdir() if p.name != "r"}
    assert aside == {stamp: 0, f"{stamp}-1": 1, f"{stamp}-2": 2} and open_run(out).config() == {"k": 3}


def test_a_resume_without_a_checkpoint_starts_over_only_when_nothing_was_counted(tmp_path) -> None:
    """Progress that counts nothing done (zeros, or only the total "of") lets a resume without a checkpoint start
    over; one counted step refuses it."""
    out = tmp_path / "r"
    with RunDir.open("evolve", out, "r") as run:
        run.start({}, 0)
    manifest = json.loads((out / "run.json").read_text())
    for progress in ({"generation": 0, "of": 5, "evaluations": 0}, {"of": 5}, None):
        (out / "run.json").write_text(json.dumps({**manifest, "progress": progress}))
        with RunDir.open("evolve", out, "r", resume=True) as run:
            run.refuse_lost_checkpoint()
    (out / "run.json").write_text(json.dumps({**manifest, "progress": {"generation": 0, "of": 5, "evaluations": 8}}))
    gone = r"checkpoints/last\.pt is gone but its progress is \{'generation': 0"
    with pytest.raises(ConfigError, match=gone), RunDir.open("evolve", out, "r", resume=True) as run:
        run.refuse_lost_checkpoint()


# -- files: atomic writes, checkpoints -------------------------------------------------------------------------


def test_files_reach_the_disk_under_a_temporary_name_before_they_replace_the_old(tmp_path, monkeypatch) -> None:
    """run.json, config.yaml, checkpoints, archives and curves are each written to a temporary file in the same folder,
    flushed to the disk (fsync), and only then renamed over the old file."""
    import numpy as np
    import torch

    from evoray.runs.archive import individual_row, write_archive
    from evoray.runs.curves import write_curves

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src)))
        events.append(("to", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with RunDir.open("evolve", tmp_path / "r", "r") as run:
        run.start({"a": 1}, 0)
        run.save_checkpoint({"generation": 1}, {"w": torch.zeros(2)})
        row = individual_row(0, 0, [], "init", "g", 1.0, 1.0, {"n": np.zeros(2)})
        write_archive(run.file("archive.parquet"), [row])
        write_curves(run.file("curves.parquet"), [{"generation": 0.0}])
    targets = [b for (a, _), (_, b) in itertools.pairwise(events) if a == "replace"]
    want = ["config.yaml", "run.json", "checkpoints/last.json", "checkpoints/last.pt", "archive.parquet",
            "curves.parquet"]  # fmt: skip
    assert targets[:2] == [str(tmp_path / "r" / name) for name in want[:2]]  # config.yaml first: see is_unstarted
    assert sorted(targets) == sorted(str(tmp_path / "r" / name) for name in want)
    for i, (what, path) in enumerate(events):
        if what == "replace":
            assert events[i - 1] == ("fsync", path), events[i - 1 : i + 2]
            assert Path(path).parent == Path(events[i + 1][1]).parent and Path(path).name.startswith(".")


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


def test_a_tensors_file_that_holds_no_mapping_is_refused(tmp_path) -> None:
    import torch

    from evoray.runs.directory import load_tensors

    path = tmp_path / "weights.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ConfigError) as err:
        load_tensors(path, "supernet weights")
    assert str(err.value) == f"supernet weights {str(path)!r} holds list, not a mapping of tensors"


def test_a_checkpoint_with_tensors_but_no_state_is_refused(tmp_path) -> None:
    """A tensors file written without its state (by hand, or by an older evoray) and no JSON beside it: one line."""
    import torch

    from evoray.runs.directory import load_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "last.pt")
    with pytest.raises(ConfigError) as err:
        load_checkpoint(folder)
    assert str(err.value) == f"checkpoint {str(folder / 'last.json')!r} does not exist beside its tensors file"


# -- the reader: best rows, listing, legacy runs, Tune ----------------------------------------------------------


def _row(generation: int, ident: int, genotype: str, fitness: float | None) -> dict[str, Any]:
    import numpy as np

    from evoray.runs.archive import individual_row

    return individual_row(generation, ident, [], "init", genotype, fitness, 1.0, {"normal": np.zeros((2, 3))})


def test_best_rows_are_the_fittest_distinct_genotypes_of_the_last_generation(tmp_path) -> None:
    """Of the last generation (or all with scope="all"), fittest first, each genotype once, missing and NaN fitness
    last, at most k."""
    from evoray.runs.archive import write_archive

    path = _hand_run(tmp_path / "run", command="evolve")
    rows = [_row(0, 0, "a", 99.0), _row(1, 1, "b", 80.0), _row(1, 2, "c", math.nan), _row(1, 3, "b", 80.0)]
    rows += [_row(1, 4, "d", None), _row(1, 5, "e", 70.0), _row(1, 6, "f", 75.0), _row(1, 7, "e", 60.0)]
    write_archive(path / "archive.parquet", rows)
    run = open_run(path)
    assert [(r["genotype"], r["id"]) for r in run.best_rows(3)] == [("b", 1), ("f", 6), ("e", 5)]
    assert [r["genotype"] for r in run.best_rows(10)] == ["b", "f", "e", "c", "d"]
    assert [r["genotype"] for r in run.best_rows(2, scope="all")] == ["a", "b"]
    assert [r["genotype"] for r in run.best_rows()] == ["b"]


def test_list_runs_walks_to_its_depth_and_lists_newest_first(tmp_path) -> None:
    """Runs under the root to ``depth`` folders down, newest start first, an older evoray's folder listed as unreadable
    (last: it has no start), hidden folders left out."""
    old = _hand_run(tmp_path / "evolve" / "old", started="2024-01-01T00:00:00+00:00")
    new = _hand_run(tmp_path / "search" / "new", started="2025-06-01T00:00:00+00:00")
    deep = _hand_run(tmp_path / "a" / "b" / "c" / "deep", started="2024-06-01T00:00:00+00:00")
    _hand_run(tmp_path / "a" / "b" / "c" / "d" / "deeper", started="2026-01-01T00:00:00+00:00")
    _hand_run(tmp_path / ".trash" / "gone", started="2027-01-01T00:00:00+00:00")
    legacy = tmp_path / "evolve" / "legacy"
    legacy.mkdir()
    (legacy / "best.json").write_text("{}")
    assert [r.path for r in list_runs(tmp_path)] == [new, deep, old, legacy]
    assert [r.path for r in list_runs(tmp_path, depth=3)] == [new, old, legacy]
    assert [r.path for r in list_runs(tmp_path / "search" / "new", depth=0)] == [new]
    (run,) = (r for r in list_runs(tmp_path) if r.path == legacy)
    assert (run.status, run.problem, run.name) == ("unreadable", "written by an older evoray (no run.json)", "legacy")
    with pytest.raises(ConfigError) as err:
        open_run(legacy)
    assert str(err.value) == f"{str(legacy)!r} was written by an older evoray (no run.json); rerun it to read it here"


def test_tune_trial_states_are_read_from_the_newest_experiment_state(tmp_path) -> None:
    """The experiment state Tune's restore reads (the newest name), each trial's entry decoded; one that is not JSON
    is left out."""
    from evoray.runs.reader import tune_trial_states

    def state(status: str) -> str:
        entry = [json.dumps({"trial_id": "t1", "status": status}), json.dumps({"last_result": {"epoch": 2}})]
        return json.dumps({"trial_data": [entry, ["not json", "{}"]]})

    assert tune_trial_states(tmp_path) is None
    (tmp_path / "experiment_state-2024-01-01_00-00-00.json").write_text(state("RUNNING"))
    (tmp_path / "experiment_state-2024-01-02_00-00-00.json").write_text(state("TERMINATED"))
    assert tune_trial_states(tmp_path) == [({"trial_id": "t1", "status": "TERMINATED"}, {"last_result": {"epoch": 2}})]


def test_search_curves_come_from_the_runs_own_tune_folder_first(tmp_path) -> None:
    storage = tmp_path / "storage"
    (storage / "darts-t1").mkdir(parents=True)
    (storage / "darts-t1" / "result.json").write_text('{"epoch": 1}\n')
    run = _hand_run(tmp_path / "run", tune=str(storage))
    (run / "tune" / "gdas-t2").mkdir(parents=True)
    (run / "tune" / "gdas-t2" / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert [(r["trial"], r["epoch"]) for r in open_run(run).curves()] == [("gdas-t2", 1), ("gdas-t2", 2)]


def test_a_trial_that_reports_epochs_again_after_a_restore_counts_each_once(tmp_path) -> None:
    """Tune restores a trial from the checkpoint its experiment state recorded, which may be older than the trial's
    last report: the epochs after it are reported again. The later report of each counts, in epoch order."""
    from evoray.runs.reader import latest_reports

    run = _hand_run(tmp_path / "run")
    (run / "tune" / "darts-t1").mkdir(parents=True)
    reports = [(1, "a"), (2, "b"), (3, "c"), (2, "b2"), (3, "c2"), (4, "d")]
    lines = [json.dumps({"training_iteration": i, "epoch": i, "v": v}) for i, v in reports]
    (run / "tune" / "darts-t1" / "result.json").write_text("\n".join(lines) + "\n")
    assert [(r["epoch"], r["v"]) for r in open_run(run).curves()] == [(1, "a"), (2, "b2"), (3, "c2"), (4, "d")]
    plain = [{"epoch": 1}, {"epoch": 1}]  # no iteration to tell them by: kept as they are
    assert latest_reports(plain) == plain
    read_back: list[dict[str, Any]] = [{"training_iteration": 2.0, "v": 1}, {"training_iteration": 2, "v": 2}]
    assert [r["v"] for r in latest_reports(read_back)] == [2]


# -- archives, curves, TensorBoard -----------------------------------------------------------------------------


def test_archive_rows_read_back_with_their_alphas_shapes_and_lineage(tmp_path) -> None:
    import numpy as np

    from evoray.runs.archive import individual_row, read_archive, row_alphas, write_archive

    alphas = {"normal": np.arange(42, dtype=np.float32).reshape(14, 3), "reduce": np.ones((2, 2, 2), np.float32)}
    row = individual_row(3, 17, [4, 9], "crossover", "g", 91.5, 1.25, alphas, "darts", "ga", None, 5)
    write_archive(tmp_path / "archive.parquet", [row])
    (back,) = read_archive(tmp_path)
    keys = ("generation", "id", "parents", "origin", "fitness", "params_m", "searcher", "seed")
    assert {k: back[k] for k in keys} == {
        "generation": 3, "id": 17, "parents": [4, 9], "origin": "crossover", "fitness": 91.5, "params_m": 1.25,
        "searcher": "ga", "seed": 5,
    }  # fmt: skip
    got = row_alphas(back)
    assert {k: v.shape for k, v in got.items()} == {"normal": (14, 3), "reduce": (2, 2, 2)}
    assert all(np.array_equal(got[k], alphas[k]) for k in alphas)


def test_an_older_archive_reads_and_one_without_fitness_is_refused(tmp_path) -> None:
    """An archive without the searcher, trial and seed columns (an older evoray) reads with them empty; one that lacks a
    required column is one line naming it."""
    import pyarrow.parquet as pq

    from evoray.runs.archive import read_archive, write_archive

    write_archive(tmp_path / "archive.parquet", [_row(0, 0, "a", 1.0), _row(0, 1, "b", 2.0)])
    table = pq.read_table(tmp_path / "archive.parquet").drop(["searcher", "trial", "seed"])
    pq.write_table(table, tmp_path / "old.parquet")
    rows = read_archive(tmp_path / "old.parquet")
    read = [(r["genotype"], r["searcher"], r["trial"], r["seed"]) for r in rows]
    assert read == [("a", None, None, None), ("b", None, None, None)]
    pq.write_table(table.drop(["fitness"]), tmp_path / "bad.parquet")
    with pytest.raises(ConfigError) as err:
        read_archive(tmp_path / "bad.parquet")
    assert str(err.value) == f"population archive {str(tmp_path / 'bad.parquet')!r} lacks columns ['fitness']"


def test_curves_keep_every_key_and_leave_a_missing_one_null(tmp_path) -> None:
    from evoray.runs.curves import read_curves, write_curves

    path = tmp_path / "curves.parquet"
    write_curves(path, [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 0.0, "valid_top1": 40}])
    assert read_curves(path) == [
        {"epoch": 1.0, "train_loss": 2.0, "valid_top1": None},
        {"epoch": 2.0, "train_loss": 0.0, "valid_top1": 40.0},
    ]
    with pytest.raises(ConfigError) as err:
        read_curves(tmp_path / "none.parquet")
    assert str(err.value) == f"curves {str(tmp_path / 'none.parquet')!r} do not exist"


def _event_scalars(run: Path) -> list[tuple[str, float, int]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventFileLoader(str(files[0])).Load()
    return [(v.tag, float(make_ndarray(v.tensor)), e.step) for e in events for v in e.summary.value]


def test_train_scalars_are_written_once_per_write_numbers_only(tmp_path) -> None:
    """A train run's per-epoch curves, then its results at its last epoch; text, bools and non-finite values left
    out; a second write replaces the first (one event file, each scalar once)."""
    from evoray.runs.events import train_scalars, write_scalars

    history = [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": math.nan, "valid_top1": 50}]
    result = {"test_top1": 60.5, "genotype": "DARTS_V2", "faithful": True, "latency_ms": math.inf}
    scalars = train_scalars(history, result)
    assert scalars[0] == ("train/train_loss", 2.0, 1) and scalars[1][::2] == ("train/train_loss", 2)
    assert math.isnan(scalars[1][1]) and scalars[2] == ("train/valid_top1", 50, 2)
    assert scalars[3:] == [
        ("result/test_top1", 60.5, 2), ("result/genotype", "DARTS_V2", 2), ("result/faithful", True, 2),
        ("result/latency_ms", math.inf, 2),
    ]  # fmt: skip
    want = [("train/train_loss", 2.0, 1), ("train/valid_top1", 50.0, 2), ("result/test_top1", 60.5, 2)]
    write_scalars(tmp_path, scalars)
    assert _event_scalars(tmp_path) == want
    (first,) = (tmp_path / "tensorboard").iterdir()
    first.rename(first.with_name("events.out.tfevents.1700000000.host"))  # a try before this one
    write_scalars(tmp_path, scalars)
    assert _event_scalars(tmp_path) == want
