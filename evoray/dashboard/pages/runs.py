"""The runs page: every run under the roots in one table (filter, sort, tick several to compare), the runs that
cannot be read with the reason, and roots that do not exist."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any
from urllib.parse import quote

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from evoray.dashboard.pages.common import LIVE_MS, grid, run_link
from evoray.dashboard.store import RunRow, RunStore, format_duration

P = "runs"
STATUS_STYLE = {
    "styleConditions": [
        {"condition": f"params.value == '{status}'", "style": style}
        for status, style in (
            ("running", {"color": "#1565c0", "fontWeight": "bold"}),
            ("done", {"color": "#2e7d32"}),
            ("failed", {"color": "#c62828", "fontWeight": "bold"}),
            ("interrupted", {"color": "#ef6c00"}),
            ("unreadable", {"color": "#c62828", "fontStyle": "italic"}),
        )
    ]
}
COLUMNS: list[dict[str, Any]] = [
    {"field": "command", "width": 110},
    {
        "field": "link",
        "headerName": "Name",
        "cellRenderer": "markdown",
        "minWidth": 180,
        "maxWidth": 320,
        "filter": "agTextColumnFilter",
        "pinned": "left",  # stays in view when the table scrolls sideways
        "tooltipField": "name",
    },
    {"field": "space", "width": 100},
    # an ensemble's combiners make a long list: the column stays narrow, the list in its tooltip
    {"field": "method", "headerName": "Searcher / strategy", "maxWidth": 200, "tooltipField": "method"},
    {"field": "seed", "width": 80, "filter": "agNumberColumnFilter"},
    {"field": "status", "width": 110, "cellStyle": STATUS_STYLE},
    # the headline number beside the status, in view at 1400 px (the columns size to their contents)
    {
        "field": "result",
        "width": 100,
        "filter": "agNumberColumnFilter",
        "type": "rightAligned",
        "valueFormatter": {"function": "params.value == null ? '' : d3.format('.2f')(params.value)"},
        "getQuickFilterText": {"function": "params.value == null ? '' : d3.format('.2f')(params.value)"},
    },
    {  # sorted by the ISO time, shown to the minute (its tooltip the full time)
        "field": "started",
        "sort": "desc",
        "valueFormatter": {"function": "formatStarted(params.value)"},
        "tooltipField": "started",
    },
    {  # sorted by seconds, shown in words
        "field": "duration_s",
        "headerName": "Duration",
        "valueFormatter": {"function": "formatDuration(params.value)"},
        "filter": "agNumberColumnFilter",
    },
    {"field": "progress", "comparator": {"function": "progressComparator"}},
    {"field": "headline", "headerName": "Headline result", "minWidth": 240, "flex": 1, "tooltipField": "headline"},
    {"field": "id", "headerName": "Run id", "hide": True},
]


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in text)


def table_rows(rows: list[RunRow]) -> list[dict[str, Any]]:
    """The grid's rows: the run's fields, a link to its page, the duration in words."""
    out = []
    for r in rows:
        d = r.as_dict()
        d["link"] = f"[{_escape(r.name)}]({run_link(r.id)})"
        d["duration"] = format_duration(r.duration_s)  # what the quick filter matches
        out.append(d)
    return out


def layout(store: RunStore) -> html.Div:
    rows, problems = store.listing()
    return html.Div(
        [
            dcc.Interval(id=f"{P}-tick", interval=LIVE_MS * 2),
            dcc.Store(id=f"{P}-version", data=_version(rows, problems)),
            html.H2("Runs"),
            html.Div("roots: " + ", ".join(str(r) for r in store.roots), className="path"),
            html.Div(_problems(problems, rows), id=f"{P}-problems"),
            html.Div(
                [
                    dcc.Input(
                        id=f"{P}-filter",
                        type="search",
                        placeholder="filter runs (any column)",
                        debounce=False,
                        className="filter",
                    ),
                    html.A("compare the ticked runs", id=f"{P}-compare", href="", className="button disabled"),
                    html.Span(_count([r.status for r in rows]), id=f"{P}-count", className="note"),
                ],
                className="toolbar",
            ),
            grid(f"{P}-grid", table_rows(rows), COLUMNS, "id", multi=True, height=620),
        ]
    )


def _count(statuses: list[str], shown: int | None = None) -> str:
    """How many runs there are by status, and how many the filter leaves (``shown``)."""
    if not statuses:
        return "no runs under the roots yet"
    by = Counter(statuses)
    words = "(" + ", ".join(f"{n} {s}" for s, n in sorted(by.items())) + ")"
    if shown is not None and shown != len(statuses):
        return f"{shown} of {len(statuses)} runs shown {words}"
    return f"{len(statuses)} runs {words}"


def _problems(problems: list[str], rows: list[RunRow]) -> list[Any]:
    bad = [r for r in rows if r.problem]
    out: list[Any] = [html.Div(p, className="problem") for p in problems]
    if bad:
        out.append(
            html.Details(
                [
                    html.Summary(f"{len(bad)} unreadable runs"),
                    html.Ul([html.Li([html.Code(r.id), f": {r.problem}"]) for r in bad], id=f"{P}-unreadable"),
                ],
                open=True,
            )
        )
    return out


def _version(rows: list[RunRow], problems: list[str]) -> str:
    return hashlib.sha1(repr((rows, problems)).encode()).hexdigest()


def register(app: Dash, store: RunStore) -> None:
    @app.callback(
        Output(f"{P}-grid", "rowData"),
        Output(f"{P}-problems", "children"),
        Output(f"{P}-count", "children"),
        Output(f"{P}-version", "data"),
        Input(f"{P}-tick", "n_intervals"),
        State(f"{P}-version", "data"),
        prevent_initial_call=True,
    )
    def _refresh(_: Any, old: str) -> Any:
        rows, problems = store.listing()
        version = _version(rows, problems)
        if version == old:
            raise PreventUpdate
        return table_rows(rows), _problems(problems, rows), _count([r.status for r in rows]), version

    @app.callback(
        Output(f"{P}-count", "children", allow_duplicate=True),
        Input(f"{P}-grid", "virtualRowData"),
        State(f"{P}-grid", "rowData"),
        prevent_initial_call=True,
    )
    def _shown(shown: list[dict[str, Any]] | None, rows: list[dict[str, Any]] | None) -> Any:
        return _count([str(r.get("status")) for r in rows or []], None if shown is None else len(shown))

    @app.callback(
        Output(f"{P}-grid", "dashGridOptions"), Input(f"{P}-filter", "value"), State(f"{P}-grid", "dashGridOptions")
    )
    def _filter(text: str | None, options: dict[str, Any]) -> Any:
        return {**(options or {}), "quickFilterText": text or ""}

    @app.callback(
        Output(f"{P}-compare", "href"),
        Output(f"{P}-compare", "className"),
        Output(f"{P}-compare", "children"),
        Input(f"{P}-grid", "selectedRows"),
    )
    def _compare(selected: list[dict[str, Any]] | None) -> Any:
        ids = [r["id"] for r in selected or [] if r.get("status") != "unreadable"]
        if not ids:
            return "", "button disabled", "compare the ticked runs"
        return "/compare?ids=" + ",".join(quote(i, safe="/") for i in ids), "button", f"compare {len(ids)} runs"
