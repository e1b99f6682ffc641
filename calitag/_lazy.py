"""Lazy package exports: a name is imported from its module on first access (PEP 562).

Keeps ``import calitag`` (and ``calitag --help``) free of numpy, scipy and torch until a name that
needs them is used. (``lazy_loader.attach`` does the same; this is the few lines calitag needs, plus
the one case it does not cover: an exported function named like a submodule, ``thresholds.fit``.)
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping


class _LazyPackage(types.ModuleType):
    """A package module whose exports are resolved on first access."""

    _lazy_exports: Mapping[str, str]

    def __getattr__(self, name: str) -> object:
        target = self.__dict__.get("_lazy_exports", {}).get(name)
        if target is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        # Importing submodule `fit` binds it as attribute `fit` of the package; the export of that
        # name (the function) wins, as it did when the package imported it eagerly.
        exports = self.__dict__.get("_lazy_exports", {})
        if isinstance(value, types.ModuleType) and name in exports:
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_exports", {})))


def attach(package: str, exports: Mapping[str, str]) -> None:
    """Make ``exports`` (public name -> module, or ``"module:attribute"``) lazy attributes of ``package``.

    Call it from the package's ``__init__`` as ``attach(__name__, {...})``.
    """
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module._lazy_exports = dict(exports)
