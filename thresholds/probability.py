"""Per-class calibration maps: scores -> probabilities that mean what they say, stored as plain JSON numbers.

Maps (one per class, monotone non-decreasing in the score):

identity  the score itself.
platt     ``sigmoid(a * logit(score) + b)``: a logistic regression on the score's logit (Platt 1999),
          fitted by scikit-learn's ``LogisticRegression``; stored as ``a`` and ``b``.
isotonic  scikit-learn's ``IsotonicRegression`` (clipped outside the fitted range); stored as its
          breakpoints ``x`` and ``y``, applied by linear interpolation between them (what
          scikit-learn's ``predict`` does).

``method="auto"`` chooses per class the map with the lowest cross-validated log-loss on the fitting
clips among identity, platt and (from :data:`MIN_ISOTONIC_POSITIVES` positives and negatives on)
isotonic: the simpler maps when positives are few, and the raw score where no map improves it.
A class with fewer than two positives or negatives keeps the identity (nothing to fit).

Quality measures of the reports: :func:`expected_calibration_error` (class-wise, equal-width bins),
:func:`brier_score` and :func:`reliability` (the points of a reliability diagram).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calitag.errors import CalibrationError

#: What ``probabilities=`` may ask for.
PROBABILITY_METHODS = ("auto", "platt", "isotonic", "none")
#: The maps a class may have.
MAP_KINDS = ("identity", "platt", "isotonic")
#: Scores are clipped into [EPS, 1 - EPS] before their logit (a score of exactly 0 or 1 has none).
EPS = 1e-7
#: ``auto`` tries isotonic only for classes with at least this many positives and negatives.
MIN_ISOTONIC_POSITIVES = 30
#: Folds of ``auto``'s cross-validated log-loss (fewer when a class has fewer positives).
AUTO_FOLDS = 5
#: Probabilities are clipped into [LOG_LOSS_EPS, 1 - LOG_LOSS_EPS] in ``auto``'s log-loss, so that
#: one isotonic 0 or 1 does not count as an infinite loss.
LOG_LOSS_EPS = 1e-3
#: Equal-width bins of the expected calibration error.
ECE_BINS = 15


def logit(scores: np.ndarray, *, eps: float = EPS) -> np.ndarray:
    """log(p / (1 - p)) of scores clipped to [eps, 1 - eps], in float64 (the input of the Platt maps)."""
    clipped = np.clip(np.asarray(scores, dtype=np.float64), eps, 1.0 - eps)
    return np.log(clipped) - np.log1p(-clipped)


@dataclass(frozen=True)
class ProbabilityMap:
    """One class's map: ``kind`` and its parameters (``a``, ``b`` for platt; ``x``, ``y`` for isotonic)."""

    kind: str = "identity"
    a: float = 1.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise CalibrationError(f"probability map kind must be one of {', '.join(MAP_KINDS)}, got {self.kind!r}")
        x = tuple(float(v) for v in self.x)
        y = tuple(float(v) for v in self.y)
        if self.kind == "isotonic":
            xs, ys = np.asarray(x), np.asarray(y)
            if len(x) < 1 or len(x) != len(y) or not (np.isfinite(xs).all() and np.isfinite(ys).all()):
                raise CalibrationError("an isotonic map needs as many finite x as y breakpoints (at least one)")
            if (np.diff(xs) < 0).any() or (np.diff(ys) < 0).any() or ys.min() < 0 or ys.max() > 1:
                raise CalibrationError("an isotonic map's x and y must be non-decreasing, y in [0, 1]")
        if self.kind == "platt" and not (np.isfinite(self.a) and np.isfinite(self.b) and self.a >= 0):
            raise CalibrationError(f"a platt map needs finite a >= 0 and b, got a={self.a!r}, b={self.b!r}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "a", float(self.a))
        object.__setattr__(self, "b", float(self.b))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The probabilities of ``scores`` (any shape), float64."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.kind == "platt":
            from scipy.special import expit

            return expit(self.a * logit(scores) + self.b)
        if self.kind == "isotonic":
            return np.interp(scores, self.x, self.y)
        return scores.copy()

    def to_dict(self) -> dict[str, Any]:
        """The map's JSON object."""
        if self.kind == "platt":
            return {"kind": "platt", "a": self.a, "b": self.b}
        if self.kind == "isotonic":
            return {"kind": "isotonic", "x": list(self.x), "y": list(self.y)}
        return {"kind": "identity"}

    @classmethod
    def from_dict(cls, document: Any) -> ProbabilityMap:
        """A map from its JSON object (CalibrationError on a bad one)."""
        if not isinstance(document, dict) or "kind" not in document:
            raise CalibrationError(f"a probability map must be a JSON object with a kind, got {document!r:.60}")
        fields = {key: document[key] for key in ("a", "b", "x", "y") if key in document}
        try:
            return cls(kind=document["kind"], **fields)
        except (TypeError, ValueError) as err:
            raise CalibrationError(f"bad probability map {document!r:.60}: {err}") from err


@dataclass(frozen=True)
class ProbabilityMaps:
    """One :class:`ProbabilityMap` per class, in class order, and the method that chose them."""

    maps: tuple[ProbabilityMap, ...]
    method: str = "auto"

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """(n, C) probabilities of (n, C) scores (or (C,) of (C,)), float64."""
        scores = np.asarray(scores, dtype=np.float64)
        out = np.empty_like(scores)
        for c, mapping in enumerate(self.maps):
            out[..., c] = mapping(scores[..., c])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``probabilities`` section of a thresholds file."""
        return {"method": self.method, "maps": [m.to_dict() for m in self.maps]}

    @classmethod
    def from_dict(cls, document: Any, *, n_classes: int) -> ProbabilityMaps:
        """The section read back; CalibrationError when it is not one map per class."""
        maps = document.get("maps") if isinstance(document, dict) else None
        if not isinstance(maps, list) or len(maps) != n_classes:
            raise CalibrationError(f"probabilities.maps must be a list with one map per class ({n_classes})")
        method = document.get("method", "auto")
        if method not in PROBABILITY_METHODS:
            raise CalibrationError(f"probabilities.method must be one of {', '.join(PROBABILITY_METHODS)}")
        return cls(tuple(ProbabilityMap.from_dict(m) for m in maps), method=method)


def _fit_platt(scores: np.ndarray, truth: np.ndarray) -> ProbabilityMap:
    from sklearn.linear_model import LogisticRegression

    # Weak regularisation: the two parameters are nearly unpenalised, as in Platt's fit.
    model = LogisticRegression(C=1e4, max_iter=1000).fit(logit(scores)[:, None], truth.astype(int))
    return ProbabilityMap("platt", a=max(float(model.coef_[0, 0]), 0.0), b=float(model.intercept_[0]))


def _fit_isotonic(scores: np.ndarray, truth: np.ndarray) -> ProbabilityMap:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, truth.astype(np.float64))
    return ProbabilityMap("isotonic", x=tuple(model.X_thresholds_), y=tuple(model.y_thresholds_))


_FITTERS = {"platt": _fit_platt, "isotonic": _fit_isotonic,
            "identity": lambda scores, truth: ProbabilityMap("identity")}


def _log_loss(probs: np.ndarray, truth: np.ndarray) -> float:
    p = np.clip(probs, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    return float(-np.mean(np.where(truth, np.log(p), np.log1p(-p))))


def _choose(scores: np.ndarray, truth: np.ndarray, *, seed: int) -> str:
    """``auto``'s map for one class: the lowest cross-validated log-loss among those its positives allow."""
    from sklearn.model_selection import StratifiedKFold

    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    kinds = ["identity", "platt"]
    if min(n_pos, n_neg) >= MIN_ISOTONIC_POSITIVES:
        kinds.append("isotonic")
    folds = StratifiedKFold(n_splits=min(AUTO_FOLDS, n_pos, n_neg), shuffle=True, random_state=seed)
    losses = dict.fromkeys(kinds, 0.0)
    for inside, outside in folds.split(scores[:, None], truth):
        for kind in kinds:
            mapping = _FITTERS[kind](scores[inside], truth[inside])
            losses[kind] += _log_loss(mapping(scores[outside]), truth[outside]) * len(outside)
    # Ties go to the simpler map (the order of ``kinds``).
    return min(kinds, key=lambda kind: losses[kind])


def fit_probability_maps(scores: np.ndarray, labels: np.ndarray, *, method: str = "auto",
                         seed: int = 0) -> ProbabilityMaps | None:
    """Per-class calibration maps fitted on checked scores and labels.

    Parameters
    ----------
    scores : numpy.ndarray
        (n_clips, n_classes) scores in [0, 1].
    labels : numpy.ndarray
        Same shape, 0/1.
    method : {"auto", "platt", "isotonic", "none"}
        The map of every class, or ``auto`` (chosen per class, see the module docstring); ``none``
        fits nothing and returns None.
    seed : int
        Seeds ``auto``'s cross-validation folds.

    Returns
    -------
    ProbabilityMaps or None

    Raises
    ------
    CalibrationError
        Unknown method.
    """
    if method not in PROBABILITY_METHODS:
        raise CalibrationError(f"probabilities must be one of {', '.join(PROBABILITY_METHODS)}, got {method!r}")
    if method == "none":
        return None
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(labels) > 0
    maps = []
    for c in range(scores.shape[1]):
        column, positive = scores[:, c], truth[:, c]
        if min(int(positive.sum()), int((~positive).sum())) < 2:
            maps.append(ProbabilityMap("identity"))
            continue
        kind = _choose(column, positive, seed=seed) if method == "auto" else method
        maps.append(_FITTERS[kind](column, positive))
    return ProbabilityMaps(tuple(maps), method=method)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = ECE_BINS) -> np.ndarray:
    """Class-wise expected calibration error over ``n_bins`` equal-width bins of [0, 1].

    Per class: the clip-weighted mean of ``|mean probability - positive rate|`` over the bins.

    Returns
    -------
    numpy.ndarray
        (n_classes,) float64; average it for the class-wise ECE of a set.
    """
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    truth = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    bins = np.clip((probs * n_bins).astype(np.int64), 0, n_bins - 1)
    out = np.empty(probs.shape[1])
    for c in range(probs.shape[1]):
        count = np.bincount(bins[:, c], minlength=n_bins)
        gap = np.bincount(bins[:, c], weights=probs[:, c] - truth[:, c], minlength=n_bins)
        out[c] = float(np.abs(gap).sum() / max(len(probs), 1))
    return out


def brier_score(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n_classes,) mean squared difference between probabilities and 0/1 labels."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    return np.mean((probs - np.atleast_2d(np.asarray(labels, dtype=np.float64))) ** 2, axis=0)


def reliability(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = ECE_BINS
                ) -> list[tuple[float, float, int]]:
    """One class's reliability diagram: (mean probability, positive rate, clips) per non-empty bin."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    truth = np.asarray(labels, dtype=np.float64).reshape(-1)
    bins = np.clip((probs * n_bins).astype(np.int64), 0, n_bins - 1)
    points = []
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            points.append((float(probs[inside].mean()), float(truth[inside].mean()), int(inside.sum())))
    return points


def describe(maps: ProbabilityMaps, class_names: Sequence[str]) -> dict[str, str]:
    """Class -> the kind of its map (what ``auto`` chose)."""
    return {name: m.kind for name, m in zip(class_names, maps.maps)}
