"""Stratified splits of multi-label clips: every split of calitag comes from here.

A clip's stratum is its rarest positive class, so that rare classes land on both sides of a split
(scikit-learn's stratifiers take one label per clip). ``split_indices`` (held-out split) and
``kfold_splits`` (K-fold) are what ``calitag calibrate`` measures thresholds with; ``fold_indices``
deals the clips of the small-class guard inside a fit.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from calitag.errors import LabelsError


def clip_strata(targets: np.ndarray, n_splits: int) -> np.ndarray:
    """One stratum per clip: its rarest positive class, merged into "other" when too rare to split."""
    counts = targets.sum(axis=0)
    order = np.where(counts > 0, counts, np.inf)
    strata = np.array([int(np.argmin(np.where(row > 0, order, np.inf))) if row.any() else -1 for row in targets])
    values, sizes = np.unique(strata, return_counts=True)
    rare = set(values[sizes < n_splits].tolist())
    merged = np.array([-2 if s in rare else s for s in strata])
    n_rare = int((merged == -2).sum())
    if 0 < n_rare < n_splits and n_rare < len(merged):
        # Too few even together: they join the largest stratum, so no stratum is smaller than the split count
        # (scikit-learn would warn, and could not spread them anyway).
        kept, kept_sizes = np.unique(merged[merged != -2], return_counts=True)
        merged[merged == -2] = kept[np.argmax(kept_sizes)]
    return merged


def split_indices(targets: np.ndarray, *, held_out_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, held-out) clip indices; each labeled class lands on both sides where it can."""
    if not 0.0 < held_out_fraction < 1.0:
        raise LabelsError(f"--val-fraction must be between 0 and 1, got {held_out_fraction}")
    from sklearn.model_selection import train_test_split  # on use: a fit without a split never loads sklearn

    indices = np.arange(len(targets))
    strata = clip_strata(targets, 2)
    try:
        fit_idx, held_idx = train_test_split(indices, test_size=held_out_fraction, random_state=seed, stratify=strata)
    except ValueError:
        fit_idx, held_idx = train_test_split(indices, test_size=held_out_fraction, random_state=seed)
    return np.sort(fit_idx), np.sort(held_idx)


def kfold_splits(targets: np.ndarray, *, n_folds: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified K-fold (fit, held-out) clip indices; every clip is held out exactly once."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    yield from splitter.split(np.zeros((len(targets), 1)), clip_strata(targets, n_folds))


def fold_indices(targets: np.ndarray, n_folds: int, *, seed: int = 0) -> np.ndarray:
    """A fold number per clip that spreads every class's positives over the folds.

    Clips are ordered by their rarest positive class (clips with none last), shuffled within
    each class, and dealt round-robin, so a class with ``k >= n_folds`` positives has positives
    in every fold. (scikit-learn's StratifiedKFold needs one label per clip; this is its
    multi-label analogue, written here so that the thresholds stage does not import sklearn.)

    Parameters
    ----------
    targets : numpy.ndarray
        (n_clips, n_classes) 0/1.
    n_folds : int
    seed : int

    Returns
    -------
    numpy.ndarray
        (n_clips,) int in ``[0, n_folds)``.
    """
    targets = np.asarray(targets, dtype=bool)
    counts = targets.sum(axis=0)
    rarity = np.where(targets, counts[None, :], np.iinfo(np.int64).max).min(axis=1)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(targets)), rarity))
    folds = np.empty(len(targets), dtype=np.int64)
    folds[order] = np.arange(len(targets)) % n_folds
    return folds
