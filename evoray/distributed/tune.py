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
import pickle
import re
import signal
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from ray import tune

from evoray.config import config_from_dict, config_to_dict
from evoray.distributed.cluster import placement, require_cpus, worker_device
from evoray.errors import ConfigError
from evoray.runs.directory import atomic_write, load_tensors
from evoray.runs.reader import TUNE_STATE, latest_reports, tune_trial_states
from evoray.runtime import apply_runtime
from evoray.searchers import SEARCHERS, SearchConfig, Searcher, SearchSettings
from evoray.searchers.experiment import ExperimentConfig, lookup, trial_label

Log = Callable[[str], None]

CHECKPOINT_FILE = "searcher.pt"
ALPHAS_FILE = "alphas.npz"
CHECKPOINT_FILES = (CHECKPOINT_FILE, ALPHAS_FILE, "genotype.json")  # in the order a save writes them
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
        searcher = SEARCHERS.get(cfg.searcher)
        device = apply_runtime(cfg.runtime, autotune=searcher.autotune)
        self.searcher: Searcher = searcher(cfg, device)
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
        np.savez(d / ALPHAS_FILE, **self.searcher.alphas())  # type: ignore[arg-type]
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
    labels = ", ".join(trial_label(t, _grid_point(exp, t)) for t in trials)
    log(f"search: {len(trials)} trial{'' if len(trials) == 1 else 's'} ({labels})")
    return fit(tuner)


def _grid_point(exp: ExperimentConfig, trial: SearchSettings) -> dict[str, Any]:
    """The values of the experiment's grid keys in ``trial`` (what tells trials of one searcher and seed apart)."""
    data = config_to_dict(trial)
    return {key: lookup(data, key.split("."))[1] for key in exp.grid}


def fit(tuner: Any) -> Any:
    """``tuner.fit()``, raising ``KeyboardInterrupt`` after it when Tune ended the experiment on a Ctrl-C: Tune
    catches the first SIGINT (or SIGUSR1), saves the experiment's state, stops the trials and returns as from a
    finished experiment; the run is then interrupted, not done. Tune's handler puts back, when it fires, the
    handler it found: finding ours back in place afterwards is the sign."""
    if threading.current_thread() is not threading.main_thread() or int(os.getenv(_NO_TUNE_HANDLER, "0") or 0):
        return tuner.fit()  # Tune installs no handler: a Ctrl-C raises KeyboardInterrupt as usual

    def interrupt(signum: int, frame: Any) -> None:  # a second Ctrl-C, once Tune has put this back
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        grid = tuner.fit()
        caught = signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt("the Tune experiment was stopped; its state is saved for --resume")
    return grid


_NO_TUNE_HANDLER = "TUNE_DISABLE_SIGINT_HANDLER"  # Tune's switch for its SIGINT handler


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
    """Whether Tune can restore the experiment at ``path``: its ``tuner.pkl`` (Tune's own test), and, on this
    machine, an experiment state beside it (a search stopped before Tune saved its first one has only the former,
    from which Tune would restart an experiment without its trials)."""
    if "://" not in path and not any(Path(path).glob(TUNE_STATE)):
        return False
    try:
        return bool(tune.Tuner.can_restore(path))
    except Exception:
        return False


def check_checkpoints(path: str) -> int:
    """Read, before Tune restores them, the checkpoint every trial of the local experiment ``path`` resumes from
    (weights_only): the one Tune's experiment state records as the trial's latest or, where that record cannot be
    read, the trial's newest complete ``checkpoint_<n>`` folder. A folder left partial by a run killed while Tune
    wrote it is not judged (Tune restores the one before); a corrupt or unsafe file is a one-line ``ConfigError``
    here, not a failed trial later. Returns how many were read."""
    root = Path(path)
    if "://" in path or not root.is_dir():
        return 0
    recorded = _recorded_checkpoints(root)
    count = 0
    for trial in sorted(d for d in root.iterdir() if d.is_dir()):
        checkpoint = recorded[trial.name] if trial.name in recorded else _newest_complete(trial)
        if checkpoint is not None:
            load_tensors(checkpoint / CHECKPOINT_FILE, f"trial {trial.name}'s checkpoint")
            read_alphas(checkpoint / ALPHAS_FILE)
            count += 1
    return count


TUNER_STATE = "tuner.pkl"  # the Tuner's own settings, pickled by Tune beside its experiment state


def check_experiment(path: str) -> None:
    """Read, before Tune restores it, what ``Tuner.restore`` reads of the local experiment ``path``: its newest
    experiment state (JSON: one pair of JSON records per trial, each trial's config holding its search settings) and
    ``tuner.pkl`` (read with every class replaced by an inert one, so nothing in it runs). A file that cannot be read
    is a one-line ``ConfigError`` naming it, raised before the run directory changes."""
    root = Path(path)
    if "://" in path or not root.is_dir():
        return
    states = sorted(root.glob(TUNE_STATE))
    if states:
        try:
            entries = json.loads(states[-1].read_text(encoding="utf-8"))["trial_data"]
            for entry in entries:
                trial, runtime = (json.loads(part) for part in entry)
                config = trial["config"]
                if not isinstance(runtime, dict) or (isinstance(config, dict) and "search" not in config):
                    raise ValueError("a trial without evoray's search settings")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise _unreadable(states[-1], err) from None
    tuner = root / TUNER_STATE
    if tuner.is_file():
        try:
            _InertUnpickler(io.BytesIO(tuner.read_bytes())).load()
        except Exception as err:  # any unpickling failure: the file is not a pickle Tune wrote
            raise _unreadable(tuner, err) from None


def _unreadable(file: Path, err: BaseException) -> ConfigError:
    reason = (str(err).splitlines() or [""])[0][:160] or type(err).__name__
    return ConfigError(
        f"Tune's {file.name} in {str(file.parent)!r} cannot be read ({reason}): the experiment cannot be restored "
        "from it; the run is left as it was"
    )


def _newest_complete(trial: Path) -> Path | None:
    """The trial's ``checkpoint_<integer>`` folder of the highest number that holds every file a save writes."""
    numbered = []
    for folder in trial.glob("checkpoint_*"):
        suffix = folder.name.removeprefix("checkpoint_")
        if suffix.isdigit() and folder.is_dir():
            numbered.append((int(suffix), folder))
    for _, folder in sorted(numbered, reverse=True):
        if all((folder / name).is_file() for name in CHECKPOINT_FILES):
            return folder
    return None


class _Inert:
    """Stands in for every class and function a pickle names: takes any arguments, keeps the state it is given,
    runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Inert


def _recorded_checkpoints(root: Path) -> dict[str, Path | None]:
    """Per trial folder, the checkpoint Tune's newest experiment state records as the trial's latest (what
    ``Tuner.restore`` resumes it from), or None where it records none (the trial starts afresh). Tune keeps the
    record pickled inside the JSON; it is read with every class replaced by :class:`_Inert`, so nothing in it runs.
    Trials whose record cannot be read are left out."""
    out: dict[str, Path | None] = {}
    for trial, runtime in tune_trial_states(root) or []:
        try:
            folder = Path(str(trial["relative_logdir"])).name
            record = runtime["checkpoint_manager"]
            manager = _InertUnpickler(io.BytesIO(bytes.fromhex(record["value"]))).load() if record else None
            latest = getattr(manager, "_latest_checkpoint_result", None)
            if latest is None:
                out[folder] = None
                continue
            name = PurePosixPath(str(latest.checkpoint.path)).name
        except Exception:  # a record this reader does not understand: judged by its folders instead
            continue
        if folder and name.startswith("checkpoint_"):
            out[folder] = root / folder / name
    return out


def restore_trials(exp: ExperimentConfig, path: str, log: Log) -> Any:
    """Continue an interrupted experiment: every unfinished or errored trial resumes from its last checkpoint."""
    if not can_restore(path):
        raise ConfigError(f"--resume {path!r} holds no Tune experiment (no experiment state found there)")
    log(f"resuming the Tune experiment at {path}")
    if exp.scheduler.kind == "asha":
        log(
            "note: Tune saves no scheduler state, so ASHA restarts without the rung results reported before the "
            "interruption: the trials it stops from here on can differ from an uninterrupted run's"
        )
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # as a new run snapshots its state
    tuner = tune.Tuner.restore(path, _trainable(exp), resume_unfinished=True, resume_errored=True)
    return fit(tuner)


def _trial_params(result: Any) -> dict[str, Any]:
    """A trial's parameters: its result's config, or, for a trial that failed before it reported anything (Tune then
    gives no config), the ``params.json`` Tune wrote into its folder when it started."""
    if result.config:
        return dict(result.config)
    try:
        with Path(str(result.path), "params.json").open(encoding="utf-8") as f:
            params = json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"trial {result.path!r} reported nothing and its params.json is unreadable ({err})") from None
    if not isinstance(params, dict) or "search" not in params:
        raise ConfigError(f"trial {result.path!r} reported nothing and its params.json names no search settings")
    return params


def _trial_order(result: Any) -> tuple[int, str]:
    """A trial's place in the grid: the index that ends its Tune id (``..._00002``), then its folder's name."""
    name = PurePosixPath(str(result.path)).name
    tail = name.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, name)


def read_alphas(path: Path) -> dict[str, np.ndarray]:
    """A trial checkpoint's alphas (no pickles); a missing or damaged file is a one-line ``ConfigError``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]).copy() for k in f.files}
    except FileNotFoundError:
        raise ConfigError(f"trial checkpoint {str(path.parent)!r} has no {path.name}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ConfigError(f"{str(path)!r} is corrupt or not an alphas file ({type(err).__name__})") from None


def trial_outcomes(grid: Any) -> list[dict[str, Any]]:
    """Per trial, in the grid's order (a restored experiment may list them otherwise): its config,
    last metrics, metric history, final alphas (from its last checkpoint) and error."""
    out = []
    for result in sorted(grid, key=_trial_order):
        cfg = config_from_dict(SearchConfig, _trial_params(result)["search"])
        alphas: dict[str, np.ndarray] | None = None
        if result.checkpoint is not None:
            with result.checkpoint.as_directory() as d:
                alphas = read_alphas(Path(d) / ALPHAS_FILE)
        history = result.metrics_dataframe
        out.append(
            {
                "config": cfg,
                "metrics": dict(result.metrics or {}),
                "history": [] if history is None else latest_reports(history.to_dict("records")),
                "alphas": alphas,
                "error": None if result.error is None else _error_line(result.error),
                "path": str(result.path),
            }
        )
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_line(error: BaseException) -> str:
    """A trial's error in one line: the error the trial raised (not Ray's wrapper around it, whose first line names
    only the actor), as ``Type: first line of its message``, without terminal colours."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = [_ANSI.sub("", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    return f"{type(error).__name__}: {lines[0]}"[:300] if lines else type(error).__name__
