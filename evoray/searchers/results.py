"""What a search experiment leaves behind besides Tune's own files: the final genotype and alphas of every trial as a
population archive (the format of ``evoray.evolve``), a summary table, and the validation curves per searcher."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoray.profiling import genotype_params_m
from evoray.runs.archive import ARCHIVE, individual_row, write_archive
from evoray.runs.directory import atomic_write


def trial_summary(outcomes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial: searcher, space, seed, epochs run, validation accuracy (last and best epoch's) and the set
    it was measured on (``valid_on``: the held-out ``split`` of the training set, or the ``test`` set of a
    single-level search on the whole training set), params (M), genotype, status."""
    rows = []
    for i, o in enumerate(outcomes):
        cfg, m = o["config"], o["metrics"]
        genotype = m.get("genotype")
        rows.append(
            {
                "trial": i,
                "searcher": cfg.searcher,
                "space": cfg.supernet.space,
                "seed": cfg.seed,
                "epochs": int(m.get("epoch", 0)),
                "valid_acc": m.get("valid_acc"),
                "valid_acc_best": m.get("valid_acc_best"),
                "valid_on": "test" if cfg.data.whole_train else "split",
                "params_m": genotype_params_m(genotype) if genotype else None,
                "genotype": genotype,
                # Tune marks a trial its scheduler stopped early done too: done means every epoch ran
                "status": "error" if o["error"] else ("done" if int(m.get("epoch", 0)) >= cfg.epochs else "stopped"),
                "error": o["error"],
                "path": o["path"],
            }
        )
    return rows


def best_trial(summary: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial with the best last-epoch validation accuracy on the held-out split (a run's headline, and the
    dashboard's best trial); trials validated on the test set never compete, so that no trial is chosen by its test
    accuracy, and nor do trials that failed."""
    scored = [
        s for s in summary if s["valid_acc"] is not None and s["valid_on"] == "split" and s.get("status") != "error"
    ]
    return max(scored, key=lambda s: s["valid_acc"], default=None)


def write_population(out_dir: Path, outcomes: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]) -> Path:
    """Every trial with alphas becomes one individual of generation 0 (the archive schema of evolve, with the
    searcher, trial and seed columns); fitness is its validation accuracy on the held-out split. A trial of a
    single-level search on the whole training set was validated on the test set, and a trial that failed holds a cell
    of wherever it stopped: both are archived without a fitness, so that nothing downstream (an ensemble's ``top_k``,
    an evolve run seeded from this one) selects by test accuracy or takes a failed trial's cell for a result.
    Also ``summary.json``, which keeps every accuracy and the set it was measured on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for o, s in zip(outcomes, summary):
        if o["alphas"] is None or not s["genotype"]:
            continue
        rows.append(
            individual_row(
                0, s["trial"], [], f"search:{s['searcher']}:s{s['seed']}", s["genotype"],
                s["valid_acc"] if s["valid_on"] == "split" and s.get("status") != "error" else None,
                s["params_m"], o["alphas"], s["space"], s["searcher"], Path(s["path"]).name, s["seed"],
            )
        )  # fmt: skip
    path = out_dir / ARCHIVE
    write_archive(path, rows)
    atomic_write(out_dir / "summary.json", json.dumps(list(summary), indent=1, default=str).encode())
    return path


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'trial':>5} {'searcher':8} {'space':10} {'seed':>4} {'epochs':>6} {'valid %':>8} {'best %':>7} {'on':>5} "
        f"{'params M':>8}  genotype"
    )
    lines = [head, "-" * len(head)]
    for s in summary:
        acc, best = ("-" if s[k] is None else f"{s[k]:.2f}" for k in ("valid_acc", "valid_acc_best"))
        params = "-" if s["params_m"] is None else f"{s['params_m']:.3f}"
        tail = s["genotype"] or f"(no genotype: {s['status']} after {s['epochs']} epochs)"
        if s.get("status") == "error":
            tail = f"(error: {s.get('error')})"
        lines.append(
            f"{s['trial']:>5} {s['searcher']:8} {s['space']:10} {s['seed']:>4} {s['epochs']:>6} {acc:>8} {best:>7} "
            f"{s['valid_on']:>5} {params:>8}  {tail}"
        )
    return "\n".join(lines)


def plot_curves(outcomes: Sequence[dict[str, Any]], path: Path, metric: str = "valid_acc") -> None:
    """``metric`` against the epoch for every trial, one colour per searcher."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours: dict[str, Any] = {}
    for o in outcomes:
        name = o["config"].searcher
        xs = [h["epoch"] for h in o["history"] if metric in h and not _nan(h[metric])]
        ys = [h[metric] for h in o["history"] if metric in h and not _nan(h[metric])]
        if not xs:
            continue
        label = None if name in colours else name
        line = ax.plot(xs, ys, marker="o", ms=3, color=colours.get(name), label=label)[0]
        colours.setdefault(name, line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " ") + (" (%)" if metric.endswith("acc") else ""))
    ax.set_title(f"{metric.replace('_', ' ')} per searcher")
    ax.grid(alpha=0.3)
    if colours:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)
