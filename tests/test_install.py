"""A plain (non-editable) install, used from a folder outside the source tree, finds every command's default config,
the shipped specs and the published genotypes, and runs each command (the ``evoray`` console command and
``python -m evoray.<command>``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """evoray built as a wheel and installed into a folder of its own (its dependencies come from this venv)."""
    base = tmp_path_factory.mktemp("install")
    wheels, site = base / "wheels", base / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("evoray-*.whl")
    install = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install of this checkout
    return site, env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.slow
def test_the_install_runs_every_command_from_another_folder(installed, tmp_path) -> None:
    site, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import evoray, evoray.cli as c; print(evoray.__file__); print(c.default_config_path("
         "'evolve-default.yaml'))"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    module, config = where.stdout.split()
    assert module.startswith(str(site)) and config.startswith(str(site)), where.stdout
    evoray = [str(site / "bin" / "evoray")]
    train = _run(
        [*evoray, "train", "--json", *_sets("optim.epochs=1", "model.init_channels=4", "model.layers=3")],
        tmp_path, env,
    )  # fmt: skip
    assert train["test_top1"] > 0 and (tmp_path / "runs" / "train").is_dir()
    profile = _run(
        [sys.executable, "-m", "evoray.train", "--config", "darts-cifar10", "--profile", "--json"], tmp_path, env
    )
    assert round(profile["params_m"], 3) == 3.349  # a shipped config by name, a published genotype
    tiny_evolve = _sets(
        "evolution.population=4", "evolution.generations=1", "evolution.tournament=2", "supernet.init_channels=4",
        "supernet.layers=3", "data.limit_train=128", "distributed.num_actors=0",
    )  # fmt: skip
    evolved = _run([*evoray, "evolve", "--json", *tiny_evolve], tmp_path, env)
    assert evolved["genotype"].startswith("Genotype(")
    tiny_search = _sets(
        "searchers=[darts]", "base.epochs=1", "base.supernet.init_channels=4", "base.supernet.layers=3",
        "base.data.limit_train=128",
    )  # fmt: skip
    searched = _run([sys.executable, "-m", "evoray.search", "--json", *tiny_search], tmp_path, env)
    assert [t["searcher"] for t in searched["trials"]] == ["darts"]
    tiny_ensemble = _sets(
        "members.published=[DARTS_V2,GDAS_V1]", "members.latest_run=false", "members.latest_supernet=false",
        "train.model.init_channels=4", "train.model.layers=2", "train.optim.epochs=1", "data.limit_train=200",
        "shift.corruptions=[]", "executor=local", "committees=[{combiner: prob_mean}]",
    )  # fmt: skip
    committee = _run([*evoray, "ensemble", "--json", *tiny_ensemble], tmp_path, env)
    assert committee["best_committee"] == "prob_mean"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ensemble", "evolve", "search", "train"]
