"""One module per gradient searcher; importing this package registers every one of them.

A new searcher is one module here: its ``Searcher`` subclass registered in ``SEARCHERS`` and, if it has options,
their dataclass as the class's ``Options`` (they become the config section named after the searcher).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
