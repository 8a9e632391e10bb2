"""Plotly figures of the dashboard, each a pure function of data read from a run (no Dash, no files): fitness over
generations, populations with their Pareto front, genealogies, alphas, cells, trial curves, op distributions over
epochs, committees and reliability diagrams, and overlaid curves for comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from evoray.dashboard.cells import PALETTE, arrow_tail, layout_cell, op_colour
from evoray.spaces.genotype import CellGenotype

MARGIN = {"l": 50, "r": 20, "t": 40, "b": 40}
ORIGIN_COLOURS = {
    "random": "#7f7f7f",
    "seed": "#17becf",
    "elite": "#2ca02c",
    "crossover": "#1f77b4",
    "mutation": "#ff7f0e",
}


def empty(text: str, height: int = 220) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 13})
    fig.update_layout(height=height, xaxis={"visible": False}, yaxis={"visible": False}, margin=MARGIN)
    return fig


def step_ticks(values: Sequence[Any]) -> dict[str, Any]:
    """Axis ticks for whole steps (generations, epochs, committee sizes): on integers only, about ten of them, never
    at a half generation."""
    xs = [float(v) for v in values if _number(v)]
    span = max(xs) - min(xs) if xs else 0.0
    return {"tick0": 0, "dtick": max(1, math.ceil(span / 10))}


def _number(x: Any) -> bool:
    """A finite int or float."""
    return isinstance(x, (int, float)) and math.isfinite(float(x))


def _finite(values: Sequence[Any]) -> np.ndarray:
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return out


# -- evolve ----------------------------------------------------------------------------------------------------------


def generation_stats(rows: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Per generation of an archive: best, mean, std, worst fitness and the population size."""
    by_gen: dict[int, list[float]] = {}
    for r in rows:
        f = r.get("fitness")
        vals = by_gen.setdefault(int(r["generation"]), [])
        if f is not None and math.isfinite(float(f)):
            vals.append(float(f))
    out = []
    for g in sorted(by_gen):
        v = np.asarray(by_gen[g], dtype=np.float64)
        if v.size == 0:
            out.append(
                {"generation": g, "best": math.nan, "mean": math.nan, "std": math.nan, "worst": math.nan, "n": 0}
            )
            continue
        out.append(
            {
                "generation": g,
                "best": float(v.max()),
                "mean": float(v.mean()),
                "std": float(v.std()),
                "worst": float(v.min()),
                "n": int(v.size),
            }
        )
    return out


def fitness_figure(stats: Sequence[dict[str, float]]) -> go.Figure:
    """Best and mean fitness per generation, mean +- std as a band and the worst-to-best range lighter behind it."""
    if not stats:
        return empty("no generation finished yet")
    g = [s["generation"] for s in stats]
    best, mean, std, worst = (np.array([s[k] for s in stats]) for k in ("best", "mean", "std", "worst"))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=g, y=best, mode="lines", line={"width": 0}, hoverinfo="skip", showlegend=False))
    fig.add_trace(
        go.Scatter(
            x=g,
            y=worst,
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.08)",
            mode="lines",
            line={"width": 0},
            name="worst..best",
        )
    )
    fig.add_trace(go.Scatter(x=g, y=mean + std, mode="lines", line={"width": 0}, hoverinfo="skip", showlegend=False))
    fig.add_trace(
        go.Scatter(
            x=g,
            y=mean - std,
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.22)",
            mode="lines",
            line={"width": 0},
            name="mean±std",
        )
    )
    fig.add_trace(go.Scatter(x=g, y=mean, name="mean", line={"color": "#1f77b4", "dash": "dot"}))
    fig.add_trace(go.Scatter(x=g, y=best, name="best", mode="lines+markers", line={"color": "#d62728"}))
    fig.update_layout(
        title="fitness per generation",
        xaxis={"title": "generation", **step_ticks(g)},
        yaxis_title="fitness",
        height=330,
        margin=MARGIN,
    )
    return fig


def pareto_front(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> list[int]:
    """Indices of the points no other point beats (smaller or equal ``x`` and larger or equal ``y``, one strictly),
    ordered by ``x``; of several points at the same place, the first only (they draw as one). NaNs are never on the
    front."""
    pts = [(float(a), float(b), i) for i, (a, b) in enumerate(zip(x, y)) if math.isfinite(a) and math.isfinite(b)]
    pts.sort(key=lambda p: (p[0], -p[1]))
    front, best = [], -math.inf
    for _, b, i in pts:
        if b > best:
            front.append(i)
            best = b
    return front


def population_figure(
    rows: Sequence[dict[str, Any]], generation: int, x_key: str = "params_m", shown: int | None = None
) -> go.Figure:
    """The population of ``generation`` (params against fitness), the earlier generations faint behind it, the
    generation's Pareto front (fewer params, higher fitness), and a ring around individual ``shown`` (the id of the one
    the page details) when it is in ``generation`` (made there, or kept from an earlier one)."""
    if not rows:
        return empty("no individuals yet")
    gens = np.array([int(r["generation"]) for r in rows])
    xs = _finite([r.get(x_key) for r in rows])
    ys = _finite([r.get("fitness") for r in rows])
    now = gens == generation
    before = gens < generation
    fig = go.Figure()
    if before.any():
        fig.add_trace(
            go.Scatter(
                x=xs[before], y=ys[before], mode="markers", name="earlier generations", hoverinfo="skip",
                marker={"color": "rgba(150,150,150,0.25)", "size": 5},
            )
        )  # fmt: skip
    idx = [int(i) for i in np.flatnonzero(now)]
    text = [f"id {rows[i]['id']} ({rows[i].get('origin')})<br>fitness {ys[i]:.3f}<br>{x_key} {xs[i]:.4g}" for i in idx]
    fig.add_trace(
        go.Scatter(
            x=xs[idx], y=ys[idx], mode="markers", name=f"generation {generation}", text=text, hoverinfo="text",
            customdata=[[int(rows[i]["generation"]), int(rows[i]["id"])] for i in idx], showlegend=False,
            marker={"size": 9, "color": [ORIGIN_COLOURS.get(str(rows[i].get("origin")), "#444") for i in idx],
                    "line": {"width": 0.5, "color": "#222"}},
        )
    )  # fmt: skip
    origins = sorted({str(rows[i].get("origin")) for i in idx})
    front = [idx[k] for k in pareto_front(xs[idx], ys[idx])]
    if front:
        fig.add_trace(
            go.Scatter(
                x=xs[front], y=ys[front], mode="lines+markers", name="Pareto front", hoverinfo="skip",
                line={"color": "#d62728", "shape": "hv", "width": 1.5},
                marker={"symbol": "diamond-open", "size": 14, "color": "#d62728", "line": {"width": 2}},
            )
        )  # fmt: skip
    ring = [i for i in idx if shown is not None and int(rows[i]["id"]) == shown and np.isfinite([xs[i], ys[i]]).all()]
    if ring:
        fig.add_trace(
            go.Scatter(
                x=xs[ring], y=ys[ring], mode="markers", name=f"shown below (id {rows[ring[0]]['id']})",
                hoverinfo="skip", marker={"symbol": "circle-open", "size": 20, "color": "#111", "line": {"width": 2.5}},
            )
        )  # fmt: skip
    for origin in origins:  # the legend of the colours: how this generation's individuals were made
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="markers", name=origin, hoverinfo="skip",
                marker={"size": 9, "color": ORIGIN_COLOURS.get(origin, "#444"),
                        "line": {"width": 0.5, "color": "#222"}},
            )
        )  # fmt: skip
    fig.update_layout(
        title=f"generation {generation}: {len(idx)} individuals, {len(front)} on the Pareto front",
        uirevision="population",  # a click (which redraws the ring) keeps the reader's zoom and hidden traces
        xaxis_title="params (M)" if x_key == "params_m" else x_key,
        yaxis_title="fitness",
        height=360,
        margin=MARGIN,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def ancestry(rows: Sequence[dict[str, Any]], ident: int) -> list[dict[str, Any]]:
    """The individual ``ident`` and every ancestor (parents, their parents, ... back to generation 0), each once, by
    generation. An individual's row is the one of the generation that made it."""
    by_id: dict[int, dict[str, Any]] = {}
    for r in rows:
        i = int(r["id"])
        if i not in by_id or int(r["generation"]) < int(by_id[i]["generation"]):
            by_id[i] = r
    seen: dict[int, dict[str, Any]] = {}
    todo = [ident]
    while todo:
        i = todo.pop()
        if i in seen or i not in by_id:
            continue
        seen[i] = by_id[i]
        todo += [int(p) for p in (by_id[i].get("parents") or [])]
    return sorted(seen.values(), key=lambda r: (int(r["generation"]), int(r["id"])))


def lineage(rows: Sequence[dict[str, Any]], ident: int) -> list[dict[str, Any]]:
    """The first-parent line of ``ident`` back to generation 0: the individual, its first parent, and so on."""
    by_id = {int(r["id"]): r for r in sorted(rows, key=lambda r: -int(r["generation"]))}
    out: list[dict[str, Any]] = []
    i = ident
    while i in by_id and len(out) <= len(by_id):
        out.append(by_id[i])
        parents = by_id[i].get("parents") or []
        if not parents:
            break
        i = int(parents[0])
    return out


def drawn_family(rows: Sequence[dict[str, Any]], ident: int, limit: int = 300) -> tuple[list[dict[str, Any]], int]:
    """The individuals a genealogy draws and the size of the whole ancestry: every ancestor when there are at most
    ``limit``, else (crossover makes the ancestry the whole population within a few generations) the first-parent
    line with each of its members' parents."""
    family = ancestry(rows, ident)
    if len(family) <= limit:
        return family, len(family)
    by_id = {int(r["id"]): r for r in family}
    keep: dict[int, dict[str, Any]] = {}
    for r in lineage(rows, ident):
        keep[int(r["id"])] = r
        for p in r.get("parents") or []:
            if int(p) in by_id:
                keep[int(p)] = by_id[int(p)]
    return sorted(keep.values(), key=lambda r: (int(r["generation"]), int(r["id"]))), len(family)


def genealogy_figure(
    family: Sequence[dict[str, Any]], ident: int, total: int | None = None, max_arrows: int = 150
) -> go.Figure:
    """The ancestry of ``ident`` as a graph: generations left to right, an arrow from every parent to its child,
    each individual coloured by how it was made."""
    if not family:
        return empty("no genealogy: the individual is not in the archive")
    by_gen: dict[int, list[dict[str, Any]]] = {}
    for r in family:
        by_gen.setdefault(int(r["generation"]), []).append(r)
    pos: dict[int, tuple[float, float]] = {}
    for g, members in by_gen.items():
        members.sort(key=lambda r: -(r.get("fitness") or -1e9))
        for k, r in enumerate(members):
            pos[int(r["id"])] = (float(g), k - (len(members) - 1) / 2)
    fig = go.Figure()
    ex: list[float | None] = []
    ey: list[float | None] = []
    arrows = []
    for r in family:
        for p in r.get("parents") or []:
            if int(p) in pos:
                (x0, y0), (x1, y1) = pos[int(p)], pos[int(r["id"])]
                ex += [x0, x1, None]
                ey += [y0, y1, None]
                arrows.append((x0, y0, x1, y1))
    fig.add_trace(
        go.Scatter(x=ex, y=ey, mode="lines", line={"color": "rgba(90,90,90,0.45)", "width": 1}, hoverinfo="skip",
                   showlegend=False)
    )  # fmt: skip
    for origin in sorted({str(r.get("origin")) for r in family}):
        rs = [r for r in family if str(r.get("origin")) == origin]
        fig.add_trace(
            go.Scatter(
                x=[pos[int(r["id"])][0] for r in rs], y=[pos[int(r["id"])][1] for r in rs], mode="markers+text",
                name=origin, text=[str(r["id"]) for r in rs], textposition="top center",
                hovertext=[f"id {r['id']} gen {r['generation']} {origin}<br>fitness {r.get('fitness')}<br>parents "
                           f"{list(r.get('parents') or [])}" for r in rs], hoverinfo="text",
                marker={"size": [16 if int(r["id"]) == ident else 10 for r in rs],
                        "color": ORIGIN_COLOURS.get(origin, "#444"), "line": {"width": 1, "color": "#222"}},
            )
        )  # fmt: skip
    if len(arrows) <= max_arrows:  # one assignment: adding annotations one by one revalidates them all each time
        fig.update_layout(
            annotations=[
                {"x": x1, "y": y1, "ax": x0, "ay": y0, "xref": "x", "yref": "y", "axref": "x", "ayref": "y",
                 "showarrow": True, "arrowhead": 2, "arrowsize": 1, "arrowwidth": 1,
                 "arrowcolor": "rgba(90,90,90,0.6)", "standoff": 7, "text": ""}
                for x0, y0, x1, y1 in arrows
            ]
        )  # fmt: skip
    fig.update_layout(
        title=f"genealogy of individual {ident}: {len(family)} individuals back to generation {min(by_gen)}"
        + ("" if total in (None, len(family)) else f" (the first-parent line and its co-parents of {total} ancestors)"),
        xaxis={"title": "generation", "dtick": 1},
        yaxis={"visible": False},
        height=340,
        margin={**MARGIN, "t": 60},  # room for the label above the top node
    )
    fig.update_traces(cliponaxis=False)
    return fig


def alphas_figure(
    probs: np.ndarray, edge_names: Sequence[str], op_names: Sequence[Sequence[str]], title: str
) -> go.Figure:
    """A heat map of an (E, K) op distribution: one row per edge, one column per op (``op_names`` per edge: where
    the edges' candidates differ, the columns are slots and each entry names its own op)."""
    shared = all(list(names) == list(op_names[0]) for names in op_names)
    columns = list(op_names[0]) if shared else [f"slot {k}" for k in range(probs.shape[1])]
    fig = go.Figure(
        go.Heatmap(
            z=probs, x=columns, y=list(edge_names), colorscale="Blues", zmin=0.0,
            zmax=float(max(probs.max(), 1e-9)), text=np.round(probs, 2), texttemplate="%{text:.2f}",
            customdata=[list(names) for names in op_names], hovertemplate="%{y} %{customdata}: %{z:.3f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(title=title, height=120 + 22 * len(edge_names), margin=MARGIN, yaxis={"autorange": "reversed"})
    return fig


# -- cells -----------------------------------------------------------------------------------------------------------


def cell_figure(cell: CellGenotype, num_inputs: int, title: str) -> go.Figure:
    """A cell drawn left to right: nodes, one arrow per edge in its op's colour, the op written on the edge."""
    layout = layout_cell(cell, num_inputs)
    fig = go.Figure()
    notes: list[dict[str, Any]] = []  # arrowheads and labels, set at once (one by one revalidates them all)
    for e in layout.edges:
        colour = "#999999" if e.op is None else op_colour(e.op)
        xs = [p[0] for p in e.points]
        ys = [p[1] for p in e.points]
        what = "concat" if e.op is None else e.op
        target = "out" if e.target < 0 else str(e.target)
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", hoverinfo="text", hovertext=f"{e.source} → {target}: {what}",
                line={"color": colour, "width": 2, "dash": "dash" if e.op is None else "solid"}, showlegend=False,
            )
        )  # fmt: skip
        tail, head = arrow_tail(e)
        notes.append(
            {"x": head[0], "y": head[1], "ax": tail[0], "ay": tail[1], "xref": "x", "yref": "y", "axref": "x",
             "ayref": "y", "text": "", "showarrow": True, "arrowhead": 2, "arrowsize": 1.2, "arrowwidth": 2,
             "arrowcolor": colour}
        )  # fmt: skip
        if e.op is not None and e.label_at is not None:
            notes.append(
                {"x": e.label_at[0], "y": e.label_at[1], "text": e.op, "showarrow": False,
                 "font": {"size": 11, "color": colour}, "bgcolor": "white", "bordercolor": colour, "borderwidth": 1,
                 "borderpad": 2, "name": f"edge {e.source}-{e.target}"}
            )  # fmt: skip
    fig.update_layout(annotations=notes)
    fills = {"input": "#cfe2f3", "node": "#fde9c9", "output": "#d9ead3"}
    fig.add_trace(
        go.Scatter(
            x=[n.x for n in layout.nodes], y=[n.y for n in layout.nodes], mode="markers+text",
            text=[n.label.replace("{", "").replace("}", "") for n in layout.nodes], textfont={"size": 11},
            marker={"size": 34, "color": [fills[n.kind] for n in layout.nodes],
                    "line": {"width": 1.2, "color": "#444"}},
            hoverinfo="text", hovertext=[n.kind for n in layout.nodes], showlegend=False,
        )
    )  # fmt: skip
    (x0, x1), (y0, y1) = layout.xlim, layout.ylim
    unit = 50  # pixels per layout unit: a fixed size, so that labels keep their room on narrow pages
    fig.update_layout(
        width=int((x1 - x0) * unit + 10),
        autosize=False,
        title={"text": title, "font": {"size": 13}},
        xaxis={"visible": False, "range": [x0, x1], "fixedrange": True},
        yaxis={"visible": False, "range": [y0, y1], "scaleanchor": "x", "fixedrange": True},
        height=int((y1 - y0) * unit + 50),
        margin={"l": 5, "r": 5, "t": 35, "b": 5},
        plot_bgcolor="white",
    )
    return fig


# -- search ----------------------------------------------------------------------------------------------------------

CURVE_PANELS = (
    ("loss", ("train_loss", "valid_loss")),
    ("accuracy (%)", ("train_acc", "valid_acc")),
    ("alpha entropy", ("entropy_",)),
    ("temperature", ("tau",)),
    ("wiped experts", ("wiped_",)),
    ("learning rate", ("lr",)),
)


def _panel_keys(prefixes: Sequence[str], keys: set[str]) -> list[str]:
    out = []
    for p in prefixes:
        out += sorted(k for k in keys if k == p or (p.endswith("_") and k.startswith(p)))
    return out


DASH_WORDS = {"solid": "solid", "dot": "dotted", "dash": "dashed", "dashdot": "dash-dot"}


def _dash_key(keys: Sequence[str], dashes: Sequence[str]) -> str:
    """What each line style of a panel with several curves per trial stands for: " (solid train, dotted valid)"."""
    if len(keys) < 2:
        return ""
    parts = []
    for d, k in enumerate(keys):
        word = k.split("_", 1)[1] if k.startswith(("entropy_", "wiped_")) else k.split("_", 1)[0]
        parts.append(f"{DASH_WORDS[dashes[d % len(dashes)]]} {word}")
    return " (" + ", ".join(parts) + ")"


def trial_curves_figure(curves: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Per-epoch curves of the given trials (``{label: rows}``): losses, accuracies, alpha entropy, temperature,
    wiped-out experts and the learning rate, whichever the trials report; one colour per trial."""
    keys = {k for rows in curves.values() for r in rows for k, v in r.items() if isinstance(v, (int, float))}
    panels = [(title, _panel_keys(prefixes, keys)) for title, prefixes in CURVE_PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    if not curves or not panels:
        return empty("select trials to see their curves")
    cols = 3
    nrows = math.ceil(len(panels) / cols)
    dashes = ["solid", "dot", "dash", "dashdot"]
    titles = [title + _dash_key(ks, dashes) for title, ks in panels]
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles, horizontal_spacing=0.07)
    for t, (label, rows) in enumerate(curves.items()):
        colour = PALETTE[t % len(PALETTE)]
        x = [r.get("epoch", r.get("training_iteration")) for r in rows]
        shown = False  # one legend entry per trial (its colour), whatever its first panel
        for p, (_, ks) in enumerate(panels):
            for d, k in enumerate(ks):
                y = [r.get(k) for r in rows]
                if all(v is None for v in y):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=x, y=y, mode="lines+markers", name=label, legendgroup=label,
                        line={"color": colour, "dash": dashes[d % len(dashes)]}, marker={"size": 4},
                        showlegend=not shown, hovertemplate=f"{label} {k}: %{{y:.4g}} (epoch %{{x}})<extra></extra>",
                    ),
                    row=p // cols + 1, col=p % cols + 1,
                )  # fmt: skip
                shown = True
    entropy = next((p for p, (title, _) in enumerate(panels) if title == "alpha entropy"), None)
    if entropy is not None:
        _uniform_entropy(fig, curves, panels[entropy][1], entropy // cols + 1, entropy % cols + 1)
    steps = [r.get("epoch", r.get("training_iteration")) for rows in curves.values() for r in rows]
    fig.update_xaxes(title_text="epoch", **step_ticks(steps))
    fig.update_layout(height=300 * nrows, margin=MARGIN, legend={"orientation": "h", "y": -0.12})
    return fig


def _uniform_entropy(
    fig: go.Figure, curves: dict[str, list[dict[str, Any]]], keys: Sequence[str], row: int, col: int
) -> None:
    """Mark the entropy of a uniform choice among an edge's K ops (ln K, the alphas' starting point; K read from the
    op distributions the trials report) on the entropy panel, and let its axis span at least a tenth of ln K: alphas
    that barely move then read as a flat line at the mark, not as a climb over ticks five digits long."""
    counts = sorted(
        {
            len(v[0])
            for rows in curves.values()
            for r in rows[:1]
            for k, v in r.items()
            if k.startswith("ops_") and isinstance(v, list) and v and isinstance(v[0], list) and len(v[0]) > 1
        }
    )
    values = [float(r[k]) for rows in curves.values() for r in rows for k in keys if _number(r.get(k))]
    if not counts or not values:
        return
    for K in counts:
        fig.add_hline(
            y=math.log(K), line={"dash": "dash", "color": "#999", "width": 1}, row=row, col=col,
            annotation={"text": f"uniform (ln {K})", "font": {"size": 10, "color": "#777"}},
            annotation_position="bottom left",
        )  # fmt: skip
    top = max(max(values), math.log(counts[-1]))
    low = min(min(values), math.log(counts[0]), top - 0.1 * math.log(counts[-1]))
    pad = 0.06 * (top - low)
    fig.update_yaxes(range=[low - pad, top + pad], row=row, col=col)


def op_distribution_figure(
    epochs: Sequence[int],
    probs: Sequence[np.ndarray],
    edge_names: Sequence[str],
    op_names: Sequence[Sequence[str]],
    title: str,
) -> go.Figure:
    """How each edge's op distribution moves over the epochs: one small stacked-area panel per edge, one colour per
    op (``probs``: one (E, K) array per epoch; ``op_names``: each edge's candidates)."""
    if not probs:
        return empty("no per-epoch op distribution reported")
    arr = np.stack(probs)  # (T, E, K)
    n_edges = arr.shape[1]
    cols = min(5, n_edges)
    nrows = math.ceil(n_edges / cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=list(edge_names), shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.12 if nrows < 4 else 0.06)  # fmt: skip
    shown: set[str] = set()
    for e in range(n_edges):
        for k, op in enumerate(op_names[e]):
            fig.add_trace(
                go.Scatter(
                    x=list(epochs), y=arr[:, e, k], mode="lines", stackgroup=f"e{e}", name=op, legendgroup=op,
                    showlegend=op not in shown, line={"width": 0.5, "color": op_colour(op)},
                    hovertemplate=f"{edge_names[e]} {op}: %{{y:.3f}} (epoch %{{x}})<extra></extra>",
                ),
                row=e // cols + 1, col=e % cols + 1,
            )  # fmt: skip
            shown.add(op)
    fig.update_yaxes(range=[0, 1])
    fig.update_xaxes(**step_ticks(epochs))
    fig.update_layout(title=title, height=170 * nrows + 90, margin=MARGIN, legend={"orientation": "h", "y": -0.08})
    return fig


# -- ensemble --------------------------------------------------------------------------------------------------------


def committee_size_figure(committees: Sequence[dict[str, Any]]) -> go.Figure:
    """Test accuracy and NLL of each committee against its size (the greedy build-up of its members)."""
    with_curve = [c for c in committees if c.get("curve")]
    if not with_curve:
        return empty("no committee curves in report.json")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["test accuracy (%)", "test NLL"])
    for i, c in enumerate(with_curve):
        colour = PALETTE[i % len(PALETTE)]
        sizes = [p["size"] for p in c["curve"]]
        for col, key in ((1, "accuracy"), (2, "nll")):
            fig.add_trace(
                go.Scatter(x=sizes, y=[p[key] for p in c["curve"]], mode="lines+markers", name=c["name"],
                           legendgroup=c["name"], showlegend=col == 1, line={"color": colour}),
                row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(title_text="committee size", dtick=1)
    fig.update_layout(height=340, margin=MARGIN)
    return fig


def reliability_figure(panels: Sequence[tuple[str, dict[str, Any]]]) -> go.Figure:
    """Reliability diagrams: per confidence bin, the accuracy (bars) against the diagonal of perfect calibration."""
    panels = [(t, e) for t, e in panels if e.get("reliability")]
    if not panels:
        return empty("no reliability data in report.json")
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    # two lines: a member's name and its ECE side by side ran into the next panel's title on narrow pages
    titles = [f"{t}<br>ECE {e.get('test', {}).get('ece', float('nan')):.2f}%" for t, e in panels]
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles, vertical_spacing=0.2)
    for i, (_, e) in enumerate(panels):
        r = e["reliability"]
        centres = [(lo + hi) / 2 for lo, hi in zip(r["lo"], r["hi"])]
        width = r["hi"][0] - r["lo"][0]
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Bar(x=centres, y=list(r["accuracy"]), width=width, showlegend=i == 0,  # an empty bin: no bar
                   name="accuracy", marker={"color": "#6fa8dc", "line": {"width": 0.5, "color": "#222"}},
                   customdata=r["share"], hovertemplate="conf %{x:.2f}: acc %{y:.2f} (%{customdata:.1%} of examples)"
                   "<extra></extra>"),
            row=row, col=col,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#666"}, showlegend=i == 0,
                       name="perfect calibration", hoverinfo="skip"),
            row=row, col=col,
        )  # fmt: skip
    fig.update_xaxes(range=[0, 1], title_text="confidence")
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(height=300 * nrows + 60, margin={**MARGIN, "t": 60}, bargap=0)
    return fig


# -- curves of any run -----------------------------------------------------------------------------------------------


def overlay_figure(
    series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], metric: str, x_title: str
) -> go.Figure:
    """Curves of several runs on shared axes (``series``: (label, x, y))."""
    if not series:
        return empty(f"none of the selected runs has {metric!r} curves")
    fig = go.Figure()
    for label, x, y in series:
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=label, marker={"size": 4}))
    steps = [v for _, x, _ in series for v in x]
    fig.update_layout(
        title=f"{metric} of the selected runs", xaxis={"title": x_title, **step_ticks(steps)}, yaxis_title=metric,
        height=380, margin=MARGIN, legend={"orientation": "h", "y": -0.2},
        showlegend=True,  # one curve too is named (plotly hides a lone trace's legend)
    )  # fmt: skip
    return fig


def simple_curves_figure(
    rows: Sequence[dict[str, Any]], x_key: str, groups: Sequence[tuple[str, Sequence[str]]]
) -> go.Figure:
    """Per-epoch curves of one run: one panel per (title, keys) group that has data."""
    keys = {k for r in rows for k in r}
    panels = [(t, [k for k in ks if k in keys]) for t, ks in groups]
    panels = [(t, ks) for t, ks in panels if ks]
    if not rows or not panels:
        return empty("no curves yet")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for t, _ in panels])
    x = [r.get(x_key) for r in rows]
    for p, (_, ks) in enumerate(panels):
        for k in ks:
            fig.add_trace(go.Scatter(x=x, y=[r.get(k) for r in rows], mode="lines+markers", name=k), row=1, col=p + 1)
    fig.update_xaxes(title_text=x_key, **step_ticks(x))
    fig.update_layout(height=320, margin=MARGIN)
    return fig
