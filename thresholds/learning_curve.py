"""Held-out F-measure against the number of labeled clips the thresholds are fitted on, and what more labels would add.

:func:`learning_curve` subsamples: for each repeat, a stratified held-out split of the labeled
clips, then fits on nested random subsets of the fitting part (a quarter, a half, three quarters,
all of it) and measures each fit on the same held-out clips, so differences between sizes are
paired. :func:`expected_gain` fits ``F(m) = a - b / sqrt(m)`` (the usual rate of a statistical
estimate) to each repeat's curve and extrapolates it to more labels; the spread over the repeats
gives the interval.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from calitag.errors import LabelsError
from calitag.thresholds.metrics import NoPositivesWarning, fbeta_np
from calitag.thresholds.objectives import resolve_objective
from calitag.thresholds.splits import split_indices

#: Shares of the fitting clips the curve is measured at.
FRACTIONS = (0.25, 0.5, 0.75, 1.0)

__all__ = ["FRACTIONS", "LabelGain", "LearningCurve", "expected_gain", "learning_curve"]


@dataclass(frozen=True)
class LearningCurve:
    """Held-out ``objective`` (e.g. micro-F1) per number of fitting clips.

    sizes: (n_sizes,) fitting clips; values: (n_repeats, n_sizes), one row per held-out split;
    n_held_out: clips each split holds out; n_labeled: all labeled clips the curve came from.
    """

    sizes: np.ndarray
    values: np.ndarray
    n_held_out: int
    n_labeled: int
    objective: str = "micro_f1"

    @property
    def mean(self) -> np.ndarray:
        """(n_sizes,) the mean over the repeats."""
        return self.values.mean(axis=0)

    def band(self, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """(low, high), each (n_sizes,): the central ``level`` share of the repeats."""
        tail = 100 * (1 - level) / 2
        return np.percentile(self.values, tail, axis=0), np.percentile(self.values, 100 - tail, axis=0)

    def to_dict(self) -> dict[str, object]:
        """The curve as a JSON-ready object (mean and 80% band per size)."""
        low, high = self.band()
        return {"objective": self.objective, "sizes": self.sizes.tolist(), "mean": self.mean.tolist(),
                "low": low.tolist(), "high": high.tolist(), "repeats": len(self.values),
                "n_held_out": self.n_held_out}


@dataclass(frozen=True)
class LabelGain:
    """What ``n_more`` labels (at random) would add to the objective, from the learning curve.

    value: the median over the repeats; low, high: the interval (``level``) over the repeats.
    """

    n_more: int
    value: float
    low: float
    high: float
    level: float = 0.8
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        """The estimate as a JSON-ready object."""
        return {"n_more": self.n_more, "value": self.value, "low": self.low, "high": self.high, "level": self.level}


def learning_curve(scores: np.ndarray, targets: np.ndarray, *, objective: str = "micro_f1", method: str = "sgl",
                   repeats: int = 10, held_out_fraction: float = 0.3, fractions: Sequence[float] = FRACTIONS,
                   seed: int = 0, fit_options: Mapping[str, object] | None = None) -> LearningCurve:
    """Held-out ``objective`` of thresholds fitted on more and more of the labeled clips.

    Parameters
    ----------
    scores, targets : numpy.ndarray
        (n_clips, n_classes) scores in [0, 1] and 0/1 targets of the labeled clips.
    objective, method : str
        As :func:`calitag.fit_thresholds` (no small-class guard: the curve shows the solver alone).
    repeats : int
        Held-out splits, each with its own nested subsets.
    held_out_fraction : float
        Share of the clips each split holds out.
    fractions : sequence of float
        Shares of the fitting part to fit on, increasing, the last usually 1.
    seed : int
    fit_options : mapping, optional
        Further solver options.

    Returns
    -------
    LearningCurve

    Raises
    ------
    LabelsError
        Fewer than 8 clips (no split leaves 2 fitting clips at the smallest size), or ``repeats`` < 1.
    """
    from calitag.thresholds.solvers import fit

    n_clips = len(scores)
    if n_clips < 8:
        raise LabelsError(f"a learning curve needs at least 8 labeled clips, got {n_clips}")
    if repeats < 1:
        raise LabelsError(f"repeats must be at least 1, got {repeats}")
    spec = resolve_objective(objective)
    truth = np.asarray(targets) > 0
    rng = np.random.default_rng(seed)
    n_fit = n_clips - max(1, int(round(held_out_fraction * n_clips)))
    sizes = np.unique(np.clip(np.round(np.asarray(fractions) * n_fit).astype(int), 2, n_fit))
    values = np.empty((repeats, len(sizes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        for r in range(repeats):
            fit_idx, held_idx = split_indices(truth, held_out_fraction=held_out_fraction, seed=int(rng.integers(2**31)))
            order = rng.permutation(fit_idx)
            for k, size in enumerate(sizes):
                rows = order[:size]
                fitted = fit(scores[rows], truth[rows], method=method, objective=spec, **dict(fit_options or {}))
                decided = scores[held_idx] > fitted.values
                tp = (decided & truth[held_idx]).sum(0)
                values[r, k] = float(fbeta_np(tp, decided.sum(0), truth[held_idx].sum(0), beta=spec.beta,
                                              average=spec.average))
    return LearningCurve(sizes=sizes, values=values, n_held_out=n_clips - n_fit, n_labeled=n_clips,
                         objective=spec.name)


def expected_gain(curve: LearningCurve, n_more: int, *, level: float = 0.8) -> LabelGain:
    """What fitting on ``n_more`` more labeled clips (drawn at random) would add, with an interval.

    Each repeat's curve is fitted by least squares with ``F(m) = a - b / sqrt(m)`` (``b`` kept at
    0 or above: more labels never predict a loss) and extrapolated from all labeled clips
    (``curve.n_labeled``) to ``n_labeled + n_more``.

    Raises
    ------
    LabelsError
        ``n_more`` < 1, or a curve of a single size (nothing to extrapolate from).
    """
    if n_more < 1:
        raise LabelsError(f"n_more must be at least 1, got {n_more}")
    if len(curve.sizes) < 2:
        raise LabelsError(f"the learning curve has {len(curve.sizes)} size(s): at least 2 are needed to extrapolate")
    design = np.column_stack([np.ones(len(curve.sizes)), -1.0 / np.sqrt(curve.sizes)])
    coefs, *_ = np.linalg.lstsq(design, curve.values.T, rcond=None)
    slopes = np.maximum(coefs[1], 0.0)
    now, later = curve.n_labeled, curve.n_labeled + n_more
    gains = slopes * (1.0 / np.sqrt(now) - 1.0 / np.sqrt(later))
    tail = 100 * (1 - level) / 2
    return LabelGain(n_more=int(n_more), value=float(np.median(gains)), low=float(np.percentile(gains, tail)),
                     high=float(np.percentile(gains, 100 - tail)), level=level)
