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


def draw_cell(cell: CellGenotype, num_inputs: int, path: Path, title: str) -> list[Path]:
    """A cell as a left-to-right directed graph (inputs, intermediate nodes, output): every edge an arrow in its op's
    colour with the op written on the edge's own run (layout: :func:`evoray.dashboard.cells.layout_cell`). Writes
    ``path`` and an SVG beside it; returns both."""
    from evoray.dashboard.cells import RADIUS, arrow_tail, layout_cell, op_colour

    layout = layout_cell(cell, num_inputs)
    (x0, x1), (y0, y1) = layout.xlim, layout.ylim
    scale = 0.62  # inches per layout unit
    fig, ax = plt.subplots(figsize=(max(3.0, (x1 - x0) * scale), max(2.0, (y1 - y0) * scale + 0.4)))
    for edge in layout.edges:
        colour = "0.6" if edge.op is None else op_colour(edge.op)
        style = "--" if edge.op is None else "-"
        xs, ys = zip(*edge.points[:-1])
        tail, head = arrow_tail(edge)
        ax.plot([*xs, tail[0]], [*ys, tail[1]], color=colour, lw=1.4, ls=style, solid_capstyle="round", zorder=1)
        ax.annotate(
            "", xy=head, xytext=tail, zorder=2,
            arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.4, "mutation_scale": 12, "shrinkA": 0,
                        "shrinkB": 0},
        )  # fmt: skip
        if edge.op is not None and edge.label_at is not None:
            ax.text(
                *edge.label_at, edge.op, fontsize=8, ha="center", va="center", color=colour, zorder=3,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "lw": 0.8},
            )  # fmt: skip
    fills = {"input": "#cfe2f3", "node": "#fde9c9", "output": "#d9ead3"}
    for node in layout.nodes:
        ax.add_patch(plt.Circle((node.x, node.y), RADIUS, fc=fills[node.kind], ec="0.3", lw=1.0, zorder=4))
        text = f"${node.label}$" if node.kind == "input" and "{" in node.label else node.label
        ax.text(node.x, node.y, text, ha="center", va="center", fontsize=8 if len(node.label) < 4 else 6.5, zorder=5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    svg = path.with_suffix(".svg")
    with plt.rc_context({"svg.fonttype": "none"}):  # labels stay text: searchable, selectable
        fig.savefig(svg)
    plt.close(fig)
    return [path, svg]


def draw_genotype(genotype: Genotype, out_dir: Path, prefix: str = "best") -> list[Path]:
    """One PNG and one SVG per cell type of ``genotype``; returns the files written."""
    paths = []
    for name, cell in genotype.cells:
        path = out_dir / f"{prefix}_{name}_cell.png"
        title = f"{prefix} cell" if name == "cell" else f"{prefix} {name} cell"
        paths += draw_cell(cell, 1 if genotype.is_nb201 else 2, path, title)
    return paths
