"""TensorBoard event files in a run directory (``<run>/tensorboard``, written with tensorboardX), so that
``tensorboard --logdir <run>`` lists the scalars of every command: evolve writes them each generation, search runs
hold Tune's (one folder per trial), and train and ensemble runs write theirs from their results with
:func:`write_scalars`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TENSORBOARD = "tensorboard"

Scalar = tuple[str, Any, int]  # (tag, value, step)


def write_scalars(run_path: Path, scalars: Iterable[Scalar]) -> Path:
    """Write ``scalars`` as one fresh event file in ``run_path/tensorboard`` (earlier event files there are replaced,
    so a resumed run writes its whole history once); non-numbers and non-finite values are skipped."""
    from tensorboardX import SummaryWriter

    folder = run_path / TENSORBOARD
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(str(folder))
    try:
        for tag, value, step in scalars:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                continue
            writer.add_scalar(tag, float(value), int(step))
    finally:
        writer.close()
    return folder


def train_scalars(history: Iterable[dict[str, Any]], result: dict[str, Any]) -> list[Scalar]:
    """A train run's per-epoch curves and, at its last epoch, its test results, params, FLOPs and latency."""
    out: list[Scalar] = []
    last = 0
    for row in history:
        step = int(row.get("epoch", last))
        last = step
        out += [(f"train/{k}", v, step) for k, v in row.items() if k != "epoch"]
    out += [(f"result/{k}", v, last) for k, v in result.items()]
    return out
