"""Sound event detection metrics: event-based and segment-based F1, micro and macro.

The conventions are those of sed_eval (Mesaros et al. 2016) as used in DCASE task 4:

- event-based: an estimated event matches a reference event of the same class and file when its
  onset is within ``t_collar_s`` (200 ms) of the reference onset and its offset within
  ``max(t_collar_s, percentage_of_length * reference length)`` (20 %) of the reference offset;
  events are paired by a maximum bipartite matching (each event used once);
- segment-based: each file is cut into ``segment_s`` (1 s) segments over the longer of its
  reference and estimated activity; a class is active in a segment when an event overlaps it;
- per class: precision = TP / n_sys (0 when the system outputs nothing), recall = TP / n_ref
  (undefined when the class has no reference), F1 from those; macro = mean of the defined
  per-class values; micro from the summed counts.

Written here (numpy, with scipy's maximum bipartite matching for ambiguous pairings) so that the tuner can score thousands of
candidate parameter sets per second; tests/test_events_metrics.py checks it against sed_eval 0.2.1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from calitag.errors import LabelsError
from calitag.thresholds.events.postprocess import Event

T_COLLAR_S = 0.2
PERCENTAGE_OF_LENGTH = 0.2
SEGMENT_S = 1.0


@dataclass(frozen=True)
class DetectionReport:
    """Counts and F-scores of one evaluation.

    kind: "event" or "segment".
    class_names: the evaluated classes.
    n_ref, n_sys, n_tp: int arrays, shape (n_classes,): reference events (or active segments),
        system events (or segments), and matches.
    """

    kind: Literal["event", "segment"]
    class_names: tuple[str, ...]
    n_ref: np.ndarray
    n_sys: np.ndarray
    n_tp: np.ndarray

    @property
    def precision(self) -> np.ndarray:
        """Per-class precision, shape (n_classes,); 0 where the system output nothing."""
        return np.divide(self.n_tp, self.n_sys, out=np.zeros(len(self.n_sys)), where=self.n_sys > 0)

    @property
    def recall(self) -> np.ndarray:
        """Per-class recall, shape (n_classes,); NaN where the class has no reference."""
        return np.divide(self.n_tp, self.n_ref, out=np.full(len(self.n_ref), np.nan), where=self.n_ref > 0)

    @property
    def f1(self) -> np.ndarray:
        """Per-class F1, shape (n_classes,); NaN where the class has no reference."""
        return _f1(self.precision, self.recall)

    @property
    def macro_f1(self) -> float:
        """Mean per-class F1 over the classes that have reference events (NaN if none)."""
        return _nanmean(self.f1)

    @property
    def macro_precision(self) -> float:
        return _nanmean(self.precision)

    @property
    def macro_recall(self) -> float:
        return _nanmean(self.recall)

    @property
    def micro_precision(self) -> float:
        n_sys = int(self.n_sys.sum())
        return float(self.n_tp.sum() / n_sys) if n_sys else 0.0

    @property
    def micro_recall(self) -> float:
        n_ref = int(self.n_ref.sum())
        return float(self.n_tp.sum() / n_ref) if n_ref else math.nan

    @property
    def micro_f1(self) -> float:
        """F1 of the summed counts."""
        return float(_f1(np.array([self.micro_precision]), np.array([self.micro_recall]))[0])

    def as_dict(self) -> dict:
        """Micro/macro figures and the per-class table, JSON-serialisable (NaN -> None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "kind": self.kind,
            "micro": {"f1": num(self.micro_f1), "precision": num(self.micro_precision),
                      "recall": num(self.micro_recall)},
            "macro": {"f1": num(self.macro_f1), "precision": num(self.macro_precision),
                      "recall": num(self.macro_recall)},
            "classes": {
                name: {"f1": num(f), "precision": num(p), "recall": num(r), "n_ref": int(nr),
                       "n_sys": int(ns), "n_tp": int(nt)}
                for name, f, p, r, nr, ns, nt in zip(self.class_names, self.f1, self.precision, self.recall,
                                                     self.n_ref, self.n_sys, self.n_tp)
            },
        }


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    p, r = np.asarray(precision, float), np.asarray(recall, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * p * r / (p + r)
    f = np.where((p == 0) & (r == 0), 0.0, f)
    return np.where(np.isnan(p) | np.isnan(r), np.nan, f)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else math.nan


def count_event_matches(
    ref_onsets: np.ndarray,
    ref_offsets: np.ndarray,
    est_onsets: np.ndarray,
    est_offsets: np.ndarray,
    *,
    t_collar_s: float = T_COLLAR_S,
    percentage_of_length: float = PERCENTAGE_OF_LENGTH,
) -> int:
    """Number of matched pairs between the events of one class (in one file, or files laid end to end).

    Parameters
    ----------
    ref_onsets, ref_offsets : np.ndarray, shape (n_ref,)
    est_onsets, est_offsets : np.ndarray, shape (n_est,)
    t_collar_s : float
        Onset collar, and the least offset collar.
    percentage_of_length : float
        Offset collar as a fraction of the reference event's length, when larger than ``t_collar_s``.

    Returns
    -------
    int
        Size of a maximum matching where a pair counts when both collars hold.
    """
    ref_on, ref_off = np.asarray(ref_onsets, float), np.asarray(ref_offsets, float)
    est_on, est_off = np.asarray(est_onsets, float), np.asarray(est_offsets, float)
    if len(ref_on) == 0 or len(est_on) == 0:
        return 0
    # Candidate pairs: estimates whose onset lies near the reference onset (sorted search, with
    # slack so that the exact test below alone decides the border cases).
    order = np.argsort(est_on, kind="stable")
    sorted_on = est_on[order]
    lo = np.searchsorted(sorted_on, ref_on - t_collar_s - 1e-6, side="left")
    hi = np.searchsorted(sorted_on, ref_on + t_collar_s + 1e-6, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(ref_on)), counts)
    cols = order[np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)]
    offset_collar = np.maximum(t_collar_s, percentage_of_length * (ref_off - ref_on))
    hit = (np.abs(ref_on[rows] - est_on[cols]) <= t_collar_s) & (
        np.abs(ref_off[rows] - est_off[cols]) <= offset_collar[rows]
    )
    rows, cols = rows[hit], cols[hit]
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        return int(len(rows))
    # Some events fit several partners: a maximum bipartite matching (Hopcroft-Karp) decides.
    graph = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(ref_on), len(est_on)))
    return int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())


def _group(events: Sequence[Event]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    grouped: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        grouped[(e.file, e.label)].append((e.onset_s, e.offset_s))
    return {k: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for k, v in grouped.items()}


def _resolve_classes(
    reference: Sequence[Event], estimated: Sequence[Event], class_names: Sequence[str] | None
) -> tuple[str, ...]:
    if class_names is None:
        return tuple(sorted({e.label for e in reference} | {e.label for e in estimated}))
    names = tuple(class_names)
    unknown = sorted({e.label for e in list(reference) + list(estimated)} - set(names))
    if unknown:
        raise LabelsError(
            f"events carry labels {unknown} that are not among the evaluated classes {list(names)}; "
            "fix: pass class_names=None or map the labels"
        )
    return names


def event_based_scores(
    reference: Sequence[Event],
    estimated: Sequence[Event],
    *,
    class_names: Sequence[str] | None = None,
    t_collar_s: float = T_COLLAR_S,
    percentage_of_length: float = PERCENTAGE_OF_LENGTH,
) -> DetectionReport:
    """Event-based counts (DCASE task 4 conventions) of estimated against reference events.

    Parameters
    ----------
    reference, estimated : sequence of Event
        Events of any number of files; matching happens within a file and class.
    class_names : sequence of str, optional
        Classes to report; default: every label seen. Labels outside it raise.
    t_collar_s : float
        Onset collar (and least offset collar), seconds.
    percentage_of_length : float
        Offset collar as a fraction of the reference length.

    Returns
    -------
    DetectionReport
        kind "event"; ``.macro_f1``, ``.micro_f1``, per-class ``.f1``.

    Raises
    ------
    LabelsError
        Labels outside ``class_names``.
    """
    names = _resolve_classes(reference, estimated, class_names)
    index = {n: i for i, n in enumerate(names)}
    n_ref, n_sys, n_tp = (np.zeros(len(names), dtype=np.int64) for _ in range(3))
    ref, est = _group(reference), _group(estimated)
    for (file, label), (on, off) in ref.items():
        n_ref[index[label]] += len(on)
        if (file, label) in est:
            e_on, e_off = est[(file, label)]
            n_tp[index[label]] += count_event_matches(
                on, off, e_on, e_off, t_collar_s=t_collar_s, percentage_of_length=percentage_of_length
            )
    for (_, label), (on, _) in est.items():
        n_sys[index[label]] += len(on)
    return DetectionReport("event", names, n_ref, n_sys, n_tp)


def _segment_roll(
    events: list[tuple[float, float, int]], n_segments: int, n_classes: int, segment_s: float
) -> np.ndarray:
    roll = np.zeros((n_segments, n_classes), dtype=bool)
    for on, off, c in events:
        first = int(math.floor(on / segment_s))
        last = int(math.ceil(off / segment_s))
        roll[first:last, c] = True
    return roll


def segment_based_scores(
    reference: Sequence[Event],
    estimated: Sequence[Event],
    *,
    class_names: Sequence[str] | None = None,
    segment_s: float = SEGMENT_S,
    durations_s: Mapping[str, float] | None = None,
) -> DetectionReport:
    """Segment-based counts: class activity compared in fixed segments.

    Parameters
    ----------
    reference, estimated : sequence of Event
    class_names : sequence of str, optional
        Classes to report; default: every label seen.
    segment_s : float
        Segment length, seconds (1 s in DCASE).
    durations_s : mapping file -> seconds, optional
        Evaluated length of each file; default: the latest offset among its reference and
        estimated events. Files listed here with no event count as empty.

    Returns
    -------
    DetectionReport
        kind "segment"; counts are in segments.
    """
    names = _resolve_classes(reference, estimated, class_names)
    index = {n: i for i, n in enumerate(names)}
    by_file: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for e in reference:
        by_file[e.file][0].append((e.onset_s, e.offset_s, index[e.label]))
    for e in estimated:
        by_file[e.file][1].append((e.onset_s, e.offset_s, index[e.label]))
    for f in durations_s or {}:
        by_file[f]
    n_ref, n_sys, n_tp = (np.zeros(len(names), dtype=np.int64) for _ in range(3))
    for file, (ref, est) in by_file.items():
        if durations_s is not None and file in durations_s:
            length_s = float(durations_s[file])
        else:
            length_s = max([off for _, off, _ in ref + est], default=0.0)
        n_segments = int(math.ceil(length_s / segment_s))
        r = _segment_roll(ref, n_segments, len(names), segment_s)[:n_segments]
        s = _segment_roll(est, n_segments, len(names), segment_s)[:n_segments]
        n_ref += r.sum(axis=0)
        n_sys += s.sum(axis=0)
        n_tp += (r & s).sum(axis=0)
    return DetectionReport("segment", names, n_ref, n_sys, n_tp)
