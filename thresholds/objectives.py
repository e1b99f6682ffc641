"""Differentiable F-measures over binarised outputs, and the objective names solvers accept.

Every objective is a function of three per-class counts: true positives ``tp``, predicted
positives ``pp`` and actual positives ``n_pos``. With ``b2 = beta**2``:

    F_beta = (1 + b2) * tp / (b2 * n_pos + pp)          (0 where the denominator is 0)

micro averages pool the counts over classes before the ratio; macro averages the per-class
ratios. Writing the objectives on counts lets the autograd path (counts summed over binarised
outputs, torch) and the fast solver (counts read off sorted scores, numpy, with the closed-form
gradient of :func:`fbeta_count_gradient`) share one definition. torch is imported only by the
functions that take tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from calitag.errors import CalibrationError

if TYPE_CHECKING:
    import torch

Average = Literal["micro", "macro"]

from calitag.thresholds.choices import OBJECTIVES  # noqa: E402  (the names live where the CLI reads them cheaply)


@dataclass(frozen=True)
class Objective:
    """A resolved objective: its canonical name, averaging and beta."""

    name: str
    average: Average
    beta: float = 1.0

    @property
    def label(self) -> str:
        """Name with beta spelled out where it matters, e.g. ``micro_f0.5``."""
        if self.name.endswith("fbeta"):
            return f"{self.average}_f{self.beta:g}"
        return self.name


#: Largest recall weight: F-beta is recall to 12 digits there, and beta**2 stays far from overflowing.
MAX_BETA = 1e6


def resolve_objective(name: str | Objective, *, beta: float | None = None) -> Objective:
    """Turn an objective name (``"micro_f1"``, ``"macro-fbeta"`` ...) into an :class:`Objective`.

    Parameters
    ----------
    name : str or Objective
        One of :data:`OBJECTIVES`; hyphens and upper case are accepted.
    beta : float, optional
        Weight of recall for the ``*_fbeta`` objectives (default 1). Must be left unset, or 1,
        for the ``*_f1`` ones.

    Returns
    -------
    Objective

    Raises
    ------
    CalibrationError
        Unknown name, or a beta that is not positive or does not apply.
    """
    if isinstance(name, Objective):
        return name
    key = str(name).strip().lower().replace("-", "_")
    if key not in OBJECTIVES:
        raise CalibrationError(f"unknown objective {name!r}: expected one of {', '.join(OBJECTIVES)}")
    average: Average = "micro" if key.startswith("micro") else "macro"
    if key.endswith("_f1"):
        if beta is not None and float(beta) != 1.0:
            raise CalibrationError(f"objective {key} has beta 1, got beta={beta}: use {average}_fbeta instead")
        return Objective(key, average, 1.0)
    value = 1.0 if beta is None else float(beta)
    if not 0 < value <= MAX_BETA:
        raise CalibrationError(f"beta must be a number > 0 and at most {MAX_BETA:g} (beta**2 weighs recall), got {beta}")
    return Objective(key, average, value)


def fbeta_from_counts(
    tp: torch.Tensor,
    pp: torch.Tensor,
    n_pos: torch.Tensor,
    *,
    beta: float = 1.0,
    average: Average = "micro",
) -> torch.Tensor:
    """F-beta from per-class counts, differentiable in ``tp`` and ``pp``.

    Parameters
    ----------
    tp, pp, n_pos : torch.Tensor
        Shape ``(..., n_classes)``: true positives, predicted positives, actual positives
        (real-valued counts are accepted, so soft or surrogate counts work).
    beta : float
        Recall weight; 1 gives F1.
    average : {"micro", "macro"}
        Pool the counts over classes (micro) or average per-class scores (macro).

    Returns
    -------
    torch.Tensor
        Shape ``(...)``. A class (or, for micro, a whole set) with no positives and no
        predictions scores 0, as scikit-learn does with ``zero_division=0``.
    """
    import torch

    b2 = float(beta) ** 2
    if average == "micro":
        tp, pp, n_pos = tp.sum(-1), pp.sum(-1), n_pos.sum(-1)
    elif average != "macro":
        raise CalibrationError(f"average must be 'micro' or 'macro', got {average!r}")
    denominator = b2 * n_pos + pp
    # clamp keeps the unused branch finite, so no NaN leaks into the gradient.
    score = torch.where(denominator > 0, (1 + b2) * tp / denominator.clamp_min(1e-12), torch.zeros_like(tp))
    return score if average == "micro" else score.mean(-1)


def fbeta_count_gradient(
    tp: np.ndarray, pp: np.ndarray, n_pos: np.ndarray, *, beta: float = 1.0, average: Average = "micro"
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form partial derivatives of :func:`fbeta_from_counts` with respect to ``tp`` and ``pp``.

    With ``D = b2 * n_pos + pp`` (pooled over classes for micro), ``F = (1 + b2) tp / D`` gives
    ``dF/dtp = (1 + b2) / D`` and ``dF/dpp = -(1 + b2) tp / D**2``; macro divides both by the
    number of classes. Where ``D == 0`` both are 0, as in the autograd path.

    Parameters
    ----------
    tp, pp, n_pos : numpy.ndarray
        Shape ``(n_classes,)``, float64 counts.
    beta : float
        Recall weight.
    average : {"micro", "macro"}

    Returns
    -------
    tuple of numpy.ndarray
        ``(dF/dtp, dF/dpp)``, each of shape ``(n_classes,)``.
    """
    b2 = float(beta) ** 2
    if average == "micro":
        denominator = b2 * n_pos.sum() + pp.sum()
        if not denominator > 0:
            zero = np.zeros_like(tp, dtype=np.float64)
            return zero, zero.copy()
        d_tp = np.full(tp.shape, (1 + b2) / denominator)
        d_pp = np.full(tp.shape, -((1 + b2) * tp.sum()) / (denominator * denominator))
        return d_tp, d_pp
    if average != "macro":
        raise CalibrationError(f"average must be 'micro' or 'macro', got {average!r}")
    denominator = b2 * n_pos + pp
    safe = np.where(denominator > 0, denominator, 1.0)
    n_classes = tp.shape[-1]
    d_tp = np.where(denominator > 0, (1 + b2) / safe, 0.0) / n_classes
    d_pp = np.where(denominator > 0, -((1 + b2) * tp) / (safe * safe), 0.0) / n_classes
    return d_tp, d_pp


def counts(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class ``(tp, pp, n_pos)`` of binarised outputs, summed over every axis but the last.

    Parameters
    ----------
    outputs : torch.Tensor
        Shape ``(..., n_classes)``, binary decisions (e.g. from :class:`ThresholdLayer`).
    targets : torch.Tensor
        Same shape, 0/1 labels.
    """
    targets = targets.to(outputs.dtype)
    dims = tuple(range(outputs.dim() - 1))
    if not dims:
        return outputs * targets, outputs, targets
    return (outputs * targets).sum(dims), outputs.sum(dims), targets.sum(dims)


def objective_value(outputs: torch.Tensor, targets: torch.Tensor, objective: str | Objective) -> torch.Tensor:
    """The objective (to maximise) of binarised outputs against targets, as a scalar tensor."""
    spec = resolve_objective(objective)
    tp, pp, n_pos = counts(outputs, targets)
    return fbeta_from_counts(tp, pp, n_pos, beta=spec.beta, average=spec.average)


def micro_f1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Micro-averaged F1 of binarised outputs ``(..., n_classes)``; differentiable."""
    return objective_value(outputs, targets, Objective("micro_f1", "micro"))


def macro_f1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Macro-averaged F1 of binarised outputs ``(..., n_classes)``; differentiable."""
    return objective_value(outputs, targets, Objective("macro_f1", "macro"))


def micro_fbeta(outputs: torch.Tensor, targets: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Micro-averaged F-beta of binarised outputs ``(..., n_classes)``; differentiable."""
    return objective_value(outputs, targets, resolve_objective("micro_fbeta", beta=beta))


def macro_fbeta(outputs: torch.Tensor, targets: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Macro-averaged F-beta of binarised outputs ``(..., n_classes)``; differentiable."""
    return objective_value(outputs, targets, resolve_objective("macro_fbeta", beta=beta))
