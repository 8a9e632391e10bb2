"""The genotypes published by the papers evoray reproduces, kept as data in ``populations/published.json``.

Each entry records the search space, the genotype text exactly as published, the repository file it was read from,
the paper, and the numbers the paper or repository reports (errors in percent, parameters in millions).

>>> published_genotype("DARTS_V2").normal.nodes[0]
(('sep_conv_3x3', 0), ('sep_conv_3x3', 1))
>>> published_entry("EvNASA")["reported"]["cifar10_params_m"]
3.6
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from evoray.errors import ConfigError
from evoray.spaces.genotype import Genotype, parse_genotype

PUBLISHED_PATH = Path(str(resources.files("evoray.populations") / "published.json"))  # shipped with evoray

# Names used by the original code bases, mapped to the names of the data file.
ALIASES = {"DARTS": "DARTS_V2", "EvNASA": "EvNAS_A", "EvNASB": "EvNAS_B", "EvNASC": "EvNAS_C"}

_FIELDS = ("space", "genotype", "source", "paper", "reported")


@cache
def _load() -> dict[str, dict[str, Any]]:
    if not PUBLISHED_PATH.is_file():
        raise ConfigError(
            f"published genotypes not found at {PUBLISHED_PATH}; they ship with evoray as "
            "evoray/populations/published.json (reinstall evoray)"
        )
    try:
        data = json.loads(PUBLISHED_PATH.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{PUBLISHED_PATH} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{PUBLISHED_PATH} must hold an object of name -> entry")
    for name, entry in data.items():
        missing = [f for f in _FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ConfigError(
                f"{PUBLISHED_PATH}: entry {name!r} lacks {', '.join(missing)}; needs {', '.join(_FIELDS)}"
            )
    return data


def _resolve(name: str) -> str:
    data = _load()
    resolved = ALIASES.get(name, name)
    if resolved not in data:
        aliases = ", ".join(f"{a} -> {t}" for a, t in ALIASES.items())
        raise ConfigError(f"unknown published genotype {name!r}; valid: {', '.join(data)} (aliases: {aliases})")
    return resolved


def published_names() -> list[str]:
    """The names of the published genotypes, in file order (aliases not included)."""
    return list(_load())


def published_entry(name: str) -> dict[str, Any]:
    """A copy of the entry of ``name`` (or an alias): space, genotype text, source, paper, reported numbers."""
    return copy.deepcopy(_load()[_resolve(name)])


@cache
def _parsed(name: str) -> Genotype:
    return parse_genotype(_load()[name]["genotype"])


def published_genotype(name: str) -> Genotype:
    """The parsed genotype of ``name`` (or an alias); an unknown name raises a ``ConfigError`` naming the valid ones."""
    return _parsed(_resolve(name))
