"""``python -m evoray.train``: profile output, a short real training run, reproducibility and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evoray.commands.train import main, train
from evoray.config import load_config
from evoray.errors import ConfigError
from evoray.training import TrainConfig, train_genotype

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evoray.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_profile_json_reports_darts_v2_params() -> None:
    proc = _run(
        "--config",
        "darts-cifar10",  # a shipped config, by name
        "--genotype",
        "DARTS_V2",
        "--profile",
        "--json",
        "--set",
        "profile.repeats=2",
        "--set",
        "profile.warmup=1",
        "--set",
        "seed=3",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert round(result["params_m"], 3) == 3.349
    assert 500 < result["flops_m"] < 560  # DARTS reports 528M multiply-adds on 32x32 inputs
    assert result["latency_ms"] > 0


def test_short_training_run_learns_digits(tmp_path) -> None:
    cfg = load_config(
        TrainConfig,
        ROOT / "configs/train-default.yaml",
        ["optim.epochs=3", "model.init_channels=8", "profile.repeats=2", "profile.warmup=1"],
    )
    result = train(cfg, tmp_path, log=lambda _: None)
    assert result["test_top1"] > 60.0  # chance is 10%
    for name in ("results.json", "config.yaml", "weights.pt", "history.json", "run.json", "curves.parquet"):
        assert (tmp_path / name).is_file()
    saved = load_config(TrainConfig, tmp_path / "config.yaml")
    assert saved == cfg
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"


def test_same_seed_same_result_in_fresh_processes(tmp_path) -> None:
    args = (
        "--json",
        "--set",
        "optim.epochs=1",
        "--set",
        "model.init_channels=4",
        "--set",
        "model.layers=3",
        "--set",
        "profile.repeats=1",
        "--set",
        "profile.warmup=0",
        "--set",
        "seed=7",
    )
    runs = [json.loads(_run(*args, cwd=tmp_path).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert len(list((tmp_path / "runs" / "train").iterdir())) == 2  # each run in runs/train/<name> by default
    assert runs[0]["test_loss"] == runs[1]["test_loss"]
    assert runs[0]["test_top1"] == runs[1]["test_top1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [  # what was wrong, then what is valid
        (["--set", "optim.lrr=0.1"], r"unknown config key 'optim\.lrr' .*; valid keys under optim: .*\blr\b"),
        (["--set", "data.dataset=mnist"], r"'data\.dataset' = 'mnist' is not one of digits, cifar10"),
        (["--set", "runtime.precision=fp8"], r"'runtime\.precision' = 'fp8' is not one of fp32, bf16, fp16"),
        (["--genotype", "Genotype(normal=[('sep_conv_3x3', 0)"], r"malformed genotype .*not a Genotype\(name="),
        (["--genotype", "NOT_A_NAME"], r"unknown published genotype 'NOT_A_NAME'; valid: DARTS_V1, DARTS_V2"),
        (
            ["--genotype", "|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
            r"op 'nor_conv_9x9' is not allowed .*; valid: none, skip_connect, nor_conv_1x1",
        ),
        (
            ["--config", "darts-cifar10", "--set", "data.root=/no/such/dir"],
            r"not found under '/no/such/dir' .*set data\.root to its directory",
        ),
        (["--config", "/no/such/config.yaml"], r"/no/such/config\.yaml; valid: .*shipped config: darts-cifar10"),
    ],
)
def test_bad_input_is_one_line_error(args: list[str], message: str, capsys, tmp_path, monkeypatch) -> None:
    """Each names what was wrong and what is valid, in one line, exit status 2, and writes nothing (no run
    directory under the working directory's runs/)."""
    monkeypatch.chdir(tmp_path)
    extra = ["--set", "model.network=nb201"] if args[-1].startswith("|") else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_nb201_genotype_needs_nb201_network() -> None:
    cfg = TrainConfig()
    cfg.model.genotype = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ConfigError, match=r"model\.network=nb201"):
        train_genotype(cfg)


# -- resume: the genotype it started with, and checkpoints that do not fit ------------------------------------------


def _tiny_run(tmp_path: Path, *extra: str) -> tuple[TrainConfig, Path]:
    from tests.test_runs import tiny_train

    cfg = tiny_train("optim.epochs=1", *extra)
    out = tmp_path / "run"
    train(cfg, out, log=lambda _: None)
    return cfg, out


def test_resume_trains_the_genotype_the_run_started_with(tmp_path, capsys) -> None:
    from evoray.runs import RunDir
    from evoray.spaces.published import published_genotype
    from tests.test_runs import digest

    v1, v2 = str(published_genotype("DARTS_V1")), str(published_genotype("DARTS_V2"))
    spec = tmp_path / "genotype.json"
    spec.write_text(json.dumps({"genotype": v2}))
    cfg, out = _tiny_run(tmp_path, f"model.genotype={spec}")
    first = json.loads((out / "results.json").read_text())
    spec.write_text(json.dumps({"genotype": v1}))  # the file edited after the run started
    before = digest(out)
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and v1 in err and v2 in err, err
    with RunDir.open("train", out, "x", resume=True) as run, pytest.raises(ConfigError, match="now gives"):
        train_genotype(cfg, run, log=lambda _: None)  # the run's own check, without the command's
    assert digest(out) == before  # refused before anything was written
    spec.unlink()  # the file gone: the run continues with the genotype it recorded
    assert main(["--resume", str(out), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["genotype"] == v2 and resumed["test_loss"] == first["test_loss"]


def test_checkpoint_holds_the_gpu_rng_and_resumes_without_it(tmp_path, capsys) -> None:
    from evoray.runs.directory import load_checkpoint, save_checkpoint

    _, out = _tiny_run(tmp_path)
    first = json.loads((out / "results.json").read_text())
    loaded = load_checkpoint(out / "checkpoints")
    assert loaded is not None
    state, tensors = loaded
    assert "cuda_rng" in tensors and tensors["cuda_rng"] is None  # a CPU run: saved, empty
    del tensors["cuda_rng"]  # a checkpoint written before the key existed
    save_checkpoint(out / "checkpoints", state, tensors)
    assert main(["--resume", str(out), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (resumed["test_loss"], resumed["test_top1"]) == (first["test_loss"], first["test_top1"])


def test_checkpoint_that_does_not_fit_is_one_line_and_changes_nothing(tmp_path, capsys) -> None:
    from evoray.runs.directory import load_checkpoint, save_checkpoint
    from tests.test_runs import digest

    _, out = _tiny_run(tmp_path)
    folder = out / "checkpoints"
    loaded = load_checkpoint(folder)
    assert loaded is not None
    state, tensors = loaded
    for key in ("history", "model"):
        save_checkpoint(folder, state, {k: v for k, v in tensors.items() if k != key})
        before = digest(out)
        assert main(["--resume", str(out)]) == 2, key
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert f"lacks {key!r}" in err and str(folder / "last.pt") in err, err
        assert digest(out) == before, key  # refused before anything was written
    tensors["model"] = {k: torch.zeros(1) for k in tensors["model"]}  # weights of another network
    save_checkpoint(folder, state, tensors)
    before = digest(out)
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "does not fit this run" in err, err
    assert digest(out) == before


def test_a_diverged_training_is_one_line_and_the_run_is_failed(tmp_path, capsys) -> None:
    """A loss that becomes NaN (a learning rate of 1e9, no clipping) stops the run with one line that names the cause
    and the settings to change, exit 2, and the run directory says failed."""
    from tests.test_runs import TRAIN_TINY

    out = tmp_path / "run"
    sets = [f"--set={s}" for s in (*TRAIN_TINY, "optim.epochs=1", "optim.lr=1e9", "optim.grad_clip=0")]
    assert main([*sets, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: training diverged: the loss became nan at epoch 0 step ") and "\n" not in err, err
    assert "lower optim.lr (now 1e+09) or set optim.grad_clip (now 0: no clipping)" in err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed" and "training diverged" in manifest["error"]
