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
from typing import Any, TypeGuard

from evoray.errors import ConfigError

Edge = tuple[str, int]  # (op name, input state)
Node = tuple[Edge, ...]  # the incoming edges of one intermediate node

_OP_RE = re.compile(r"[a-z][a-z0-9_]*")  # with fullmatch: `$` would let a trailing newline through
_INPUT_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit also takes '²'
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
        """The genotype :meth:`to_json` wrote; anything else raises a one-line ``ConfigError``."""
        if not isinstance(data, dict) or not data:
            raise ConfigError('malformed genotype JSON: expected {cell: {"nodes": [...], "concat": [...]}}')
        genotype = cls(tuple((name, _json_cell(name, cell)) for name, cell in data.items()))
        _check_structure(genotype)
        return genotype


def _json_cell(name: Any, cell: Any) -> CellGenotype:
    """One cell of :meth:`Genotype.to_json`: ``{"nodes": [[[op, input], ...], ...], "concat": [state, ...]}``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"malformed genotype JSON: cell name {_clip(repr(name))} is not a name like normal or cell")
    where = f"malformed genotype JSON, {name} cell"
    if not isinstance(cell, dict) or set(cell) != {"nodes", "concat"}:
        raise ConfigError(f'{where}: expected {{"nodes": [[[op, input], ...], ...], "concat": [...]}}')
    nodes = cell["nodes"]
    if not isinstance(nodes, list) or not all(isinstance(node, list) for node in nodes):
        raise ConfigError(f"{where}: nodes must be a list of nodes, each a list of [op, input] edges")
    return CellGenotype(
        tuple(tuple(_edge(e, where) for e in node) for node in nodes), _concat(cell["concat"], f"{where}: concat")
    )


def _is_int(x: Any) -> TypeGuard[int]:
    """An int proper: ``True``, ``0.7`` and ``"0"`` are not states."""
    return isinstance(x, int) and not isinstance(x, bool)


def _edge(e: Any, where: str) -> Edge:
    """One edge: exactly an op name and an int input, else a ``ConfigError`` prefixed by ``where``."""
    if not isinstance(e, (list, tuple)) or len(e) != 2 or not isinstance(e[0], str) or not _is_int(e[1]):
        raise ConfigError(f"{where}: bad edge {_clip(repr(e))}, expected ('op', input) with an int input")
    return (e[0], e[1])


def _concat(value: Any, what: str) -> tuple[int, ...]:
    """The states a cell concatenates: a non-empty list of ints in ``0..MAX_STATES - 1``, else a ``ConfigError``."""
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(c) and 0 <= c < MAX_STATES for c in value):
        raise ConfigError(
            f"{what} {_clip(repr(value))} must be a non-empty list of ints in 0..{MAX_STATES - 1}, e.g. [2, 3, 4, 5]"
        )
    return tuple(value)


def format_genotype(genotype: Genotype) -> str:
    """The canonical text of a genotype: the NB201 arch string, or the DARTS ``Genotype(...)`` form."""
    if genotype.is_nb201:
        return genotype.cell("cell").to_arch()
    parts = []
    for name, cell in genotype.cells:
        counts = [len(node) for node in cell.nodes]
        # a flat list is read back as max(concat) - 1 nodes (_nodes_from_list): else the nodes are written out
        flat_ok = len(counts) == max(cell.concat, default=0) - 1 and (
            all(c == 2 for c in counts) or counts == [2 + i for i in range(len(counts))]
        )
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
            data = json.loads(s)
        except (ValueError, RecursionError) as err:  # ValueError: also an int of over 4300 digits
            raise ConfigError(f"genotype JSON does not parse: {err}") from None
        return Genotype.from_json(data)
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
            if not sep or not _OP_RE.fullmatch(op) or not _INPUT_RE.fullmatch(src):
                raise ConfigError(
                    f"malformed arch string {_clip(s)!r}: bad edge {_clip(item)!r}, "
                    "expected op~input, the input in digits 0-9"
                )
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
    where = f"malformed genotype {_clip(s)!r}"
    cells = []
    for name, value in fields.items():
        if name.endswith("_concat") and name[: -len("_concat")] not in fields:
            raise ConfigError(f"{where}: {name} has no {name[: -len('_concat')]} cell")
        if name.endswith("_concat") or value is None:  # e.g. AutoDL's connectN=None
            continue
        if f"{name}_concat" not in fields:
            raise ConfigError(f"{where}: {name} has no {name}_concat")
        concat = _concat(fields[f"{name}_concat"], f"{where}: {name}_concat")
        cells.append((name, CellGenotype(_nodes_from_list(value, concat, s), concat)))
    if not cells:
        raise ConfigError(f"malformed genotype {_clip(s)!r}: no cells")
    genotype = Genotype(tuple(cells))
    _check_structure(genotype)
    return genotype


def _parse_fields(inner: str) -> dict[str, Any]:
    """Keyword fields of ``Genotype(...)`` as Python literals; ``range(a, b)`` is the only call accepted."""
    call = ast.parse(f"f({inner})", mode="eval").body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id != "f":
        raise ValueError("expected one Genotype(name=[...], ...) with nothing after its closing parenthesis")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise ValueError("expected keyword fields only, e.g. normal=[...], normal_concat=[2, 3, 4, 5]")
    fields: dict[str, Any] = {}
    for kw in call.keywords:
        v = kw.value
        if str(kw.arg) in fields:
            raise ValueError(f"{kw.arg} is given twice")
        if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "range" and not v.keywords:
            bounds = [a.value for a in v.args if isinstance(a, ast.Constant) and _is_int(a.value)]
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
        return _edge(e, f"malformed genotype {_clip(s)!r}")

    def is_node(n: Any) -> bool:  # a node is a sequence of edges; an edge is ('op', input) or ['op', input]
        return isinstance(n, (list, tuple)) and all(isinstance(e, (list, tuple)) for e in n)

    if all(is_node(n) for n in value):  # explicit nodes
        return tuple(tuple(edge(e) for e in node) for node in value)
    flat = [edge(e) for e in value]
    steps = max(concat) - 1  # concat is non-empty and below MAX_STATES
    if steps < 1:
        raise ConfigError(
            f"malformed genotype {_clip(s)!r}: concat {list(concat)} names no intermediate node; a cell's nodes are "
            "states 2, 3, ..., e.g. [2, 3, 4, 5]"
        )
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
        + f" its concat {list(concat)} implies"
        + f"; expected {2 * steps} (two per node) or {sum(sizes)} (every edge)"
    )


def _check_structure(genotype: Genotype) -> None:
    for name, cell in genotype.cells:
        n_in = 1 if genotype.is_nb201 else 2
        if not any(cell.nodes):  # a node may lack edges (it is zeros), but a cell with none ignores its inputs
            raise ConfigError(
                f"genotype {name} cell has no edges; give each node its (op, input) edges, e.g. "
                "[('sep_conv_3x3', 0), ('skip_connect', 1)]"
            )
        for i, node in enumerate(cell.nodes):
            for op, j in node:
                if not _OP_RE.fullmatch(op):
                    raise ConfigError(
                        f"genotype {name} cell: bad op name {_clip(repr(op))}; op names are lowercase letters, "
                        "digits and _"
                    )
                if not 0 <= j < n_in + i:
                    raise ConfigError(
                        f"genotype {name} cell: node {n_in + i} takes input {j}; valid inputs 0..{n_in + i - 1}"
                    )
        for c in cell.concat:
            if not 0 <= c < n_in + len(cell.nodes):
                raise ConfigError(f"genotype {name} cell: concat state {c} does not exist")
        if genotype.is_nb201 and cell.concat != (len(cell.nodes),):  # the arch string has no concat to keep it
            raise ConfigError(
                f"genotype {name} cell: concat {list(cell.concat)}, but a NAS-Bench-201 cell outputs its last node: "
                f"[{len(cell.nodes)}]"
            )


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
