"""Tune the per-class post-processing stack of a frame-level tagger on strongly labeled recordings.

Macro F1 (event- or segment-based) is a mean of per-class terms, so each class is tuned on its own:

1. every smoothing candidate (median / moving average, kernels from ``kernels_s``) is applied to
   the frame scores; a decision threshold per (class, smoothing) column is fitted on the smoothed
   frames with the surrogate-gradient solver of :mod:`calitag.thresholds` (frame-level macro-F1 as
   a differentiable stand-in for the event metric), all columns in one full-batch run;
2. around each fitted threshold a few offsets are scored with the event metric itself, and the
   best (smoothing, kernel, threshold) is kept;
3. hysteresis: a coarse grid of (high, low) around that threshold, then a finer one;
4. minimum gap and minimum duration on a grid;
5. a last shift of the threshold(s) with everything else fixed.

Ties keep the simpler stack (no smoothing, no hysteresis, no gap or duration rule). The search is
deterministic; the solver is seeded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from calitag.errors import LabelsError, ScoresError
from calitag.pipeline.events import (
    ClassPostprocess,
    Event,
    EventTable,
    Postprocess,
    binarize,
    clean_segments,
    runs_of,
    smooth,
)
from calitag.pipeline.sed_metrics import (
    PERCENTAGE_OF_LENGTH,
    SEGMENT_S,
    T_COLLAR_S,
    count_event_matches,
)
from calitag.pipeline.types import FrameScores

Metric = Literal["event", "segment"]

#: Smoothing windows tried, in seconds (converted to odd frame counts at the model's hop).
DEFAULT_KERNELS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.45, 0.65, 0.9)
#: Offsets scored around the surrogate threshold.
THRESHOLD_OFFSETS: tuple[float, ...] = (0.0, -0.05, 0.05, -0.1, 0.1, -0.2, 0.2)
#: Hysteresis: distances of high above / low below the chosen threshold (coarse pass).
HYSTERESIS_STEPS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
DEFAULT_MIN_GAPS_S: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
DEFAULT_MIN_DURATIONS_S: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
_EPS = 1e-12


@dataclass(frozen=True)
class EventsTuning:
    """The result of :func:`tune_events`.

    postprocess: the tuned per-class stack (its ``to_dict()`` is the thresholds file's ``events``).
    metric: "event" or "segment" (macro F1).
    score: macro F1 of the tuned stack on the tuning data.
    baseline_score: macro F1 of threshold 0.5 without smoothing on the same data.
    class_scores: per-class F1 of the tuned stack (NaN for classes without reference events).
    seconds: wall time of the fit.
    """

    postprocess: Postprocess
    metric: Metric
    score: float
    baseline_score: float
    class_scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events(self) -> dict[str, Any]:
        """The ``events`` section for the thresholds file."""
        return self.postprocess.to_dict()


@dataclass
class _ClassData:
    """Per-class view of the tuning set: curves per file and reference events per file."""

    curves: list[np.ndarray]  # one (n_frames,) raw score curve per file
    ref_on: list[np.ndarray]
    ref_off: list[np.ndarray]
    n_ref: int
    ref_rolls: list[np.ndarray]  # segment metric: (n_segments,) bool per file
    n_segments: list[int]


class _ClassScorer:
    """Scores candidate parameters of one class with the chosen metric (F1 of that class)."""

    def __init__(self, data: _ClassData, *, hop_s: float, metric: Metric,
                 t_collar_s: float, percentage_of_length: float, segment_s: float) -> None:
        self.data, self.hop_s, self.metric = data, hop_s, metric
        self.t_collar_s, self.pol, self.segment_s = t_collar_s, percentage_of_length, segment_s
        self._smoothed: dict[tuple[str, int], list[np.ndarray]] = {}

    def smoothed(self, kind: str, kernel: int) -> list[np.ndarray]:
        key = ("none", 1) if kind == "none" or kernel <= 1 else (kind, kernel)
        if key not in self._smoothed:
            self._smoothed[key] = [smooth(c, kind=key[0], kernel_frames=key[1]) for c in self.data.curves]
        return self._smoothed[key]

    def f1(self, p: ClassPostprocess) -> float:
        curves = self.smoothed(p.smoothing, p.kernel_frames)
        tp = n_sys = 0
        for i, x in enumerate(curves):
            starts, ends = runs_of(binarize(x, threshold=p.threshold, low=p.low))
            on, off = clean_segments(starts * self.hop_s, ends * self.hop_s,
                                     min_gap_s=p.min_gap_s, min_duration_s=p.min_duration_s)
            if self.metric == "event":
                n_sys += len(on)
                tp += count_event_matches(self.data.ref_on[i], self.data.ref_off[i], on, off,
                                          t_collar_s=self.t_collar_s, percentage_of_length=self.pol)
            else:
                roll = np.zeros(self.data.n_segments[i], dtype=bool)
                for a, b in zip(on, off):
                    roll[int(np.floor(a / self.segment_s)):int(np.ceil(b / self.segment_s))] = True
                n_sys += int(roll.sum())
                tp += int((roll & self.data.ref_rolls[i]).sum())
        n_ref = self.data.n_ref if self.metric == "event" else int(sum(r.sum() for r in self.data.ref_rolls))
        if n_ref == 0:
            return float("nan")
        return 2.0 * tp / (n_sys + n_ref) if (n_sys + n_ref) else 0.0


def _odd_kernels(kernels_s: Sequence[float], hop_s: float) -> list[int]:
    frames = {max(1, int(round(k / hop_s))) for k in kernels_s}
    return sorted({f if f % 2 else f + 1 for f in frames if f > 1})


def _frame_labels(n_frames: int, on: np.ndarray, off: np.ndarray, hop_s: float) -> np.ndarray:
    centres = (np.arange(n_frames) + 0.5) * hop_s
    y = np.zeros(n_frames, dtype=bool)
    for a, b in zip(on, off):
        y |= (centres >= a) & (centres < b)
    return y


def _frame_thresholds(scores: np.ndarray, labels: np.ndarray, *, solver: str, seed: int) -> np.ndarray:
    """Per-column thresholds maximising frame-level F1 with calitag's threshold solvers.

    scores, labels: (n_frames, n_columns); returns (n_columns,). Macro-F1 is a sum of per-column
    terms, so one run fits every column independently.
    """
    from calitag.thresholds import fit

    options: dict[str, Any] = {"init": 0.5}
    if solver == "sgl":
        options["seed"] = seed
    fitted = fit(scores, labels, method=solver, objective="macro_f1", **options)
    return np.asarray(fitted.values, dtype=np.float64)


def _collect(
    frame_scores: Sequence[FrameScores], reference: Sequence[Event] | EventTable
) -> tuple[tuple[str, ...], float, list[str], dict[tuple[str, str], list[Event]]]:
    if not frame_scores:
        raise ScoresError("no frame scores to tune on; expected at least one scored recording")
    first = frame_scores[0]
    names, hop = tuple(first.class_names), float(first.frame_hop_s)
    files = []
    for fs in frame_scores:
        if tuple(fs.class_names) != names or abs(fs.frame_hop_s - hop) > 1e-9:
            raise ScoresError(
                f"{fs.source}: frame scores of another model ({fs.model}, hop {fs.frame_hop_s}) than "
                f"{first.source} ({first.model}, hop {hop}); expected one model for the whole set"
            )
        probs = np.asarray(fs.probs)
        if probs.ndim != 2 or probs.shape[1] != len(names) or not np.all(np.isfinite(probs)):
            raise ScoresError(f"{fs.source}: expected finite frame scores of shape (n, {len(names)}), got {probs.shape}")
        files.append(os.path.basename(fs.source))
    if len(set(files)) != len(files):
        raise ScoresError("two scored recordings share a file name; event tables key recordings by name")
    events = reference.events if isinstance(reference, EventTable) else tuple(reference)
    unknown_labels = sorted({e.label for e in events} - set(names))
    if unknown_labels:
        raise LabelsError(
            f"reference events use labels {unknown_labels} that {first.model} does not output; "
            f"expected some of {list(names)}"
        )
    unscored = sorted({e.file for e in events} - set(files))
    if unscored:
        raise LabelsError(
            f"reference events name {len(unscored)} file(s) with no frame scores, e.g. {unscored[:3]}; "
            "fix: score them or drop them from the reference"
        )
    by_key: dict[tuple[str, str], list[Event]] = {}
    for e in events:
        by_key.setdefault((e.file, e.label), []).append(e)
    return names, hop, files, by_key


def tune_events(
    frame_scores: Sequence[FrameScores],
    reference: Sequence[Event] | EventTable,
    *,
    metric: Metric = "event",
    smoothing_kinds: Sequence[str] = ("median", "mean"),
    kernels_s: Sequence[float] = DEFAULT_KERNELS_S,
    hysteresis: bool = True,
    min_gaps_s: Sequence[float] = DEFAULT_MIN_GAPS_S,
    min_durations_s: Sequence[float] = DEFAULT_MIN_DURATIONS_S,
    solver: str = "sgl",
    seed: int = 0,
    t_collar_s: float = T_COLLAR_S,
    percentage_of_length: float = PERCENTAGE_OF_LENGTH,
    segment_s: float = SEGMENT_S,
    on_progress: Callable[[int, int], None] | None = None,
) -> EventsTuning:
    """Fit per-class smoothing, thresholds/hysteresis, minimum gap and duration for macro F1.

    Parameters
    ----------
    frame_scores : sequence of FrameScores
        Frame scores of the tuning recordings (one model; probs (n_frames, n_classes)). A recording
        is known by the base name of its ``source``.
    reference : sequence of Event or EventTable
        Strong labels of those recordings; a recording without events is simply absent.
    metric : {"event", "segment"}
        Macro F1 to maximise (event-based with the DCASE collars, or 1-s segment-based).
    smoothing_kinds : sequence of {"median", "mean"}
        Smoothing candidates (no smoothing is always a candidate).
    kernels_s : sequence of float
        Smoothing windows tried, seconds; rounded to odd frame counts.
    hysteresis : bool
        Also try hysteresis (high/low) binarisation.
    min_gaps_s, min_durations_s : sequence of float
        Grids for the gap filling and minimum event length, seconds.
    solver : str
        Threshold solver of :func:`calitag.thresholds.fit` for the surrogate step ("sgl" default).
    seed : int
        Seed of the solver.
    t_collar_s, percentage_of_length, segment_s : float
        Metric conventions (DCASE defaults).
    on_progress : callable(done, total), optional
        Called after each class.

    Returns
    -------
    EventsTuning

    Raises
    ------
    ScoresError
        Empty input, mixed models, NaN scores, duplicate file names.
    LabelsError
        Reference events for unknown classes or for recordings that were not scored.
    """
    t0 = time.perf_counter()
    names, hop, files, by_key = _collect(frame_scores, reference)
    kernels = _odd_kernels(kernels_s, hop)
    combos: list[tuple[str, int]] = [("none", 1)] + [(k, n) for k in smoothing_kinds for n in kernels]
    probs = [np.asarray(fs.probs, dtype=np.float64) for fs in frame_scores]

    datas: list[_ClassData] = []
    for c, label in enumerate(names):
        ref_on, ref_off, rolls, n_segs = [], [], [], []
        for f, p in zip(files, probs):
            evs = by_key.get((f, label), [])
            ref_on.append(np.array([e.onset_s for e in evs]))
            ref_off.append(np.array([e.offset_s for e in evs]))
            length_s = max([len(p) * hop] + [e.offset_s for e in evs])
            n = int(np.ceil(length_s / segment_s - 1e-9))
            roll = np.zeros(n, dtype=bool)
            for e in evs:
                roll[int(np.floor(e.onset_s / segment_s)):int(np.ceil(e.offset_s / segment_s))] = True
            rolls.append(roll)
            n_segs.append(n)
        datas.append(_ClassData([p[:, c] for p in probs], ref_on, ref_off,
                                sum(len(o) for o in ref_on), rolls, n_segs))
    scorers = [_ClassScorer(d, hop_s=hop, metric=metric, t_collar_s=t_collar_s,
                            percentage_of_length=percentage_of_length, segment_s=segment_s) for d in datas]
    tuned_classes = [c for c, d in enumerate(datas) if d.n_ref > 0]

    # 1. surrogate thresholds for every (class, smoothing) column in one solver run
    columns, col_labels, col_keys = [], [], []
    for c in tuned_classes:
        y = np.concatenate([_frame_labels(len(p), datas[c].ref_on[i], datas[c].ref_off[i], hop)
                            for i, p in enumerate(probs)])
        for kind, k in combos:
            columns.append(np.concatenate(scorers[c].smoothed(kind, k)))
            col_labels.append(y)
            col_keys.append((c, kind, k))
    surrogate: dict[tuple[int, str, int], float] = {}
    if columns:
        th = _frame_thresholds(np.stack(columns, axis=1).astype(np.float32),
                               np.stack(col_labels, axis=1).astype(np.float32), solver=solver, seed=seed)
        surrogate = {key: float(np.clip(t, 0.0, 1.0)) for key, t in zip(col_keys, th)}

    params = [ClassPostprocess() for _ in names]
    class_scores: dict[str, float] = {}
    for done, c in enumerate(tuned_classes, start=1):
        params[c], class_scores[names[c]] = _tune_class(
            scorers[c], combos, surrogate, c, hysteresis=hysteresis,
            min_gaps_s=min_gaps_s, min_durations_s=min_durations_s,
        )
        if on_progress is not None:
            on_progress(done, len(tuned_classes))
    for c, label in enumerate(names):
        class_scores.setdefault(label, float("nan"))

    baseline = [scorers[c].f1(ClassPostprocess()) for c in tuned_classes]
    score = float(np.mean([class_scores[names[c]] for c in tuned_classes])) if tuned_classes else float("nan")
    seconds = time.perf_counter() - t0
    fitted = {
        "metric": f"{metric}_macro_f1",
        "score": round(score, 6),
        "baseline_score": round(float(np.mean(baseline)), 6) if baseline else None,
        "solver": solver,
        "seed": seed,
        "seconds": round(seconds, 3),
        "n_files": len(files),
        "n_events": int(sum(d.n_ref for d in datas)),
        "untuned_classes": [names[c] for c in range(len(names)) if c not in tuned_classes],
    }
    pp = Postprocess(names, tuple(params), frame_hop_s=hop, fitted=fitted)
    return EventsTuning(pp, metric, score, float(np.mean(baseline)) if baseline else float("nan"),
                        class_scores, seconds)


def _tune_class(
    scorer: _ClassScorer,
    combos: list[tuple[str, int]],
    surrogate: dict[tuple[int, str, int], float],
    c: int,
    *,
    hysteresis: bool,
    min_gaps_s: Sequence[float],
    min_durations_s: Sequence[float],
) -> tuple[ClassPostprocess, float]:
    def clip(t: float) -> float:
        return float(np.clip(t, 0.005, 0.995))

    best = ClassPostprocess()
    best_f = scorer.f1(best)

    def consider(p: ClassPostprocess) -> None:
        nonlocal best, best_f
        f = scorer.f1(p)
        if f > best_f + _EPS:
            best, best_f = p, f

    # 2. smoothing x threshold around the surrogate optimum
    for kind, k in combos:
        t0 = surrogate[(c, kind, k)]
        for d in THRESHOLD_OFFSETS:
            consider(ClassPostprocess(kind, k, clip(t0 + d)))

    # 3. hysteresis, coarse then fine
    if hysteresis:
        base = best
        for up in HYSTERESIS_STEPS:
            for down in HYSTERESIS_STEPS:
                if up == down == 0.0:
                    continue
                high = clip(base.threshold + up)
                consider(ClassPostprocess(base.smoothing, base.kernel_frames, high,
                                          min(high, clip(base.threshold - down))))
        if best.low is not None:
            coarse = best
            for dh in (-0.025, 0.0, 0.025):
                for dl in (-0.025, 0.0, 0.025):
                    high = clip(coarse.threshold + dh)
                    consider(ClassPostprocess(coarse.smoothing, coarse.kernel_frames, high,
                                              min(high, clip(coarse.low + dl))))

    # 4. gap filling and minimum duration
    base = best
    for gap in min_gaps_s:
        for dur in min_durations_s:
            consider(ClassPostprocess(base.smoothing, base.kernel_frames, base.threshold, base.low,
                                      min_duration_s=float(dur), min_gap_s=float(gap)))

    # 5. re-centre the threshold(s) with everything else fixed
    base = best
    for d in (-0.05, -0.025, 0.025, 0.05):
        high = clip(base.threshold + d)
        low = None if base.low is None else min(high, clip(base.low + d))
        consider(ClassPostprocess(base.smoothing, base.kernel_frames, high, low,
                                  base.min_duration_s, base.min_gap_s))
    return best, best_f
