"""Optional dependencies: which extra of calitag installs what, and the one error for a missing one.

calitag is installed from its checkout (it is not on PyPI), so the advice is ``pip install -e ".[extra]"``;
for the torch extra the CPU build of torch goes first, from PyTorch's CPU index, so that pip does not resolve a
CUDA build.
"""

from __future__ import annotations

import importlib
from typing import Any

from calitag.errors import MissingDependencyError

#: The torch release calitag is tested with, the CPU build (.ci/run installs it first): installed before the
#: torch extra, pip keeps it instead of resolving a CUDA build of several GB.
TORCH_REQUIREMENT = "torch==2.13.0"
#: The extra of pyproject.toml that installs each optional module the models import.
EXTRA_OF_MODULE = {"torch": "torch", "librosa": "torch", "h5py": "torch"}


#: PyTorch's own index of CPU-only wheels: torch from there pulls no CUDA packages (PyPI's Linux wheel does).
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def install_hint(extra: str) -> str:
    """What to run to install an extra of calitag (which is installed from its checkout, not from PyPI)."""
    if extra == "torch":
        return (f'pip install {TORCH_REQUIREMENT} --index-url {TORCH_CPU_INDEX}, then pip install -e ".[torch]" '
                "in the calitag checkout")
    return f'pip install -e ".[{extra}]" in the calitag checkout'


def require_installed(modules: tuple[str, ...], *, extra: str, what: str) -> None:
    """Raise the one-line error of :func:`missing_dependency` for the first of ``modules`` not installed.

    Checked without importing them (``importlib.util.find_spec``), so that a command can refuse before it works.

    Raises
    ------
    MissingDependencyError
        One of the modules is not installed.
    """
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise missing_dependency(module, extra=extra, what=what)


def missing_dependency(module: str, *, extra: str, what: str) -> MissingDependencyError:
    """The error for ``what`` needing ``module``, which is not installed: it names the extra and how to install it."""
    return MissingDependencyError(f"{what} needs {module}, which is not installed (the {extra} extra): {install_hint(extra)}")


def import_optional(module: str, *, extra: str, what: str) -> Any:
    """``import module``, or a one-line error naming the extra that installs it.

    Parameters
    ----------
    module : str
        The module to import.
    extra : str
        The extra of calitag that installs it.
    what : str
        What needs it, for the message.

    Raises
    ------
    MissingDependencyError
        The module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_dependency(module, extra=extra, what=what) from err


def import_torch(what: str) -> Any:
    """``import torch``, or a :class:`MissingDependencyError` naming the torch extra (see :func:`import_optional`).

    Raises
    ------
    MissingDependencyError
        torch is not installed.
    """
    return import_optional("torch", extra="torch", what=what)
