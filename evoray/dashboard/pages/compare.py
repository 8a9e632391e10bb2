"""Compare several runs: their curves overlaid on shared axes (any metric they report; ``score`` is each run's own
accuracy-like curve: an evolve run's best fitness, a trial's validation accuracy, a train run's top-1, a committee's
accuracy against its size) and their best genotypes side by side."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.pages.common import LIVE_MS, cells, graph, problem_box, run_link, section
from evoray.dashboard.store import OutsideRootsError, RunStore
from evoray.dashboard.trials import best_trial, search_trials
from evoray.errors import ConfigError
from evoray.runs import Run

P = "cmp"
SCORE = {"evolve": "best", "search": "valid_acc", "train": "train_top1", "ensemble": "accuracy"}
STEP = {"evolve": "generation", "search": "epoch", "train": "epoch", "ensemble": "size"}
Series = tuple[str, list[float], list[float | None]]
# what Tune adds to every trial's report that is no curve of the search: clock times, its process, its own counters
TUNE_BOOKKEEPING = frozenset({"timestamp", "pid", "training_iteration", "iterations_since_restore"})


def _metric_options(store: RunStore, runs: list[Run]) -> list[dict[str, str]]:
    """The curves' choices: ``score``, then every metric any of ``runs`` reports so far."""
    metrics: set[str] = set()
    for run in runs:
        with contextlib.suppress(ConfigError):  # an unreadable run's curves: the drawing says so
            metrics |= set(_curves(store, run))
    score = {"label": "score (each run's accuracy or fitness)", "value": "score"}
    return [score] + [{"label": m, "value": m} for m in sorted(metrics - {"score"})]


def layout(store: RunStore, run_ids: list[str]) -> html.Div:
    runs, problems = _open(store, run_ids)
    labels = _labels(store, runs)
    return html.Div(
        [
            dcc.Interval(id=f"{P}-tick", interval=LIVE_MS),
            dcc.Store(id=f"{P}-runs", data=run_ids),
            dcc.Store(id=f"{P}-version", data=None),
            html.H2(f"Comparing {len(runs)} runs"),
            html.Ul(
                [html.Li(html.A(f"{r.command} {labels[r.path]}", href=run_link(store.run_id(r.path)))) for r in runs],
                id=f"{P}-list",
            ),
            *[problem_box(p) for p in problems],
            section(
                "Curves",
                dcc.Dropdown(
                    id=f"{P}-metric",
                    options=_metric_options(store, runs),
                    value="score",
                    clearable=False,
                    style={"width": "380px"},
                ),
                html.Div(id=f"{P}-curves-problems"),
                graph(f"{P}-curves"),
            ),
            section("Best genotypes", html.Div(id=f"{P}-genotypes", className="side-by-side")),
        ]
    )


def _open(store: RunStore, run_ids: list[str]) -> tuple[list[Run], list[str]]:
    runs, problems = [], []
    for rid in run_ids:
        try:
            runs.append(store.open(rid))
        except OutsideRootsError as err:
            problems.append(f"refused: {err}")
        except ConfigError as err:
            problems.append(f"unreadable: {err}")
    return runs, problems


def _labels(store: RunStore, runs: list[Run]) -> dict[Path, str]:
    """Each run's name in the legends and headings; runs that share a name (one config run twice, a run moved aside
    by ``--overwrite``) add their run id, so that their curves and cells are never mistaken for each other's."""
    names = Counter(run.name for run in runs)
    return {run.path: run.name if names[run.name] == 1 else f"{run.name} ({store.run_id(run.path)})" for run in runs}


def _curves(store: RunStore, run: Run, name: str | None = None) -> dict[str, list[Series]]:
    """Every metric of a run as series (label, steps, values); ``score`` is its accuracy-like one. ``name`` begins
    each label (the run's name by default). Curves that cannot be read are a ``ConfigError``."""
    out: dict[str, list[Series]] = {}
    name = name or run.name

    def add(label: str, rows: list[dict[str, Any]], x_key: str) -> None:
        keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        keys -= TUNE_BOOKKEEPING
        x = [float(r.get(x_key, i)) for i, r in enumerate(rows)]
        for k in keys - {x_key}:
            out.setdefault(k, []).append((label, x, [r.get(k) for r in rows]))
        score = SCORE[run.command]
        if score in keys:
            out.setdefault("score", []).append((label, x, [r.get(score) for r in rows]))

    if run.command == "search":
        for t in search_trials(store, run):
            add(f"{name} {t.searcher}-s{t.seed} #{t.name.rsplit('_', 1)[-1]}", t.rows, "epoch")
    elif run.command == "ensemble":
        rep = store.json(run, "report.json") if (run.path / "report.json").is_file() else {}
        for c in rep.get("committees", []):
            add(f"{name} {c.get('name')}", list(c.get("curve") or []), "size")
    else:
        add(name, store.curves(run), STEP[run.command])
    return out


def _best_genotype(store: RunStore, run: Run) -> str | None:
    result = run.result
    if run.command == "ensemble":
        try:
            rep = store.json(run, "report.json")
        except ConfigError:
            return None
        return ((rep.get("summary") or {}).get("best_member") or {}).get("genotype")
    if result.get("genotype"):
        return str(result["genotype"])
    if run.command == "evolve" and run.has_archive():
        try:
            best = run.best_rows(1)
        except ConfigError:
            return None
        return str(best[0]["genotype"]) if best else None
    if run.command == "search":
        top = best_trial([t for t in search_trials(store, run) if t.genotype])
        return top.genotype if top else None
    return str(run.manifest.get("genotype") or "") or None


def register(app: Dash, store: RunStore) -> None:
    @app.callback(
        Output(f"{P}-version", "data"),
        Input(f"{P}-tick", "n_intervals"),
        State(f"{P}-runs", "data"),
        State(f"{P}-version", "data"),
    )
    def _version(_: Any, run_ids: list[str], old: Any) -> Any:
        new = []
        for rid in run_ids:
            try:
                new.append(store.version(rid))
            except ConfigError:
                new.append("")
        if new == old:
            raise PreventUpdate
        return new

    @app.callback(
        Output(f"{P}-metric", "options"),
        Output(f"{P}-metric", "value"),
        Input(f"{P}-version", "data"),
        State(f"{P}-runs", "data"),
        State(f"{P}-metric", "value"),
        prevent_initial_call=True,
    )
    def _metrics(_: Any, run_ids: list[str], metric: str) -> Any:
        """The metric choices follow the runs: a metric first reported after the page opened joins them, and one that
        no run reports any more (its run rewritten) gives way to ``score``."""
        options = _metric_options(store, _open(store, run_ids)[0])
        return options, (no_update if metric in {o["value"] for o in options} else "score")

    @app.callback(
        Output(f"{P}-curves", "figure"),
        Output(f"{P}-genotypes", "children"),
        Output(f"{P}-curves-problems", "children"),
        Input(f"{P}-metric", "value"),
        Input(f"{P}-version", "data"),
        State(f"{P}-runs", "data"),
    )
    def _draw(metric: str, _: Any, run_ids: list[str]) -> Any:
        return draw(store, run_ids, metric)


def draw(store: RunStore, run_ids: list[str], metric: str) -> tuple[Any, list[Any], list[Any]]:
    """The runs' ``metric`` curves on shared axes, their best genotypes side by side, and a line for each run whose
    curves cannot be read."""
    runs, _problems = _open(store, run_ids)
    labels = _labels(store, runs)
    series: list[Series] = []
    steps = set()
    problems = []
    for run in runs:
        try:
            found = _curves(store, run, labels[run.path]).get(metric, [])
        except ConfigError as err:
            problems.append(
                html.Div(f"{run.command} {labels[run.path]}: curves unreadable: {err}", className="problem")
            )
            continue
        series += found
        if found:
            steps.add(STEP[run.command])
    columns = [
        html.Div(
            [html.H4(f"{run.command} {labels[run.path]}"), *cells(_best_genotype(store, run), labels[run.path])],
            className="column",
        )
        for run in runs
    ]
    return figures.overlay_figure(series, metric, " / ".join(sorted(steps)) or "step"), columns, problems
