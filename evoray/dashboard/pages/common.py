"""Pieces every run page shares: the header (what the run is, its status and headline), the live machinery (a
timer that looks at the run's files every few seconds and a version that changes only when they do), cells drawn
from a genotype, and tables."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import dash_ag_grid as dag
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.store import OutsideRootsError, RunStore, format_duration, format_number
from evoray.errors import ConfigError
from evoray.runs import Run
from evoray.spaces import parse_genotype
from evoray.spaces.published import published_genotype

LIVE_MS = 2000  # how often a page looks for new results (ms)


def run_link(run_id: str) -> str:
    return "/run?id=" + quote(run_id, safe="/")


def live(prefix: str, run_id: str) -> list[Any]:
    """The timer, the version and the run id of a page whose parts redraw when the run's files change."""
    return [
        dcc.Interval(id=f"{prefix}-tick", interval=LIVE_MS),
        dcc.Store(id=f"{prefix}-version", data=None),
        dcc.Store(id=f"{prefix}-run", data=run_id),
    ]


def register_live(app: Dash, store: RunStore, prefix: str) -> None:
    """The callbacks that turn the timer into a new version (only when the run's files changed) and redraw the
    header of the run on each new version."""

    @app.callback(
        Output(f"{prefix}-version", "data"),
        Input(f"{prefix}-tick", "n_intervals"),
        State(f"{prefix}-run", "data"),
        State(f"{prefix}-version", "data"),
    )
    def _version(_: Any, run_id: str, old: Any) -> Any:
        try:
            new = store.version(run_id)
        except ConfigError:
            raise PreventUpdate from None
        if new == old:
            raise PreventUpdate
        return new

    @app.callback(
        Output(f"{prefix}-header", "children"), Input(f"{prefix}-version", "data"), State(f"{prefix}-run", "data")
    )
    def _header(_: Any, run_id: str) -> Any:
        try:
            return header_body(store, store.open(run_id))
        except ConfigError as err:
            return problem_box(str(err))


def header(prefix: str, store: RunStore, run: Run) -> html.Div:
    return html.Div(header_body(store, run), id=f"{prefix}-header", className="run-header")


def header_body(store: RunStore, run: Run) -> list[Any]:
    row = store.row(run)
    m = run.manifest
    status = row.status
    facts = [
        ("command", run.command),
        ("space", m.get("space") or ""),
        ("method", m.get("method") or ""),
        ("seed", "" if run.seed is None else str(run.seed)),
        ("started", _started(str(m.get("started") or ""))),
        ("duration", format_duration(row.duration_s)),
        ("progress", row.progress),
    ]
    return [
        html.H2([run.name, html.Span(status, className=f"status status-{status}", id="run-status")]),
        html.Div(str(run.path), className="path"),
        html.Div([html.Span([html.B(k + ": "), str(v)], className="fact") for k, v in facts if v], className="facts"),
        html.Div(row.headline, className="headline", id="run-headline"),
        html.Div(f"error: {m.get('error')}", className="problem") if m.get("error") else None,
    ]


def _started(iso: str) -> str:
    """An ISO start time to the second with its offset ("2026-12-05 01:52:01 UTC": runs write UTC)."""
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    offset = t.utcoffset()
    if offset is None:
        return text
    if not offset:
        return f"{text} UTC"
    z = t.strftime("%z")
    return f"{text} {z[:3]}:{z[3:5]}"


def cell_title(cell_type: str) -> str:
    """ "normal cell", "reduce cell"; NAS-Bench-201's one cell type, named "cell", is just "cell"."""
    return cell_type if cell_type == "cell" else f"{cell_type} cell"


def problem_box(text: str) -> html.Div:
    return html.Div(text, className="problem", id="problem")


def section(title: str, *children: Any, id: str | None = None) -> html.Div:
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div([html.H3(title), *children], className="section", **kwargs)


def graph(id: str, figure: Any = None) -> dcc.Graph:
    return dcc.Graph(id=id, figure=figure or figures.empty("loading"), config={"displaylogo": False})


def cells(genotype_text: str | None, title: str = "") -> list[Any]:
    """Every cell of a genotype drawn as a directed graph, or why it cannot be drawn."""
    if not genotype_text:
        return [html.Div("no genotype yet", className="note")]
    text = str(genotype_text).strip()
    try:  # a published name (a train run of DARTS_V2) or a genotype's text
        genotype = published_genotype(text) if text.isidentifier() else parse_genotype(text)
    except ConfigError as err:
        return [problem_box(f"genotype cannot be drawn: {err}")]
    n_in = 1 if genotype.is_nb201 else 2
    out: list[Any] = []
    for ct, cell in genotype.cells:
        name = f"{title} {cell_title(ct)}".strip()
        figure = figures.cell_figure(cell, n_in, name)
        out.append(
            html.Div(  # a drawing wider than its column scrolls sideways in it (labels keep their size)
                dcc.Graph(
                    figure=figure,
                    config={"displaylogo": False, "staticPlot": False},
                    style={"width": f"{figure.layout.width}px", "height": f"{figure.layout.height}px"},
                ),
                className="cell",
                **{"data-cell": ct},  # type: ignore[arg-type]
            )
        )
    out.append(html.Div(str(genotype_text), className="genotype"))
    return out


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], id: str | None = None) -> html.Table:
    """A plain table (``columns``: (key, heading)); numbers shown to 3 decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):  # three decimals; a small value (params in millions) three significant digits
            return format_number(v)
        return "" if v is None else str(v)

    head = html.Thead(html.Tr([html.Th(h) for _, h in columns]))
    body = html.Tbody([html.Tr([html.Td(cell(r.get(k))) for k, _ in columns]) for r in rows])
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Table([head, body], className="table", **kwargs)


def grid(
    id: str, rows: list[dict[str, Any]], columns: list[dict[str, Any]], row_id: str, multi: bool, height: int
) -> dag.AgGrid:
    """An AG Grid table: sortable, filterable columns; with ``multi`` a checkbox per row for picking several."""
    options: dict[str, Any] = {"animateRows": False, "suppressCellFocus": True, "enableCellTextSelection": True}
    if multi:
        options["rowSelection"] = {
            "mode": "multiRow",
            "enableClickSelection": False,
            "checkboxes": True,
            "headerCheckbox": True,
        }
        options["selectionColumnDef"] = {"pinned": "left"}  # beside a pinned first column
    return dag.AgGrid(
        id=id,
        rowData=rows,
        columnDefs=columns,
        defaultColDef={"sortable": True, "filter": True, "resizable": True, "minWidth": 70},
        getRowId=f"params.data.{row_id}",
        dashGridOptions=options,
        columnSize="autoSize",
        style={"height": f"{height}px", "width": "100%"},
    )


def refused_or_unreadable(store: RunStore, run_id: str) -> tuple[Run | None, html.Div | None]:
    """The run of ``run_id``, or the box that says why it cannot be shown."""
    try:
        return store.open(run_id), None
    except OutsideRootsError as err:
        return None, problem_box(f"refused: {err}")
    except ConfigError as err:
        return None, problem_box(f"unreadable: {err}")
