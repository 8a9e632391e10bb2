"""Search spaces as data, genotypes and their codecs, and derivation from architecture weights."""

from evoray.spaces.catalog import SPACES, check_genotype, get_space
from evoray.spaces.derive import derive_cell, derive_genotype, one_hot, one_hot_cell
from evoray.spaces.genotype import CellGenotype, Genotype, format_genotype, parse_arch, parse_genotype
from evoray.spaces.space import DARTS_OPS, NB201_OPS, SearchSpace

__all__ = [
    "DARTS_OPS",
    "NB201_OPS",
    "SPACES",
    "CellGenotype",
    "Genotype",
    "SearchSpace",
    "check_genotype",
    "derive_cell",
    "derive_genotype",
    "format_genotype",
    "get_space",
    "one_hot",
    "one_hot_cell",
    "parse_arch",
    "parse_genotype",
]
