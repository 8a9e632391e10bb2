"""Gradient searchers (DARTS, SNAS, GDAS, XNAS) behind one interface, free of Ray."""

from evoray.searchers import darts, gdas, snas, xnas  # noqa: F401  (register the searchers)
from evoray.searchers.base import Searcher
from evoray.searchers.config import SearchConfig
from evoray.searchers.registry import SEARCHERS

__all__ = ["SEARCHERS", "SearchConfig", "Searcher"]
