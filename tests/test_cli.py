"""The command line shared by every command: the ``evoray`` dispatcher, exit statuses, ``--json`` keeping stdout to
one object, ``--overwrite``, default run folders, and a resume's refusal of a changed config."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from evoray.cli import run_command
from evoray.commands import console
from evoray.commands import evolve as evolve_cmd
from evoray.commands import train as train_cmd
from tests.test_bad_input import TRAIN_TINY, darts, sets
from tests.test_evolve import TINY


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A finished tiny train run."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert train_cmd.main(["--out", str(out), *sets(*TRAIN_TINY)]) == 0
    return out


def test_evoray_without_a_command_prints_the_usage_and_exits_2(capsys) -> None:
    assert console.main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: evoray COMMAND") and all(f"  {name} " in out for name in console.COMMANDS)
    assert console.main(["--help"]) == 0
    assert capsys.readouterr().out == out


def test_evoray_with_an_unknown_command_is_one_line_and_exit_2(capsys) -> None:
    assert console.main(["evolv", "--json"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown command 'evolv'; valid: evolve, search, train, ensemble, dashboard\n"


def test_evoray_hands_the_arguments_after_the_command_to_it(capsys) -> None:
    assert console.main(["train", "--genotype", " "]) == 2
    err = capsys.readouterr().err
    assert err == "error: --genotype is empty; give a published name, a .json file or a genotype string\n"


def test_an_interrupted_command_exits_130_with_one_line() -> None:
    def body(argv) -> int:
        raise KeyboardInterrupt

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_command(body, []) == 130
    assert err.getvalue() == "interrupted\n"


def test_a_resume_that_would_change_many_keys_names_five_dotted_keys(train_run: Path, capsys) -> None:
    before = (train_run / "run.json").read_bytes()
    changes = ["seed=9", "optim.lr=0.5", "optim.momentum=0.5", "model.drop_path_prob=0.25", "data.batch_size=7"]
    assert train_cmd.main(["--resume", str(train_run), *sets(*changes[:1])]) == 2
    assert capsys.readouterr().err == (
        "error: --resume continues a run with its saved config; --config/--set would change seed\n"
    )
    assert train_cmd.main(["--resume", str(train_run), *sets(*changes)]) == 2
    assert capsys.readouterr().err == (
        "error: --resume continues a run with its saved config; --config/--set would change data.batch_size, "
        "model.drop_path_prob, optim.lr, optim.momentum, seed\n"
    )
    assert train_cmd.main(["--resume", str(train_run), *sets(*changes, "optim.weight_decay=0.5")]) == 2
    assert capsys.readouterr().err.endswith(
        "would change data.batch_size, model.drop_path_prob, optim.lr, optim.momentum, optim.weight_decay ...\n"
    )
    assert (train_run / "run.json").read_bytes() == before


def test_a_resume_compares_a_config_given_by_name_or_path_even_the_default(
    train_run: Path, tmp_path: Path, capsys
) -> None:
    """The run was started from the default config changed by --set: a --config naming that default, by its name or
    its path, would change those keys; it is compared, not taken for no --config at all. Given with the same --set,
    it repeats the run's config and is accepted."""
    import shutil

    from evoray.cli import default_config_path

    before = (train_run / "run.json").read_bytes()
    for config in ("train-default", default_config_path("train-default.yaml")):
        assert train_cmd.main(["--resume", str(train_run), "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --resume continues a run with its saved config; --config/--set would change")
        assert "data.limit_train" in err, err
    assert (train_run / "run.json").read_bytes() == before
    copy = tmp_path / "run"
    shutil.copytree(train_run, copy)
    assert train_cmd.main(["--resume", str(copy), "--config", "train-default", *sets(*TRAIN_TINY)]) == 0


def test_a_train_resume_refuses_profile(train_run: Path, capsys) -> None:
    assert train_cmd.main(["--resume", str(train_run), "--profile"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --resume continues a run as it was started; --genotype and --profile do not apply\n"


def test_a_profile_with_out_writes_its_result_to_profile_json(tmp_path, capsys) -> None:
    out = tmp_path / "p"
    assert train_cmd.main(["--profile", "--json", "--out", str(out), *sets(*TRAIN_TINY)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # --json: progress goes to stderr
    result = json.loads(lines[0])
    assert json.loads((out / "profile.json").read_text()) == result and result["params_m"] > 0


def test_a_train_run_without_out_goes_under_runs_train_named_by_genotype_and_seed(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.json").write_text(json.dumps({"genotype": darts()}))
    assert train_cmd.main(["--genotype", "DARTS_V1", *sets(*TRAIN_TINY, "seed=4")]) == 0
    assert train_cmd.main(["--genotype", "g/a.json", *sets(*TRAIN_TINY)]) == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "train").iterdir())
    assert [n.rsplit("-", 2)[0] for n in names] == ["DARTS_V1-s4", "genotype-s0"], names


def test_evolve_json_keeps_notes_off_stdout_and_overwrite_moves_the_run_aside(tmp_path, capsys) -> None:
    out = tmp_path / "e"
    args = ["--out", str(out), "--json", *sets(*TINY, "evolution.generations=1", "evolution.sample_size=3")]
    assert evolve_cmd.main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == json.loads((out / "best.json").read_text())
    assert "note: evolution.sample_size=3 is read by strategy" in captured.err
    first = (out / "best.json").read_bytes()
    assert evolve_cmd.main([*args, "--set", "seed=1", "--overwrite"]) == 0
    (aside,) = tmp_path.glob("e.old-*")
    assert (aside / "best.json").read_bytes() == first
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_an_ensemble_without_out_is_named_by_its_spec_file_and_takes_the_address(tmp_path, monkeypatch, capsys) -> None:
    from evoray.commands import ensemble as ensemble_cmd
    from tests.test_ensemble_run import TINY as ENSEMBLE_TINY

    seen = []

    def measured(cfg, run, executor, log) -> dict:
        seen.append((cfg.resources.address, run.path))
        return {"committees": 0}

    monkeypatch.setattr(ensemble_cmd, "run_ensemble", measured)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("data: {dataset: digits, cutout: 0}\n")
    args = ["--config", "mine.yaml", "--address", "auto", "--json", *sets(*ENSEMBLE_TINY)]
    assert ensemble_cmd.main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == '{"committees": 0}'
    ((address, path),) = seen
    assert address == "auto"
    assert path.parent == Path("runs/ensemble") and path.name.startswith("mine-2"), path


def test_a_shipped_config_is_named_with_or_without_yaml_but_a_path_is_taken_as_given(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    profiles = []
    for name in ("train-default", "train-default.yaml"):
        assert train_cmd.main(["--profile", "--json", "--config", name, *sets(*TRAIN_TINY)]) == 0
        profiles.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["params_m"])
    assert profiles[0] == profiles[1]
    assert train_cmd.main(["--profile", "--config", "sub/train-default.yaml"]) == 2
    assert capsys.readouterr().err.startswith("error: config file not found: sub/train-default.yaml; valid: ")
