"""Committee runs on tiny members (digits, C=4, 2 cells, 1 epoch): outputs, reproducibility in a fresh process, Ray
tasks equal to in-process members, checkpoint and supernet members, one-line errors for bad input."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evoray.commands.ensemble import ensemble, main
from evoray.commands.evolve import evolve
from evoray.config import load_config
from evoray.distributed.members import run_members_on_ray
from evoray.ensemble.committees import LogitPool
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.predict import MemberLogits
from evoray.ensemble.runner import plan, run_ensemble
from evoray.errors import ConfigError
from evoray.evolution.config import EvolveConfig
from evoray.runs import RunDir, individual_row, write_archive
from evoray.runtime import torch_threads
from evoray.spaces.published import published_genotype

ROOT = Path(__file__).resolve().parents[1]
COMMITTEES = (
    "[{combiner: logit_sum, size: 2}, {combiner: prob_mean}, {combiner: vote}, {combiner: caruana, size: 3},"
    " {combiner: forward_select, size: 2}]"
)
TINY = [
    "data.limit_train=240",
    "data.batch_size=32",
    "members.published=[DARTS_V2,GDAS_V1]",
    "members.latest_run=false",
    "members.latest_supernet=false",
    "train.model.init_channels=4",
    "train.model.layers=2",
    "train.model.auxiliary=false",
    "train.optim.epochs=1",
    "shift.severities=[1,3]",
    "executor=local",
    f"committees={COMMITTEES}",
]
QUIET = lambda _: None  # noqa: E731


def tiny(*extra: str) -> EnsembleConfig:
    return load_config(EnsembleConfig, ROOT / "ensembles/default.yaml", [*TINY, *extra])


def _sets(*extra: str) -> list[str]:
    return [arg for s in [*TINY, *extra] for arg in ("--set", s)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ens") / "run"
    return out, ensemble(tiny(), out, spec_name="tiny", log=QUIET)


def test_run_writes_every_result(tiny_run) -> None:
    out, summary = tiny_run
    outputs = ("config.yaml", "run.json", "logits.npz", "report.json", "report.md", "size_curve.png", "reliability.png")
    for name in outputs:
        assert (out / name).is_file(), name
    assert (out / "shift.png").is_file()
    for member in ("DARTS_V2", "GDAS_V1"):
        for name in ("config.yaml", "weights.pt", "member.json", "history.json", "logits.npz"):
            assert (out / "members" / member / name).is_file()
    assert load_config(EnsembleConfig, out / "config.yaml") == tiny()
    pool = LogitPool.load(out / "logits.npz")
    assert pool.names == ["DARTS_V2", "GDAS_V1"]
    assert pool.valid.shape == (2, 48, 10) and pool.test.shape == (2, 359, 10)
    assert sorted(pool.shifted) == [f"{c}-{s}" for c in ("contrast", "gaussian_blur", "gaussian_noise") for s in (1, 3)]
    report = json.loads((out / "report.json").read_text())
    assert [c["name"] for c in report["committees"]] == ["logit_sum", "prob_mean", "vote", "caruana", "forward_select"]
    for c in report["committees"]:
        assert set(c["test"]) >= {"accuracy", "nll", "ece", "oracle_nll", "disagreement", "disagreement_committee"}
        assert len(c["shift"]) == 6 and len(c["curve"]) == c["size"]
        assert sum(c["members"].values()) == pytest.approx(1.0)
    assert [c["name"] for c in summary["committees"]] == [c["name"] for c in report["committees"]]
    member = report["members"][0]
    assert member["valid_overlap"] == 0.0 and member["test"]["accuracy"] > 10.0
    text = (out / "report.md").read_text()
    assert "## Committees (test set)" in text and "What the committee buys" in text


def test_results_are_never_overwritten(tiny_run) -> None:
    out, _ = tiny_run
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        ensemble(tiny(), out, spec_name="tiny", log=QUIET)


def test_cli_in_a_fresh_process_reproduces_the_logits_and_the_report(tiny_run, tmp_path) -> None:
    out, _ = tiny_run
    proc = subprocess.run(
        [sys.executable, "-m", "evoray.ensemble", "--json", "--out", str(tmp_path / "again"), *_sets()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {c["name"] for c in line["committees"]} == {"logit_sum", "prob_mean", "vote", "caruana", "forward_select"}
    assert set(line["committees"][0]) >= {"members", "test", "valid", "shift_mean"}
    a, b = LogitPool.load(out / "logits.npz"), LogitPool.load(tmp_path / "again" / "logits.npz")
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.test, b.test)
    assert all(np.array_equal(a.shifted[k], b.shifted[k]) for k in a.shifted)
    report_a = json.loads((out / "report.json").read_text())
    report_b = json.loads((tmp_path / "again" / "report.json").read_text())
    report_a.pop("name"), report_b.pop("name")
    assert report_a == report_b


def test_ray_tasks_give_the_logits_of_in_process_members(tiny_run, ray_session) -> None:
    out, _ = tiny_run
    cfg = tiny("executor=ray")
    _, pool, _ = plan(cfg, QUIET)
    results = run_members_on_ray(cfg, pool, QUIET)
    local = LogitPool.load(out / "logits.npz")
    assert [r.name for r in results] == local.names
    for i, r in enumerate(results):
        assert np.array_equal(r.valid, local.valid[i]) and np.array_equal(r.test, local.test[i])
        assert r.info["device"] == "cpu" and r.info["log"]


def test_a_saved_member_serves_as_a_checkpoint_member_with_the_same_logits(tiny_run, tmp_path) -> None:
    out, _ = tiny_run
    cfg = tiny(
        "members.published=[]",
        f"members.checkpoints=[{out / 'members' / 'DARTS_V2'}]",
        "committees=[{combiner: prob_mean}]",
    )
    ensemble(cfg, tmp_path / "ckpt", log=QUIET)
    again, first = LogitPool.load(tmp_path / "ckpt" / "logits.npz"), LogitPool.load(out / "logits.npz")
    assert again.names == ["DARTS_V2"]
    assert np.allclose(again.test[0], first.test[0], atol=1e-5)
    report = json.loads((tmp_path / "ckpt" / "report.json").read_text())
    assert report["members"][0]["kind"] == "checkpoint" and report["members"][0]["valid_overlap"] == 0.0


def test_supernet_committee_of_an_evolve_run(tmp_path) -> None:
    evolve_cfg = load_config(
        EvolveConfig,
        ROOT / "configs/evolve-default.yaml",
        [
            "evolution.population=2",
            "evolution.generations=1",
            "evolution.tournament=2",
            "supernet.init_channels=4",
            "supernet.layers=3",
            "data.limit_train=240",
            "data.batch_size=32",
            "distributed.num_actors=0",
        ],
    )
    with torch_threads(1):  # as the members: one thread each
        evolve(evolve_cfg, tmp_path / "runs" / "evo", log=QUIET)
    cfg = tiny(
        "members.published=[DARTS_V2]",
        f"members.runs_dir={tmp_path / 'runs'}",
        "members.latest_run=true",
        "members.top_k=1",
        "members.latest_supernet=true",
        "committees=[{combiner: logit_sum}]",
        "shift.corruptions=[]",
    )
    summary = ensemble(cfg, tmp_path / "ens", log=QUIET)
    report = json.loads((tmp_path / "ens" / "report.json").read_text())
    kinds = {m["name"]: m["kind"] for m in report["members"]}
    assert kinds["supernet-evo"] == "supernet" and kinds["DARTS_V2"] == "genotype"
    assert [k for k in kinds if k.startswith("evo-g0-i")]  # the run's best genotype, trained from scratch
    supernet = next(m for m in report["members"] if m["kind"] == "supernet")
    # evolve split (portion 0.5, seed 0) and this one (0.8, seed 0) share the permutation: no validation overlap
    assert supernet["valid_overlap"] == 0.0 and supernet["test"]["accuracy"] > 10.0
    assert summary["committees"][0]["size"] == 3 and not (tmp_path / "ens" / "shift.png").exists()


def _error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_line(capsys, tmp_path) -> None:
    out = str(tmp_path / "x")
    err = _error(capsys, "--out", out, *_sets("members.archives=[populations/no-such-run]"))
    assert "members.archives[0]" in err and "does not exist" in err
    err = _error(capsys, "--out", out, *_sets("committees=[{combiner: prob_mean, size: 3}]"))
    assert "committee size 3 exceeds the member pool of 2" in err
    err = _error(capsys, "--out", out, *_sets("committees=[{combiner: median}]"))
    assert "unknown combiner 'median'" in err
    err = _error(capsys, "--out", out, *_sets("members.published=[DARTS_V3]"))
    assert "unknown published genotype 'DARTS_V3'" in err
    err = _error(capsys, "--out", out, *_sets("data.train_portion=1.0"))
    assert "data.train_portion = 1.0 leaves the committees' selection no validation half" in err
    assert not (tmp_path / "x").exists()  # nothing is written before the input is known to be good


def test_a_member_whose_training_diverges_is_named_in_one_line(capsys, tmp_path) -> None:
    sets = ("members.published=[DARTS_V2]", "train.optim.lr=1e9", "train.optim.grad_clip=0", "shift.corruptions=[]")
    err = _error(capsys, "--out", str(tmp_path / "x"), *_sets(*sets, "committees=[{combiner: prob_mean}]"))
    assert err.startswith("error: member DARTS_V2: training diverged: the loss became nan"), err
    assert err.endswith("(train.optim in the committee config)"), err


def test_members_with_another_class_count_are_rejected(capsys, tiny_run, tmp_path) -> None:
    out, _ = tiny_run
    err = _error(
        capsys,
        "--out",
        str(tmp_path / "y"),
        *_sets(
            "data.dataset=npz",
            f"data.root={_three_class_npz(tmp_path)}",
            "data.limit_train=0",
            f"members.checkpoints=[{out / 'members' / 'DARTS_V2'}]",
        ),
    )
    assert "has 10 classes but the ensemble's data (npz) has 3" in err


def _three_class_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "three.npz"
    np.savez(path, images=rng.integers(0, 255, (60, 8, 8, 1), dtype=np.uint8), labels=np.arange(60) % 3)
    return path


def test_killed_committee_run_resumes_without_training_a_member_twice(tmp_path) -> None:
    out = tmp_path / "ens"
    sets = _sets("members.published=[DARTS_V2,GDAS_V1,EvNAS_A]", "train.optim.epochs=2", "shift.corruptions=[]")
    first_log = tmp_path / "first.log"
    with first_log.open("w") as log:
        p = subprocess.Popen(
            [sys.executable, "-m", "evoray.ensemble", "--out", str(out), *sets], cwd=ROOT, stdout=log, stderr=log
        )
        deadline = time.time() + 300
        while time.time() < deadline and not list(out.glob("members/*/logits.npz")):
            assert p.poll() is None, first_log.read_text()[-2000:]
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finished = {d.parent.name for d in out.glob("members/*/logits.npz")}
    assert 1 <= len(finished) < 3, "killed too late to test resume"
    proc = subprocess.run(
        [sys.executable, "-m", "evoray.ensemble", "--resume", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = first_log.read_text().splitlines() + proc.stdout.splitlines()
    trained = [line.split(":")[0] for line in lines if ": validation top1 " in line]  # a member's training ended
    assert sorted(trained) == ["DARTS_V2", "EvNAS_A", "GDAS_V1"], trained  # each exactly once, over both attempts
    assert all(f"member {n}: done in an earlier attempt, reused" in proc.stdout for n in finished)
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["members"]] == ["DARTS_V2", "GDAS_V1", "EvNAS_A"]


def _finished_search_run(path: Path, started: str, genotype: str) -> None:
    """A finished run directory written by hand: a manifest and a one-row archive."""
    path.mkdir(parents=True)
    manifest = {"format": 1, "command": "search", "name": path.name, "status": "done", "started": started}
    (path / "run.json").write_text(json.dumps(manifest))
    write_archive(path / "archive.parquet", [individual_row(0, 0, [], "init", genotype, 90.0, None, {}, "darts")])


def test_a_resume_draws_members_from_the_run_picked_at_the_first_start(tmp_path) -> None:
    """members.latest_run is resolved once: a run that finishes between two attempts does not replace the members
    the first attempt trained (made-up logits stand in for training)."""
    runs = tmp_path / "runs"
    _finished_search_run(runs / "search" / "first", "2024-01-01T00:00:00", str(published_genotype("DARTS_V2")))
    cfg = tiny(
        "members.published=[]",
        "members.latest_run=true",
        f"members.runs_dir={runs}",
        "committees=[{combiner: prob_mean}]",
        "shift.corruptions=[]",
    )
    asked: list[str] = []

    def executor(cfg, specs, log, on_result, fail: bool = False) -> list[MemberLogits]:
        out = []
        for i, spec in enumerate(specs):
            asked.append(spec.name)
            logits = np.random.default_rng(i).normal(size=(4, 10)).astype(np.float32)
            labels = np.arange(4)
            info = {"kind": spec.kind, "genotype": spec.genotype, "origin": spec.origin}
            out.append(MemberLogits(spec.name, logits, labels, logits, labels, {}, info))
            on_result(i, out[-1])
        if fail:
            raise RuntimeError("killed")
        return out

    out = tmp_path / "ens"
    with pytest.raises(RuntimeError, match="killed"), RunDir.open("ensemble", out, "ens") as run:
        run_ensemble(cfg, run, functools.partial(executor, fail=True), QUIET)
    assert asked == ["first-g0-i0"]
    _finished_search_run(runs / "search" / "newer", "2024-01-02T00:00:00", str(published_genotype("GDAS_V1")))
    lines: list[str] = []
    with RunDir.open("ensemble", out, "ens", resume=True) as run:
        run_ensemble(cfg, run, executor, lines.append)
    assert asked == ["first-g0-i0"]  # nothing trained again, nothing new trained
    assert any("members.latest_run:" in line and "first" in line and "first start" in line for line in lines), lines
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["members"]] == ["first-g0-i0"]
    shutil.rmtree(runs / "search" / "first")
    gone = r"members\.latest_run: the run .* is gone"
    with pytest.raises(ConfigError, match=gone), RunDir.open("ensemble", out, "ens", resume=True) as run:
        run_ensemble(cfg, run, executor, QUIET)


def test_the_run_picks_committees_by_validation_logits_never_by_test_logits(tmp_path) -> None:
    """Through the whole run: member m1 is the best on the validation split, m0 on the test split; every committee
    of one member (each combiner) takes m1, so does the report's headline best member, and the test split shows only
    where the report says so (the best member on test: m0). Made-up logits stand in for training."""
    labels = np.arange(8) % 10
    right = np.eye(10, dtype=np.float32)[labels] * 5.0  # confident and correct
    wrong = np.roll(right, 1, axis=1)  # confident and wrong

    def executor(cfg, specs, log, on_result) -> list[MemberLogits]:
        out = []
        for i, spec in enumerate(specs):
            valid = right if i == 1 else wrong
            test = right if i == 0 else wrong
            info = {"kind": spec.kind, "genotype": spec.genotype, "origin": spec.origin}
            out.append(MemberLogits(spec.name, valid, labels, test, labels, {}, info))
            on_result(i, out[-1])
        return out

    combiners = ["logit_sum", "prob_mean", "vote", "caruana", "forward_select"]
    cfg = tiny(
        "members.published=[DARTS_V2,GDAS_V1,EvNAS_A]",
        "committees=[" + ",".join(f"{{combiner: {c}, size: 1}}" for c in combiners) + "]",
        "shift.corruptions=[]",
    )
    with RunDir.open("ensemble", tmp_path / "ens", "ens") as run:
        run_ensemble(cfg, run, executor, QUIET)
    report = json.loads((tmp_path / "ens" / "report.json").read_text())
    names = [m["name"] for m in report["members"]]
    assert len(names) == 3
    assert [c["picks"] for c in report["committees"]] == [[names[1]]] * len(combiners)
    assert report["summary"]["best_member"]["name"] == names[1]
    assert report["summary"]["best_member_on_test"]["name"] == names[0]


def test_a_members_config_error_on_ray_names_the_member_once(monkeypatch) -> None:
    """A ConfigError raised inside a member's Ray task comes back as one ConfigError that names the member, once."""
    from types import SimpleNamespace

    import ray

    from evoray.distributed import members

    def failing(cause: BaseException) -> Any:
        def get(ref: Any) -> Any:
            raise ray.exceptions.RayTaskError("_member_task", "", cause)

        return get

    member: Any = SimpleNamespace(name="darts-3")
    for cause, want in [
        (ConfigError("training diverged"), "member darts-3: training diverged"),
        (ConfigError("member darts-3: training diverged"), "member darts-3: training diverged"),
    ]:
        monkeypatch.setattr(members.ray, "get", failing(cause))
        with pytest.raises(ConfigError) as err:
            members._get(object(), member)
        assert str(err.value) == want
    monkeypatch.setattr(members.ray, "get", failing(ValueError("a bug")))
    with pytest.raises(ray.exceptions.RayTaskError):
        members._get(object(), member)
