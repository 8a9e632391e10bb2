"""A train run: per-epoch loss, accuracy and learning rate, the results (test accuracy, params, FLOPs, latency) and
the trained genotype's cells."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, html
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.pages.common import cells, graph, header, live, problem_box, register_live, section, table
from evoray.dashboard.store import RunStore
from evoray.errors import ConfigError
from evoray.runs import Run

P = "train"
GROUPS = (("loss", ("train_loss",)), ("top-1 (%)", ("train_top1",)), ("learning rate", ("lr",)))


def layout(store: RunStore, run: Run, run_id: str) -> html.Div:
    return html.Div(
        [
            *live(P, run_id),
            header(P, store, run),
            html.Div(id=f"{P}-problem"),
            section("Curves", graph(f"{P}-curves")),
            section("Results", html.Div(id=f"{P}-results")),
            section("Cells", html.Div(id=f"{P}-cells", className="cells")),
        ]
    )


def _results(store: RunStore, run: Run) -> dict[str, Any]:
    for name in ("results.json", "profile.json"):
        if (run.path / name).is_file():
            try:
                return store.json(run, name)
            except ConfigError:
                continue
    return dict(run.result)


def register(app: Dash, store: RunStore) -> None:
    register_live(app, store, P)

    @app.callback(
        Output(f"{P}-curves", "figure"),
        Output(f"{P}-results", "children"),
        Output(f"{P}-cells", "children"),
        Output(f"{P}-problem", "children"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _draw(_: Any, run_id: str) -> Any:
        try:
            run = store.open(run_id)
        except ConfigError:
            raise PreventUpdate from None
        try:  # a damaged curves file: said so, and the results and cells still shown
            curves, problem = figures.simple_curves_figure(store.curves(run), "epoch", GROUPS), None
        except ConfigError as err:
            curves, problem = figures.empty("curves unreadable"), problem_box(f"unreadable: {err}")
        result = _results(store, run)
        if run.status == "done" and result and "test_top1" not in result:  # train --profile: nothing is trained
            curves = figures.empty("a profile run: the genotype was measured, not trained (no curves)")
        shown = [
            {"key": k, "value": v} for k, v in result.items() if k != "genotype" and not isinstance(v, (dict, list))
        ]
        genotype = result.get("genotype") or run.manifest.get("genotype")
        return (
            curves,
            table(shown, [("key", "result"), ("value", "value")], id=f"{P}-results-table")
            if shown
            else "no results yet",
            cells(genotype),
            problem,
        )
