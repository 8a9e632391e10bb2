"""What a person reads after a committee run: report.md (tables of members and committees, what the best committee
buys over the best member, behaviour under shift) and plots (metrics against committee size, reliability diagrams,
metrics against corruption severity)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoray.runs.events import write_scalars

PLOTS = ("size_curve.png", "reliability.png", "shift.png")


def shift_by_severity(metrics: dict[str, Any], keys: Sequence[str]) -> dict[int, dict[str, float]]:
    """Mean accuracy, NLL and ECE over corruptions at each severity (0 = the clean test set)."""
    out = {0: {k: metrics["test"][k] for k in ("accuracy", "nll", "ece")}}
    severities = sorted({int(k.rsplit("-", 1)[1]) for k in keys})
    for s in severities:
        rows = [metrics[k] for k in keys if int(k.rsplit("-", 1)[1]) == s]
        out[s] = {m: sum(r[m] for r in rows) / len(rows) for m in ("accuracy", "nll", "ece")}
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """report.md: data, members, committees, the committee's gain over the best member, shift, notes."""
    d, s = report["data"], report["summary"]
    lines = [
        f"# Committee run `{report['name']}`",
        "",
        f"Data: {d['dataset']}, {d['train']} training images for the members, {d['valid']} validation images "
        f"(committee selection), {d['test']} test images (measurement only); {d['classes']} classes; seed "
        f"{report['seed']}. Accuracy, ECE and disagreement in %, NLL in nats. Shifted test sets: "
        f"{', '.join(report['shift']['corruptions']) or 'none'} at severities "
        f"{', '.join(str(v) for v in report['shift']['severities'])}; 'shift' columns average over all of them.",
        "",
        "## Members",
        "",
        "| member | kind | params (M) | valid NLL | test acc | test NLL | test ECE | shift acc | shift NLL |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in report["members"]:
        t, sh = m["test"], m["shift_mean"]
        lines.append(
            f"| {m['name']} | {m['kind']} | {_fmt(m['params_m'], 3)} | {_fmt(m['valid']['nll'], 4)} | "
            f"{_fmt(t['accuracy'])} | {_fmt(t['nll'], 4)} | {_fmt(t['ece'])} | {_fmt(sh.get('accuracy'))} | "
            f"{_fmt(sh.get('nll'), 4)} |"
        )
    lines += [
        "",
        "## Committees (test set)",
        "",
        "| committee | combiner | picks | acc | NLL | ECE | oracle NLL | disagreement | vs committee | shift acc "
        "| shift NLL | members (weight) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in report["committees"]:
        t, sh = c["test"], c["shift_mean"]
        weights = ", ".join(f"{n} ({w:.2f})" for n, w in c["members"].items())
        lines.append(
            f"| {c['name']} | {c['combiner']} | {c['size']} | {_fmt(t['accuracy'])} | {_fmt(t['nll'], 4)} | "
            f"{_fmt(t['ece'])} | {_fmt(t['oracle_nll'], 4)} | {_fmt(t['disagreement'])} | "
            f"{_fmt(t['disagreement_committee'])} | {_fmt(sh.get('accuracy'))} | {_fmt(sh.get('nll'), 4)} | "
            f"{weights} |"
        )
    bm, bc, top = s["best_member"], s["best_committee"], s["best_member_on_test"]
    lines += [
        "",
        "## What the committee buys",
        "",
        f"Best member by validation NLL: **{bm['name']}**, test accuracy {_fmt(bm['test']['accuracy'])}%, "
        f"NLL {_fmt(bm['test']['nll'], 4)}, ECE {_fmt(bm['test']['ece'])}%.",
        f"Best committee by validation NLL: **{bc['name']}**, test accuracy {_fmt(bc['test']['accuracy'])}%, "
        f"NLL {_fmt(bc['test']['nll'], 4)}, ECE {_fmt(bc['test']['ece'])}%.",
        f"Committee minus member: accuracy {bc['test']['accuracy'] - bm['test']['accuracy']:+.2f} points, NLL "
        f"{bc['test']['nll'] - bm['test']['nll']:+.4f} nats (lower NLL is better). Against the member that is best on "
        f"the test set in hindsight ({top['name']}, {_fmt(top['test']['accuracy'])}%, NLL "
        f"{_fmt(top['test']['nll'], 4)}): accuracy {bc['test']['accuracy'] - top['test']['accuracy']:+.2f} points, "
        f"NLL {bc['test']['nll'] - top['test']['nll']:+.4f} nats.",
    ]
    if report["shift"]["corruptions"]:
        lines += [
            "",
            "## Under shift (mean over corruptions; severity 0 = clean)",
            "",
            "| model | " + " | ".join(f"sev {k} acc / NLL" for k in bm["by_severity"]) + " |",
            "| --- | " + " | ".join("---:" for _ in bm["by_severity"]) + " |",
        ]
        for label, entry in [(f"best member {bm['name']}", bm), *[(c["name"], c) for c in report["committees"]]]:
            cells = [f"{_fmt(v['accuracy'])} / {_fmt(v['nll'], 3)}" for v in entry["by_severity"].values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = [
        f"- {m['name']}: trained on {100 * m['valid_overlap']:.0f}% of the validation images, so its validation "
        "logits (and selections that use them) are optimistic."
        for m in report["members"]
        if m["valid_overlap"]
    ]
    notes += [
        f"- {m['name']}: overlap of its training data with the validation set unknown."
        for m in report["members"]
        if m["valid_overlap"] is None
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "## Members' origins", ""]
    lines += [f"- {m['name']}: {m['origin']}; genotype `{m['genotype']}`" for m in report["members"]]
    plots = [p for p in PLOTS if p != "shift.png" or report["shift"]["corruptions"]]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_size_curves(report: dict[str, Any], path: Path) -> None:
    """Test accuracy and NLL of every committee against its size (its first s picks), with the best member."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bm = report["summary"]["best_member"]
    for ax, key, label in ((axes[0], "accuracy", "test accuracy (%)"), (axes[1], "nll", "test NLL")):
        for c in report["committees"]:
            sizes = [p["size"] for p in c["curve"]]
            ax.plot(sizes, [p[key] for p in c["curve"]], marker="o", ms=3, label=c["name"])
        ax.axhline(bm["test"][key], color="0.3", ls="--", lw=1, label=f"best member ({bm['name']})")
        ax.set_xlabel("committee size (picks)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path, f"{report['name']}: committees against their size")


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    """Reliability diagrams (accuracy against confidence per bin) of the best member and every committee."""
    bm = report["summary"]["best_member"]
    panels = [(f"member {bm['name']}", bm), *[(c["name"], c) for c in report["committees"]]]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, entry) in zip(axes.flat, panels):
        r = entry["reliability"]
        centres = [(lo + hi) / 2 for lo, hi in zip(r["lo"], r["hi"])]
        width = r["hi"][0] - r["lo"][0]
        acc = [0.0 if a is None else a for a in r["accuracy"]]
        ax.bar(centres, acc, width=width, edgecolor="k", lw=0.5, color="#6fa8dc", label="accuracy")
        ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1)
        ax.set_title(f"{title}\nECE {entry['test']['ece']:.2f}%", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _save(fig, path)


def plot_shift(report: dict[str, Any], path: Path) -> None:
    """Accuracy and NLL against corruption severity (mean over corruptions) for the best member and committees."""
    bm = report["summary"]["best_member"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    entries = [(f"best member ({bm['name']})", bm, "--"), *[(c["name"], c, "-") for c in report["committees"]]]
    for ax, key, label in ((axes[0], "accuracy", "accuracy (%)"), (axes[1], "nll", "NLL")):
        for name, entry, ls in entries:
            sev = entry["by_severity"]
            ax.plot([int(k) for k in sev], [v[key] for v in sev.values()], marker="o", ms=3, ls=ls, label=name)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    _save(fig, path, f"{report['name']}: under shift")


def _save(fig: Any, path: Path, title: str = "") -> None:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """report.md, the plots and the TensorBoard scalars of a finished run."""
    write_markdown(report, out_dir / "report.md")
    write_scalars(out_dir, report_scalars(report))
    plot_size_curves(report, out_dir / "size_curve.png")
    plot_reliability(report, out_dir / "reliability.png")
    if report["shift"]["corruptions"]:
        plot_shift(report, out_dir / "shift.png")


def report_scalars(report: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """TensorBoard scalars of a committee run: each member's and committee's test metrics (step 0; committees also
    under each shift's mean), and each committee's accuracy and NLL against its size (step = size)."""
    out: list[tuple[str, Any, int]] = []
    for m in report["members"]:
        out += [(f"member/{m['name']}/test_{k}", v, 0) for k, v in m["test"].items()]
        out += [(f"member/{m['name']}/shift_{k}", v, 0) for k, v in (m.get("shift_mean") or {}).items()]
    for c in report["committees"]:
        out += [(f"committee/{c['name']}/test_{k}", v, 0) for k, v in c["test"].items()]
        out += [(f"committee/{c['name']}/shift_{k}", v, 0) for k, v in (c.get("shift_mean") or {}).items()]
        for point in c.get("curve") or []:
            out += [(f"committee/{c['name']}/by_size_{k}", point[k], int(point["size"])) for k in ("accuracy", "nll")]
    return out
