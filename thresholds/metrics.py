"""Exact multi-label metrics (numpy) and the input checks every solver and report runs first."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from calitag.errors import ScoresError

if TYPE_CHECKING:
    from calitag.thresholds.io import Thresholds


class NoPositivesWarning(UserWarning):
    """A class has no positive example in the labels a solver or report was given."""


def check_scores(scores: Any, *, source: str = "<array>", name: str = "scores") -> np.ndarray:
    """Validate a clip-score matrix: 2-D, non-empty, finite, inside [0, 1].

    Parameters
    ----------
    scores : array_like
        Shape ``(n_clips, n_classes)``.
    source : str
        Where the scores came from, named in error messages.
    name : str
        What to call the matrix in error messages.

    Returns
    -------
    numpy.ndarray
        The scores as a floating-point array (float32 and float64 are kept, others become float64).

    Raises
    ------
    ScoresError
        Wrong shape, empty, NaN/inf, or values outside [0, 1].
    """
    try:
        array = np.asarray(scores)
    except (TypeError, ValueError) as err:
        raise ScoresError(f"{name} in {source} cannot be read as a numeric matrix: {err}") from err
    if array.dtype.kind not in "fiub":
        raise ScoresError(f"{name} in {source} must be numeric, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if array.ndim != 2:
        raise ScoresError(
            f"{name} in {source} must be a matrix (n_clips, n_classes), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ScoresError(f"{name} in {source} is empty (shape {array.shape}): expected at least one clip and class")
    # min and max see every NaN/inf (NaN propagates), so the finite mask is built only on failure.
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        finite = np.isfinite(array)
        row, col = np.argwhere(~finite)[0]
        raise ScoresError(
            f"{name} in {source} contain {int((~finite).sum())} NaN/inf values "
            f"(first at clip {row}, class {col}): expected finite scores; fix the model output"
        )
    if low < 0.0 or high > 1.0:
        raise ScoresError(
            f"{name} in {source} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]: "
            "if these are logits, pass --logits (or apply a sigmoid first)"
        )
    return array


def check_targets(labels: Any, shape: tuple[int, int], *, source: str = "<array>", name: str = "labels") -> np.ndarray:
    """Validate a 0/1 target matrix against the score matrix shape and return it as bool.

    Raises
    ------
    ScoresError
        Shape differs from ``shape``, or a value is not 0/1.
    """
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise ScoresError(f"{name} in {source} cannot be read as a matrix: {err}") from err
    if array.shape != tuple(shape):
        raise ScoresError(
            f"{name} in {source} have shape {array.shape}, expected {tuple(shape)} (one 0/1 label per score)"
        )
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "fiu":
        raise ScoresError(f"{name} in {source} must be 0/1 numbers, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.size and array.max() <= 1:
        return array.astype(bool)  # unsigned 0/1: one pass to check, one to convert
    binary = (array == 0) | (array == 1)
    if not binary.all():
        bad = array[~binary].flat[0]
        raise ScoresError(
            f"{name} in {source} must be binary (0/1), found {int((~binary).sum())} other values such as {bad!r}"
        )
    return array.astype(bool)


def check_scores_labels(
    scores: Any, labels: Any, *, source: str = "<array>", warn_no_positives: bool = True,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a score matrix and its labels together; warn about classes with no positives.

    Returns
    -------
    tuple of numpy.ndarray
        ``(scores (N, C) float, labels (N, C) bool)``.
    """
    checked = check_scores(scores, source=source)
    truth = check_targets(labels, checked.shape, source=source)
    if warn_no_positives:
        empty = np.flatnonzero(~truth.any(axis=0))
        if empty.size:
            names = [class_names[i] if class_names is not None else str(i) for i in empty[:5]]
            more = f" and {empty.size - 5} more" if empty.size > 5 else ""
            warnings.warn(
                f"{empty.size} class(es) have no positive example in {source}: {', '.join(names)}{more}; "
                "their thresholds are kept finite but cannot be tuned for recall",
                NoPositivesWarning,
                stacklevel=3,
            )
    return checked, truth


def outcome_counts(scores: np.ndarray, labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class ``(tp, pp, n_pos)`` integer counts of the decisions ``scores > values``."""
    predicted = scores > np.asarray(values)[None, :]
    tp = np.count_nonzero(predicted & labels, axis=0)
    return tp, np.count_nonzero(predicted, axis=0), np.count_nonzero(labels, axis=0)


def fbeta_np(tp: np.ndarray, pp: np.ndarray, n_pos: np.ndarray, *, beta: float = 1.0, average: str | None = "micro"):
    """F-beta from counts in numpy (``average=None`` gives per-class scores); 0 where undefined."""
    b2 = float(beta) ** 2
    tp, pp, n_pos = (np.asarray(x, dtype=np.float64) for x in (tp, pp, n_pos))
    if average == "micro":
        tp, pp, n_pos = tp.sum(-1), pp.sum(-1), n_pos.sum(-1)
    denominator = b2 * n_pos + pp
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(denominator > 0, (1 + b2) * tp / np.where(denominator > 0, denominator, 1), 0.0)
    if average == "macro":
        return score.mean(-1)
    return score


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


@dataclass(frozen=True)
class ClassificationReport:
    """Exact precision/recall/F1 of thresholded scores against labels.

    Per-class arrays have shape ``(n_classes,)``. Undefined ratios (no prediction, no positive)
    count as 0, as scikit-learn does with ``zero_division=0``; macro values average all classes.
    """

    class_names: tuple[str, ...]
    thresholds: np.ndarray
    support: np.ndarray
    predicted: np.ndarray
    true_positives: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    n_clips: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: micro/macro values and one record per class."""
        return {
            "n_clips": self.n_clips,
            "micro": {"precision": self.micro_precision, "recall": self.micro_recall, "f1": self.micro_f1},
            "macro": {"precision": self.macro_precision, "recall": self.macro_recall, "f1": self.macro_f1},
            "per_class": [
                {
                    "class": name,
                    "threshold": float(self.thresholds[i]),
                    "support": int(self.support[i]),
                    "predicted": int(self.predicted[i]),
                    "precision": float(self.precision[i]),
                    "recall": float(self.recall[i]),
                    "f1": float(self.f1[i]),
                }
                for i, name in enumerate(self.class_names)
            ],
        }


def evaluate(
    scores: Any,
    labels: Any,
    thresholds: Thresholds | Sequence[float] | np.ndarray | float,
    *,
    class_names: Sequence[str] | None = None,
    source: str = "<array>",
) -> ClassificationReport:
    """Exact micro/macro/per-class precision, recall and F1 of ``scores > thresholds``.

    Parameters
    ----------
    scores : array_like
        Shape ``(n_clips, n_classes)``, in [0, 1].
    labels : array_like
        Same shape, 0/1.
    thresholds : Thresholds, array_like or float
        A fitted :class:`~calitag.thresholds.Thresholds`, one value per class, or one global value.
    class_names : sequence of str, optional
        Names for the report; taken from ``thresholds`` when it is a Thresholds object.
    source : str
        Named in error messages.

    Returns
    -------
    ClassificationReport

    Raises
    ------
    ScoresError
        Invalid scores/labels, or a threshold count that does not match the classes.
    """
    checked, truth = check_scores_labels(scores, labels, source=source, warn_no_positives=False)
    n_classes = checked.shape[1]
    names = getattr(thresholds, "class_names", None) or class_names
    raw = getattr(thresholds, "values", thresholds)
    values = np.asarray(raw, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n_classes, float(values[0]))
    if values.size != n_classes:
        raise ScoresError(f"{values.size} thresholds given for {n_classes} classes in {source}: expected one per class")
    if not np.isfinite(values).all():
        raise ScoresError(f"thresholds must be finite, got {values[~np.isfinite(values)][:3]}")
    if names is None:
        names = tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise ScoresError(f"{len(names)} class names given for {n_classes} score columns in {source}")
    return report_from_counts(*outcome_counts(checked, truth, values), thresholds=values, class_names=names, n_clips=checked.shape[0])


def report_from_counts(
    tp: np.ndarray, pp: np.ndarray, n_pos: np.ndarray, *, thresholds: np.ndarray, class_names: Sequence[str], n_clips: int
) -> ClassificationReport:
    """A :class:`ClassificationReport` from per-class counts of true, predicted and actual positives."""
    tp, pp, n_pos = (np.asarray(x).astype(np.int64) for x in (tp, pp, n_pos))
    precision, recall = _ratio(tp, pp), _ratio(tp, n_pos)
    f1 = fbeta_np(tp, pp, n_pos, average=None)
    return ClassificationReport(
        class_names=tuple(class_names),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        support=n_pos,
        predicted=pp,
        true_positives=tp,
        precision=precision,
        recall=recall,
        f1=f1,
        micro_precision=float(_ratio(tp.sum(), pp.sum())),
        micro_recall=float(_ratio(tp.sum(), n_pos.sum())),
        micro_f1=float(fbeta_np(tp, pp, n_pos, average="micro")),
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        n_clips=int(n_clips),
    )
