"""The one error type that evoray raises for bad user input.

A ``ConfigError`` carries a single line naming what was wrong and what is valid; the CLIs print it without a
traceback and exit with status 2.
"""


class ConfigError(ValueError):
    """Bad user input: an unknown name, a malformed string, a missing path, an out-of-range value."""


class DivergedError(ConfigError, FloatingPointError):
    """A loss or weights that became NaN or infinite: the settings (a learning rate too high, no gradient clipping)
    let the run diverge. A ``ConfigError``, so the commands report it in one line; a ``FloatingPointError`` as well."""


def diverged(what: str, lr: float, grad_clip: float) -> DivergedError:
    """The one-line error of a loss that became NaN or infinite (``what`` says which and where), naming the settings
    to change: the learning rate ``lr``, and the clipping where ``grad_clip`` is off."""
    clip = "" if grad_clip > 0 else " or set optim.grad_clip (now 0: no clipping)"
    return DivergedError(f"{what}; lower optim.lr (now {lr:.4g}){clip}")
