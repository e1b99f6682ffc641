"""Bootstrap intervals for F1 of binary decisions, and the paired gain of one set of decisions over another.

Clips are resampled with replacement (percentile intervals). Two choices make the intervals honest:

- **Macro-F1 averages the classes present in each resample.** A class with no positive clip in a
  resample has no defined F1; counting it as 0 (as a plain macro average does) drags every
  resample down, so a perfect classifier would get an interval below 1. Stratifying the
  resampling by class is not an option for multi-label clips (a clip belongs to several
  strata), so each resample averages over the classes it holds, and the point estimate over the
  classes the whole set holds.
- **The gain is paired.** ``calibrated - default`` is computed on the same resamples for both,
  so the clip-to-clip variation they share cancels; two separate intervals that overlap say
  little about whether calibration helped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from calitag.errors import ScoresError
from calitag.thresholds.metrics import fbeta_np

Average = Literal["micro", "macro"]

#: Default number of bootstrap resamples.
N_RESAMPLES = 1000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval at ``level`` (e.g. 0.95)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def to_dict(self) -> dict[str, float]:
        """``{"value", "low", "high", "level"}`` as plain floats."""
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level}


@dataclass(frozen=True)
class PairedGain:
    """Default and calibrated F1 with their intervals, and the paired interval of their difference."""

    average: str
    default: Interval
    calibrated: Interval
    gain: Interval

    def verdict(self) -> str:
        """One line, e.g. ``"micro-F1 +4.6 points [+1.2, +8.0]"`` (95% paired bootstrap)."""
        g = self.gain
        return f"{self.average}-F1 {100 * g.value:+.1f} points [{100 * g.low:+.1f}, {100 * g.high:+.1f}]"

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON summary with the verdict."""
        return {"average": self.average, "default": self.default.to_dict(), "calibrated": self.calibrated.to_dict(),
                "gain": self.gain.to_dict(), "verdict": self.verdict()}


def _check(decided: np.ndarray, targets: np.ndarray, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    decided = np.asarray(decided)
    targets = np.asarray(targets)
    if decided.ndim != 2 or decided.shape != targets.shape:
        raise ScoresError(f"{name} and targets must be matrices of one shape (n_clips, n_classes), "
                          f"got {decided.shape} and {targets.shape}")
    if decided.shape[0] == 0:
        raise ScoresError(f"{name}: no clips to bootstrap")
    return decided.astype(bool), targets > 0


def _resample_weights(n_clips: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_clips) float64: how often each clip is drawn in each resample."""
    if n_resamples < 1:
        raise ScoresError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clips, size=(n_resamples, n_clips))
    offsets = (np.arange(n_resamples) * n_clips)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_clips).reshape(n_resamples, n_clips).astype(np.float64)


def _f1(decided: np.ndarray, truth: np.ndarray, weights: np.ndarray | None, average: str) -> np.ndarray:
    """F1 of the full set (weights None, shape ()) or of every resample (shape (R,)); NaN where undefined."""
    hits = decided & truth
    if weights is None:
        tp, pp, pos = hits.sum(0)[None].astype(np.float64), decided.sum(0)[None].astype(np.float64), truth.sum(0)[None].astype(np.float64)
    else:
        tp, pp, pos = weights @ hits, weights @ decided, weights @ truth
    if average == "micro":
        out = fbeta_np(tp, pp, pos, average="micro")
    elif average == "macro":
        per_class = fbeta_np(tp, pp, pos, average=None)
        present = pos > 0
        n_present = present.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(n_present > 0, (per_class * present).sum(axis=1) / np.maximum(n_present, 1), np.nan)
    else:
        raise ScoresError(f"average must be 'micro' or 'macro', got {average!r}")
    return out if weights is not None else out[0]


def _interval(point: float, samples: np.ndarray, level: float) -> Interval:
    if not 0.0 < level < 1.0:
        raise ScoresError(f"level must lie in (0, 1), got {level}")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Interval(float(point), float("nan"), float("nan"), level)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high), level)


def bootstrap_f1(
    decided: np.ndarray,
    targets: np.ndarray,
    *,
    average: Average = "micro",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """F1 of binary decisions with a percentile bootstrap interval over resampled clips.

    Parameters
    ----------
    decided : numpy.ndarray
        (n_clips, n_classes) bool decisions.
    targets : numpy.ndarray
        Same shape, 0/1 ground truth.
    average : {"micro", "macro"}
        Macro averages the classes with at least one positive (in the full set for the point
        value, in each resample for the interval).
    n_resamples : int
    seed : int
    level : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    Interval

    Raises
    ------
    ScoresError
        Shapes differ, no clips, or a bad ``level``/``n_resamples``.
    """
    decided, truth = _check(decided, targets, name="decisions")
    weights = _resample_weights(len(decided), n_resamples, seed)
    return _interval(_f1(decided, truth, None, average), _f1(decided, truth, weights, average), level)


def paired_gain(
    default_decided: np.ndarray,
    calibrated_decided: np.ndarray,
    targets: np.ndarray,
    *,
    average: Average = "micro",
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> PairedGain:
    """F1 of two sets of decisions on the same clips and the paired bootstrap interval of their difference.

    Parameters
    ----------
    default_decided, calibrated_decided : numpy.ndarray
        (n_clips, n_classes) bool decisions of the two threshold sets.
    targets : numpy.ndarray
        Same shape, 0/1.
    average, n_resamples, seed, level
        As for :func:`bootstrap_f1`; both F1s and the gain use the same resamples.

    Returns
    -------
    PairedGain
    """
    default_decided, truth = _check(default_decided, targets, name="default decisions")
    calibrated_decided, _ = _check(calibrated_decided, targets, name="calibrated decisions")
    weights = _resample_weights(len(truth), n_resamples, seed)
    d_point, c_point = _f1(default_decided, truth, None, average), _f1(calibrated_decided, truth, None, average)
    d_samples, c_samples = _f1(default_decided, truth, weights, average), _f1(calibrated_decided, truth, weights, average)
    return PairedGain(
        average=average,
        default=_interval(d_point, d_samples, level),
        calibrated=_interval(c_point, c_samples, level),
        gain=_interval(c_point - d_point, c_samples - d_samples, level),
    )
