"""Lazy package exports: a name is imported from its module on first access (PEP 562).

Keeps ``import calitag`` (and ``calitag --help``) free of numpy, scipy and torch until a name that
needs them is used. (``lazy_loader.attach`` does the same for a package's own submodules; calitag's
exports also come from sub-subpackages and under other names, e.g. ``fit_thresholds``.)
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

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_exports", {})))


def attach(package: str, exports: Mapping[str, str]) -> None:
    """Make ``exports`` (public name -> module, or ``"module:attribute"``) lazy attributes of ``package``.

    Call it from the package's ``__init__`` as ``attach(__name__, {...})``.
    """
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module._lazy_exports = dict(exports)
