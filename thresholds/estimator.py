"""A scikit-learn estimator over score matrices: per-class thresholds fitted by :func:`calitag.fit_thresholds`.

``ThresholdTuner`` is a multi-label classifier whose input is a model's clip scores ``(n_clips, n_classes)``
in [0, 1] and whose targets are the 0/1 labels of the same shape. ``fit`` calls the one solver entry point
(:func:`calitag.thresholds.solvers.fit`) with the estimator's parameters, ``predict`` is the fitted
:class:`~calitag.thresholds.io.Thresholds`' decision (``score > threshold``), and ``score`` is the objective
it was fitted for, so ``GridSearchCV`` and ``cross_val_score`` compare settings on what the solver optimises.
scikit-learn's ``TunedThresholdClassifierCV`` tunes one binary threshold; this tunes one per class.

    from sklearn.model_selection import GridSearchCV
    search = GridSearchCV(ThresholdTuner(), {"method": ["sgl", "exact"]}, cv=3).fit(val_scores, val_labels)
    tags = search.predict(eval_scores)            # (n_clips, n_classes) 0/1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import fbeta_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

#: fit_options that make predict_proba return calibrated probabilities, and their "off" value.
_PROBABILITY_OPTION, _NO_PROBABILITIES = "probabilities", (None, "none", False)


class ThresholdTuner(ClassifierMixin, BaseEstimator):
    """Per-class decision thresholds for multi-label scores, as a scikit-learn classifier.

    Parameters
    ----------
    method : {"sgl", "default", "heuristic", "numeric", "exact"}
        The solver of :func:`calitag.fit_thresholds`.
    objective : {"micro_f1", "macro_f1", "micro_fbeta", "macro_fbeta"}
        What the solver maximises, and what :meth:`score` reports.
    beta : float or None
        Recall weight of the F-beta objectives.
    guard_folds : int or None
        The small-class guard of :func:`calitag.fit_thresholds` (None: off).
    default_threshold : float
        The threshold the guard falls back to.
    class_names : sequence of str or None
        Names of the score columns (default "0", "1", ...).
    fit_options : mapping or None
        Further keyword options of :func:`calitag.fit_thresholds`, passed through as given: solver options
        (``seed``, ``epochs``, ``lr``, ...) and any option that function takes (targets, probability maps).
        With ``probabilities`` set (other than "none"), :meth:`predict_proba` returns the fitted thresholds'
        calibrated probabilities.

    Attributes
    ----------
    thresholds_ : Thresholds
        The fitted thresholds (``thresholds_.values``, ``thresholds_.save(path)``).
    n_features_in_ : int
        The number of classes (score columns).
    classes_ : numpy.ndarray
        ``[0, 1]``: each column is a binary decision.
    """

    def __init__(self, *, method: str = "sgl", objective: str = "micro_f1", beta: float | None = None,
                 guard_folds: int | None = None, default_threshold: float = 0.5,
                 class_names: Sequence[str] | None = None, fit_options: Mapping[str, Any] | None = None) -> None:
        self.method = method
        self.objective = objective
        self.beta = beta
        self.guard_folds = guard_folds
        self.default_threshold = default_threshold
        self.class_names = class_names
        self.fit_options = fit_options

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        tags.input_tags.positive_only = True
        return tags

    def fit(self, X: Any, y: Any) -> ThresholdTuner:
        """Fit one threshold per column of ``X`` (scores in [0, 1]) on the 0/1 labels ``y`` of the same shape.

        Raises
        ------
        ScoresError
            Scores outside [0, 1] or NaN, labels that are not 0/1 or of another shape.
        CalibrationError
            An unknown method, objective or option.
        """
        from calitag.thresholds.solvers import fit

        X, y = validate_data(self, X, y, multi_output=True, dtype=np.float64)
        check_classification_targets(y)  # a continuous target is scikit-learn's ValueError, not a bad score
        y = y.reshape(len(y), -1)
        self.thresholds_ = fit(X, y, method=self.method, objective=self.objective, beta=self.beta,
                               guard_folds=self.guard_folds, default_threshold=self.default_threshold,
                               class_names=self.class_names, **dict(self.fit_options or {}))
        self.classes_ = np.array([0, 1])
        return self

    def _scores(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "thresholds_")
        return validate_data(self, X, reset=False, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The 0/1 decisions ``(n_clips, n_classes)``: a score above its class's threshold."""
        scores = self._scores(X)
        return self.thresholds_.apply(scores).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Per-class probabilities ``(n_clips, n_classes)``: calibrated when fitted with ``probabilities`` in
        ``fit_options`` (``Thresholds.probabilities``), else the scores as given."""
        scores = self._scores(X)
        if (self.fit_options or {}).get(_PROBABILITY_OPTION) in _NO_PROBABILITIES:
            return scores
        return np.asarray(self.thresholds_.probabilities(scores))

    def decision_function(self, X: Any) -> np.ndarray:
        """Margins ``score - threshold`` per class: positive where :meth:`predict` says 1."""
        scores = self._scores(X)
        return scores - np.asarray(self.thresholds_.values)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The fitted objective (micro or macro F1 / F-beta) of :meth:`predict` against ``y``."""
        average, _, kind = self.objective.partition("_")
        beta = 1.0 if kind == "f1" else float(self.beta if self.beta is not None else 1.0)
        truth = np.asarray(y).reshape(len(y), -1)
        return float(fbeta_score(truth, self.predict(X), beta=beta, average=average, sample_weight=sample_weight,
                                 zero_division=0.0))
