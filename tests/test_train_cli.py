"""``python -m evoray.train``: profile output, a short real training run, reproducibility and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    [
        (["--set", "optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        (["--set", "data.dataset=mnist"], "mnist"),
        (["--set", "runtime.precision=fp8"], "fp8"),
        (["--genotype", "Genotype(normal=[('sep_conv_3x3', 0)"], "malformed genotype"),
        (["--genotype", "NOT_A_NAME"], "DARTS_V2"),
        (["--genotype", "|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "'nor_conv_9x9' is not allowed"),
        (["--config", "configs/darts-cifar10.yaml", "--set", "data.root=/no/such/dir"], "/no/such/dir"),
        (["--config", "/no/such/config.yaml"], "/no/such/config.yaml"),
    ],
)
def test_bad_input_is_one_line_error(args: list[str], message: str, capsys) -> None:
    extra = ["--set", "model.network=nb201"] if args[-1].startswith("|") else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_nb201_genotype_needs_nb201_network() -> None:
    cfg = TrainConfig()
    cfg.model.genotype = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ConfigError, match=r"model\.network=nb201"):
        train_genotype(cfg)
