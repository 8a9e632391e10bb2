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
class Family:
    """What the cells of a family of spaces share: their topology, how a genotype is read from weights, and the
    networks built over them. Code asks the family, never the family's name.

    - ``darts``: cells with two inputs (states 0 and 1) and ``steps`` intermediate nodes; node ``i`` (state ``i + 2``)
      sums one edge from every earlier state, so there are ``sum(2 + i)`` edges ordered node by node, then by input;
      the output concatenates the nodes. Cell types ``normal`` and ``reduce``; a genotype keeps two edges per node.
    - ``nb201``: cells with one input (state 0) and ``steps`` further nodes; node ``i`` (state ``i``) sums an edge from
      every earlier state; the output is the last node. One cell type, ``cell``; a genotype keeps every edge.
    """

    name: str
    num_inputs: int  # states that enter a cell from outside
    concat_output: bool  # the output concatenates the intermediate nodes (else: the last node)
    edges_per_node: int  # edges a genotype keeps per node (0: every edge, any op including none)
    derivation: str  # the default rule that derives a genotype from weights (spaces.derive.METHODS)
    network: str  # the evaluation network family (nn.networks.FAMILIES)
    style: str  # the supernet's default op style (the original search code's): darts | autodl
    hard_sample_zero_terms: bool  # GDAS' cells of this family also pass the unsampled ops' zero-valued weights

    def __str__(self) -> str:
        return self.name


DARTS_FAMILY = Family("darts", 2, True, 2, "top2", "cifar", "darts", False)
NB201_FAMILY = Family("nb201", 1, False, 0, "argmax", "nb201", "autodl", True)
FAMILIES = {f.name: f for f in (DARTS_FAMILY, NB201_FAMILY)}


@dataclass(frozen=True)
class SearchSpace:
    """Ops per edge and cell type, plus the topology shared by every cell of the family (:class:`Family`).

    ``ops[cell_type][edge]`` lists the candidate ops of that edge in alpha-column order, so a space whose op set
    differs per edge (RobustDARTS S1) is as easy to describe as a uniform one.
    """

    name: str
    family: Family
    steps: int
    ops: dict[str, tuple[tuple[str, ...], ...]]
    description: str = ""

    def __post_init__(self) -> None:
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
        return self.family.num_inputs

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(target state, source state) of every edge, in alpha-row order."""
        return tuple((self.num_inputs + i, j) for i in range(self.steps) for j in range(self.num_inputs + i))

    @property
    def num_edges(self) -> int:
        return sum(self.num_inputs + i for i in range(self.steps))

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
        return tuple(range(self.num_inputs, last)) if self.family.concat_output else (last - 1,)

    def edge_index(self, target: int, source: int) -> int:
        try:
            return self.edges.index((target, source))
        except ValueError:
            raise ConfigError(f"space {self.name} has no edge into state {target} from state {source}") from None

    def check_cell(self, cell_type: str, nodes: tuple[tuple[tuple[str, int], ...], ...]) -> None:
        """Raise a one-line ``ConfigError`` unless every (op, input) of ``nodes`` exists in this space."""
        if cell_type not in self.ops:
            raise ConfigError(f"space {self.name} has no cell type {cell_type!r}; valid: {', '.join(self.ops)}")
        which = "the cell" if cell_type == "cell" else f"the {cell_type} cell"
        if len(nodes) != self.steps:
            raise ConfigError(f"space {self.name}: {which} needs {self.steps} nodes, got {len(nodes)}")
        for i, node in enumerate(nodes):
            target = self.num_inputs + i
            for op, source in node:
                if not 0 <= source < target:
                    raise ConfigError(
                        f"space {self.name}: node {target} of {which} cannot take input {source}; "
                        f"valid inputs: 0..{target - 1}"
                    )
                allowed = self.edge_ops(cell_type, self.edge_index(target, source))
                if op not in allowed:
                    raise ConfigError(
                        f"space {self.name}: op {op!r} is not allowed on edge {source}->{target} of {which}; "
                        f"valid: {', '.join(allowed)}"
                    )
