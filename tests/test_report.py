"""The plots a run writes: fitness over generations and the best cells."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from evoray import report
from evoray.report import draw_genotype, plot_fitness
from evoray.spaces import parse_arch
from evoray.spaces.published import published_genotype


def test_plot_fitness_draws_best_and_mean_over_a_worst_to_best_band(tmp_path, monkeypatch) -> None:
    """One point per generation: the best and mean curves, and a band from the worst to the best."""
    stats = [
        {"generation": 0, "best": 40.0, "mean": 30.0, "worst": 10.0},
        {"generation": 1, "best": 60.0, "mean": 45.0, "worst": 20.0},
        {"generation": 2, "best": 70.0, "mean": 55.0, "worst": 35.0},
    ]
    figures: list[Figure] = []
    monkeypatch.setattr(report.plt, "close", figures.append)
    plot_fitness(stats, tmp_path / "fitness.png", "ga on darts")
    (fig,) = figures
    try:
        ax = fig.axes[0]
        curves = {line.get_label(): np.asarray(line.get_ydata()).tolist() for line in ax.lines}
        assert curves == {"best": [40.0, 60.0, 70.0], "mean": [30.0, 45.0, 55.0]}
        assert np.asarray(ax.lines[0].get_xdata()).tolist() == [0, 1, 2] and ax.get_title() == "ga on darts"
        band = np.asarray(ax.collections[0].get_paths()[0].vertices)
        assert set(np.round(band[:, 1], 6).tolist()) == {10.0, 20.0, 35.0, 40.0, 60.0, 70.0}
    finally:
        plt.close(fig)
    assert (tmp_path / "fitness.png").stat().st_size > 0


def test_drawings_are_named_and_titled_by_prefix_and_cell_type(tmp_path) -> None:
    """Files ``{prefix}_{cell type}_cell``, titled ``{prefix} {cell type} cell``; NAS-Bench-201's one cell is titled
    ``{prefix} cell`` and drawn from its single input node."""
    paths = draw_genotype(published_genotype("DARTS_V2"), tmp_path, prefix="gen7")
    assert sorted(p.name for p in paths) == [
        "gen7_normal_cell.png", "gen7_normal_cell.svg", "gen7_reduce_cell.png", "gen7_reduce_cell.svg",
    ]  # fmt: skip
    assert ">gen7 reduce cell<" in (tmp_path / "gen7_reduce_cell.svg").read_text()
    arch = parse_arch("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|")
    (png, svg) = draw_genotype(arch, tmp_path)
    assert png.name == "best_cell_cell.png" and ">best cell<" in svg.read_text()
    assert ">in<" in svg.read_text() and ">3 out<" in svg.read_text()
