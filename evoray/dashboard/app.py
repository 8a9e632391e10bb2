"""``python -m evoray.dashboard [ROOT ...]`` / ``evoray dashboard``: a local, read-only web app over the runs under
the roots (default ``./runs``): the runs table, each run's page (evolve, search, train, ensemble), comparisons and
cells, redrawn live as runs write.

Routes: ``/`` (runs), ``/run?id=<root>/<path>`` (one run), ``/compare?ids=<id>,<id>`` (several). A run id is a path
inside one of the roots; anything outside them is refused.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from dash import Dash, Input, Output, dcc, html

from evoray.cli import Parser
from evoray.dashboard.pages import compare, ensemble, evolve, runs, search, train
from evoray.dashboard.pages.common import problem_box, refused_or_unreadable
from evoray.dashboard.store import RunStore
from evoray.errors import ConfigError
from evoray.runs.directory import DEFAULT_ROOT

RUN_PAGES: dict[str, Any] = {"evolve": evolve, "search": search, "train": train, "ensemble": ensemble}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #fafafa; }
.nav { background: #263238; color: white; padding: 8px 20px; display: flex; gap: 20px; align-items: center; }
.nav a { color: #eceff1; text-decoration: none; font-weight: 600; }
.nav .brand { font-size: 18px; }
.page { padding: 10px 24px 40px 24px; }
.section { background: white; border: 1px solid #e0e0e0; border-radius: 6px; padding: 8px 14px; margin: 12px 0; }
.section h3 { margin: 4px 0 8px 0; font-size: 16px; }
.path { color: #666; font-family: monospace; font-size: 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0; font-size: 14px; }
.headline { font-size: 15px; margin: 4px 0; }
.status { font-size: 13px; margin-left: 12px; padding: 2px 8px; border-radius: 10px; background: #eee; }
.status-running { background: #e3f2fd; color: #1565c0; }
.status-done { background: #e8f5e9; color: #2e7d32; }
.status-failed, .status-unreadable { background: #ffebee; color: #c62828; }
.status-interrupted { background: #fff3e0; color: #ef6c00; }
.problem { background: #ffebee; color: #b71c1c; padding: 6px 10px; border-radius: 4px; margin: 6px 0; }
.note { color: #666; font-size: 13px; margin: 4px 0; }
.toolbar { display: flex; gap: 16px; align-items: center; margin: 8px 0; }
.filter { width: 320px; padding: 5px; }
.button { background: #1565c0; color: white; padding: 5px 12px; border-radius: 4px; text-decoration: none; }
.button.disabled { background: #b0bec5; pointer-events: none; }
.slider { display: flex; align-items: center; gap: 10px; } .slider > div { flex: 1; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 10px; }
.genotype { font-family: monospace; font-size: 11px; color: #555; word-break: break-all; margin: 4px 0; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 12px; }
.side-by-side .column { min-width: 520px; flex: 1; max-width: 100%; overflow-x: auto; }
.table { border-collapse: collapse; font-size: 13px; display: block; max-width: 100%; overflow-x: auto; }
.table th, .table td { border-bottom: 1px solid #eee;
  padding: 3px 8px; text-align: left; } .table th { background: #f5f5f5; }
.focus { margin: 6px 0; }
.cell { overflow-x: auto; max-width: 100%; padding-bottom: 4px; }
"""

# functions the tables' column definitions name (dash-ag-grid looks them up in window.dashAgGridFunctions)
GRID_FUNCTIONS = """
window.dashAgGridFunctions = Object.assign(window.dashAgGridFunctions || {}, {
  // seconds in words, as the run pages write them: 42s, 3m 07s, 2h 05m
  formatDuration: function (value) {
    if (value === null || value === undefined) { return ""; }
    var s = Math.round(value);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
    return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
  },
  // an ISO start time to the minute, in the run's own offset: 2026-12-04 23:34
  formatStarted: function (value) {
    return value ? String(value).slice(0, 16).replace("T", " ") : "";
  },
  // "generation 3/14" or "epoch 7/50" by the share done (no progress first)
  progressComparator: function (a, b) {
    var share = function (text) {
      var m = /(\\d+)\\/(\\d+)/.exec(text || "");
      return m && Number(m[2]) > 0 ? Number(m[1]) / Number(m[2]) : -1;
    };
    return share(a) - share(b);
  }
});
"""

INDEX = (
    """<!DOCTYPE html>
<html>
<head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>"""
    + STYLE
    + """</style><script>"""
    + GRID_FUNCTIONS
    + """</script></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body>
</html>"""
)


def create_app(roots: Sequence[Path | str]) -> Dash:
    """The dashboard over ``roots`` (a Dash app; its Flask server is ``app.server``)."""
    store = RunStore(roots)
    app = Dash(
        __name__,
        title="evoray dashboard",
        update_title=None,  # type: ignore[arg-type]
        suppress_callback_exceptions=True,
    )
    app.index_string = INDEX
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            html.Div(
                [html.A("evoray", href="/", className="brand"), html.A("runs", href="/")],
                className="nav",
            ),
            html.Div(id="page", className="page"),
        ]
    )

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))
    def _route(pathname: str | None, query: str | None) -> Any:
        params = parse_qs((query or "").lstrip("?"))
        if pathname in (None, "", "/"):
            return runs.layout(store)
        if pathname == "/run":
            run_id = (params.get("id") or [""])[0]
            run, problem = refused_or_unreadable(store, run_id)
            if run is None:
                return html.Div([html.H2(f"run {run_id}"), problem])
            return RUN_PAGES[run.command].layout(store, run, run_id)
        if pathname == "/compare":
            return compare.layout(store, compare_ids(query))
        return problem_box(f"no page {pathname!r}: the pages are /, /run?id=... and /compare?ids=...")

    for page in (runs, evolve, search, train, ensemble, compare):
        page.register(app, store)
    return app


def compare_ids(query: str | None) -> list[str]:
    """The run ids of ``/compare?ids=<id>,<id>``: split on the commas of the query as written, then each id
    unquoted, so that an id holding a comma (quoted as ``%2C``) stays one id."""
    for part in (query or "").lstrip("?").split("&"):
        key, _, value = part.partition("=")
        if unquote(key) == "ids":
            return [unquote(i.replace("+", " ")) for i in value.split(",") if i]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(
        prog="python -m evoray.dashboard",
        description="A local, read-only web app over evoray's run directories: runs, populations, Tune trials, "
        "committees, comparisons and cells, live.",
    )
    parser.add_argument("roots", nargs="*", type=Path, help=f"folders that hold runs (default: ./{DEFAULT_ROOT})")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    try:
        args = parser.parse_args(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} is out of range; valid: 1 to 65535", file=sys.stderr)
        return 2
    roots = args.roots or [DEFAULT_ROOT]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        print(
            f"note: {', '.join(missing)} is not a directory yet; the dashboard shows it as a problem", file=sys.stderr
        )
    try:  # a port another server holds: one line, not the web server's traceback
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.bind((args.host, args.port))
    except OSError as err:  # a name that does not resolve (socket.gaierror) or an address not of this machine
        port = err.errno in (errno.EADDRINUSE, errno.EACCES)
        choose = "choose --port" if port else "choose --host (an address of this machine)"
        print(f"error: cannot serve on {args.host}:{args.port} ({err.strerror or err}); {choose}", file=sys.stderr)
        return 2
    app = create_app(roots)
    print(f"evoray dashboard over {', '.join(str(r) for r in roots)}: http://{args.host}:{args.port}/", flush=True)
    app.run(host=args.host, port=args.port, debug=False)
    return 0
