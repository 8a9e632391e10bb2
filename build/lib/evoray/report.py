"""Plots a person looks at after a run: fitness over generations and the best cells drawn as graphs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from evoray.spaces.genotype import CellGenotype, Genotype


def plot_fitness(stats: Sequence[dict[str, float]], path: Path, title: str = "fitness") -> None:
    """Best, mean and worst fitness per generation."""
    gens = [s["generation"] for s in stats]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(gens, [s["best"] for s in stats], label="best", marker="o", ms=3)
    ax.plot(gens, [s["mean"] for s in stats], label="mean")
    ax.fill_between(gens, [s["worst"] for s in stats], [s["best"] for s in stats], alpha=0.15)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_cell(cell: CellGenotype, num_inputs: int, path: Path, title: str) -> None:
    """A cell as a left-to-right graph: inputs, intermediate nodes, output; edges labelled by their op."""
    n_nodes = num_inputs + len(cell.nodes)
    xs = {i: (0.0 if i < num_inputs else 1.0 + (i - num_inputs)) for i in range(n_nodes)}
    ys = {
        i: (float(i) * 1.2 - 0.6 if i < num_inputs else (0.6 if (i - num_inputs) % 2 else -0.6)) for i in range(n_nodes)
    }
    out = float(len(cell.nodes) + 1)
    fig, ax = plt.subplots(figsize=(1.8 * (len(cell.nodes) + 2), 3.2))
    for i, node in enumerate(cell.nodes):
        target = num_inputs + i
        for op, source in node:
            if op == "none":
                continue
            x0, y0, x1, y1 = xs[source], ys[source], xs[target], ys[target]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "0.4"})
            ax.text(
                (x0 + x1) / 2,
                (y0 + y1) / 2,
                op,
                fontsize=7,
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    for c in cell.concat:
        ax.annotate("", xy=(out, 0.0), xytext=(xs[c], ys[c]), arrowprops={"arrowstyle": "->", "color": "0.75"})
    labels = {i: (f"c_{{k-{2 - i}}}" if num_inputs == 2 else "in") for i in range(num_inputs)}
    for i in range(n_nodes):
        ax.text(
            xs[i],
            ys[i],
            f"${labels[i]}$" if i in labels else str(i),
            ha="center",
            va="center",
            bbox={"boxstyle": "circle", "fc": "#cfe2f3" if i < num_inputs else "#fde9c9"},
        )
    ax.text(out, 0.0, "out", ha="center", va="center", bbox={"boxstyle": "round", "fc": "#d9ead3"})
    ax.set_xlim(-0.6, out + 0.6)
    ax.set_ylim(-1.4, 1.4)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_genotype(genotype: Genotype, out_dir: Path, prefix: str = "best") -> list[Path]:
    """One PNG per cell type of ``genotype``; returns the files written."""
    paths = []
    for name, cell in genotype.cells:
        path = out_dir / f"{prefix}_{name}_cell.png"
        draw_cell(cell, 1 if genotype.is_nb201 else 2, path, f"{prefix} {name} cell")
        paths.append(path)
    return paths
