"""Tune the per-class post-processing stack of a frame-level tagger on strongly labeled recordings.

Macro F1 (event- or segment-based) is a mean of per-class terms, so each class is tuned on its own:

1. every smoothing candidate (median / moving average, kernels from ``kernels_s``) is applied to
   the class's frame scores; a decision threshold per candidate is fitted on the smoothed frames
   with the surrogate-gradient solver of :mod:`calitag.thresholds` (frame-level F1 as a
   differentiable stand-in for the event metric), all candidates of the class in one full-batch run;
2. around each fitted threshold a few offsets are scored with the event metric itself, and the
   best (smoothing, kernel, threshold) is kept;
3. hysteresis: a coarse grid of (high, low) around that threshold, then a finer one;
4. minimum gap and minimum duration on a grid;
5. a last shift of the threshold(s) with everything else fixed.

Ties keep the simpler stack (no smoothing, no hysteresis, no gap or duration rule). The search is
deterministic; the solver is seeded.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import numpy as np

from calitag.errors import LabelsError, ScoresError
from calitag.thresholds.events.postprocess import (
    ClassPostprocess,
    Event,
    FrameScoresLike,
    Postprocess,
    binarize,
    clean_segments,
    runs_of,
    smooth,
)
from calitag.thresholds.events.event_metrics import (
    PERCENTAGE_OF_LENGTH,
    SEGMENT_S,
    T_COLLAR_S,
    count_event_matches,
)
from calitag.thresholds.events.tsv import EventTable
from calitag.thresholds.metrics import fbeta_np

logger = logging.getLogger(__name__)

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

    postprocess: the tuned per-class stack (a thresholds file's ``events``).
    metric: "event" or "segment" (macro F1).
    score: macro F1 of the tuned stack on the tuning data.
    baseline_score: macro F1 of threshold 0.5 without smoothing on the same data.
    class_scores: per-class F1 of the tuned stack (NaN for classes without reference events).
    baseline_class_scores: per-class F1 of threshold 0.5 without smoothing (NaN likewise).
    seconds: wall time of the fit.
    """

    postprocess: Postprocess
    metric: Metric
    score: float
    baseline_score: float
    class_scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    baseline_class_scores: dict[str, float] = field(default_factory=dict)


class _ClassScorer:
    """Scores candidate parameters of one class (its F1) on all recordings at once.

    The recordings' curves are laid end to end, one separator frame apart (a score of -1 that no
    threshold passes), and recording ``i`` starts at ``i * stride_s`` seconds on a common time
    axis, so runs, gap filling and matching never cross recordings and each candidate costs a
    handful of numpy passes.
    """

    def __init__(self, curves: list[np.ndarray], ref_on: list[np.ndarray], ref_off: list[np.ndarray], *,
                 hop_s: float, metric: Metric, t_collar_s: float, percentage_of_length: float,
                 segment_s: float, max_gap_s: float) -> None:
        self.curves, self.hop_s, self.metric = curves, hop_s, metric
        self.t_collar_s, self.pol, self.segment_s = t_collar_s, percentage_of_length, segment_s
        lengths = np.array([len(c) for c in curves])
        self.first_frame = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
        longest_s = max(float(lengths.max()) * hop_s, max((float(o.max()) for o in ref_off if len(o)), default=0.0))
        self.stride_s = longest_s + max_gap_s + 100.0
        self.ref_on = np.concatenate([o + i * self.stride_s for i, o in enumerate(ref_on)])
        self.ref_off = np.concatenate([o + i * self.stride_s for i, o in enumerate(ref_off)])
        self.n_ref_events = len(self.ref_on)
        self.frame_mask = np.ones(int(lengths.sum() + len(lengths)), dtype=bool)
        self.frame_mask[self.first_frame + lengths] = False
        # segment metric: segments of all recordings laid end to end
        lengths_s = [max(n * hop_s, float(o.max()) if len(o) else 0.0) for n, o in zip(lengths, ref_off)]
        self.n_segments = np.array([int(np.ceil(x / segment_s - 1e-9)) for x in lengths_s])
        self.first_segment = np.concatenate(([0], np.cumsum(self.n_segments)[:-1]))
        self.ref_roll = self._roll(self.ref_on, self.ref_off)
        self._smoothed: dict[tuple[str, int], np.ndarray] = {}

    @property
    def n_ref(self) -> int:
        return self.n_ref_events if self.metric == "event" else int(self.ref_roll.sum())

    def _roll(self, on: np.ndarray, off: np.ndarray) -> np.ndarray:
        """Active segments (all recordings end to end) of events given on the common time axis."""
        total = int(self.n_segments.sum())
        if len(on) == 0:
            return np.zeros(total, dtype=bool)
        rec = np.floor(on / self.stride_s).astype(int)
        base = rec * self.stride_s
        first = self.first_segment[rec] + np.floor((on - base) / self.segment_s).astype(int)
        last = self.first_segment[rec] + np.minimum(np.ceil((off - base) / self.segment_s).astype(int),
                                                    self.n_segments[rec])
        delta = np.zeros(total + 1, dtype=np.int64)
        np.add.at(delta, first, 1)
        np.add.at(delta, last, -1)
        return np.cumsum(delta[:-1]) > 0

    def smoothed(self, kind: str, kernel: int) -> np.ndarray:
        """The smoothed curves end to end, with separators (shape (n_frames_total + n_recordings,))."""
        key = ("none", 1) if kind == "none" or kernel <= 1 else (kind, kernel)
        if key not in self._smoothed:
            parts = []
            for c in self.curves:
                parts += [smooth(c, kind=key[0], kernel_frames=key[1]), np.array([-1.0])]
            self._smoothed[key] = np.concatenate(parts)
        return self._smoothed[key]

    def release(self) -> None:
        """Drop the cached smoothed curves (the class is tuned)."""
        self._smoothed.clear()

    def f1(self, p: ClassPostprocess) -> float:
        if self.n_ref == 0:
            return float("nan")
        starts, ends = runs_of(binarize(self.smoothed(p.smoothing, p.kernel_frames), threshold=p.threshold, low=p.low))
        rec = np.searchsorted(self.first_frame, starts, side="right") - 1
        origin = rec * self.stride_s
        on, off = clean_segments((starts - self.first_frame[rec]) * self.hop_s + origin,
                                 (ends - self.first_frame[rec]) * self.hop_s + origin,
                                 min_gap_s=p.min_gap_s, min_duration_s=p.min_duration_s)
        if self.metric == "event":
            n_sys = len(on)
            tp = count_event_matches(self.ref_on, self.ref_off, on, off,
                                     t_collar_s=self.t_collar_s, percentage_of_length=self.pol)
        else:
            roll = self._roll(on, off)
            n_sys, tp = int(roll.sum()), int((roll & self.ref_roll).sum())
        return float(fbeta_np(tp, n_sys, self.n_ref, average=None))


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
    frame_scores: Sequence[FrameScoresLike], reference: Sequence[Event] | EventTable
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
        from calitag._names import unknown_names_hint

        raise LabelsError(
            f"reference events use {len(unknown_labels)} label(s) that {first.model} does not output: "
            f"{unknown_names_hint(unknown_labels, names)}; `calitag models classes {first.model}` lists its classes"
        )
    unscored = sorted({e.file for e in events} - set(files))
    if unscored:
        raise LabelsError(
            f"reference events name {len(unscored)} file(s) with no frame scores, e.g. {unscored[:3]}; "
            "fix: score them or drop them from the reference"
        )
    durations = {f: len(fs.probs) * hop for f, fs in zip(files, frame_scores)}
    by_key: dict[tuple[str, str], list[Event]] = {}
    clipped = []
    for e in events:
        end = durations[e.file]
        if e.onset_s >= end + hop:
            raise LabelsError(
                f"reference event {e.label} at {e.onset_s:g}-{e.offset_s:g} s starts after the end of {e.file} "
                f"({end:.2f} s of frame scores); fix: check the file name and times in the reference"
            )
        if e.offset_s > end + hop:
            clipped.append(e)
            e = Event(e.file, e.onset_s, end, e.label)
        by_key.setdefault((e.file, e.label), []).append(e)
    if clipped:
        first = clipped[0]
        logger.warning(
            "%d reference event(s) end after the end of their file and were cut there, e.g. %s %g-%g s in %s "
            "(%.2f s)", len(clipped), first.label, first.onset_s, first.offset_s, first.file, durations[first.file],
        )
    return names, hop, files, by_key


def tune_events(
    frame_scores: Sequence[FrameScoresLike], reference: Sequence[Event] | EventTable, *, metric: Metric = "event",
    smoothing_kinds: Sequence[str] = ("median", "mean"), kernels_s: Sequence[float] = DEFAULT_KERNELS_S,
    hysteresis: bool = True, min_gaps_s: Sequence[float] = DEFAULT_MIN_GAPS_S,
    min_durations_s: Sequence[float] = DEFAULT_MIN_DURATIONS_S, solver: str = "sgl", seed: int = 0,
    t_collar_s: float = T_COLLAR_S, percentage_of_length: float = PERCENTAGE_OF_LENGTH, segment_s: float = SEGMENT_S,
    on_progress: Callable[[int, int], None] | None = None,
) -> EventsTuning:
    """Fit per-class smoothing, thresholds/hysteresis, minimum gap and duration for macro F1.

    Parameters
    ----------
    frame_scores : sequence of FrameScoresLike
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
    scorers, frame_labels = _class_scorers(
        probs, names, files, by_key, hop_s=hop, metric=metric, t_collar_s=t_collar_s,
        percentage_of_length=percentage_of_length, segment_s=segment_s, max_gap_s=max(min_gaps_s, default=0.0))
    tuned_classes = [c for c, sc in enumerate(scorers) if sc.n_ref_events > 0]
    params, class_scores, baseline_scores = _tune_classes(
        names, scorers, frame_labels, combos, tuned_classes, solver=solver, seed=seed, hysteresis=hysteresis,
        min_gaps_s=min_gaps_s, min_durations_s=min_durations_s, on_progress=on_progress)
    return _tuning(names, params, class_scores, baseline_scores, [names[c] for c in tuned_classes],
                   metric=metric, frame_hop_s=hop, solver=solver, seed=seed, n_files=len(files),
                   n_events=int(sum(sc.n_ref_events for sc in scorers)), started=t0)


def _tune_classes(
    names: tuple[str, ...],
    scorers: list[_ClassScorer],
    frame_labels: list[np.ndarray],
    combos: list[tuple[str, int]],
    tuned_classes: list[int],
    *,
    solver: str,
    seed: int,
    hysteresis: bool,
    min_gaps_s: Sequence[float],
    min_durations_s: Sequence[float],
    on_progress: Callable[[int, int], None] | None,
) -> tuple[tuple[ClassPostprocess, ...], dict[str, float], dict[str, float]]:
    """The stack of each of ``tuned_classes`` (defaults for the others), its F1 and the baseline F1.

    The F1 mappings list the tuned classes first, then the others with NaN.
    """
    params = [ClassPostprocess() for _ in names]
    class_scores: dict[str, float] = {}
    baseline_scores: dict[str, float] = {}
    for done, c in enumerate(tuned_classes, start=1):
        scorer = scorers[c]
        baseline_scores[names[c]] = scorer.f1(ClassPostprocess())
        # 1. surrogate thresholds of every smoothing candidate of the class, in one solver run
        surrogate = _surrogate_thresholds(scorer, frame_labels[c], combos, solver=solver, seed=seed)
        # 2.-5. the event metric decides
        params[c], class_scores[names[c]] = _tune_class(
            scorer, combos, surrogate, hysteresis=hysteresis, min_gaps_s=min_gaps_s, min_durations_s=min_durations_s,
        )
        scorer.release()
        if on_progress is not None:
            on_progress(done, len(tuned_classes))
    for label in names:
        class_scores.setdefault(label, float("nan"))
        baseline_scores.setdefault(label, float("nan"))
    return tuple(params), class_scores, baseline_scores


def _class_scorers(
    probs: list[np.ndarray],
    names: tuple[str, ...],
    files: list[str],
    by_key: dict[tuple[str, str], list[Event]],
    *,
    hop_s: float,
    metric: Metric,
    t_collar_s: float,
    percentage_of_length: float,
    segment_s: float,
    max_gap_s: float,
) -> tuple[list[_ClassScorer], list[np.ndarray]]:
    """Per class: its scorer over all recordings, and its frame labels (recordings end to end, bool)."""
    scorers: list[_ClassScorer] = []
    frame_labels: list[np.ndarray] = []
    for label in names:
        ref_on = [np.array([e.onset_s for e in by_key.get((f, label), [])]) for f in files]
        ref_off = [np.array([e.offset_s for e in by_key.get((f, label), [])]) for f in files]
        scorers.append(_ClassScorer(
            [p[:, names.index(label)] for p in probs], ref_on, ref_off, hop_s=hop_s, metric=metric,
            t_collar_s=t_collar_s, percentage_of_length=percentage_of_length, segment_s=segment_s,
            max_gap_s=max_gap_s))
        frame_labels.append(np.concatenate([_frame_labels(len(p), a, b, hop_s) for p, a, b in zip(probs, ref_on, ref_off)]))
    return scorers, frame_labels


def _surrogate_thresholds(
    scorer: _ClassScorer, frame_labels: np.ndarray, combos: list[tuple[str, int]], *, solver: str, seed: int
) -> dict[tuple[str, int], float]:
    """The frame-F1 threshold of each smoothing candidate of one class, all fitted in one solver run."""
    columns = np.stack([scorer.smoothed(kind, k)[scorer.frame_mask] for kind, k in combos], axis=1)
    labels = np.repeat(frame_labels[:, None], len(combos), axis=1)
    th = _frame_thresholds(np.clip(columns, 0.0, 1.0).astype(np.float32), labels.astype(np.float32),
                           solver=solver, seed=seed)
    return {combo: float(np.clip(t, 0.0, 1.0)) for combo, t in zip(combos, th)}


def _tuning(
    names: tuple[str, ...],
    params: tuple[ClassPostprocess, ...],
    class_scores: dict[str, float],
    baseline_scores: dict[str, float],
    tuned: list[str],
    *,
    metric: Metric,
    frame_hop_s: float,
    solver: str,
    seed: int,
    n_files: int,
    n_events: int,
    started: float,
) -> EventsTuning:
    """The result: macro scores over the ``tuned`` classes, the stack and its ``fitted`` record.

    The record's seconds run from ``started`` (a :func:`time.perf_counter` reading) to now.
    """
    baseline = [baseline_scores[name] for name in tuned]
    score = float(np.mean([class_scores[name] for name in tuned])) if tuned else float("nan")
    seconds = time.perf_counter() - started
    record = {
        "metric": f"{metric}_macro_f1",
        "score": round(score, 6),
        "baseline_score": round(float(np.mean(baseline)), 6) if baseline else None,
        "solver": solver,
        "seed": seed,
        "seconds": round(seconds, 3),
        "n_files": n_files,
        "n_events": n_events,
        "untuned_classes": [name for name in names if name not in tuned],
    }
    pp = Postprocess(names, params, frame_hop_s=frame_hop_s, fitted=record)
    return EventsTuning(pp, metric, score, float(np.mean(baseline)) if baseline else float("nan"),
                        class_scores, seconds, baseline_scores)


def _tune_class(
    scorer: _ClassScorer,
    combos: list[tuple[str, int]],
    surrogate: dict[tuple[str, int], float],
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
        t0 = surrogate[(kind, k)]
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
