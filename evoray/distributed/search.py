"""A search experiment end to end in its run directory: expand and validate the trials, run them on Tune (or
restore an interrupted experiment), then write the population archive, the summary table and the validation curves.

Tune's own files (each trial's ``result.json``, ``progress.csv``, checkpoints and TensorBoard events) go to
``<run>/tune/``, or to ``storage`` (a pyarrow URI such as ``s3://bucket/path``, for clusters) when the experiment
config sets one. Tune's experiment state is Tune's own format and is unpickled by Tune on ``--resume``: resume only
experiments you or your cluster wrote; evoray's own checkpoints are tensors read with ``weights_only``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from evoray.config import config_to_dict
from evoray.distributed.tune import (
    Log,
    can_restore,
    check_checkpoints,
    check_experiment,
    restore_trials,
    run_trials,
    trial_outcomes,
)
from evoray.errors import ConfigError
from evoray.runs import RunDir
from evoray.runs.reader import TUNE
from evoray.searchers.experiment import ExperimentConfig, expand
from evoray.searchers.results import best_trial, format_table, plot_curves, trial_summary, write_population

JSON_KEYS = ("searcher", "space", "seed", "epochs", "valid_acc", "valid_acc_best", "params_m", "genotype", "status")


def tune_location(exp: ExperimentConfig, run: RunDir) -> tuple[str, str]:
    """(storage, name) of the run's Tune experiment: ``<run>/tune``, or ``<storage>/<run name>`` (a local storage as an
    absolute path, so that the run's manifest names it from any working directory)."""
    if exp.storage:
        local = "://" not in exp.storage
        return (str(Path(exp.storage).expanduser().resolve()) if local else exp.storage), run.path.name
    return str(run.path.resolve()), TUNE


def run_search(exp: ExperimentConfig, run: RunDir, log: Log = print, quiet_stdout: bool = False) -> dict[str, Any]:
    """Run (or, for a resumed run directory, continue) the experiment ``exp`` in ``run``; returns its summary."""
    trials = expand(exp)  # every trial validated before anything runs
    storage, name = tune_location(exp, run)
    path = f"{storage.rstrip('/')}/{name}"
    restore = run.resumed and can_restore(path)
    if run.resumed and not restore and run.manifest.get("status") == "done":
        raise ConfigError(
            f"--resume {str(run.path)!r}: the search finished, and its Tune experiment {path!r} is gone; nothing to "
            "continue (a new run with the same config searches again)"
        )
    if restore:  # a corrupt experiment state or trial checkpoint stops here, with nothing written
        check_experiment(path)
        check_checkpoints(path)
    elif run.resumed and "://" not in path and Path(path).is_dir():
        # stopped before Tune saved its first experiment state: nothing it can restore; start over cleanly
        log(f"{path} holds no experiment state Tune can restore: the search starts over")
        shutil.rmtree(path)
    run.start(
        config_to_dict(exp),
        exp.seeds[0] if len(exp.seeds) == 1 else None,
        {
            "space": trials[0].supernet.space,
            "method": ",".join(exp.searchers),
            "trials": len(trials),
            "epochs": sum(t.epochs for t in trials),  # the dashboard's progress: every trial's epochs
            "tune": path,
        },
    )
    grid = restore_trials(exp, path, log) if restore else run_trials(exp, trials, storage, name, log, quiet_stdout)
    outcomes = trial_outcomes(grid)
    summary = trial_summary(outcomes)
    archive = write_population(run.path, outcomes, summary)
    plot_curves(outcomes, run.path / "valid_curves.png")
    log(format_table(summary))
    log(f"population: {archive}; Tune results and TensorBoard logs: {path}")
    failed = [s for s in summary if s["status"] == "error"]
    if failed:
        log(f"{len(failed)} trial(s) failed; see {', '.join(s['path'] for s in failed)}")
    result = {
        "run": str(run.path),
        "experiment": path,
        "population": str(archive),
        "trials": [{k: s[k] for k in JSON_KEYS} for s in summary],
    }
    best = best_trial(summary)
    run.finish(
        {
            "trials": len(summary),
            "failed": len(failed),
            "best_valid_acc": None if best is None else best["valid_acc"],
            "genotype": None if best is None else best["genotype"],
            "searcher": None if best is None else best["searcher"],
        }
    )
    return result
