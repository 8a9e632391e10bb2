"""A search run (a Tune experiment): one row per trial, the per-epoch curves of the trials picked in the table, and
for the trial clicked (or chosen) its op distribution per edge over the epochs and its cells."""

from __future__ import annotations

import math
from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.alphas import edge_names, epoch_distributions, op_names, space_of
from evoray.dashboard.pages.common import cell_title, cells, graph, grid, header, live, register_live, section
from evoray.dashboard.store import RunStore, counted
from evoray.dashboard.trials import Trial, best_trial, search_trials
from evoray.errors import ConfigError
from evoray.runs import Run

P = "search"
COLUMNS: list[dict[str, Any]] = [
    {"field": "trial", "headerName": "Trial", "pinned": "left"},
    {"field": "searcher"},
    {"field": "seed", "filter": "agNumberColumnFilter"},
    {"field": "grid", "headerName": "Grid point", "maxWidth": 320, "tooltipField": "grid"},
    {"field": "status"},
    {"field": "epoch", "filter": "agNumberColumnFilter"},
    # the headline's rule: the last epoch's accuracy first (the best epoch's favours noisy trials)
    {"field": "valid_acc", "headerName": "Valid acc (%)", "filter": "agNumberColumnFilter", "sort": "desc"},
    {"field": "best", "headerName": "Best epoch (%)", "filter": "agNumberColumnFilter"},
    {
        "field": "valid_on",
        "headerName": "Measured on",
        "headerTooltip": "split: held out of training; test: the "
        "test set (a single-level search on the whole training set), never a trial to choose by",
    },
    {"field": "params_m", "headerName": "Params (M)", "filter": "agNumberColumnFilter"},
    {"field": "genotype", "maxWidth": 600, "tooltipField": "genotype"},
]


def layout(store: RunStore, run: Run, run_id: str) -> html.Div:
    trials = search_trials(store, run)
    tune = str(run.manifest.get("tune") or "")
    elsewhere = tune and "://" in tune
    picked = [t.table_row() for t in trials[:6]]
    return html.Div(
        [
            *live(P, run_id),
            header(P, store, run),
            html.Div(
                f"Tune storage outside the run ({tune}): trials appear when it is mounted here" if elsewhere else "",
                className="note",
            ),
            section(
                "Trials",
                html.Div(
                    _count_note(trials),
                    className="note",
                    id=f"{P}-count",
                ),
                _grid(trials, picked),
            ),
            section("Curves of the ticked trials", graph(f"{P}-curves")),
            section(
                "Trial",
                dcc.Dropdown(
                    id=f"{P}-focus",
                    options=[{"label": _label(t), "value": t.name} for t in trials],
                    value=_default_focus(trials),
                    clearable=False,
                ),
                html.Div(id=f"{P}-focus-text", className="focus"),
                html.Div(id=f"{P}-ops"),
                html.Div(id=f"{P}-cells", className="cells"),
            ),
        ]
    )


def _grid(trials: list[Trial], picked: list[dict[str, Any]]) -> Any:
    g = grid(
        f"{P}-trials",
        [t.table_row() for t in trials],
        COLUMNS,
        "trial",
        multi=True,
        height=min(420, 90 + 42 * len(trials)),
    )
    g.selectedRows = picked
    return g


def _count_note(trials: list[Trial]) -> str:
    return f"{counted(len(trials), 'trial')}; tick trials to compare their curves, click a row to see its cells"


def _label(t: Trial) -> str:
    return f"{t.name} ({t.searcher}, seed {t.seed}, {t.status})"


def _default_focus(trials: list[Trial]) -> str | None:
    best = best_trial(trials)
    return None if best is None else best.name


def register(app: Dash, store: RunStore) -> None:
    register_live(app, store, P)

    def load(run_id: str) -> tuple[Run, list[Trial]]:
        try:
            run = store.open(run_id)
            return run, search_trials(store, run)
        except ConfigError:
            raise PreventUpdate from None

    @app.callback(
        Output(f"{P}-trials", "rowData"),
        Output(f"{P}-count", "children"),
        Output(f"{P}-focus", "options"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
        prevent_initial_call=True,
    )
    def _rows(_: Any, run_id: str) -> Any:
        _, trials = load(run_id)
        return (
            [t.table_row() for t in trials],
            _count_note(trials),
            [{"label": _label(t), "value": t.name} for t in trials],
        )

    @app.callback(
        Output(f"{P}-curves", "figure"),
        Input(f"{P}-trials", "selectedRows"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _curves(selected: list[dict[str, Any]] | None, _: Any, run_id: str) -> Any:
        _, trials = load(run_id)
        names = [r["trial"] for r in selected or []]
        by_name = {t.name: t for t in trials}
        return figures.trial_curves_figure({_short(by_name[n]): by_name[n].rows for n in names if n in by_name})

    @app.callback(
        Output(f"{P}-focus", "value"),
        Input(f"{P}-trials", "cellClicked"),
        prevent_initial_call=True,
    )
    def _clicked(cell: dict[str, Any] | None) -> Any:
        if not cell or not cell.get("rowId"):
            raise PreventUpdate
        return cell["rowId"]

    @app.callback(
        Output(f"{P}-focus-text", "children"),
        Output(f"{P}-ops", "children"),
        Output(f"{P}-cells", "children"),
        Input(f"{P}-focus", "value"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _trial(name: str | None, _: Any, run_id: str) -> Any:
        _, trials = load(run_id)
        trial = next((t for t in trials if t.name == name), None)
        if trial is None:
            return "no trial", None, cells(None)
        text = [
            html.B(trial.name),
            f": {trial.searcher}, seed {trial.seed}, {trial.status}, epoch {trial.epoch}, "
            f"valid {_pct(trial.valid_acc)}, best {_pct(trial.best)}"
            + (" (on the test set)" if trial.valid_on == "test" else "")
            + (f", grid point {trial.grid}" if trial.grid not in ("", "-") else ""),
        ]
        return text, _ops(trial), cells(trial.genotype, trial.searcher)


def _ops(trial: Trial) -> list[Any]:
    space = space_of(trial.space)
    epochs, dists, source = epoch_distributions(trial.rows, space)
    if not dists:
        return [html.Div("no per-epoch op distribution yet", className="note")]
    note = (
        "op probabilities per edge, as the trial reported them each epoch"
        if source == "reported"
        else "the op each epoch's derived genotype chose per edge (this trial did not report per-epoch op "
        "probabilities: evoray records them as ops_<cell> from this version on)"
    )
    out: list[Any] = [html.Div(note, className="note")]
    for ct, probs in dists.items():
        e, k = probs[0].shape
        fig = figures.op_distribution_figure(
            epochs,
            probs,
            edge_names(space, e),
            op_names(space, ct, e, k),
            f"{cell_title(ct)}: op distribution per edge over the epochs",
        )
        out.append(graph(f"{P}-ops-{ct}", fig))
    return out


def _short(t: Trial) -> str:
    """A trial's legend label: searcher, seed and the trial number."""
    return f"{t.searcher}-s{t.seed} #{t.name.rsplit('_', 1)[-1]}"


def _pct(x: float | None) -> str:
    return "?" if x is None or not math.isfinite(x) else f"{x:.2f}%"
