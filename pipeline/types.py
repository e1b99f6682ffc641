"""The typed objects that travel between the stages: Waveform -> Scores -> Tags.

The features between them (log-Mel, on the model's device) stay inside the model backend
(:mod:`calitag.models.backends`), which maps windows of a Waveform to Scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Waveform:
    """A mono recording at a known rate.

    samples: float32 array, shape (n_samples,).
    sample_rate: samples per second.
    source: where it came from (a path, or "<array>"), used in error messages.
    """

    samples: np.ndarray
    sample_rate: int
    source: str = "<array>"

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Scores:
    """Clip-level class scores of one or more recordings.

    probs: float array in [0, 1], shape (n_clips, n_classes).
    class_names: one name per column.
    model: registry name of the model that made them.
    sources: one entry per row (path or "<array>").
    """

    probs: np.ndarray
    class_names: tuple[str, ...]
    model: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrameScores:
    """Frame-level class scores of one recording.

    probs: float array in [0, 1], shape (n_frames, n_classes).
    frame_hop_s: seconds between consecutive frames.
    """

    probs: np.ndarray
    frame_hop_s: float
    class_names: tuple[str, ...]
    model: str
    source: str = "<array>"


@dataclass(frozen=True)
class SegmentScores:
    """Clip scores of consecutive segments of one recording: a timeline.

    probs: float array in [0, 1], shape (n_segments, n_classes), one row per segment.
    starts_s, ends_s: float arrays, shape (n_segments,): each segment's span in seconds (the
      last one ends with the recording).
    """

    probs: np.ndarray
    starts_s: np.ndarray
    ends_s: np.ndarray
    class_names: tuple[str, ...]
    model: str
    source: str = "<array>"


@dataclass(frozen=True)
class Tags:
    """The decision for one recording: the labels whose score passed their threshold.

    labels: (label, score) pairs sorted by decreasing score.
    """

    source: str
    labels: tuple[tuple[str, float], ...]
    model: str
