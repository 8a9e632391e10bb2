"""The registered search spaces: DARTS, the CoNAS committee spaces, RobustDARTS S1-S4 and NAS-Bench-201."""

from __future__ import annotations

from evoray.errors import ConfigError
from evoray.registry import Registry
from evoray.spaces.genotype import Genotype
from evoray.spaces.space import DARTS_FAMILY, DARTS_OPS, NB201_FAMILY, NB201_OPS, SearchSpace

SPACES: Registry[SearchSpace] = Registry("search space")

_DARTS_EDGES = 14


def _uniform(ops: tuple[str, ...], edges: int = _DARTS_EDGES) -> tuple[tuple[str, ...], ...]:
    return (ops,) * edges


def _register(space: SearchSpace) -> SearchSpace:
    SPACES.add(space.name, space)
    return space


def _darts_like(name: str, ops: tuple[str, ...], description: str) -> SearchSpace:
    return _register(
        SearchSpace(name, DARTS_FAMILY, 4, {"normal": _uniform(ops), "reduce": _uniform(ops)}, description)
    )


_darts_like("darts", DARTS_OPS, "DARTS (Liu et al., 2019): 8 ops on each of 14 edges, normal and reduction cells")
_darts_like(
    "conas-3x3",
    ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"),
    "CoNAS committee space 2: the DARTS ops with 3x3 kernels only",
)
_darts_like(
    "conas-5x5",
    ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_5x5", "dil_conv_5x5"),
    "CoNAS committee space 3: the DARTS ops with 5x5 kernels only",
)

# RobustDARTS (Zela et al., 2020) S1: a preselected pair of ops per edge, different for normal and reduce cells.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "sep_conv_3x3"),
    ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "dil_conv_3x3"),
    ("dil_conv_3x3", "dil_conv_5x5"),
    ("dil_conv_3x3", "dil_conv_5x5"),
)
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"),
)
_register(
    SearchSpace(
        "rdarts-s1",
        DARTS_FAMILY,
        4,
        {"normal": _S1_NORMAL, "reduce": _S1_REDUCE},
        "RobustDARTS S1: a different preselected op pair on each edge",
    )
)
_darts_like("rdarts-s2", ("skip_connect", "sep_conv_3x3"), "RobustDARTS S2: skip_connect or sep_conv_3x3")
_darts_like("rdarts-s3", ("none", "skip_connect", "sep_conv_3x3"), "RobustDARTS S3: none, skip_connect, sep_conv_3x3")
_darts_like("rdarts-s4", ("noise", "sep_conv_3x3"), "RobustDARTS S4: N(0,1) noise or sep_conv_3x3")

_register(
    SearchSpace(
        "nb201",
        NB201_FAMILY,
        3,
        {"cell": _uniform(NB201_OPS, 6)},
        "NAS-Bench-201 (Dong & Yang, 2020): 5 ops on each of 6 edges of a 4-node cell, 15,625 cells",
    )
)


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name``; an unknown name raises a ``ConfigError`` listing the valid ones."""
    return SPACES.get(name)


def check_genotype(genotype: Genotype) -> None:
    """Every cell of ``genotype`` checked against the spaces it can come from, whatever the size of a network built
    from it (a network of two cells builds no normal cell, but its genotype must still be sound): a NAS-Bench-201
    cell against ``nb201`` (three node groups, every input once, its ops); a DARTS-family genotype must have its
    normal and reduce cells, as many nodes as the family's spaces, and only ops that some DARTS-family space offers.
    A bad genotype raises a one-line ``ConfigError``."""
    if genotype.is_nb201:
        space = SPACES.get("nb201")
        cell = genotype.cell("cell")
        space.check_cell("cell", cell.nodes)
        for i, node in enumerate(cell.nodes):
            inputs = sorted(j for _, j in node)
            if inputs != list(range(i + 1)):
                raise ConfigError(
                    f"NB201 cell {cell.to_arch()!r}: node {i + 1} must take each earlier node once (inputs "
                    f"{list(range(i + 1))}), got {inputs}"
                )
        return
    darts = [SPACES.get(name) for name in SPACES.names() if SPACES.get(name).family == DARTS_FAMILY]
    valid = sorted({op for space in darts for op in space.op_names})
    steps = {space.steps for space in darts}
    for cell_type in ("normal", "reduce"):
        genotype.cell(cell_type)  # a missing cell type raises a ConfigError naming it
    for name, cell in genotype.cells:
        which = f"the genotype's {name if name == 'cell' else name + ' cell'}"
        if len(cell.nodes) not in steps:
            raise ConfigError(f"{which} has {len(cell.nodes)} nodes; DARTS-family cells have {min(steps)}")
        for op, _ in (edge for node in cell.nodes for edge in node):
            if op not in valid:
                raise ConfigError(f"{which}: op {op!r} is in no DARTS-family space; valid: {', '.join(valid)}")
