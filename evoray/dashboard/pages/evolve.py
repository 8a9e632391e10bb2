"""An evolve run: fitness per generation, each generation's population against params with its Pareto front, the
genealogy of the best individual (or of any individual clicked in the population), its alphas and its cells."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from dash import Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.alphas import edge_names, op_names, softmax, space_of
from evoray.dashboard.pages.common import (
    cell_title,
    cells,
    graph,
    header,
    live,
    problem_box,
    register_live,
    section,
    table,
)
from evoray.dashboard.store import RunStore, archive_problem
from evoray.errors import ConfigError
from evoray.runs import Run, row_alphas
from evoray.runs.archive import ARCHIVE

P = "evo"


def layout(store: RunStore, run: Run, run_id: str) -> html.Div:
    return html.Div(
        [
            *live(P, run_id),
            dcc.Store(id=f"{P}-focus", data=None),
            header(P, store, run),
            html.Div(id=f"{P}-problem"),
            section("Fitness", graph(f"{P}-fitness")),
            section(
                "Population",
                html.Div(
                    [
                        html.Span("generation ", className="label"),
                        dcc.Slider(id=f"{P}-gen", min=0, max=0, step=1, value=None),
                    ],
                    className="slider",
                ),
                html.Div(
                    "colour: how each individual was made (random grey, elite green, crossover blue, mutation "
                    "orange); click one to follow its genealogy, alphas and cells (the one followed is ringed)",
                    className="note",
                ),
                graph(f"{P}-population"),
            ),
            section(
                "Genealogy",
                html.Button("back to the best individual", id=f"{P}-best", n_clicks=0),
                html.Div(id=f"{P}-focus-text", className="focus"),
                graph(f"{P}-genealogy"),
                html.Div(id=f"{P}-lineage"),
            ),
            section("Alphas (softmax per edge)", html.Div(id=f"{P}-alphas", className="grid2")),
            section("Cells", html.Div(id=f"{P}-cells", className="cells")),
        ]
    )


class _Data:
    """An evolve run's archive with what every figure needs, computed once per archive version."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.stats = figures.generation_stats(rows)
        self.generations = sorted({int(r["generation"]) for r in rows})
        self.by_key = {(int(r["generation"]), int(r["id"])): r for r in rows}


def _data(store: RunStore, run: Run) -> _Data:
    """The archive's data; none yet before the first generation is written (a run that just started)."""
    if not run.has_archive():
        problem = archive_problem(run)  # a finished run without its archive
        if problem:
            raise ConfigError(problem)
        return _Data([])
    return store.derived("evolve", run, [run.path / ARCHIVE], lambda: _Data(store.archive(run)))


def best_key(store: RunStore, run: Run, data: _Data) -> tuple[int, int] | None:
    """(generation, id) of the run's answer (``best.json``), or of the fittest of the newest generation."""
    if (run.path / "best.json").is_file():
        try:
            best = store.json(run, "best.json")
            key = (int(best["generation"]), int(best["id"]))
            if key in data.by_key:
                return key
        except (ConfigError, KeyError, TypeError, ValueError):
            pass
    if not data.generations:
        return None
    last = data.generations[-1]
    rows = [r for r in data.rows if int(r["generation"]) == last]
    top = max(rows, key=lambda r: _score(r.get("fitness")))
    return (last, int(top["id"]))


def _score(fitness: Any) -> float:
    """A fitness to rank by: unscored (None) and failed (NaN) individuals below every scored one."""
    try:
        f = float(fitness)
    except (TypeError, ValueError):
        return -math.inf
    return f if math.isfinite(f) else -math.inf


def draw_generations(store: RunStore, run_id: str, value: int | None, old_max: int | None) -> tuple[Any, ...]:
    """The fitness figure and the generation slider's (max, marks, value), plus a problem box (or None)."""
    try:
        run = store.open(run_id)
        data = _data(store, run)
    except ConfigError as err:
        return figures.empty("archive unreadable"), 0, {}, None, problem_box(f"unreadable: {err}")
    if not data.generations:
        return figures.fitness_figure([]), 0, {}, None, None
    last = data.generations[-1]
    step = max(1, len(data.generations) // 10)
    marks = {g: str(g) for g in data.generations[::step]} | {last: str(last)}
    follow = value is None or value == old_max  # at the newest generation: keep following it
    return figures.fitness_figure(data.stats), last, marks, last if follow else value, None


def draw_population(store: RunStore, run_id: str, gen: int | None, focus: Any = None) -> Any:
    """Generation ``gen``'s population, the individual the page details (clicked, else the best) ringed."""
    run, data = _load(store, run_id)
    if gen is None:
        return figures.empty("no generation finished yet")
    shown = tuple(focus) if focus else best_key(store, run, data)
    return figures.population_figure(data.rows, int(gen), shown=None if shown is None else int(shown[1]))


def draw_individual(store: RunStore, run_id: str, focus: Any) -> tuple[Any, ...]:
    """The focused individual (the best unless one was clicked): its summary, genealogy, first-parent line, alphas
    and cells."""
    run, data = _load(store, run_id)
    key = tuple(focus) if focus else best_key(store, run, data)
    if key is None or key not in data.by_key:
        none = figures.empty("no individual yet")
        return "no individual yet", none, None, None, cells(None)
    row = data.by_key[key]  # type: ignore[index]
    is_best = not focus
    text = [
        html.B(("best individual" if is_best else "individual") + f" {row['id']} of generation {row['generation']}"),
        f": fitness {_num(row.get('fitness'))}, {_num(row.get('params_m'), 4)} M params, origin {row.get('origin')}",
    ]
    family, total = figures.drawn_family(data.rows, int(row["id"]))
    line = figures.lineage(data.rows, int(row["id"]))
    line_rows = [
        {"generation": r["generation"], "id": r["id"], "origin": r.get("origin"),
         "parents": ", ".join(str(p) for p in r.get("parents") or []), "fitness": r.get("fitness"),
         "genotype": r.get("genotype")}
        for r in line
    ]  # fmt: skip
    lineage = html.Details(
        [
            html.Summary(f"first-parent line: {len(line)} individuals back to generation {line[-1]['generation']}"),
            table(line_rows, [(k, k) for k in ("generation", "id", "origin", "parents", "fitness", "genotype")]),
        ]
    )
    return (
        text,
        figures.genealogy_figure(family, int(row["id"]), total),
        lineage,
        _alphas(row),
        cells(row.get("genotype"), "best" if is_best else f"individual {row['id']}"),
    )


def _load(store: RunStore, run_id: str) -> tuple[Run, _Data]:
    try:
        run = store.open(run_id)
        return run, _data(store, run)
    except ConfigError:
        raise PreventUpdate from None


def register(app: Dash, store: RunStore) -> None:
    register_live(app, store, P)

    @app.callback(
        Output(f"{P}-fitness", "figure"),
        Output(f"{P}-gen", "max"),
        Output(f"{P}-gen", "marks"),
        Output(f"{P}-gen", "value"),
        Output(f"{P}-problem", "children"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
        State(f"{P}-gen", "value"),
        State(f"{P}-gen", "max"),
    )
    def _generations(_: Any, run_id: str, value: int | None, old_max: int | None) -> Any:
        return draw_generations(store, run_id, value, old_max)

    @app.callback(
        Output(f"{P}-population", "figure"),
        Input(f"{P}-gen", "value"),
        Input(f"{P}-version", "data"),
        Input(f"{P}-focus", "data"),
        State(f"{P}-run", "data"),
    )
    def _population(gen: int | None, _: Any, focus: Any, run_id: str) -> Any:
        return draw_population(store, run_id, gen, focus)

    @app.callback(
        Output(f"{P}-focus", "data"),
        Input(f"{P}-population", "clickData"),
        Input(f"{P}-best", "n_clicks"),
        prevent_initial_call=True,
    )
    def _focus(click: Any, _: int) -> Any:
        if ctx.triggered_id == f"{P}-best":
            return None
        try:
            g, i = click["points"][0]["customdata"]
            return [int(g), int(i)]
        except (TypeError, KeyError, IndexError, ValueError):
            raise PreventUpdate from None

    @app.callback(
        Output(f"{P}-focus-text", "children"),
        Output(f"{P}-genealogy", "figure"),
        Output(f"{P}-lineage", "children"),
        Output(f"{P}-alphas", "children"),
        Output(f"{P}-cells", "children"),
        Input(f"{P}-focus", "data"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _individual(focus: Any, _: Any, run_id: str) -> Any:
        return draw_individual(store, run_id, focus)


def _alphas(row: dict[str, Any]) -> list[Any]:
    try:
        alphas = row_alphas(row)
    except (KeyError, TypeError, ValueError):
        return [html.Div("no alphas in this row", className="note")]
    space = space_of(row.get("space"))
    out = []
    for ct, a in alphas.items():
        if a.ndim != 2:
            continue
        probs = softmax(a)
        names = op_names(space, ct, *a.shape)
        fig = figures.alphas_figure(probs, edge_names(space, a.shape[0]), names, cell_title(ct))
        out.append(graph(f"{P}-alphas-{ct}", fig))
    return out


def _num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "?"
    return f"{v:.{digits}f}" if np.isfinite(v) else "?"
