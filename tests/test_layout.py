"""The layout follows the data path: imports run cli -> pipeline -> models / thresholds, never back."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

REPO = Path(__file__).resolve().parent.parent

# Folder -> calitag modules its files must never import.
FORBIDDEN = {
    "models": ("calitag.pipeline", "calitag.cli"),
    "thresholds": ("calitag.pipeline", "calitag.cli"),
    "pipeline": ("calitag.cli",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in a file, wherever it sits (functions, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would hide the direction: the project uses absolute ones
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def violations(folder: str) -> list[str]:
    """The imports of ``folder``'s files that go against the direction (or are relative)."""
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.startswith(".") or module.startswith(FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_follow_the_data_path(folder):
    """No module under models/ or thresholds/ imports calitag.pipeline or calitag.cli; pipeline/ never imports the CLI."""
    assert violations(folder) == []


def test_the_walker_sees_imports_in_functions(tmp_path):
    """The check finds an import hidden in a function body, so it cannot pass by not looking."""
    (tmp_path / "m.py").write_text("def f():\n    from calitag.pipeline.types import Scores\n")
    assert (2, "calitag.pipeline.types.Scores") in imported_modules(tmp_path / "m.py")


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The groups of modules that import each other in a ring (strongly connected, two or more modules)."""
    modules = sorted(graph.modules)
    index = {name: i for i, name in enumerate(modules)}
    edges = [(index[a], index[b]) for a in modules for b in graph.find_modules_directly_imported_by(a) if b in index]
    rows, cols = zip(*edges) if edges else ((), ())
    adjacency = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(modules), len(modules)))
    _, component = connected_components(adjacency, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for name, label in zip(modules, component):
        groups.setdefault(int(label), []).append(name)
    return sorted(group for group in groups.values() if len(group) > 1)


def test_no_import_cycles():
    """No two calitag modules import each other, directly or in a ring, imports inside functions counted
    (only `if TYPE_CHECKING:` blocks are left out)."""
    graph = grimp.build_graph("calitag", exclude_type_checking_imports=True, cache_dir=None)
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_through_a_function(tmp_path, monkeypatch):
    """A ring closed by an import inside a function body is reported, so the cycle test cannot pass by not looking."""
    package = tmp_path / "ring"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from ring import b\n")
    (package / "b.py").write_text("def late():\n    from ring import a\n    return a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ring import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("ring", exclude_type_checking_imports=True, cache_dir=None)
    assert import_cycles(graph) == [["ring.a", "ring.b"]]
