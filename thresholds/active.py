"""Which clips to label next: the unlabeled clips whose decisions the labeled clips leave most in doubt.

A committee of thresholds is fitted on bootstrap resamples of the labeled clips (SGL, the
calibration's own solver). For each unlabeled clip and class, the share ``p`` of the committee that
decides "positive" measures how open that decision still is; a clip's doubt is the sum over classes
of ``p (1 - p)`` (query by committee, Seung et al. 1992, with a bootstrap committee as in
Abe & Mamitsuka 1998). The clips with the most doubt are suggested.

Why a committee and not "closest to the current threshold": with few labels the current threshold
is itself noisy, and clips packed against it form a sample whose F-measure counts are biased
(the refit then drifts). The committee's spread is wide where the labels say little, so picks
spread out over the score range while labels are few and narrow onto the thresholds as they
firm up; a class whose threshold the labels already pin down draws no picks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from calitag.errors import CalibrationError, LabelsError
from calitag.thresholds.metrics import NoPositivesWarning, check_scores, check_targets
from calitag.thresholds.objectives import resolve_objective

#: Bootstrap fits in the committee (each an SGL fit on the labeled clips: milliseconds).
COMMITTEE_SIZE = 12
#: Fewer labeled clips than this: no committee can be fitted, the picks are random.
MIN_LABELED = 2

__all__ = ["COMMITTEE_SIZE", "Suggestions", "committee_thresholds", "rank_unlabeled", "suggest_labels"]


@dataclass(frozen=True)
class Suggestions:
    """The clips to label next and why.

    indices: (n,) rows of the score matrix, most doubtful first. doubt: (n,) their committee doubt
    (sum over classes of p (1 - p), 0 when picked at random). classes: (n,) the column each pick
    is most in doubt about. thresholds: (n_classes,) the committee's median thresholds, NaN when
    the picks are random.
    """

    indices: np.ndarray
    doubt: np.ndarray
    classes: np.ndarray
    thresholds: np.ndarray


def _check_inputs(scores: Any, labels: Any, labeled: Any, n: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (N, C), 0/1 targets of the labeled rows (other rows zeroed), the labeled mask; precise errors."""
    checked = check_scores(scores, name="scores")
    mask = np.asarray(labeled)
    if mask.dtype != bool:
        raise LabelsError(f"labeled must be a boolean mask, got dtype {mask.dtype}; "
                          "pass e.g. np.isin(np.arange(n_clips), labeled_rows)")
    if mask.shape != (checked.shape[0],):
        raise LabelsError(f"labeled must have one entry per clip ({checked.shape[0]}), got shape {mask.shape}")
    label_array = np.asarray(labels)
    if label_array.shape != checked.shape:
        raise LabelsError(f"labels must have the shape of scores {checked.shape}, got {label_array.shape}")
    targets = np.zeros(checked.shape, dtype=np.float32)
    if mask.any():
        targets[mask] = check_targets(label_array[mask], (int(mask.sum()), checked.shape[1]), name="labels")
    n_unlabeled = int((~mask).sum())
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_unlabeled:
        raise LabelsError(f"n must be an integer from 1 to the number of unlabeled clips ({n_unlabeled}), got {n!r}")
    return checked, targets, mask


def committee_thresholds(scores: np.ndarray, targets: np.ndarray, *, objective: str, seed: int,
                         size: int = COMMITTEE_SIZE) -> np.ndarray:
    """(size, n_classes) thresholds fitted with SGL on bootstrap resamples of the clips given."""
    from calitag.thresholds.solvers import fit

    rng = np.random.default_rng(seed)
    committee = np.empty((size, scores.shape[1]))
    with warnings.catch_warnings():
        # Resamples of a few clips often lack a class: its threshold stays finite, which is all we need.
        warnings.simplefilter("ignore", NoPositivesWarning)
        for member in range(size):
            rows = rng.integers(0, len(scores), len(scores))
            committee[member] = fit(scores[rows], targets[rows], method="sgl", objective=objective).values
    return committee


def rank_unlabeled(scores: Any, labels: Any, labeled: Any, n: int, *, objective: str = "micro_f1",
                   seed: int = 0) -> Suggestions:
    """The ``n`` unlabeled clips to label next, with the class and committee threshold behind each pick.

    Parameters and errors as :func:`suggest_labels`; with fewer than 2 labeled clips the picks are
    random (no committee can be fitted) and their doubt is 0.
    """
    checked, targets, mask = _check_inputs(scores, labels, labeled, n)
    resolve_objective(objective)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise CalibrationError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    unlabeled = np.flatnonzero(~mask)
    if mask.sum() < MIN_LABELED:
        picks = rng.choice(unlabeled, size=n, replace=False)
        return Suggestions(picks, np.zeros(n), np.zeros(n, dtype=np.int64), np.full(checked.shape[1], np.nan))
    committee = committee_thresholds(checked[mask], targets[mask], objective=objective, seed=int(rng.integers(2**31)))
    votes = (checked[unlabeled][None, :, :] > committee[:, None, :]).mean(axis=0)
    per_class = votes * (1.0 - votes)
    doubt = per_class.sum(axis=1)
    # Most doubt first; ties (common with few labels) in a seeded random order, not by row number.
    order = np.lexsort((rng.random(len(unlabeled)), -doubt))[:n]
    middle = np.median(committee, axis=0)
    # The class a pick serves: most doubt; among classes without doubt, the score nearest its threshold
    # (the distance is below 1e-3, smaller than any non-zero doubt of a 12-member committee).
    nearness = per_class[order] - 1e-3 * np.abs(checked[unlabeled[order]] - middle)
    return Suggestions(indices=unlabeled[order], doubt=doubt[order], classes=nearness.argmax(axis=1),
                       thresholds=middle)


def suggest_labels(scores: Any, labels: Any, labeled: Any, n: int, *, objective: str = "micro_f1",
                   seed: int = 0) -> np.ndarray:
    """Row indices of the ``n`` unlabeled clips whose labels would most settle the thresholds.

    Parameters
    ----------
    scores : array_like
        (n_clips, n_classes) clip scores in [0, 1].
    labels : array_like
        (n_clips, n_classes) 0/1 where ``labeled`` is True; other rows are ignored.
    labeled : array_like of bool
        (n_clips,) True for the clips labeled so far.
    n : int
        How many clips to suggest, from 1 to the number of unlabeled clips.
    objective : str
        What the thresholds maximise (as :func:`calitag.fit_thresholds`): "micro_f1", "macro_f1", ...
    seed : int
        Seeds the committee's resamples and the order of ties: equal inputs give equal picks.

    Returns
    -------
    numpy.ndarray
        (n,) distinct int64 indices of unlabeled rows, most informative first.

    Raises
    ------
    ScoresError
        Scores that are not a finite (n_clips, n_classes) matrix in [0, 1]; labels not 0/1 on the
        labeled rows.
    LabelsError
        ``labeled`` not a boolean mask of one entry per clip; labels of another shape; ``n`` not an
        integer from 1 to the number of unlabeled clips.
    CalibrationError
        Unknown objective; a seed that is not an integer.
    """
    return rank_unlabeled(scores, labels, labeled, n, objective=objective, seed=seed).indices.astype(np.int64)
