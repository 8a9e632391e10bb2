"""A search experiment end to end: expand and validate the trials, run them on Tune (or restore an interrupted run),
then write the population archive, the summary table and the validation curves."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from evoray.config import config_to_dict, load_config, save_config
from evoray.distributed.tune import (
    Log,
    can_restore,
    ensure_ray,
    experiment_path,
    restore_trials,
    run_trials,
    storage_uri,
    trial_outcomes,
)
from evoray.errors import ConfigError
from evoray.searchers.experiment import ExperimentConfig, expand
from evoray.searchers.results import format_table, plot_curves, trial_summary, write_population

EXPERIMENT_FILE = "evoray-experiment.yaml"
JSON_KEYS = ("searcher", "space", "seed", "epochs", "valid_acc", "valid_acc_best", "params_m", "genotype", "status")


def _read_experiment(path: str) -> ExperimentConfig:
    if "://" in path:
        import pyarrow.fs as pafs

        fs, where = pafs.FileSystem.from_uri(f"{path.rstrip('/')}/{EXPERIMENT_FILE}")
        try:
            with fs.open_input_stream(where) as f:
                text = f.read()
        except OSError:
            raise ConfigError(
                f"--resume {path!r} holds no evoray search experiment ({EXPERIMENT_FILE} missing)"
            ) from None
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / EXPERIMENT_FILE
            local.write_bytes(text)
            return load_config(ExperimentConfig, local)
    file = Path(path) / EXPERIMENT_FILE
    if not file.is_file():
        raise ConfigError(f"--resume {path!r} holds no evoray search experiment ({EXPERIMENT_FILE} missing)")
    return load_config(ExperimentConfig, file)


def _write_experiment(exp: ExperimentConfig, path: str) -> None:
    if "://" in path:
        import pyarrow.fs as pafs
        import yaml

        fs, where = pafs.FileSystem.from_uri(path)
        fs.create_dir(where, recursive=True)
        with fs.open_output_stream(f"{where}/{EXPERIMENT_FILE}") as f:
            f.write(yaml.safe_dump(config_to_dict(exp), sort_keys=False).encode())
    else:
        save_config(exp, Path(path) / EXPERIMENT_FILE)


def run_search(
    exp: ExperimentConfig | None,
    storage: str | None = None,
    resume: str | None = None,
    address: str | None = None,
    log: Log = print,
    populations: Path = Path("populations"),
    quiet_stdout: bool = False,
) -> dict[str, Any]:
    """Run (or, with ``resume`` = an experiment path, continue) a search experiment; returns its summary."""
    if resume is not None:
        path = resume if "://" in resume else str(Path(resume).resolve())
        exp = _read_experiment(path)
        name = path.rstrip("/").rsplit("/", 1)[-1]
        expand(exp)  # the saved config must still be valid
    else:
        assert exp is not None
        if storage:
            exp.storage = storage
        trials = expand(exp)  # every trial validated before Ray starts
        name = exp.name or f"search-{time.strftime('%Y%m%d-%H%M%S')}"
        exp.name = name
        path = experiment_path(storage_uri(exp.storage), name)
        if can_restore(path):
            raise ConfigError(
                f"experiment {path!r} already exists; continue it with --resume {path} or choose another name"
            )
        _write_experiment(exp, path)
    ensure_ray(address)
    if resume is not None:
        grid = restore_trials(exp, path, log)
    else:
        grid = run_trials(exp, trials, name, log, quiet_stdout)
    outcomes = trial_outcomes(grid)
    summary = trial_summary(outcomes)
    out_dir = populations / name
    archive = write_population(out_dir, outcomes, summary)
    save_config(exp, out_dir / "experiment.yaml")
    plot_curves(outcomes, out_dir / "valid_curves.png")
    log(format_table(summary))
    log(f"population: {archive}; Tune results and TensorBoard logs: {path}")
    failed = [s for s in summary if s["status"] == "error"]
    if failed:
        log(f"{len(failed)} trial(s) failed; see {', '.join(s['path'] for s in failed)}")
    return {
        "experiment": path,
        "population": str(archive),
        "trials": [{k: s[k] for k in JSON_KEYS} for s in summary],
    }
