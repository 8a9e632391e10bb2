"""``SearchConfig``: the shared settings plus one section of options per registered searcher (``snas.penalty``,
``gdas.tau_max``, ...), assembled from the registry so that a new searcher adds its section by itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import evoray.searchers.methods  # noqa: F401  (registers every searcher)
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings


def _build() -> type[SearchSettings]:
    sections: list[tuple[str, Any, Any]] = [
        (name, cls.Options, dataclasses.field(default_factory=cls.Options))
        for name in SEARCHERS.names()
        if (cls := SEARCHERS.get(name)).Options is not None
    ]
    made = dataclasses.make_dataclass("SearchConfig", sections, bases=(SearchSettings,))
    made.__module__, made.__doc__ = (
        __name__,
        SearchSettings.__doc__,
    )  # picklable as evoray.searchers.config.SearchConfig
    return made


SearchConfig = _build()
