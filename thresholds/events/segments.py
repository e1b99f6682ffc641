"""Scored events for review: tagged segments (or detected events) with a score, merged into events.

A timeline of segment tags (``calitag tag --segment-s``) or the events of ``calitag detect`` become
:class:`ScoredEvent` objects, the one input of the review writers (Raven selection tables, Audacity
labels). Consecutive segments with the same tag are joined by :func:`segment_events` with the gap
filling of the event stack (:func:`calitag.thresholds.events.postprocess.clean_segments`); the joined
event keeps the highest score of its segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calitag.errors import ScoresError
from calitag.thresholds.events.postprocess import Event, FrameScoresLike, clean_segments

#: Gaps this much wider than ``merge_gap_s`` still merge (float round-off of segment bounds).
_GAP_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class ScoredEvent:
    """An event with the score that made it: a tagged segment, a merge of them, or a detected event.

    file: the recording's name as written in event tables.
    onset_s, offset_s: span in seconds from the start of the recording.
    label: the class name.
    score: the highest score of the class over the span (None when a file read back has none).
    """

    file: str
    onset_s: float
    offset_s: float
    label: str
    score: float | None = None


def top_labels(probs: np.ndarray, class_names: Sequence[str], n: int) -> list[tuple[tuple[str, float], ...]]:
    """The ``n`` highest-scoring classes of each row, by decreasing score, whatever the thresholds.

    Parameters
    ----------
    probs : numpy.ndarray, shape (n_rows, n_classes)
    class_names : sequence of str
    n : int
        Classes kept per row (>= 1); ties keep class order.

    Raises
    ------
    ScoresError
        ``n`` < 1 or scores that do not match the class names.
    """
    rows = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if n < 1:
        raise ScoresError(f"top-n keeps at least one class per segment, got {n}")
    if rows.shape[1] != len(class_names):
        raise ScoresError(f"scores have {rows.shape[1]} classes, the class list {len(class_names)}")
    order = np.argsort(-rows, axis=1, kind="stable")[:, :n]
    return [tuple((class_names[i], float(row[i])) for i in idx) for row, idx in zip(rows, order)]


def segment_events(
    starts_s: Sequence[float], ends_s: Sequence[float], labels: Sequence[Sequence[tuple[str, float]]], *,
    file: str, merge_gap_s: float | None = None,
) -> list[ScoredEvent]:
    """The tags of a timeline as events: one per segment and tag, or merged runs.

    Parameters
    ----------
    starts_s, ends_s : sequence of float, shape (n_segments,)
        Segment bounds, in time order.
    labels : sequence of (label, score) tuples, one per segment
        The tags of each segment (the thresholds' decision, or :func:`top_labels`).
    file : str
        The recording's name in the events.
    merge_gap_s : float or None
        None: one event per segment and tag. Else segments of the same tag separated by at most this
        many seconds (0: touching) become one event, scored with the maximum of their scores.

    Returns
    -------
    list of ScoredEvent
        Sorted by onset, then label.
    """
    by_label: dict[str, list[tuple[float, float, float]]] = {}
    for start, end, tags in zip(starts_s, ends_s, labels):
        for label, score in tags:
            by_label.setdefault(label, []).append((float(start), float(end), float(score)))
    events = []
    for label, runs in by_label.items():
        on, off, scores = (np.array(column) for column in zip(*runs))
        if merge_gap_s is None:
            events.extend(ScoredEvent(file, a, b, label, s) for a, b, s in zip(on, off, scores))
            continue
        # clean_segments fills gaps shorter than min_gap_s: a gap of exactly merge_gap_s is filled too.
        merged_on, merged_off = clean_segments(on, off, min_gap_s=merge_gap_s + _GAP_TOLERANCE_S, min_duration_s=0.0)
        group = np.searchsorted(merged_on, on, side="right") - 1
        best = np.full(len(merged_on), -np.inf)
        np.maximum.at(best, group, scores)
        events.extend(ScoredEvent(file, float(a), float(b), label, float(s))
                      for a, b, s in zip(merged_on, merged_off, best))
    return sorted(events, key=lambda e: (e.onset_s, e.label, e.offset_s))


def score_events(events: Sequence[Event], frame_scores: FrameScoresLike) -> list[ScoredEvent]:
    """Detected events with their score: the highest raw frame score of the class over the event's frames."""
    probs = np.asarray(frame_scores.probs)
    column = {name: i for i, name in enumerate(frame_scores.class_names)}
    hop = frame_scores.frame_hop_s
    out = []
    for event in events:
        first = int(np.floor(event.onset_s / hop + 1e-6))
        last = max(first + 1, int(np.ceil(event.offset_s / hop - 1e-6)))
        out.append(ScoredEvent(event.file, event.onset_s, event.offset_s, event.label,
                               float(probs[first:last, column[event.label]].max())))
    return out
