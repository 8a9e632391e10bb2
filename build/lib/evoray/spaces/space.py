"""A search space is data: the ops allowed on every edge of every cell type, and the cell's topology."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from evoray.errors import ConfigError

DARTS_OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


@dataclass(frozen=True)
class SearchSpace:
    """Ops per edge and cell type, plus the topology shared by every cell of the family.

    ``family`` selects the cell topology and the networks built over it:
      - ``"darts"``: cells with two inputs (states 0 and 1) and ``steps`` intermediate nodes; node ``i`` (state
        ``i + 2``) sums one edge from every earlier state, so there are ``sum(2 + i)`` edges ordered node by node,
        then by input. Cell types ``normal`` and ``reduce``.
      - ``"nb201"``: cells with one input (state 0) and ``steps`` further nodes; node ``i`` (state ``i``) sums an edge
        from every earlier state; the output is the last node. One cell type, ``cell``.

    ``ops[cell_type][edge]`` lists the candidate ops of that edge in alpha-column order, so a space whose op set
    differs per edge (RobustDARTS S1) is as easy to describe as a uniform one.
    """

    name: str
    family: str
    steps: int
    ops: dict[str, tuple[tuple[str, ...], ...]]
    description: str = ""

    def __post_init__(self) -> None:
        if self.family not in ("darts", "nb201"):
            raise ValueError(f"space {self.name}: family must be darts or nb201, got {self.family!r}")
        for cell_type, rows in self.ops.items():
            if len(rows) != self.num_edges:
                raise ValueError(f"space {self.name}/{cell_type}: {len(rows)} edge op lists, need {self.num_edges}")
            widths = {len(r) for r in rows}
            if len(widths) != 1:
                raise ValueError(f"space {self.name}/{cell_type}: edges have different op counts {sorted(widths)}")

    @property
    def cell_types(self) -> tuple[str, ...]:
        return tuple(self.ops)

    @property
    def num_inputs(self) -> int:
        """States that enter a cell from outside (2 for DARTS cells, 1 for NB201 cells)."""
        return 2 if self.family == "darts" else 1

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(target state, source state) of every edge, in alpha-row order."""
        return tuple((self.num_inputs + i, j) for i in range(self.steps) for j in range(self.num_inputs + i))

    @property
    def num_edges(self) -> int:
        n = 2 if self.family == "darts" else 1
        return sum(n + i for i in range(self.steps))

    def num_ops(self, cell_type: str | None = None) -> int:
        rows = self.ops[cell_type or self.cell_types[0]]
        return len(rows[0])

    def alpha_shape(self, cell_type: str | None = None) -> tuple[int, int]:
        return (self.num_edges, self.num_ops(cell_type))

    def edge_ops(self, cell_type: str, edge: int) -> tuple[str, ...]:
        return self.ops[cell_type][edge]

    @cached_property
    def op_names(self) -> tuple[str, ...]:
        """Every op that appears anywhere in the space, in first-seen order."""
        seen: dict[str, None] = {}
        for rows in self.ops.values():
            for row in rows:
                seen.update(dict.fromkeys(row))
        return tuple(seen)

    @property
    def default_concat(self) -> tuple[int, ...]:
        last = self.num_inputs + self.steps
        return tuple(range(self.num_inputs, last)) if self.family == "darts" else (last - 1,)

    def edge_index(self, target: int, source: int) -> int:
        try:
            return self.edges.index((target, source))
        except ValueError:
            raise ConfigError(f"space {self.name} has no edge into state {target} from state {source}") from None

    def check_cell(self, cell_type: str, nodes: tuple[tuple[tuple[str, int], ...], ...]) -> None:
        """Raise a one-line ``ConfigError`` unless every (op, input) of ``nodes`` exists in this space."""
        if cell_type not in self.ops:
            raise ConfigError(f"space {self.name} has no cell type {cell_type!r}; valid: {', '.join(self.ops)}")
        if len(nodes) != self.steps:
            raise ConfigError(f"space {self.name}: a {cell_type} cell has {self.steps} nodes, got {len(nodes)}")
        for i, node in enumerate(nodes):
            target = self.num_inputs + i
            for op, source in node:
                if not 0 <= source < target:
                    raise ConfigError(
                        f"space {self.name}: node {target} of the {cell_type} cell cannot take input {source}; "
                        f"valid inputs: 0..{target - 1}"
                    )
                allowed = self.edge_ops(cell_type, self.edge_index(target, source))
                if op not in allowed:
                    raise ConfigError(
                        f"space {self.name}: op {op!r} is not allowed on edge {source}->{target} of the {cell_type} "
                        f"cell; valid: {', '.join(allowed)}"
                    )
