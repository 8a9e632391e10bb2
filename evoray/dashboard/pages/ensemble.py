"""An ensemble run: its members and committees with accuracy, NLL, ECE, oracle NLL and disagreement on the clean
test set or under any shift, accuracy and NLL against committee size, and reliability diagrams (all from the run's
``report.json``)."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from evoray.dashboard import figures
from evoray.dashboard.pages.common import cells, graph, header, live, problem_box, register_live, section, table
from evoray.dashboard.store import RunStore
from evoray.errors import ConfigError
from evoray.runs import Run

P = "ens"
REPORT = "report.json"
REPORT_ERRORS = (AttributeError, IndexError, KeyError, TypeError, ValueError)  # a report.json of another layout
MEMBER_COLUMNS = [
    ("name", "member"), ("kind", "kind"), ("params_m", "params (M)"), ("accuracy", "accuracy (%)"), ("nll", "NLL"),
    ("ece", "ECE (%)"), ("valid_nll", "valid NLL"),
]  # fmt: skip
COMMITTEE_COLUMNS = [
    ("name", "committee"), ("combiner", "combiner"), ("size", "size"), ("accuracy", "accuracy (%)"), ("nll", "NLL"),
    ("ece", "ECE (%)"), ("oracle_nll", "oracle NLL"), ("disagreement", "disagreement (%)"),
    ("disagreement_committee", "vs committee (%)"), ("valid_nll", "valid NLL"), ("members", "members (weight)"),
]  # fmt: skip


def layout(store: RunStore, run: Run, run_id: str) -> html.Div:
    return html.Div(
        [
            *live(P, run_id),
            header(P, store, run),
            html.Div(id=f"{P}-problem"),
            section(
                "Members and committees",
                html.Div(
                    [
                        html.Span("measured on ", className="label"),
                        dcc.Dropdown(
                            id=f"{P}-shift",
                            options=[{"label": "clean test set", "value": "test"}],
                            value="test",
                            clearable=False,
                            style={"width": "320px"},
                        ),
                    ],
                    className="slider",
                ),
                html.Div(id=f"{P}-choice", className="note"),
                html.H4("Members"),
                html.Div(id=f"{P}-members"),
                html.H4("Committees"),
                html.Div(id=f"{P}-committees"),
            ),
            section("Against committee size", graph(f"{P}-size")),
            section("Reliability", graph(f"{P}-reliability")),
            section("Best member's cells", html.Div(id=f"{P}-cells", className="cells")),
        ]
    )


def _choice(rep: dict[str, Any]) -> str:
    """Which member and committee the run calls best, and by what rule (never the test set)."""
    summary = rep.get("summary") or {}
    member, committee = summary.get("best_member") or {}, summary.get("best_committee") or {}
    if not member or not committee:
        return ""
    return (
        f"best member {member.get('name')} and best committee {committee.get('name')}: those of lowest validation NLL "
        "(chosen without the test set, so the best on a test column can differ)"
    )


def _metrics(entry: dict[str, Any], where: str) -> dict[str, Any]:
    if where == "test":
        return dict(entry.get("test") or {})
    if where == "shift_mean":
        return dict(entry.get("shift_mean") or {})
    return dict((entry.get("shift") or {}).get(where) or {})


def _report_of(store: RunStore, run_id: str) -> tuple[Run, dict[str, Any] | None, str | None]:
    """The run, its report (None before it is written) and why the report cannot be read."""
    try:
        run = store.open(run_id)
    except ConfigError:
        raise PreventUpdate from None
    if not (run.path / REPORT).is_file():
        return run, None, None
    try:
        return run, store.json(run, REPORT), None
    except ConfigError as err:
        return run, None, str(err)


def _foreign(run: Run, err: Exception) -> str:
    """One line on a report.json that lacks what an evoray committee report holds (hand-made, another evoray)."""
    reason = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else type(err).__name__
    return f"unreadable: {REPORT} of run {run.name!r} is not a committee report this evoray reads ({reason})"


def draw_report(store: RunStore, run_id: str) -> tuple[Any, ...]:
    """The shift choices, the size and reliability figures, the best member's cells, the choice and a problem."""
    run, rep, err = _report_of(store, run_id)
    options = [{"label": "clean test set", "value": "test"}]
    if rep is None:
        msg = problem_box(f"unreadable: {err}") if err else html.Div("members are still training", className="note")
        none = figures.empty("no report yet")
        return options, none, none, cells(None), None, msg
    try:
        keys = sorted({k for m in rep.get("members", []) for k in (m.get("shift") or {})})
        if keys:
            options.append({"label": "mean over every shift", "value": "shift_mean"})
        options += [{"label": f"shift: {k}", "value": k} for k in keys]
        best = (rep.get("summary") or {}).get("best_member") or {}
        panels = [(f"member {best.get('name')}", best)] if best else []
        panels += [(str(c.get("name")), c) for c in rep.get("committees", [])]
        _tables_of(rep, "test")  # a report the tables cannot show is said so here, once
        return (
            options,
            figures.committee_size_figure(rep.get("committees", [])),
            figures.reliability_figure(panels),
            cells(best.get("genotype"), str(best.get("name") or "")),
            _choice(rep),
            None,
        )
    except REPORT_ERRORS as err:
        none = figures.empty(f"{REPORT} unreadable")
        return options[:1], none, none, cells(None), None, problem_box(_foreign(run, err))


def draw_tables(store: RunStore, run_id: str, where: str) -> tuple[Any, Any]:
    """The members' and committees' tables measured on ``where`` (none while the report is missing or unreadable:
    :func:`draw_report` says why)."""
    _, rep, _err = _report_of(store, run_id)
    if rep is None:
        return None, None
    try:
        return _tables_of(rep, where)
    except REPORT_ERRORS:
        return None, None


def _tables_of(rep: dict[str, Any], where: str) -> tuple[Any, Any]:
    members = [
        {
            "name": m.get("name"),
            "kind": m.get("kind"),
            "params_m": m.get("params_m"),
            **_metrics(m, where),
            "valid_nll": (m.get("valid") or {}).get("nll"),
        }
        for m in rep.get("members", [])
    ]
    committees = [
        {
            "name": c.get("name"),
            "combiner": c.get("combiner"),
            "size": c.get("size"),
            **_metrics(c, where),
            "valid_nll": (c.get("valid") or {}).get("nll"),
            "members": ", ".join(f"{n} ({w:.2f})" for n, w in (c.get("members") or {}).items()),
        }
        for c in rep.get("committees", [])
    ]
    return (
        table(members, MEMBER_COLUMNS, id=f"{P}-members-table"),
        table(committees, COMMITTEE_COLUMNS, id=f"{P}-committees-table"),
    )


def register(app: Dash, store: RunStore) -> None:
    register_live(app, store, P)

    @app.callback(
        Output(f"{P}-shift", "options"),
        Output(f"{P}-size", "figure"),
        Output(f"{P}-reliability", "figure"),
        Output(f"{P}-cells", "children"),
        Output(f"{P}-choice", "children"),
        Output(f"{P}-problem", "children"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _report(_: Any, run_id: str) -> Any:
        return draw_report(store, run_id)

    @app.callback(
        Output(f"{P}-members", "children"),
        Output(f"{P}-committees", "children"),
        Input(f"{P}-shift", "value"),
        Input(f"{P}-version", "data"),
        State(f"{P}-run", "data"),
    )
    def _tables(where: str, _: Any, run_id: str) -> Any:
        return draw_tables(store, run_id, where)
