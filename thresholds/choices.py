"""The names the solvers accept, importable without numpy or torch (the CLI lists them in its --help)."""

from __future__ import annotations

#: Solver names accepted by :func:`calitag.thresholds.fit`.
METHODS: tuple[str, ...] = ("sgl", "default", "heuristic", "numeric", "exact")

#: Objective names accepted by the solvers (hyphens are accepted too: "micro-f1").
OBJECTIVES: tuple[str, ...] = ("micro_f1", "macro_f1", "micro_fbeta", "macro_fbeta")

#: SGL-Thresh engines: sorted-score kernel tables (fast) or plain autograd over the matrix.
SGL_ENGINES: tuple[str, ...] = ("fast", "autograd")
