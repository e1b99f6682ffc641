"""Lazy package exports: a name is imported from its module on first access (PEP 562).

Keeps ``import calitag`` (and ``calitag --help``) free of numpy-heavy or torch imports until a name
that needs them is used. (lazy_loader.attach does the same; this is the dozen lines calitag needs.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names live in submodules.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (for the error message).
    exports : mapping
        Public name -> absolute module that defines it.
    """

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
