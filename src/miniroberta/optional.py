"""Optional dependencies (extras), checked when a command starts rather than after its work is done.

``have("matplotlib")`` tells whether a module can be imported; ``plots_available(command)`` says once, at
the start, that the plots will be skipped (with the extra to install) when matplotlib is missing;
``require(module, extra, purpose)`` fails with one line naming the extra where the command cannot do
without it.
"""
from __future__ import annotations

import importlib.util

from miniroberta.utils import log

EXTRAS = {"matplotlib": "plot", "transformers": "hf"}
_warned: set[str] = set()


class MissingDependency(RuntimeError):
    """An optional package a command needs; names the extra that installs it."""


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module)
    return f"pip install 'miniroberta[{extra}]'" if extra else f"pip install {module}"


def require(module: str, purpose: str) -> None:
    """Raise ``MissingDependency`` (one line naming the extra) unless ``module`` is importable."""
    if not have(module):
        raise MissingDependency(f"{purpose} needs {module}, which is not installed: {install_hint(module)}")


def plots_available(command: str, what: str = "the plots") -> bool:
    """True when matplotlib is importable; else warn once that ``what`` will be skipped."""
    if have("matplotlib"):
        return True
    if command not in _warned:
        _warned.add(command)
        log(f"warning: {command}: matplotlib is not installed, so {what} will be skipped (everything else is "
            f"written); {install_hint('matplotlib')} to draw them")
    return False


__all__ = ["have", "require", "plots_available", "install_hint", "MissingDependency"]
