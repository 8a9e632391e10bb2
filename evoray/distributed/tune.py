"""The Ray Tune adapter: each gradient searcher runs as a Tune trial, with Tune's checkpoints, schedulers, restore,
failure retries and loggers (JSON, CSV, TensorBoard).

The trainable is a thin shell around a Ray-free :class:`evoray.searchers.Searcher`: one Tune iteration is one search
epoch; every epoch reports the training and validation loss and accuracy, the genotype, the entropy of the alphas,
the op distribution per edge (``ops_<cell type>``), the temperature and the wiped-out experts, and saves a checkpoint
(the searcher's state, its genotype and alphas).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from evoray.config import config_from_dict, config_to_dict
from evoray.distributed.cluster import placement, require_cpus, worker_device
from evoray.errors import ConfigError
from evoray.runs.directory import atomic_write, load_tensors
from evoray.runtime import apply_runtime
from evoray.searchers import SEARCHERS, SearchConfig, Searcher, SearchSettings
from evoray.searchers.experiment import ExperimentConfig, trial_label

Log = Callable[[str], None]

CHECKPOINT_FILE = "searcher.pt"
METRIC = "valid_acc"


class SearchTrainable(tune.Trainable):
    """One searcher as a class trainable: ``config = {"search": <SearchConfig as a dict>, "threads": int}``."""

    def setup(self, config: dict[str, Any]) -> None:
        cfg = config_from_dict(SearchConfig, config["search"])
        threads = int(config.get("threads", 0))  # the CPUs the trial reserved (resources.cpus)
        if threads > 0:  # runtime.threads may lower the trial's threads, never raise them above its CPUs
            cfg.runtime.threads = min(threads, cfg.runtime.threads or threads)
        if cfg.runtime.device == "auto":
            cfg.runtime.device = str(worker_device())
        device = apply_runtime(cfg.runtime)
        self.searcher: Searcher = SEARCHERS.get(cfg.searcher)(cfg, device)
        self.resumed_from = 0

    def step(self) -> dict[str, Any]:
        metrics = self.searcher.train_epoch()
        for ct, p in self.searcher.op_distributions().items():  # (E, K) per cell type: the dashboard's op plots
            metrics[f"ops_{ct}"] = p.numpy().round(4).tolist()
        metrics["resumed_from"] = self.resumed_from
        metrics["done"] = self.searcher.done()
        return metrics

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        d = Path(checkpoint_dir)
        buf = io.BytesIO()
        torch.save(self.searcher.state_dict(), buf)  # tensors and plain containers: read with weights_only
        atomic_write(d / CHECKPOINT_FILE, buf.getvalue())
        np.savez(d / "alphas.npz", **self.searcher.alphas())  # type: ignore[arg-type]
        info = {"epoch": self.searcher.epoch, "genotype": str(self.searcher.genotype())}
        (d / "genotype.json").write_text(json.dumps(info))

    def load_checkpoint(self, checkpoint_dir: str) -> None:  # type: ignore[override]
        self.searcher.load_state_dict(load_tensors(Path(checkpoint_dir) / CHECKPOINT_FILE, "search checkpoint"))
        self.resumed_from = self.searcher.epoch


class EpochLog(tune.Callback):
    """One line per trial epoch: searcher, seed, epoch, losses, accuracies, temperature, wiped-out experts."""

    def __init__(self, to_stderr: bool = False) -> None:
        self.to_stderr = to_stderr

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        cfg = trial.config["search"]
        parts = [
            f"{cfg['searcher']}-s{cfg['seed']} [{trial.trial_id}] epoch {result.get('epoch')}/{cfg['epochs']}:",
            f"train {result.get('train_loss', float('nan')):.3f}/{result.get('train_acc', float('nan')):.1f}%",
            f"valid {result.get('valid_loss', float('nan')):.3f}/{result.get('valid_acc', float('nan')):.1f}%",
        ]
        if "tau" in result:
            parts.append(f"tau {result['tau']:.3g}")
        wiped = [f"{k[6:]} {v}" for k, v in result.items() if k.startswith("wiped_")]
        if wiped:
            parts.append("wiped " + ", ".join(wiped))
        print(" ".join(parts), file=sys.stderr if self.to_stderr else sys.stdout, flush=True)


def _trial_name(trial: Any) -> str:
    cfg = trial.config["search"]
    return f"{cfg['searcher']}-{cfg['supernet']['space']}-s{cfg['seed']}-{trial.trial_id}"


def _trainable(exp: ExperimentConfig) -> Any:
    require_cpus(exp.resources, 1, "a search trial")
    res = placement(exp.resources)
    return tune.with_resources(SearchTrainable, {"cpu": res["num_cpus"], "gpu": res["num_gpus"]})


def storage_uri(storage: str) -> str:
    """A local storage directory made absolute (Tune needs that); URIs (``s3://``, ``gs://``, ...) unchanged."""
    return storage if "://" in storage else str(Path(storage).resolve())


def run_trials(
    exp: ExperimentConfig,
    trials: list[SearchSettings],
    storage: str,
    name: str,
    log: Log,
    quiet_stdout: bool = False,
) -> Any:
    """Run every trial as the Tune experiment ``storage/name``; returns Tune's ResultGrid."""
    from ray.tune.schedulers import ASHAScheduler

    scheduler = None
    if exp.scheduler.kind == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max(t.epochs for t in trials),
            grace_period=exp.scheduler.grace_period,
            reduction_factor=exp.scheduler.reduction_factor,
        )
    # Snapshot the experiment state at least every second (Tune's default waits 10 s or more), so that a run killed
    # at any moment resumes each trial from its newest checkpoint; the state file is small.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    threads = max(1, int(exp.resources.cpus))
    tuner = tune.Tuner(
        _trainable(exp),
        param_space={"search": tune.grid_search([config_to_dict(t) for t in trials]), "threads": threads},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=scheduler,
            max_concurrent_trials=exp.max_concurrent or None,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=_run_config(exp, storage, name, quiet_stdout),
    )
    log(f"search: {len(trials)} trials ({', '.join(trial_label(t) for t in trials)})")
    return tuner.fit()


def _run_config(exp: ExperimentConfig, storage: str, name: str, quiet_stdout: bool) -> Any:
    return tune.RunConfig(
        name=name,
        storage_path=storage_uri(storage),
        failure_config=tune.FailureConfig(max_failures=exp.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1, checkpoint_at_end=True),
        verbose=0,
        callbacks=[EpochLog(to_stderr=quiet_stdout)],
    )


def can_restore(path: str) -> bool:
    try:
        return bool(tune.Tuner.can_restore(path))
    except Exception:
        return False


def check_checkpoints(path: str) -> int:
    """Read every trial's newest checkpoint of the local experiment ``path`` (weights_only) before Tune restores
    them: a corrupt or unsafe file is a one-line ``ConfigError`` here, not a failed trial later. Returns how many
    were read."""
    root = Path(path)
    if "://" in path or not root.is_dir():
        return 0
    count = 0
    for trial in sorted(d for d in root.iterdir() if d.is_dir()):
        checkpoints = sorted(trial.glob("checkpoint_*"), key=lambda c: int(c.name.split("_")[-1]))
        if checkpoints:
            load_tensors(checkpoints[-1] / CHECKPOINT_FILE, f"trial {trial.name}'s checkpoint")
            count += 1
    return count


def restore_trials(exp: ExperimentConfig, path: str, log: Log) -> Any:
    """Continue an interrupted experiment: every unfinished or errored trial resumes from its last checkpoint."""
    if not can_restore(path):
        raise ConfigError(f"--resume {path!r} holds no Tune experiment (no experiment state found there)")
    log(f"resuming the Tune experiment at {path}")
    tuner = tune.Tuner.restore(path, _trainable(exp), resume_unfinished=True, resume_errored=True)
    return tuner.fit()


def trial_outcomes(grid: Any) -> list[dict[str, Any]]:
    """Per trial: its config, last metrics, metric history, final alphas (from its last checkpoint) and error."""
    out = []
    for result in grid:
        cfg = config_from_dict(SearchConfig, result.config["search"])
        alphas: dict[str, np.ndarray] | None = None
        if result.checkpoint is not None:
            with result.checkpoint.as_directory() as d, np.load(Path(d) / "alphas.npz") as f:
                alphas = {k: f[k].copy() for k in f.files}
        history = result.metrics_dataframe
        out.append(
            {
                "config": cfg,
                "metrics": dict(result.metrics or {}),
                "history": [] if history is None else history.to_dict("records"),
                "alphas": alphas,
                "error": None if result.error is None else str(result.error).splitlines()[0][:300],
                "path": str(result.path),
            }
        )
    return out
