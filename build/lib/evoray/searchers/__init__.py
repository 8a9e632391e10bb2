"""Gradient searchers (DARTS, SNAS, GDAS, XNAS) and RSPS behind one interface, free of Ray."""

from evoray.searchers.base import Searcher
from evoray.searchers.config import SearchConfig
from evoray.searchers.registry import SEARCHERS
from evoray.searchers.settings import SearchSettings

__all__ = ["SEARCHERS", "SearchConfig", "SearchSettings", "Searcher"]
