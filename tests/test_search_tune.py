"""``evoray.search`` on Ray Tune: trials, checkpoints, the population archive, evolve seeded from a search, SIGKILL
mid-experiment then ``--resume``, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evoray.commands.search import main, search
from evoray.config import config_from_dict
from evoray.errors import ConfigError
from evoray.evolution.run import initial_alphas
from evoray.nn.supernet import DartsSupernet
from evoray.runs import open_run
from evoray.runs.archive import read_archive, row_alphas
from evoray.searchers.experiment import ExperimentConfig
from evoray.spaces import format_genotype, get_space
from evoray.spaces.derive import derive_genotype, softmax

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE: dict[str, Any] = {
    "epochs": 2,
    "supernet": {"space": "darts", "init_channels": 4, "layers": 3},
    "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 128},
    "arch": {"lr": 3e-3},
}


def _exp(name: str, **extra) -> ExperimentConfig:
    data = {"name": name, "searchers": ["darts", "xnas"], "seeds": [0], "base": TINY_BASE, **extra}
    return config_from_dict(ExperimentConfig, data)


def test_search_trials_checkpoints_and_population(tmp_path, ray_session) -> None:
    exp = _exp(
        "tune-run", scheduler={"kind": "asha", "grace_period": 1}, per_searcher={"darts": {"darts": {"order": 2}}}
    )
    pop = tmp_path / "run"
    result = search(exp, pop, log=lambda _: None)
    trials = result["trials"]
    assert [t["searcher"] for t in trials] == ["darts", "xnas"]
    assert all(t["status"] in ("done", "stopped") and t["genotype"] for t in trials)
    experiment = Path(result["experiment"])
    assert experiment == (pop / "tune").resolve()  # everything the run writes is under its directory
    trial_dirs = [d for d in experiment.iterdir() if d.is_dir() and d.name.startswith(("darts", "xnas"))]
    assert len(trial_dirs) == 2, trial_dirs
    for trial_dir in trial_dirs:
        assert list(trial_dir.glob("checkpoint_*/searcher.pt")), f"{trial_dir} has no checkpoint"
        assert list(trial_dir.glob("events.out.tfevents*")), f"{trial_dir} has no TensorBoard log"
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert {"train_acc", "valid_acc", "genotype", "entropy_normal"} <= set(rows[-1])
    archive = read_archive(pop)
    assert [r["genotype"] for r in archive] == [t["genotype"] for t in trials]
    assert all(r["space"] == "darts" for r in archive)
    assert [(r["searcher"], r["seed"]) for r in archive] == [("darts", 0), ("xnas", 0)]
    assert all(r["trial"] and (experiment / r["trial"]).is_dir() for r in archive)
    run = open_run(pop)
    assert run.command == "search" and run.status == "done" and (pop / "config.yaml").is_file()
    assert {row["trial"] for row in run.curves()} == {r["trial"] for r in archive}
    for row in archive:  # the archived alphas derive the archived genotype (XNAS: before wipe-outs)
        if row["origin"].startswith("search:darts"):
            weights = {ct: softmax(a) for ct, a in row_alphas(row).items()}
            assert format_genotype(derive_genotype(get_space("darts"), weights)) == row["genotype"]
    assert (pop / "valid_curves.png").stat().st_size > 0 and (pop / "summary.json").is_file()
    # an evolve run can start from the search run: its trials' final alphas become individuals
    seeded = initial_alphas(str(pop), get_space("darts"), 4, np.random.default_rng(0))
    assert len(seeded) == 2
    fittest = max(archive, key=lambda r: r["fitness"])
    np.testing.assert_array_equal(seeded[0]["normal"], row_alphas(fittest)["normal"])
    # the seeded alphas fit a supernet of the space; given a DARTS trial's archived alphas, it derives the genotype
    # the trial archived
    net = DartsSupernet(get_space("darts"), C=4, layers=3)
    assert {ct: a.shape for ct, a in seeded[0].items()} == {ct: a.shape for ct, a in net.alphas.items()}
    darts_row = next(r for r in archive if r["origin"].startswith("search:darts"))
    for ct, alpha in row_alphas(darts_row).items():
        net.alphas[ct].data = torch.from_numpy(np.asarray(alpha, dtype=np.float32))
    assert format_genotype(net.genotype()) == darts_row["genotype"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoray.search", *args]


def test_killed_experiment_resumes_every_trial_from_its_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    config = tmp_path / "exp.yaml"
    base = {**TINY_BASE, "epochs": 6, "data": {**TINY_BASE["data"], "limit_train": 256}}
    config.write_text(json.dumps({"name": "killed", "searchers": ["darts"], "seeds": [0, 1], "base": base}))
    env = dict(os.environ)  # Ray's default authentication
    p = subprocess.Popen(
        _cli("--config", str(config), "--out", str(run)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    experiment = run / "tune"
    deadline = time.time() + 300
    trial_dirs: list[Path] = []
    while time.time() < deadline:
        trial_dirs = [d for d in experiment.glob("darts-darts-s*") if d.is_dir()]
        if len(trial_dirs) == 2 and all(list(d.glob("checkpoint_*")) for d in trial_dirs):
            break
        time.sleep(0.1)
    time.sleep(1.5)  # the experiment state is snapshotted every second
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    # checkpoints are written by the trials themselves (Tune's result files are synced from the driver later)
    progress = {d.name: max(int(c.name.split("_")[1]) + 1 for c in d.glob("checkpoint_*")) for d in trial_dirs}
    assert max(progress.values()) < 6, f"killed too late to test resume: {progress}"
    proc = subprocess.run(
        _cli("--resume", str(run), "--json"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [t["epochs"] for t in result["trials"]] == [6, 6]
    assert all(t["status"] == "done" for t in result["trials"])
    for d in trial_dirs:
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        epochs = [r["epoch"] for r in rows]
        resumed = [r["resumed_from"] for r in rows if r["resumed_from"] > 0]
        assert resumed and epochs[-1] == 6, (d.name, epochs)
        assert epochs.count(resumed[0] + 1) >= 1 and epochs[: resumed[0]] == list(range(1, resumed[0] + 1))
    assert len(read_archive(run)) == 2 and open_run(run).status == "done"
    curves: dict[str, list[int]] = {}
    for row in open_run(run).curves():  # an epoch reported again after the restore counts once
        curves.setdefault(row["trial"], []).append(int(row["epoch"]))
    assert sorted(curves.values()) == [list(range(1, 7))] * 2, curves
    # everything the run wrote is in its directory: the working directory holds only the config and the run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "run"]
    for name in ("run.json", "config.yaml", "archive.parquet", "summary.json", "valid_curves.png", "tune"):
        assert (run / name).exists(), name
    assert list((run / "tune").glob("*/events.out.tfevents*")) and list((run / "tune").glob("*/progress.csv"))


def test_ctrl_c_leaves_the_search_interrupted_not_done(tmp_path) -> None:
    """Tune answers SIGINT by ending the experiment early and returning as if it had finished: the run is marked
    interrupted (exit 130), with no summary of trials that did not finish."""
    run = tmp_path / "run"
    config = tmp_path / "exp.yaml"
    base = {**TINY_BASE, "epochs": 12}
    config.write_text(json.dumps({"name": "ctrl-c", "searchers": ["darts"], "seeds": [0], "base": base}))
    p = subprocess.Popen(
        _cli("--config", str(config), "--out", str(run)), cwd=tmp_path, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not list(run.glob("tune/darts-*/checkpoint_*")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    manifest = json.loads((run / "run.json").read_text())
    assert (manifest["status"], manifest["error"]) == ("failed", "interrupted")
    assert not (run / "summary.json").exists() and not (run / "archive.parquet").exists()
    proc = subprocess.run(_cli("--resume", str(run), "--json"), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trials = json.loads(proc.stdout.strip().splitlines()[-1])["trials"]
    assert [(t["status"], t["epochs"]) for t in trials] == [("done", 12)] and open_run(run).status == "done"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "searchers=[darts,enas]"], "unknown searcher 'enas'; valid: darts, gdas, rsps, snas, xnas"),
        (
            ["--set", "searchers=[gdas]", "--set", "base.snas.penalty=reparametrization"],
            "option snas.penalty does not apply to searcher gdas",
        ),
        (
            ["--set", "searchers=[snas]", "--set", "base.supernet.space=nb201"],
            "searcher snas cannot run on space nb201",
        ),
        (["--set", "base.supernet.space=dartz"], "unknown search space 'dartz'"),
        (
            ["--set", "searchers=[snas,darts]", "--set", "base.data.train_portion=1.0"],
            "trial darts seed 0: data.train_portion = 1.0 leaves the alphas of darts no validation half",
        ),
        (["--set", "base.optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["--resume", "/no/such/experiment"], "no evoray run there"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, capsys) -> None:
    assert main([*args] if "--resume" in args else [*args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_a_trial_validated_on_the_test_set_is_archived_without_fitness(tmp_path) -> None:
    """A single-level trial on the whole training set measured its accuracy on the test set: its archive row has no
    fitness, so an ensemble's top_k (or an evolve run seeded from the search) never ranks it by test accuracy."""
    from evoray.ensemble.sources import archive_genotypes
    from evoray.evolution.operators import init_uniform
    from evoray.searchers.results import write_population

    space = get_space("darts")
    rng = np.random.default_rng(0)
    alphas = [init_uniform(space, rng) for _ in range(2)]
    genotypes = [format_genotype(derive_genotype(space, {ct: softmax(a[ct]) for ct in a})) for a in alphas]
    assert genotypes[0] != genotypes[1]
    summary = [
        {"trial": i, "searcher": name, "seed": 0, "genotype": g, "valid_acc": acc, "valid_on": on,
         "params_m": 1.0, "space": "darts", "path": str(tmp_path / f"trial{i}")}
        for i, (name, g, acc, on) in enumerate(zip(("darts", "snas"), genotypes, (50.0, 90.0), ("split", "test")))
    ]  # fmt: skip
    write_population(tmp_path, [{"alphas": a} for a in alphas], summary)
    archive = read_archive(tmp_path)
    assert [r["fitness"] for r in archive] == [50.0, None]
    assert [g for _, g, _ in archive_genotypes(str(tmp_path), 1, "last", "members.archives[0]")] == [genotypes[0]]


def _tune_state(experiment: Path, trial: str, latest: str | None) -> None:
    """An experiment state as Tune writes it: the trial's checkpoint record pickled inside JSON."""
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint, CheckpointConfig
    from ray.tune.utils.serialization import TuneFunctionEncoder

    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    if latest is not None:
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(experiment / trial / latest)), {}))
    runtime = json.dumps({"checkpoint_manager": manager}, cls=TuneFunctionEncoder)
    state = {"trial_data": [[json.dumps({"relative_logdir": trial}), runtime]], "runner_data": {}, "stats": {}}
    (experiment / "experiment_state-2024-01-01_00-00-00.json").write_text(json.dumps(state))


def _trial_checkpoint(folder: Path, torn: bool = False) -> None:
    import torch

    from evoray.distributed.tune import CHECKPOINT_FILE

    folder.mkdir(parents=True)
    torch.save({"epoch": torch.tensor(1)}, folder / CHECKPOINT_FILE)
    if torn:
        data = (folder / CHECKPOINT_FILE).read_bytes()
        (folder / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
    np.savez(folder / "alphas.npz", normal=np.zeros((2, 2)))
    (folder / "genotype.json").write_text('{"epoch": 1}')


def test_resume_checks_the_checkpoint_tune_restores(tmp_path) -> None:
    """A run killed while Tune wrote a checkpoint leaves a partial ``checkpoint_<n>`` folder: the check judges the
    checkpoint Tune's experiment state records (else the newest complete one), skips folders not named
    ``checkpoint_<integer>``, and still refuses a recorded checkpoint that is corrupt, in one line."""
    from evoray.distributed.tune import check_checkpoints
    from evoray.errors import ConfigError

    experiment, trial = tmp_path / "tune", "darts-darts-s0-t1"
    _trial_checkpoint(experiment / trial / "checkpoint_000001")
    (experiment / trial / "checkpoint_000002").mkdir()  # killed while Tune wrote it
    (experiment / trial / "checkpoint_tmp3f2a").mkdir()
    assert check_checkpoints(str(experiment)) == 1  # no experiment state: the newest complete checkpoint
    _tune_state(experiment, trial, "checkpoint_000001")
    assert check_checkpoints(str(experiment)) == 1
    _trial_checkpoint(experiment / trial / "checkpoint_000003", torn=True)  # complete-looking, never recorded
    assert check_checkpoints(str(experiment)) == 1
    _tune_state(experiment, trial, "checkpoint_000003")
    with pytest.raises(ConfigError, match=f"trial {trial}'s checkpoint .*checkpoint_000003.* is corrupt") as err:
        check_checkpoints(str(experiment))
    assert "\n" not in str(err.value)
    _tune_state(experiment, trial, None)  # recorded without a checkpoint: Tune starts the trial afresh
    assert check_checkpoints(str(experiment)) == 0


def test_a_trial_error_without_a_message_is_named_by_its_type(tmp_path) -> None:
    from types import SimpleNamespace

    from evoray.config import config_to_dict
    from evoray.distributed.tune import trial_outcomes
    from evoray.searchers.experiment import expand

    config = {"search": config_to_dict(expand(_exp("errors"))[0])}
    grid = [
        SimpleNamespace(config=config, checkpoint=None, metrics={}, metrics_dataframe=None, error=err, path=tmp_path)
        for err in (RuntimeError(""), RuntimeError("\n"), ValueError("bad value\ntraceback"))
    ]
    assert [o["error"] for o in trial_outcomes(grid)] == ["RuntimeError", "RuntimeError", "ValueError: bad value"]


def test_a_trial_that_failed_before_reporting_is_read_from_its_params(tmp_path) -> None:
    """Tune gives no config for a trial that raised before its first report: its settings come from the
    params.json Tune wrote when the trial started, and a folder without a readable one is a one-line error."""
    from types import SimpleNamespace

    from evoray.distributed.tune import _trial_params

    params = {"search": {"searcher": "darts", "seed": 3}}
    (tmp_path / "params.json").write_text(json.dumps(params))
    assert _trial_params(SimpleNamespace(config=None, path=str(tmp_path))) == params
    assert _trial_params(SimpleNamespace(config={"search": {"seed": 1}}, path="/nowhere")) == {"search": {"seed": 1}}
    (tmp_path / "params.json").write_text("{")
    with pytest.raises(ConfigError, match=r"reported nothing and its params\.json is unreadable"):
        _trial_params(SimpleNamespace(config=None, path=str(tmp_path)))


def test_a_trials_error_is_the_error_it_raised_and_trials_keep_the_grids_order(tmp_path) -> None:
    """Ray wraps a trial's error: its first line names only the actor, in terminal colours. The summary gives the
    trial's own error; and a restored experiment, which may list its trials in another order, is read in the grid's."""
    from types import SimpleNamespace

    from evoray.distributed.tune import _error_line, _trial_order

    class WrappedError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("\x1b[36mray::ResourceTrainable.train()\x1b[39m (pid=1, ip=127.0.0.1)\n  File ...")
            self.cause = cause

    cause = FloatingPointError("hard Gumbel weights stay non-finite (tau 10); the alphas may have diverged\nmore")
    assert _error_line(WrappedError(cause)) == (
        "FloatingPointError: hard Gumbel weights stay non-finite (tau 10); the alphas may have diverged"
    )
    assert _error_line(RuntimeError("\x1b[31mred\x1b[0m text")) == "RuntimeError: red text"
    assert _error_line(ValueError()) == "ValueError"
    names = ["gdas-darts-s0-ab12_00001", "darts-darts-s0-ab12_00000", "xnas-darts-s0-ab12_00010", "x-ab12_00002"]
    results = [SimpleNamespace(path=str(tmp_path / n)) for n in names]
    assert [r.path.rsplit("_", 1)[1] for r in sorted(results, key=_trial_order)] == ["00000", "00001", "00002", "00010"]


def test_read_alphas_refuses_a_damaged_or_pickled_file(tmp_path) -> None:
    from evoray.distributed.tune import read_alphas

    np.savez(tmp_path / "ok.npz", normal=np.ones((2, 3), dtype=np.float32))
    assert read_alphas(tmp_path / "ok.npz")["normal"].shape == (2, 3)
    np.savez(tmp_path / "pickled.npz", normal=np.array([{"a": 1}], dtype=object))
    (tmp_path / "torn.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:50])
    for name in ("pickled.npz", "torn.npz"):
        with pytest.raises(ConfigError, match=rf"{name}' is corrupt or not an alphas file"):
            read_alphas(tmp_path / name)
    with pytest.raises(ConfigError, match=r"has no missing\.npz"):
        read_alphas(tmp_path / "missing.npz")


class _FakeSearcher:
    """The part of a Searcher the trainable drives: an epoch counter, its state, alphas and genotype."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def train_epoch(self) -> dict[str, Any]:
        self.epoch += 1
        return {"epoch": self.epoch, "valid_acc": 50.0}

    def op_distributions(self) -> dict[str, torch.Tensor]:
        return {"normal": torch.tensor([[0.123456, 0.876544]], dtype=torch.float64)}

    def done(self) -> bool:
        return self.epoch >= 5

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": torch.tensor(self.epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    def alphas(self) -> dict[str, np.ndarray]:
        return {"normal": np.full((2, 3), float(self.epoch))}

    def genotype(self) -> str:
        return f"genotype-{self.epoch}"


def test_a_trial_checkpoint_holds_the_searchers_state_alphas_and_genotype_and_resumes_from_its_epoch(tmp_path) -> None:
    """A save writes the searcher's state, its alphas and its genotype; a trial restored from it reports, every epoch
    after, the epoch it resumed from (0 for a trial that started afresh)."""
    from evoray.distributed.tune import CHECKPOINT_FILES, SearchTrainable, read_alphas

    trial = object.__new__(SearchTrainable)
    trial.searcher, trial.resumed_from = _FakeSearcher(), 0  # type: ignore[assignment]
    first = trial.step()
    assert (first["epoch"], first["resumed_from"], first["done"]) == (1, 0, False)
    assert first["ops_normal"] == [[0.1235, 0.8765]]
    trial.step()
    trial.save_checkpoint(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CHECKPOINT_FILES)
    assert json.loads((tmp_path / "genotype.json").read_text()) == {"epoch": 2, "genotype": "genotype-2"}
    np.testing.assert_array_equal(read_alphas(tmp_path / "alphas.npz")["normal"], np.full((2, 3), 2.0))

    restored = object.__new__(SearchTrainable)
    restored.searcher, restored.resumed_from = _FakeSearcher(), 0  # type: ignore[assignment]
    restored.load_checkpoint(str(tmp_path))
    assert restored.resumed_from == 2
    rows = [restored.step() for _ in range(3)]
    assert [(r["epoch"], r["resumed_from"]) for r in rows] == [(3, 2), (4, 2), (5, 2)]
    assert rows[-1]["done"] is True


def test_the_epoch_line_names_the_trial_and_its_wiped_experts_on_the_stream_asked_for(capsys) -> None:
    from types import SimpleNamespace

    from evoray.distributed.tune import EpochLog

    trial = SimpleNamespace(config={"search": {"searcher": "xnas", "seed": 3, "epochs": 5}}, trial_id="ab12_00001")
    result = {"epoch": 2, "train_loss": 1.23456, "train_acc": 40.04, "valid_loss": 2.0, "valid_acc": 35.55}
    EpochLog().on_trial_result(0, [], trial, {**result, "tau": 0.12345, "wiped_normal": 4, "wiped_reduce": 1})
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out == (
        "xnas-s3 [ab12_00001] epoch 2/5: train 1.235/40.0% valid 2.000/35.5% tau 0.123 wiped normal 4, reduce 1\n"
    )
    EpochLog(to_stderr=True).on_trial_result(0, [], trial, {"epoch": 1})
    out = capsys.readouterr()
    assert out.out == "" and out.err == "xnas-s3 [ab12_00001] epoch 1/5: train nan/nan% valid nan/nan%\n"


def test_trial_folders_are_named_by_searcher_space_seed_and_trial_id() -> None:
    from types import SimpleNamespace

    from evoray.distributed.tune import _trial_name

    config = {"search": {"searcher": "gdas", "supernet": {"space": "nb201"}, "seed": 7}}
    assert _trial_name(SimpleNamespace(config=config, trial_id="ab12_00003")) == "gdas-nb201-s7-ab12_00003"


def test_a_local_storage_is_made_absolute_and_a_uri_kept(tmp_path, monkeypatch) -> None:
    from evoray.distributed.tune import storage_uri

    monkeypatch.chdir(tmp_path)
    assert storage_uri("results/tune") == str(tmp_path.resolve() / "results" / "tune")
    assert storage_uri("s3://bucket/exp") == "s3://bucket/exp"


def test_the_tuner_gets_asha_over_the_longest_trial_a_checkpoint_each_epoch_and_the_retries(tmp_path, monkeypatch):
    """The experiment as handed to Tune: ASHA's horizon is the longest trial's epochs, every epoch is checkpointed
    (two kept, one at the end), a failed trial is retried ``max_failures`` times, and each trial runs the torch
    threads of its CPUs."""
    from ray import tune

    from evoray.distributed import tune as tune_mod
    from evoray.searchers.experiment import expand

    exp = _exp(
        "tuner",
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 3},
        per_searcher={"xnas": {"epochs": 5}},
        max_failures=4,
        max_concurrent=1,
        resources={"cpus": 2},
    )
    trials = expand(exp)
    assert sorted(t.epochs for t in trials) == [2, 5]
    made: dict[str, Any] = {}

    def tuner(trainable: Any, **kwargs: Any) -> dict[str, Any]:
        made.update(kwargs)
        return made

    monkeypatch.setattr(tune_mod, "_trainable", lambda exp: "trainable")
    monkeypatch.setattr(tune, "Tuner", tuner)
    monkeypatch.setattr(tune_mod, "fit", lambda t: t)
    lines: list[str] = []
    tune_mod.run_trials(exp, trials, "rel/storage", "name", lines.append, quiet_stdout=True)
    scheduler = made["tune_config"].scheduler
    assert (scheduler._max_t, scheduler._reduction_factor) == (5, 3)
    assert made["tune_config"].max_concurrent_trials == 1 and made["tune_config"].metric == "valid_acc"
    assert made["param_space"]["threads"] == 2
    run = made["run_config"]
    assert run.name == "name" and Path(run.storage_path).is_absolute()
    assert run.failure_config.max_failures == 4
    checkpoints = run.checkpoint_config
    assert (checkpoints.checkpoint_frequency, checkpoints.num_to_keep, checkpoints.checkpoint_at_end) == (1, 2, True)
    assert [type(c).__name__ for c in run.callbacks] == ["EpochLog"] and run.callbacks[0].to_stderr
    assert lines[0].startswith("search: 2 trials (")


def test_a_ctrl_c_that_tune_caught_is_raised_after_the_experiment_returns(monkeypatch) -> None:
    """Tune's SIGINT handler puts back the handler it found when it fires: the experiment then returns as if
    finished, and ``fit`` raises ``KeyboardInterrupt``. An experiment that ends without one returns its results;
    either way the process's own handler is back in place."""
    import signal

    from evoray.distributed.tune import fit

    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    original = signal.getsignal(signal.SIGINT)

    class Tuner:
        def __init__(self, fired: bool) -> None:
            self.fired = fired

        def fit(self) -> str:
            found = signal.signal(signal.SIGINT, lambda s, f: None)  # Tune's handler
            if self.fired:
                signal.signal(signal.SIGINT, found)
            return "grid"

    assert fit(Tuner(fired=False)) == "grid"
    assert signal.getsignal(signal.SIGINT) is original
    with pytest.raises(KeyboardInterrupt, match="--resume"):
        fit(Tuner(fired=True))
    assert signal.getsignal(signal.SIGINT) is original


def test_the_newest_complete_checkpoint_is_the_highest_number_holding_every_file(tmp_path) -> None:
    from evoray.distributed.tune import _newest_complete

    trial = tmp_path / "trial"
    for n in (2, 9, 10):
        _trial_checkpoint(trial / f"checkpoint_{n:06d}")
    (trial / "checkpoint_000012").mkdir()
    (trial / "checkpoint_000011").mkdir()
    (trial / "checkpoint_000011" / "searcher.pt").write_bytes(b"")  # the first file a save writes, alone
    (trial / "checkpoint_latest").mkdir()
    assert _newest_complete(trial) == trial / "checkpoint_000010"
    assert _newest_complete(tmp_path / "empty") is None


def test_a_recorded_checkpoint_not_named_checkpoint_n_is_judged_by_the_trials_folders(tmp_path) -> None:
    from evoray.distributed.tune import check_checkpoints

    experiment, trial = tmp_path / "tune", "darts-darts-s0-t1"
    _trial_checkpoint(experiment / trial / "checkpoint_000001")
    _tune_state(experiment, trial, "elsewhere")
    assert check_checkpoints(str(experiment)) == 1


def test_the_newest_experiment_state_is_the_one_checked(tmp_path) -> None:
    """Of several experiment states the newest (by name, as Tune restores) is read; one whose trial carries no
    evoray search settings, or a tuner.pkl that is not a pickle, is a one-line error naming the file."""
    from evoray.distributed.tune import _unreadable, check_experiment

    def state(name: str, config: dict[str, Any]) -> None:
        entry = [json.dumps({"config": config}), json.dumps({})]
        (tmp_path / f"experiment_state-{name}.json").write_text(json.dumps({"trial_data": [entry]}))

    state("2024-01-01_00-00-00", {"search": {}})
    state("2024-01-02_00-00-00", {"other": {}})
    with pytest.raises(ConfigError, match=r"experiment_state-2024-01-02_.* \(a trial without evoray's search settings"):
        check_experiment(str(tmp_path))
    (tmp_path / "experiment_state-2024-01-01_00-00-00.json").write_text("{")
    state("2024-01-03_00-00-00", {"search": {"seed": 0}})
    check_experiment(str(tmp_path))
    (tmp_path / "tuner.pkl").write_bytes(b"not a pickle\nsecond line")
    with pytest.raises(ConfigError, match=r"^Tune's tuner\.pkl in .* cannot be read \([^\n]*\): the experiment") as err:
        check_experiment(str(tmp_path))
    assert "\n" not in str(err.value)
    message = str(_unreadable(tmp_path / "tuner.pkl", ValueError("y" * 200 + "\nsecond line")))
    assert f"({'y' * 160}): the experiment" in message and "second" not in message


class _Slotted:
    __slots__ = ("__dict__", "a")


def test_a_pickled_object_with_slots_is_read_inert_with_its_state() -> None:
    import io
    import pickle

    from evoray.distributed.tune import _InertUnpickler

    obj = _Slotted()
    obj.a, obj.b = 1, 2  # type: ignore[attr-defined]
    inert = _InertUnpickler(io.BytesIO(pickle.dumps(obj))).load()
    assert type(inert).__name__ == "_Inert" and (inert.a, inert.b) == (1, 2)


def test_trials_without_a_grid_index_come_last_and_params_without_search_settings_are_refused(tmp_path) -> None:
    from types import SimpleNamespace

    from evoray.distributed.tune import _error_line, _trial_order, _trial_params

    results = [SimpleNamespace(path=str(tmp_path / n)) for n in ("b-custom", "a-ab12_00001", "a-custom")]
    assert [Path(r.path).name for r in sorted(results, key=_trial_order)] == ["a-ab12_00001", "a-custom", "b-custom"]
    (tmp_path / "params.json").write_text(json.dumps({"threads": 1}))
    with pytest.raises(ConfigError, match=r"params\.json names no search settings"):
        _trial_params(SimpleNamespace(config=None, path=str(tmp_path)))
    assert _error_line(ValueError("x" * 400)) == "ValueError: " + "x" * 288
