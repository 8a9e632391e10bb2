"""The registry of gradient searchers, filled by the modules of :mod:`evoray.searchers.methods` that define them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evoray.registry import Registry

if TYPE_CHECKING:
    from evoray.searchers.base import Searcher

SEARCHERS: Registry[type[Searcher]] = Registry("searcher")
