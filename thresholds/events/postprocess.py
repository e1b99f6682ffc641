"""Sound event detection post-processing: frame scores -> per-class smoothing -> binarisation -> events.

The stack applied to each class column of a model's frame scores (``FrameScores`` of the pipeline):

1. smoothing: none, a running median (``scipy.ndimage.median_filter``) or a moving average
   (``scipy.ndimage.uniform_filter1d``), kernel in frames, edges extended with the nearest value;
2. binarisation: a single threshold (``score > threshold``, strict as in SGL-Thresh) or
   hysteresis (a run of frames above ``low`` that holds at least one frame above ``threshold``);
3. gaps between two events shorter than ``min_gap_s`` are filled;
4. events shorter than ``min_duration_s`` are dropped.

Frame ``t`` covers ``[t * hop, (t + 1) * hop)``; an event made of frames ``a..b-1`` spans
``[a * hop, b * hop)`` seconds. Events are written and read in the DCASE TSV layout by
:mod:`calitag.thresholds.events.tsv`.

The ``events`` section of a thresholds file is :meth:`Postprocess.to_dict`::

    {"format_version": 1, "frame_hop_s": 0.02322, "classes": {
        "Speech": {"smoothing": "median", "kernel_frames": 9, "binarize": "threshold",
                   "threshold": 0.42, "min_duration_s": 0.1, "min_gap_s": 0.2},
        "Dog": {"smoothing": "mean", "kernel_frames": 13, "binarize": "hysteresis",
                "high": 0.6, "low": 0.3, "min_duration_s": 0.0, "min_gap_s": 0.0}},
     "fitted": {...}}
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence

import numpy as np

from calitag._fileio import MAX_JSON_BYTES, parse_json, read_input
from calitag.errors import ScoresError, ThresholdsError, ThresholdsMismatchError

Smoothing = Literal["none", "median", "mean"]
SMOOTHING_KINDS: tuple[str, ...] = ("none", "median", "mean")
EVENTS_FORMAT_VERSION = 1
# Two frame hops closer than this are the same frame rate (float round-off in JSON).
_HOP_TOLERANCE_S = 1e-6
#: Longest smoothing kernel: 100 s at 10 ms frames; longer ones cost memory and time for nothing.
MAX_KERNEL_FRAMES = 10_001
#: Latest onset/offset accepted in an events table: 10^6 s (11.6 days).
MAX_EVENT_TIME_S = 1e6

logger = logging.getLogger(__name__)


class FrameScoresLike(Protocol):
    """What the stack reads of a recording's frame scores (``calitag.pipeline.FrameScores`` has it).

    probs: float array in [0, 1], shape (n_frames, n_classes).
    """

    probs: np.ndarray
    frame_hop_s: float
    class_names: tuple[str, ...]
    model: str
    source: str


@dataclass(frozen=True, order=True)
class Event:
    """One detected or annotated sound event.

    file: the recording's name as written in event tables (usually the base name).
    onset_s, offset_s: start and end in seconds from the start of the recording.
    label: the class name.
    """

    file: str
    onset_s: float
    offset_s: float
    label: str

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


@dataclass(frozen=True)
class ClassPostprocess:
    """Post-processing parameters of one class.

    smoothing: "none", "median" or "mean" (moving average).
    kernel_frames: smoothing window in frames (1 = no smoothing).
    threshold: a frame is active when its smoothed score is > threshold; with hysteresis this is
        the high threshold an event must reach.
    low: hysteresis low threshold (an event extends over frames > low); None for a single threshold.
    min_duration_s: events shorter than this are dropped (after gap filling).
    min_gap_s: two events of the class closer than this are merged.
    """

    smoothing: Smoothing = "none"
    kernel_frames: int = 1
    threshold: float = 0.5
    low: float | None = None
    min_duration_s: float = 0.0
    min_gap_s: float = 0.0

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_KINDS:
            raise ThresholdsError(
                f"smoothing must be one of {', '.join(SMOOTHING_KINDS)}, got {self.smoothing!r}"
            )
        if isinstance(self.kernel_frames, bool) or not isinstance(self.kernel_frames, (int, np.integer)):
            raise ThresholdsError(
                f"kernel_frames must be a whole number of frames, got {self.kernel_frames!r}"
            )
        if not 1 <= self.kernel_frames <= MAX_KERNEL_FRAMES:
            raise ThresholdsError(
                f"kernel_frames must be between 1 and {MAX_KERNEL_FRAMES}, got {self.kernel_frames}"
            )
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ThresholdsError(f"threshold must be a finite value in [0, 1], got {self.threshold!r}")
        if self.low is not None and not (
            math.isfinite(self.low) and 0.0 <= self.low <= self.threshold
        ):
            raise ThresholdsError(
                f"hysteresis low threshold must be in [0, high={self.threshold}], got {self.low!r}; "
                "fix: lower 'low' or raise 'high'"
            )
        for name in ("min_duration_s", "min_gap_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ThresholdsError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    @property
    def binarize(self) -> Literal["threshold", "hysteresis"]:
        return "threshold" if self.low is None or self.low == self.threshold else "hysteresis"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of these parameters (see the module docstring)."""
        out: dict[str, Any] = {"smoothing": self.smoothing, "kernel_frames": int(self.kernel_frames)}
        if self.binarize == "threshold":
            out.update(binarize="threshold", threshold=float(self.threshold))
        else:
            out.update(binarize="hysteresis", high=float(self.threshold), low=float(self.low))
        out.update(min_duration_s=float(self.min_duration_s), min_gap_s=float(self.min_gap_s))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "<dict>") -> "ClassPostprocess":
        """Parse the JSON form written by :meth:`to_dict`.

        Raises
        ------
        ThresholdsError
            If a key is missing or unknown, or a value is out of range; the message names ``where``.
        """
        if not isinstance(data, Mapping):
            raise ThresholdsError(f"{where}: expected an object of parameters, got {type(data).__name__}")
        known = {"smoothing", "kernel_frames", "binarize", "threshold", "high", "low",
                 "min_duration_s", "min_gap_s"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ThresholdsError(f"{where}: unknown keys {unknown}; expected a subset of {sorted(known)}")
        binarize = data.get("binarize", "hysteresis" if "high" in data else "threshold")
        try:
            if binarize == "threshold":
                threshold, low = float(data["threshold"]), None
            elif binarize == "hysteresis":
                threshold, low = float(data["high"]), float(data["low"])
            else:
                raise ThresholdsError(
                    f"{where}: binarize must be 'threshold' or 'hysteresis', got {binarize!r}"
                )
            kernel = data.get("kernel_frames", 1)
            if isinstance(kernel, float) and kernel.is_integer():
                kernel = int(kernel)
            return cls(
                smoothing=data.get("smoothing", "none"),
                kernel_frames=kernel,
                threshold=threshold,
                low=low,
                min_duration_s=float(data.get("min_duration_s", 0.0)),
                min_gap_s=float(data.get("min_gap_s", 0.0)),
            )
        except KeyError as e:
            raise ThresholdsError(f"{where}: missing key {e.args[0]!r} for binarize={binarize!r}") from e
        except (TypeError, ValueError) as e:
            raise ThresholdsError(f"{where}: {e}") from e
        except ThresholdsError as e:
            raise ThresholdsError(f"{where}: {e}") from e


@dataclass(frozen=True)
class Postprocess:
    """Per-class post-processing of a model's frame scores.

    class_names: the model's classes, in column order.
    params: one :class:`ClassPostprocess` per class.
    frame_hop_s: the frame hop the kernels were chosen for (None: any).
    fitted: how the parameters were obtained (metric, score, seconds, ...), kept in the file.
    """

    class_names: tuple[str, ...]
    params: tuple[ClassPostprocess, ...]
    frame_hop_s: float | None = None
    fitted: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.params):
            raise ThresholdsError(
                f"expected one parameter set per class ({len(self.class_names)}), got {len(self.params)}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ThresholdsError("class names must be unique")
        if self.frame_hop_s is not None and not (
            math.isfinite(self.frame_hop_s) and self.frame_hop_s > 0
        ):
            raise ThresholdsError(f"frame_hop_s must be > 0, got {self.frame_hop_s!r}")

    @classmethod
    def uniform(
        cls,
        class_names: Sequence[str],
        params: ClassPostprocess | None = None,
        *,
        frame_hop_s: float | None = None,
    ) -> "Postprocess":
        """The same parameters for every class (default: threshold 0.5, no smoothing)."""
        params = params if params is not None else ClassPostprocess()
        return cls(tuple(class_names), (params,) * len(class_names), frame_hop_s=frame_hop_s)

    def __getitem__(self, label: str) -> ClassPostprocess:
        return self.params[self.class_names.index(label)]

    def for_classes(self, class_names: Sequence[str], *, source: str = "<events>") -> "Postprocess":
        """The same parameters in the model's class order.

        Raises
        ------
        ThresholdsMismatchError
            The parameters name other classes than ``class_names``.
        """
        names = tuple(class_names)
        if set(names) != set(self.class_names):
            missing = sorted(set(names) - set(self.class_names))
            extra = sorted(set(self.class_names) - set(names))
            raise ThresholdsMismatchError(
                f"{source}: events section does not fit the model's classes: missing {missing}, "
                f"unknown {extra}; fix: calibrate events for this model"
            )
        order = [self.class_names.index(n) for n in names]
        return Postprocess(names, tuple(self.params[i] for i in order), frame_hop_s=self.frame_hop_s,
                           fitted=self.fitted)

    def to_dict(self) -> dict[str, Any]:
        """The ``events`` section of a thresholds file (JSON-serialisable)."""
        return {
            "format_version": EVENTS_FORMAT_VERSION,
            "frame_hop_s": self.frame_hop_s,
            "classes": {name: p.to_dict() for name, p in zip(self.class_names, self.params)},
            "fitted": dict(self.fitted),
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        class_names: Sequence[str] | None = None,
        source: str = "<dict>",
    ) -> "Postprocess":
        """Parse an ``events`` section, checking it against the model's classes when given.

        Parameters
        ----------
        data : mapping
            The ``events`` section (see the module docstring).
        class_names : sequence of str, optional
            The model's classes; the section must name exactly these (in any order) and the result
            follows this order.
        source : str
            The file it came from, for error messages.

        Raises
        ------
        ThresholdsError
            Malformed section or values out of range.
        ThresholdsMismatchError
            The section names other classes than the model's.
        """
        if not isinstance(data, Mapping) or "classes" not in data:
            raise ThresholdsError(
                f"{source}: expected an events section with a 'classes' object, got "
                f"{sorted(data) if isinstance(data, Mapping) else type(data).__name__}"
            )
        version = data.get("format_version", EVENTS_FORMAT_VERSION)
        if version != EVENTS_FORMAT_VERSION:
            raise ThresholdsError(
                f"{source}: events format_version {version!r} is not supported "
                f"(expected {EVENTS_FORMAT_VERSION}); fix: re-run calitag calibrate-events"
            )
        classes = data["classes"]
        if not isinstance(classes, Mapping) or not classes:
            raise ThresholdsError(f"{source}: 'classes' must be a non-empty object of class -> parameters")
        names = tuple(classes)
        params = tuple(
            ClassPostprocess.from_dict(classes[n], where=f"{source}: events.classes[{n!r}]") for n in names
        )
        hop = data.get("frame_hop_s")
        try:
            hop = None if hop is None else float(hop)
        except (TypeError, ValueError) as e:
            raise ThresholdsError(f"{source}: frame_hop_s must be a number, got {hop!r}") from e
        fitted = data.get("fitted") or {}
        parsed = cls(names, params, frame_hop_s=hop, fitted=dict(fitted))
        return parsed if class_names is None else parsed.for_classes(class_names, source=source)


# --- the stack ----------------------------------------------------------------------------


def smooth(scores: np.ndarray, *, kind: Smoothing, kernel_frames: int) -> np.ndarray:
    """Smooth score curves along time.

    Parameters
    ----------
    scores : np.ndarray, shape (n_frames,) or (n_frames, n_columns)
        Frame scores; each column is smoothed on its own.
    kind : {"none", "median", "mean"}
        Running median or moving average; "none" (or a kernel of 1) returns the input.
    kernel_frames : int
        Window length in frames; edges are extended with the nearest value.

    Returns
    -------
    np.ndarray
        Same shape as ``scores``, float64.
    """
    x = np.asarray(scores, dtype=np.float64)
    if kind == "none" or kernel_frames <= 1:
        return x
    if kernel_frames > MAX_KERNEL_FRAMES:
        raise ThresholdsError(f"kernel_frames must be at most {MAX_KERNEL_FRAMES}, got {kernel_frames}")
    from scipy import ndimage  # on first use: keeps `import calitag.thresholds` light
    if kind == "median":
        size = (kernel_frames,) + (1,) * (x.ndim - 1)
        return ndimage.median_filter(x, size=size, mode="nearest")
    if kind == "mean":
        y = ndimage.uniform_filter1d(x, size=kernel_frames, axis=0, mode="nearest")
        # The running sum leaves round-off of ~1e-16 outside the input's range (e.g. below 0).
        return np.clip(y, x.min(axis=0), x.max(axis=0)) if x.size else y
    raise ThresholdsError(f"smoothing must be one of {', '.join(SMOOTHING_KINDS)}, got {kind!r}")


def binarize(scores: np.ndarray, *, threshold: float, low: float | None = None) -> np.ndarray:
    """Active frames of one score curve.

    Parameters
    ----------
    scores : np.ndarray, shape (n_frames,)
    threshold : float
        A frame is active when its score is > threshold (the high threshold with hysteresis).
    low : float, optional
        Hysteresis: a run of frames > low is active when it holds a frame > threshold.

    Returns
    -------
    np.ndarray of bool, shape (n_frames,)
    """
    x = np.asarray(scores)
    high_mask = x > threshold
    if low is None or low >= threshold:
        return high_mask
    from scipy import ndimage
    runs, n_runs = ndimage.label(x > low)
    if n_runs == 0:
        return high_mask
    keep = np.zeros(n_runs + 1, dtype=bool)
    keep[np.unique(runs[high_mask])] = True
    keep[0] = False
    return keep[runs]


def runs_of(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) frame indices of the runs of True in a 1-D mask."""
    a = np.asarray(active, dtype=np.int8)
    edges = np.diff(np.concatenate(([0], a, [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def clean_segments(
    onsets_s: np.ndarray, offsets_s: np.ndarray, *, min_gap_s: float, min_duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Merge segments separated by less than ``min_gap_s``, then drop those shorter than ``min_duration_s``.

    Parameters
    ----------
    onsets_s, offsets_s : np.ndarray, shape (n,)
        Sorted, non-overlapping segments of one class in one recording.

    Returns
    -------
    onsets_s, offsets_s : np.ndarray
    """
    on = np.asarray(onsets_s, dtype=np.float64)
    off = np.asarray(offsets_s, dtype=np.float64)
    if len(on) > 1 and min_gap_s > 0:
        # A gap closes when it is shorter than min_gap_s; a tiny tolerance absorbs frame round-off.
        keep_break = (on[1:] - off[:-1]) >= min_gap_s - 1e-9
        starts = np.concatenate(([True], keep_break))
        ends = np.concatenate((keep_break, [True]))
        on, off = on[starts], off[ends]
    if min_duration_s > 0 and len(on):
        long_enough = (off - on) >= min_duration_s - 1e-9
        on, off = on[long_enough], off[long_enough]
    return on, off


def decode_class(
    scores: np.ndarray, params: ClassPostprocess, *, frame_hop_s: float, smoothed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Run the stack on one class curve of one recording.

    Parameters
    ----------
    scores : np.ndarray, shape (n_frames,)
    params : ClassPostprocess
    frame_hop_s : float
        Seconds between frames.
    smoothed : bool
        True when ``scores`` are already smoothed with ``params``' kernel (the tuner reuses them).

    Returns
    -------
    onsets_s, offsets_s : np.ndarray, shape (n_events,)
    """
    x = scores if smoothed else smooth(scores, kind=params.smoothing, kernel_frames=params.kernel_frames)
    starts, ends = runs_of(binarize(x, threshold=params.threshold, low=params.low))
    return clean_segments(
        starts * frame_hop_s,
        ends * frame_hop_s,
        min_gap_s=params.min_gap_s,
        min_duration_s=params.min_duration_s,
    )


def detect_events(
    frame_scores: FrameScoresLike, postprocess: Postprocess, *, file: str | None = None
) -> list[Event]:
    """Turn the frame scores of one recording into events.

    Parameters
    ----------
    frame_scores : FrameScoresLike
        probs of shape (n_frames, n_classes) in [0, 1].
    postprocess : Postprocess
        Per-class parameters; its classes must be the scores' classes (any order).
    file : str, optional
        The name written in the events; default: the base name of ``frame_scores.source``.

    Returns
    -------
    list of Event
        Sorted by onset, then label.

    Raises
    ------
    ScoresError
        Scores of the wrong shape or with NaN/inf.
    ThresholdsMismatchError
        Parameters made for other classes or another frame rate.
    """
    probs = np.asarray(frame_scores.probs)
    source = frame_scores.source
    if probs.ndim != 2 or probs.shape[1] != len(frame_scores.class_names):
        raise ScoresError(
            f"{source}: expected frame scores of shape (n_frames, {len(frame_scores.class_names)}), "
            f"got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise ScoresError(f"{source}: frame scores contain NaN or inf")
    if set(postprocess.class_names) != set(frame_scores.class_names):
        raise ThresholdsMismatchError(
            f"post-processing parameters are for classes {list(postprocess.class_names)[:5]}..., "
            f"the scores of {source} ({frame_scores.model}) have {list(frame_scores.class_names)[:5]}...; "
            "fix: use an events section calibrated for this model"
        )
    hop = frame_scores.frame_hop_s
    if postprocess.frame_hop_s is not None and abs(postprocess.frame_hop_s - hop) > _HOP_TOLERANCE_S:
        raise ThresholdsMismatchError(
            f"post-processing kernels were fitted for a frame hop of {postprocess.frame_hop_s:.6f} s, "
            f"{frame_scores.model} scores of {source} have {hop:.6f} s; fix: calibrate events for this model"
        )
    name = file if file is not None else os.path.basename(source)
    events: list[Event] = []
    for col, label in enumerate(frame_scores.class_names):
        on, off = decode_class(probs[:, col], postprocess[label], frame_hop_s=hop)
        events.extend(Event(name, float(a), float(b), label) for a, b in zip(on, off))
    events.sort(key=lambda e: (e.onset_s, e.label, e.offset_s))
    return events


# --- the authors' parameters of the DCASE2019 CRNN ---------------------------------------------

CRNN_DCASE2019_FRAME_HOP_S = 512 / 22_050


def read_json(source: str, *, what: str) -> Any:
    """The parsed JSON of a post-processing file (the authors' file here, any layout in :mod:`calitag.thresholds.io`).

    Parameters
    ----------
    source : str
        The file's path.
    what : str
        What the file is, for the message when it is missing (e.g. "post-processing file").

    Returns
    -------
    Any
        The parsed document.

    Raises
    ------
    ThresholdsError
        The file is missing, unreadable, not a regular file, over :data:`calitag._fileio.MAX_JSON_BYTES`, not
        UTF-8, not JSON, or holds a number out of range (``1e400``, a 5,000-digit integer).
    """
    data = read_input(source, what=what, error=ThresholdsError, max_bytes=MAX_JSON_BYTES)
    return parse_json(data, source=source, what=what, error=ThresholdsError)


def postprocess_from_authors(
    path_or_data: str | os.PathLike | Mapping[str, Any],
    *,
    frame_hop_s: float = CRNN_DCASE2019_FRAME_HOP_S,
) -> Postprocess:
    """Convert the DCASE2019 CRNN authors' ``localization_hysteresis`` parameters to a :class:`Postprocess`.

    The shipped file gives per class a moving-average window (``window_frames``, fractional; their
    code truncates it to an integer) and hysteresis ``high``/``low``. Their decoder starts an event
    when the score exceeds ``high`` and ends it when the score falls below ``low``; a ``low`` above
    ``high`` therefore acts as a single threshold at ``high``, which is how it is converted.

    Parameters
    ----------
    path_or_data : path or mapping
        ``crnn_dcase2019_pellegrini_irit_task4_1.thresholds.json`` or its parsed content.
    frame_hop_s : float
        The CRNN's frame hop (512 / 22050 s).

    Returns
    -------
    Postprocess

    Raises
    ------
    ThresholdsError
        If the file is missing, is not JSON, or lacks ``classes`` / ``localization_hysteresis``.
    """
    if isinstance(path_or_data, Mapping):
        data, source = path_or_data, "<dict>"
    else:
        source = str(path_or_data)
        data = read_json(source, what="authors' parameters file")
    try:
        classes = list(data["classes"])
        hyst = data["localization_hysteresis"]
        high, low, windows = list(hyst["high"]), list(hyst["low"]), list(hyst["window_frames"])
        kind = hyst.get("smoothing", "moving average")
    except (KeyError, TypeError) as e:
        raise ThresholdsError(
            f"{source}: expected 'classes' and 'localization_hysteresis' with 'high', 'low' and "
            f"'window_frames' lists, missing {e}"
        ) from e
    if not (len(classes) == len(high) == len(low) == len(windows)):
        raise ThresholdsError(
            f"{source}: expected one high/low/window per class ({len(classes)}), got "
            f"{len(high)}/{len(low)}/{len(windows)}"
        )
    smoothing: Smoothing = "median" if "median" in str(kind) else "mean"
    params = []
    for h, lo, w in zip(high, low, windows):
        h, lo = float(h), float(lo)
        params.append(
            ClassPostprocess(
                smoothing=smoothing,
                kernel_frames=max(1, int(w)),
                threshold=h,
                low=None if lo >= h else lo,
            )
        )
    return Postprocess(
        tuple(classes),
        tuple(params),
        frame_hop_s=frame_hop_s,
        fitted={"source": "authors' localization_hysteresis", "file": os.path.basename(source)},
    )
