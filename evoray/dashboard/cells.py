"""A cell as a directed graph laid out left to right: geometry only, drawn by the dashboard (Plotly) and by
:mod:`evoray.report` (the static ``best_<cell>_cell.png``/``.svg``).

Layout: the inputs sit in column 0, intermediate node ``k`` in column ``k + 1`` on the middle row, the output last.
Every edge runs as a polyline: a short bend out of its source onto a horizontal *lane*, along the lane, and a short
bend into its target. Lanes are handed out so that no two edges share a stretch of lane, and an edge's op label sits
on its own horizontal run, midway between two columns, where no other edge bends; so each label lies on exactly one
line, and that line is drawn in the op's colour. The cell output's concatenation edges share one unlabelled bus
below the labelled lanes.

Example::

    from evoray.spaces import parse_genotype
    cell = parse_genotype("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|skip_connect~2|")
    layout = layout_cell(cell.cell("cell"), num_inputs=1)
    [(e.source, e.target, e.op) for e in layout.edges]  # (0, 1, 'nor_conv_3x3'), (0, 2, 'skip_connect'), ...
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from evoray.spaces.genotype import CellGenotype

COLUMN = 3.0  # distance between two columns (fits the longest op label on a one-column run)
LANE = 0.8  # distance between two lanes
BEND = 0.45  # horizontal length of the bends into and out of a lane
RADIUS = 0.32  # a node's radius (arrows stop at it)
OUTPUT = -1  # the state id of a separate output node
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip
KNOWN_OPS = (
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "nor_conv_3x3", "nor_conv_1x1", "conv_7x1_1x7",
)  # fmt: skip


# the ops that are no computation: greys apart from every op's colour (and from the grey of concat edges)
QUIET_OPS = {"none": "#c7c7c7", "noise": "#525252"}
# ops no space registers: a stable colour by hash from a second palette, so none takes a known op's colour
OTHER_PALETTE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")


def op_colour(op: str) -> str:
    """A fixed colour per op name (the same in every drawing), each known op its own."""
    if op in KNOWN_OPS:
        return PALETTE[KNOWN_OPS.index(op) % len(PALETTE)]
    if op in QUIET_OPS:
        return QUIET_OPS[op]
    return OTHER_PALETTE[zlib.crc32(op.encode()) % len(OTHER_PALETTE)]


@dataclass(frozen=True)
class CellNode:
    state: int  # the state index in the genotype (inputs 0.., intermediate nodes after them); OUTPUT for the output
    label: str  # what the drawing writes in the node
    kind: str  # input | node | output
    x: float
    y: float


@dataclass(frozen=True)
class CellEdge:
    source: int  # state index
    target: int  # state index, or OUTPUT
    op: str | None  # None: the output's concatenation of a node
    points: tuple[tuple[float, float], ...]  # the polyline from the source's centre to the target's centre
    label_at: tuple[float, float] | None  # where the op label sits (on this edge's own lane run)


@dataclass(frozen=True)
class CellLayout:
    nodes: tuple[CellNode, ...]
    edges: tuple[CellEdge, ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def ops(self) -> list[tuple[int, int, str]]:
        """(source, target, op) of every labelled edge."""
        return [(e.source, e.target, e.op) for e in self.edges if e.op is not None]

    def node(self, state: int) -> CellNode:
        return next(n for n in self.nodes if n.state == state)


def _input_labels(num_inputs: int) -> list[str]:
    if num_inputs == 2:
        return ["c_{k-2}", "c_{k-1}"]
    return ["in"] if num_inputs == 1 else [f"in{i}" for i in range(num_inputs)]


def layout_cell(cell: CellGenotype, num_inputs: int, keep_none: bool = False) -> CellLayout:
    """The left-to-right layout of ``cell`` (``num_inputs``: 2 for DARTS-family cells, 1 for NB201 cells). Edges whose
    op is ``none`` (a zero: no connection) are left out unless ``keep_none``."""
    n = len(cell.nodes)
    last = num_inputs + n - 1
    output_is_node = tuple(cell.concat) == (last,)  # NB201: the last node is the cell's output
    input_lanes = [0] if num_inputs == 1 else [num_inputs - 1 - 2 * i for i in range(num_inputs)]
    nodes: dict[int, CellNode] = {}
    lane_of: dict[int, int] = {}
    for i, label in enumerate(_input_labels(num_inputs)):
        lane_of[i] = input_lanes[i]
        nodes[i] = CellNode(i, label, "input", 0.0, input_lanes[i] * LANE)
    for k in range(n):
        state = num_inputs + k
        kind = "output" if output_is_node and state == last else "node"
        label = f"{state} out" if kind == "output" else str(state)
        lane_of[state] = 0
        nodes[state] = CellNode(state, label, kind, (k + 1) * COLUMN, 0.0)
    if not output_is_node:
        lane_of[OUTPUT] = 0
        nodes[OUTPUT] = CellNode(OUTPUT, "out", "output", (n + 1) * COLUMN, 0.0)

    wanted = [
        (j, num_inputs + k, op) for k, node in enumerate(cell.nodes) for op, j in node if keep_none or op != "none"
    ]
    wanted.sort(key=lambda e: (nodes[e[1]].x - nodes[e[0]].x, e[1], e[0]))  # short edges take the inner lanes
    taken: dict[int, list[tuple[float, float]]] = {}
    edges: list[CellEdge] = []
    for source, target, op in wanted:
        lane, run = _pick_lane(nodes[source], nodes[target], lane_of[source], taken, num_inputs)
        taken.setdefault(lane, []).append(run)
        points = _route(nodes[source], nodes[target], lane * LANE)
        edges.append(CellEdge(source, target, op, points, (_label_x(run), lane * LANE)))
    if not output_is_node:
        bus = (min([*taken, *input_lanes, 0]) - 1) * LANE
        out = nodes[OUTPUT]
        for c in cell.concat:
            src = nodes[c]
            if src.x + COLUMN >= out.x:  # the last node: straight into the output
                points = ((src.x, src.y), (out.x, out.y))
            else:
                points = ((src.x, src.y), (src.x + BEND, bus), (out.x - BEND, bus), (out.x, out.y))
            edges.append(CellEdge(c, OUTPUT, None, points, None))
    ys = [p[1] for e in edges for p in e.points] + [nd.y for nd in nodes.values()]
    xs = [nd.x for nd in nodes.values()]
    pad = 0.7
    return CellLayout(
        tuple(nodes[s] for s in sorted(nodes, key=lambda s: (s == OUTPUT, s))),
        tuple(sorted(edges, key=lambda e: (e.op is None, e.target if e.target >= 0 else 10**6, e.source))),
        (min(xs) - pad, max(xs) + pad),
        (min(ys) - pad, max(ys) + pad),
    )


def _run_of(src: CellNode, dst: CellNode) -> tuple[float, float]:
    return (src.x + BEND, dst.x - BEND)


def _pick_lane(
    src: CellNode, dst: CellNode, src_lane: int, taken: dict[int, list[tuple[float, float]]], num_inputs: int
) -> tuple[int, tuple[float, float]]:
    """The free lane nearest the source's own lane for the run between ``src`` and ``dst``; the middle lane only
    between neighbouring columns (the nodes sit on it)."""
    run = _run_of(src, dst)
    one_column = dst.x - src.x <= COLUMN + 1e-9
    side = 1 if src_lane > 0 else -1 if src_lane < 0 else 0
    candidates = sorted(range(-12, 13), key=lambda lane: (abs(lane - src_lane), 0 if lane * side >= 0 else 1, -lane))
    for lane in candidates:
        if lane == 0 and not one_column:
            continue
        if num_inputs > 1 and lane != src_lane and abs(lane) < num_inputs and src.kind == "input" and lane != 0:
            continue  # another input's lane starts at that input's node
        if all(run[1] + 0.25 <= a or b + 0.25 <= run[0] for a, b in taken.get(lane, [])):
            return lane, run
    raise ValueError(f"cell too large to lay out: no free lane for the edge {src.state}->{dst.state}")


def _label_x(run: tuple[float, float]) -> float:
    """The label's x: the column midpoint inside ``run`` nearest its centre (no edge bends there)."""
    centre = (run[0] + run[1]) / 2
    k = round(centre / COLUMN - 0.5)
    lo, hi = run[0] / COLUMN - 0.5, run[1] / COLUMN - 0.5
    k = min(max(k, int(lo + 0.999)), int(hi))
    return (k + 0.5) * COLUMN


def _route(src: CellNode, dst: CellNode, y: float) -> tuple[tuple[float, float], ...]:
    points = [(src.x, src.y), (src.x + BEND, y), (dst.x - BEND, y), (dst.x, dst.y)]
    out = [points[0]]
    for p in points[1:]:
        if p != out[-1]:
            out.append(p)
    return tuple(out)


def arrow_tail(edge: CellEdge, radius: float = RADIUS) -> tuple[tuple[float, float], tuple[float, float]]:
    """(from, to) of the edge's last segment, stopped at the target node's rim: where the arrowhead goes."""
    (x0, y0), (x1, y1) = edge.points[-2], edge.points[-1]
    dx, dy = x1 - x0, y1 - y0
    length = (dx * dx + dy * dy) ** 0.5 or 1.0
    return (x0, y0), (x1 - dx / length * radius, y1 - dy / length * radius)
