"""Individuals: architecture parameters (alphas) with their derived genotype, fitness and lineage.

An individual is data: frozen, with float32 alphas that nothing modifies in place (operators return new arrays).
The arrays stay writeable, since ``torch.as_tensor`` warns about read-only ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from evoray.errors import ConfigError
from evoray.spaces import Genotype, SearchSpace, derive_genotype
from evoray.spaces.derive import decoding_strengths

Alphas = dict[str, np.ndarray]  # cell type -> (E, K) float32
ORIGINS = ("random", "elite", "crossover", "mutation", "seed")


@dataclass(frozen=True, eq=False)
class Individual:
    """One member of a population (EvNAS: https://arxiv.org/abs/2012.06400).

    Equality is identity (``eq=False``): alphas are arrays, and two individuals with equal alphas are still two.

    >>> from evoray.spaces import get_space
    >>> space = get_space("nb201")
    >>> ind = make_individual(space, {"cell": np.eye(6, 5, dtype=np.float32)}, 0, 0)
    >>> ind.genotype
    '|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|'
    """

    id: int  # unique within a run, increasing in order of creation
    generation: int  # the generation it belongs to (is evaluated in)
    alphas: Alphas  # (E, K) float32 per cell type; U(0, 1) for EvNAS individuals
    parents: tuple[int, ...]  # ids of the individuals it came from (empty for random and seeded ones)
    origin: str  # random | elite | crossover | mutation | seed
    genotype: str  # str() of the genotype derived from softmax(alphas): DARTS top-2, NB201 argmax
    fitness: float | None = None  # None until evaluated

    def with_fitness(self, fitness: float) -> Individual:
        return replace(self, fitness=float(fitness))

    def in_generation(self, generation: int) -> Individual:
        """The same individual listed in another generation, not yet evaluated there."""
        return replace(self, generation=generation, fitness=None)


def genotype_of(space: SearchSpace, alphas: Mapping[str, np.ndarray]) -> Genotype:
    """The genotype an individual stands for: derived from the softmax of its alphas with the space's default
    method, as EvNAS decodes it (the same float32 strengths as ``evoray.nn.weighting.decode_one_hot``)."""
    return derive_genotype(space, {ct: decoding_strengths(alphas[ct]) for ct in space.cell_types})


def check_alphas(space: SearchSpace, alphas: Mapping[str, np.ndarray], what: str = "alphas") -> Alphas:
    """float32 copies of ``alphas``, or a one-line ``ConfigError`` naming the wrong cell type or shape."""
    if set(alphas) != set(space.cell_types):
        raise ConfigError(f"{what} have cell types {sorted(alphas)}; space {space.name} needs {list(space.cell_types)}")
    out = {}
    for ct in space.cell_types:
        a = np.array(alphas[ct], dtype=np.float32)  # a copy
        if a.shape != space.alpha_shape(ct):
            raise ConfigError(f"{what}: {ct} has shape {a.shape}; space {space.name} needs {space.alpha_shape(ct)}")
        out[ct] = a
    return out


def make_individual(
    space: SearchSpace,
    alphas: Mapping[str, np.ndarray],
    ident: int,
    generation: int,
    parents: tuple[int, ...] = (),
    origin: str = "random",
) -> Individual:
    """A new, unevaluated individual whose genotype is derived from ``alphas`` (copied to float32)."""
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r} is not one of {ORIGINS}")
    clean = check_alphas(space, alphas)
    return Individual(
        int(ident), int(generation), clean, tuple(int(p) for p in parents), origin, str(genotype_of(space, clean))
    )


def to_record(ind: Individual) -> dict[str, Any]:
    """An individual as plain data (JSON-able; alphas flat per cell type with their shapes): the one serialised form,
    shared by archive rows, strategy states and checkpoints."""
    return {
        "id": ind.id,
        "generation": ind.generation,
        "parents": list(ind.parents),
        "origin": ind.origin,
        "genotype": ind.genotype,
        "fitness": ind.fitness,
        "alphas": {ct: np.asarray(a, dtype=np.float32).ravel().tolist() for ct, a in ind.alphas.items()},
        "alpha_shapes": {ct: list(np.asarray(a).shape) for ct, a in ind.alphas.items()},
    }


def from_record(record: Mapping[str, Any]) -> Individual:
    """The individual of :func:`to_record`'s output (or of an archive row)."""
    shapes = dict(record["alpha_shapes"])
    alphas = {str(ct): np.asarray(v, dtype=np.float32).reshape(shapes[ct]) for ct, v in dict(record["alphas"]).items()}
    fitness = record["fitness"]
    return Individual(
        int(record["id"]),
        int(record["generation"]),
        alphas,
        tuple(int(p) for p in record["parents"]),
        str(record["origin"]),
        str(record["genotype"]),
        None if fitness is None else float(fitness),
    )
