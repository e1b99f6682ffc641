"""What every batch engine shares: the per-file result, progress counts, the windowing and the one fold.

An engine (:mod:`calitag.pipeline.local_engine`, :mod:`calitag.pipeline.ray_engine`) turns a list of
files into one :class:`FileResult` per file: it cuts each file into windows (:meth:`Windowing.windows`),
scores them where it likes, and folds each file's window scores with :class:`FileFold`, which holds the
one aggregation of window scores (:class:`calitag.pipeline.audio.RunningAggregate`) and, with segments,
the file's clip score as the maximum over its segments. Engines decide no tags and write no records:
:func:`calitag.pipeline.batch.run_batch` does both, once for every engine.

This module imports neither torch nor the Tagger: decoder processes and Ray workers import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from calitag.errors import ArgumentTypeError, AudioError, TaggingError
from calitag.pipeline.audio import (
    Aggregate, RunningAggregate, Window, _sizes, check_finite_scores, split_segments, stream_audio, window_chunks,
)
from calitag.pipeline.types import SegmentScores

if TYPE_CHECKING:
    from calitag.models.registry import ModelSpec

#: A tag: (class name, score).
Tag = tuple[str, float]


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: its clip scores and tags, or the error that stopped it.

    scores: float32 (n_classes,) or None when ``error`` is set.
    tags: (label, score) pairs that passed their thresholds, by decreasing score (empty when no tags were asked).
    notes: what went wrong on the way and was recovered (a decoder died and the file was read again).
    segments: with ``segment_s``, the scores of each consecutive segment (``scores`` is their maximum);
      segment_tags: the tags of each segment, as ``tags``.
    """

    path: str
    duration_s: float | None
    scores: np.ndarray | None
    tags: tuple[Tag, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()
    segments: SegmentScores | None = None
    segment_tags: tuple[tuple[Tag, ...], ...] = ()


@dataclass(frozen=True)
class BatchProgress:
    """Counts reported after each model batch and each file.

    audio_s: seconds of audio scored so far (files done plus the scored part of files in progress);
    audio_total_s: the seconds of all files when known, else None.
    """

    done: int
    total: int
    failed: int
    elapsed_s: float
    audio_s: float = 0.0
    audio_total_s: float | None = None


def check_segment_s(segment_s: float | None) -> None:
    """Raise AudioError unless ``segment_s`` is None or a positive finite number of seconds."""
    if segment_s is None:
        return
    if isinstance(segment_s, bool) or not isinstance(segment_s, (int, float)) or not math.isfinite(segment_s) \
            or segment_s <= 0:
        raise AudioError(f"segment_s must be a positive number of seconds, got {segment_s!r}")


def check_top_k(top_k: int | None) -> None:
    """The one check of ``top_k`` (tags kept per recording), for :meth:`Tagger.tag` and :func:`run_batch` alike.

    Raises
    ------
    ArgumentTypeError
        ``top_k`` is not None or an integer (1.5, "3", True).
    AudioError
        ``top_k`` is below 1 (0 would keep no tag; None keeps them all).
    """
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ArgumentTypeError(f"top_k must be a whole number >= 1 or None, got {type(top_k).__name__} {top_k!r}")
    if top_k < 1:
        raise AudioError(f"top_k must be at least 1, got {top_k}; pass None to keep every tag")


@dataclass(frozen=True)
class Windowing:
    """How a file becomes analysis windows: the model's rate and windows, and optional segments.

    With ``segment_s``, the recording is cut into consecutive segments of that many seconds (the last
    one shorter) and each segment is windowed as a recording of its own, as
    :meth:`calitag.pipeline.tagger.Tagger.segment_scores` does.
    """

    sample_rate: int
    window_s: float
    hop_s: float
    min_window_s: float | None = None
    segment_s: float | None = None

    @classmethod
    def of(cls, spec: ModelSpec, *, segment_s: float | None = None) -> Windowing:
        """The windowing of a registered model.

        Raises
        ------
        AudioError
            A ``segment_s`` that is not a positive finite number.
        """
        check_segment_s(segment_s)
        return cls(spec.frontend.sample_rate, spec.window_s, spec.hop_s, spec.min_window_s, segment_s)

    @property
    def segment_samples(self) -> int | None:
        """Samples per segment, or None without segments."""
        return None if self.segment_s is None else max(1, int(round(self.segment_s * self.sample_rate)))

    def windows(self, path: str) -> Iterator[tuple[int, Window]]:
        """The (segment index, window) pairs of one file, read in blocks (see :meth:`cut`).

        Raises
        ------
        AudioLoadError, AudioError
            An unreadable file, or one without samples.
        """
        yield from self.cut(stream_audio(path, sample_rate=self.sample_rate), source=path)

    def cut(self, chunks: Iterable[np.ndarray], *, source: str) -> Iterator[tuple[int, Window]]:
        """The (segment index, window) pairs of a recording given as consecutive chunks at ``sample_rate``;
        ``window.start`` counts from the recording's first sample. Without segments every index is 0.

        Raises
        ------
        AudioError
            A recording without samples.
        """
        window, hop, min_length = _sizes(self.sample_rate, self.window_s, self.hop_s, self.min_window_s)
        if self.segment_samples is None:
            for cut in window_chunks(chunks, window=window, hop=hop, min_length=min_length, source=source):
                yield 0, cut
            return
        for index, (start, samples) in enumerate(split_segments(chunks, segment_samples=self.segment_samples)):
            for cut in window_chunks([samples], window=window, hop=hop, min_length=min_length, source=source):
                yield index, Window(samples=cut.samples, start=start + cut.start, n_valid=cut.n_valid)

    def bounds_s(self, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """The start and end, in seconds, of each segment of a recording of ``n_samples``."""
        step = self.segment_samples or max(n_samples, 1)
        starts = list(range(0, n_samples, step))
        return (np.array([s / self.sample_rate for s in starts]),
                np.array([min(s + step, n_samples) / self.sample_rate for s in starts]))


class FileFold:
    """One file's window scores, folded as they arrive into its clip score (and its segments' scores).

    The one fold of every engine: each segment (the whole file without segments) folds its windows with
    :class:`RunningAggregate`; a segmented file's clip score is the maximum over its segments. A window
    with non-finite scores makes the file an error.

    Raises
    ------
    AudioError
        An unknown aggregation.
    """

    def __init__(self, source: str, *, how: Aggregate = "max") -> None:
        RunningAggregate(how)  # checks the name
        self.source = source
        self.how = how
        self.count = 0
        self.error: str | None = None
        self._segments: dict[int, RunningAggregate] = {}

    def add(self, window_scores: np.ndarray, *, segment: int = 0, samples: np.ndarray | None = None) -> None:
        """Fold the scores (n_classes,) of one window of ``segment``; ``samples`` name its peak in an error."""
        try:
            check_finite_scores(window_scores, samples, self.source)
        except TaggingError as err:
            self.error = self.error or str(err)
        self._segments.setdefault(segment, RunningAggregate(self.how)).add(window_scores)
        self.count += 1

    def result(self, *, n_samples: int, windowing: Windowing, class_names: tuple[str, ...], model: str,
               notes: tuple[str, ...] = ()) -> FileResult:
        """The file's result once all its windows are folded (an error result if it has none, or failed)."""
        if self.error is not None or not self.count:
            return FileResult(path=self.source, duration_s=None, scores=None, notes=notes,
                              error=self.error or f"{self.source}: no audio windows")
        rows = np.stack([self._segments[k].result() for k in sorted(self._segments)]).astype(np.float32)
        segments = None
        if windowing.segment_s is not None:
            starts_s, ends_s = windowing.bounds_s(n_samples)
            segments = SegmentScores(probs=rows, starts_s=starts_s, ends_s=ends_s, class_names=class_names,
                                     model=model, source=self.source)
        return FileResult(path=self.source, duration_s=n_samples / windowing.sample_rate, scores=rows.max(axis=0),
                          notes=notes, segments=segments)
