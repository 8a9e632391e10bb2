"""Genotypes as plain data: parse, format and JSON round trip.

A genotype gives, for every cell type, the incoming edges ``(op, input state)`` of every intermediate node and the
states concatenated into the cell's output. Three text forms are understood:

- the DARTS form, ``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
  reduce_concat=[2, 3, 4, 5])``: a flat list holds two edges per node (top-2 cells) or every edge of every node
  (SNAS ``edge_all`` cells); a list of lists gives the nodes explicitly;
- the NAS-Bench-201 arch string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``;
- JSON, as written by :meth:`Genotype.to_json`.

Strings are parsed with ``ast.literal_eval``, never executed.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evoray.errors import ConfigError

Edge = tuple[str, int]  # (op name, input state)
Node = tuple[Edge, ...]  # the incoming edges of one intermediate node

_OP_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_STATES = 64  # the most states a cell's concat may name (DARTS cells have 6)


@dataclass(frozen=True)
class CellGenotype:
    """One cell: the incoming edges of each intermediate node, and the states concatenated at the output."""

    nodes: tuple[Node, ...]
    concat: tuple[int, ...]

    def to_arch(self) -> str:
        """The NAS-Bench-201 arch string of this cell: ``|op~j|...|+|...|``."""
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in self.nodes)


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: one :class:`CellGenotype` per cell type, in order."""

    cells: tuple[tuple[str, CellGenotype], ...]

    def cell(self, cell_type: str) -> CellGenotype:
        for name, cell in self.cells:
            if name == cell_type:
                return cell
        raise ConfigError(f"genotype has no {cell_type!r} cell; it has {', '.join(self.cell_types)}")

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.cells)

    @property
    def is_nb201(self) -> bool:
        return self.cell_types == ("cell",)

    @property
    def normal(self) -> CellGenotype:
        return self.cell("normal")

    @property
    def reduce(self) -> CellGenotype:
        return self.cell("reduce")

    def ops(self) -> list[str]:
        return [op for _, cell in self.cells for node in cell.nodes for op, _ in node]

    def __str__(self) -> str:
        return format_genotype(self)

    def to_json(self) -> dict[str, Any]:
        return {
            name: {"nodes": [[[op, j] for op, j in node] for node in cell.nodes], "concat": list(cell.concat)}
            for name, cell in self.cells
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Genotype:
        try:
            cells = tuple(
                (
                    str(name),
                    CellGenotype(
                        nodes=tuple(tuple((str(op), int(j)) for op, j in node) for node in cell["nodes"]),
                        concat=tuple(int(c) for c in cell["concat"]),
                    ),
                )
                for name, cell in data.items()
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"malformed genotype JSON ({err}); expected {{cell: {{nodes, concat}}}}") from None
        genotype = cls(cells)
        _check_structure(genotype)
        return genotype


def format_genotype(genotype: Genotype) -> str:
    """The canonical text of a genotype: the NB201 arch string, or the DARTS ``Genotype(...)`` form."""
    if genotype.is_nb201:
        return genotype.cell("cell").to_arch()
    parts = []
    for name, cell in genotype.cells:
        counts = [len(node) for node in cell.nodes]
        flat_ok = all(c == 2 for c in counts) or counts == [2 + i for i in range(len(counts))]
        if flat_ok:
            body = "[" + ", ".join(f"({op!r}, {j})" for node in cell.nodes for op, j in node) + "]"
        else:
            body = (
                "[" + ", ".join("[" + ", ".join(f"({op!r}, {j})" for op, j in node) + "]" for node in cell.nodes) + "]"
            )
        parts.append(f"{name}={body}, {name}_concat={list(cell.concat)}")
    return "Genotype(" + ", ".join(parts) + ")"


def parse_genotype(text: str) -> Genotype:
    """Parse any of the three text forms; a malformed string raises a one-line ``ConfigError``."""
    s = text.strip()
    if not s:
        raise ConfigError("empty genotype string")
    if s.startswith("{"):
        try:
            return Genotype.from_json(json.loads(s))
        except json.JSONDecodeError as err:
            raise ConfigError(f"genotype JSON does not parse: {err}") from None
    if s.startswith("|"):
        return parse_arch(s)
    if s.startswith("Genotype(") and s.endswith(")"):
        return _parse_darts(s)
    raise ConfigError(
        f"malformed genotype {_clip(s)!r}: expected Genotype(normal=[...], ...), an arch string |op~0|+|...| or JSON"
    )


def parse_arch(text: str) -> Genotype:
    """Parse a NAS-Bench-201 arch string ``|op~0|+|op~0|op~1|+|...|`` into a one-cell genotype."""
    s = text.strip()
    nodes = []
    for i, chunk in enumerate(s.split("+")):
        if len(chunk) < 2 or chunk[0] != "|" or chunk[-1] != "|":
            raise ConfigError(f"malformed arch string {_clip(s)!r}: node {i + 1} must look like |op~0|op~1|")
        edges = []
        for item in chunk[1:-1].split("|"):
            op, sep, src = item.partition("~")
            if not sep or not _OP_RE.match(op) or not src.isdigit():
                raise ConfigError(f"malformed arch string {_clip(s)!r}: bad edge {item!r}, expected op~input")
            edges.append((op, int(src)))
        nodes.append(tuple(edges))
    genotype = Genotype((("cell", CellGenotype(tuple(nodes), (len(nodes),))),))
    _check_structure(genotype)
    return genotype


def _parse_darts(s: str) -> Genotype:
    inner = s[len("Genotype(") : -1]
    try:
        fields = _parse_fields(inner)
    except ValueError as err:
        raise ConfigError(f"malformed genotype {_clip(s)!r}: {err}") from None
    except (SyntaxError, TypeError, MemoryError, RecursionError):
        raise ConfigError(f"malformed genotype {_clip(s)!r}: not a Genotype(name=[...], ...) literal") from None
    cells = []
    for name, value in fields.items():
        if name.endswith("_concat") or value is None:  # e.g. AutoDL's connectN=None
            continue
        if f"{name}_concat" not in fields:
            raise ConfigError(f"malformed genotype {_clip(s)!r}: {name} has no {name}_concat")
        concat = tuple(int(c) for c in fields[f"{name}_concat"])
        cells.append((name, CellGenotype(_nodes_from_list(value, concat, s), concat)))
    if not cells:
        raise ConfigError(f"malformed genotype {_clip(s)!r}: no cells")
    genotype = Genotype(tuple(cells))
    _check_structure(genotype)
    return genotype


def _parse_fields(inner: str) -> dict[str, Any]:
    """Keyword fields of ``Genotype(...)`` as Python literals; ``range(a, b)`` is the only call accepted."""
    call = ast.parse(f"f({inner})", mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError("expected keyword fields only")
    fields: dict[str, Any] = {}
    for kw in call.keywords:
        v = kw.value
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "range" and not v.keywords:
            bounds = [a.value for a in v.args if isinstance(a, ast.Constant) and isinstance(a.value, int)]
            if len(bounds) != len(v.args):
                raise ValueError("range() takes integer literals only")
            states = range(*bounds)
            if len(states) > MAX_STATES:  # a cell concatenates a handful of states; never build a huge list
                raise ValueError(f"range{tuple(bounds)} spans {len(states)} states; a cell has at most {MAX_STATES}")
            fields[str(kw.arg)] = list(states)
        else:
            try:
                fields[str(kw.arg)] = ast.literal_eval(v)
            except ValueError:
                raise ValueError(f"{kw.arg} is not a literal; give lists of ('op', input) and range(a, b)") from None
    return fields


def _nodes_from_list(value: Any, concat: tuple[int, ...], s: str) -> tuple[Node, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"malformed genotype {_clip(s)!r}: a cell must be a non-empty list of (op, input)")

    def edge(e: Any) -> Edge:
        if not isinstance(e, (list, tuple)) or len(e) < 2 or not isinstance(e[0], str) or not isinstance(e[1], int):
            raise ConfigError(f"malformed genotype {_clip(s)!r}: bad edge {e!r}, expected ('op', input)")
        return (e[0], e[1])

    def is_node(n: Any) -> bool:  # a node is a sequence of edges; an edge is ('op', input)
        return isinstance(n, list) or (isinstance(n, tuple) and all(isinstance(e, (list, tuple)) for e in n))

    if all(is_node(n) for n in value):  # explicit nodes
        return tuple(tuple(edge(e) for e in node) for node in value)
    flat = [edge(e) for e in value]
    steps = max(concat) - 1 if concat else len(flat) // 2
    if len(flat) == 2 * steps:
        return tuple(tuple(flat[2 * i : 2 * i + 2]) for i in range(steps))
    sizes = [2 + i for i in range(steps)]
    if len(flat) == sum(sizes):
        nodes, start = [], 0
        for n in sizes:
            nodes.append(tuple(flat[start : start + n]))
            start += n
        return tuple(nodes)
    raise ConfigError(
        f"malformed genotype {_clip(s)!r}: {len(flat)} edges for the {steps} nodes"
        + (f" its concat {list(concat)} implies" if concat else "")
        + f"; expected {2 * steps} (two per node) or {sum(sizes)} (every edge)"
    )


def _check_structure(genotype: Genotype) -> None:
    for name, cell in genotype.cells:
        n_in = 1 if genotype.is_nb201 else 2
        for i, node in enumerate(cell.nodes):
            for op, j in node:
                if not _OP_RE.match(op):
                    raise ConfigError(f"genotype {name} cell: bad op name {op!r}")
                if not 0 <= j < n_in + i:
                    raise ConfigError(
                        f"genotype {name} cell: node {n_in + i} takes input {j}; valid inputs 0..{n_in + i - 1}"
                    )
        for c in cell.concat:
            if not 0 <= c < n_in + len(cell.nodes):
                raise ConfigError(f"genotype {name} cell: concat state {c} does not exist")


def make_genotype(cells: dict[str, Sequence[Sequence[Edge]]], concat: dict[str, Sequence[int]]) -> Genotype:
    """Build a genotype from per-cell node lists (used by derivation)."""
    return Genotype(
        tuple(
            (name, CellGenotype(tuple(tuple(node) for node in nodes), tuple(concat[name])))
            for name, nodes in cells.items()
        )
    )


def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."
