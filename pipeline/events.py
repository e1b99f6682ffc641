"""Sound event detection post-processing: frame scores -> per-class smoothing -> binarisation -> events.

The stack applied to each class column of a :class:`~calitag.pipeline.types.FrameScores`:

1. smoothing: none, a running median (``scipy.ndimage.median_filter``) or a moving average
   (``scipy.ndimage.uniform_filter1d``), kernel in frames, edges extended with the nearest value;
2. binarisation: a single threshold (``score > threshold``, strict as in SGL-Thresh) or
   hysteresis (a run of frames above ``low`` that holds at least one frame above ``threshold``);
3. gaps between two events shorter than ``min_gap_s`` are filled;
4. events shorter than ``min_duration_s`` are dropped.

Frame ``t`` covers ``[t * hop, (t + 1) * hop)``; an event made of frames ``a..b-1`` spans
``[a * hop, b * hop)`` seconds. Events are written and read in the DCASE TSV layout
(``filename<TAB>onset<TAB>offset<TAB>event_label`` with that header).

The ``events`` section of a thresholds file is :meth:`Postprocess.to_dict`::

    {"format_version": 1, "frame_hop_s": 0.02322, "classes": {
        "Speech": {"smoothing": "median", "kernel_frames": 9, "binarize": "threshold",
                   "threshold": 0.42, "min_duration_s": 0.1, "min_gap_s": 0.2},
        "Dog": {"smoothing": "mean", "kernel_frames": 13, "binarize": "hysteresis",
                "high": 0.6, "low": 0.3, "min_duration_s": 0.0, "min_gap_s": 0.0}},
     "fitted": {...}}
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

from calitag._fileio import write_atomic
from calitag.errors import LabelsError, OutputError, ScoresError, ThresholdsError, ThresholdsMismatchError
from calitag.pipeline.types import FrameScores

Smoothing = Literal["none", "median", "mean"]
SMOOTHING_KINDS: tuple[str, ...] = ("none", "median", "mean")
EVENTS_FORMAT_VERSION = 1
TSV_HEADER = ("filename", "onset", "offset", "event_label")
# Two frame hops closer than this are the same frame rate (float round-off in JSON).
_HOP_TOLERANCE_S = 1e-6


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
        if self.kernel_frames < 1:
            raise ThresholdsError(f"kernel_frames must be >= 1, got {self.kernel_frames}")
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
        names = tuple(class_names) if class_names is not None else tuple(classes)
        if class_names is not None and set(names) != set(classes):
            missing = sorted(set(names) - set(classes))
            extra = sorted(set(classes) - set(names))
            raise ThresholdsMismatchError(
                f"{source}: events section does not fit the model's classes: missing {missing}, "
                f"unknown {extra}; fix: calibrate events for this model"
            )
        params = tuple(
            ClassPostprocess.from_dict(classes[n], where=f"{source}: events.classes[{n!r}]") for n in names
        )
        hop = data.get("frame_hop_s")
        try:
            hop = None if hop is None else float(hop)
        except (TypeError, ValueError) as e:
            raise ThresholdsError(f"{source}: frame_hop_s must be a number, got {hop!r}") from e
        fitted = data.get("fitted") or {}
        return cls(names, params, frame_hop_s=hop, fitted=dict(fitted))


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
    frame_scores: FrameScores, postprocess: Postprocess, *, file: str | None = None
) -> list[Event]:
    """Turn the frame scores of one recording into events.

    Parameters
    ----------
    frame_scores : FrameScores
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


def _read_json(source: str, *, what: str) -> Any:
    """The parsed JSON of a file; ThresholdsError naming ``what`` and the file when it cannot be had."""
    try:
        return json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ThresholdsError(f"{what} not found: {source}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ThresholdsError(f"cannot read {source} as JSON: {e}") from e


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
        data = _read_json(source, what="authors' parameters file")
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


def load_postprocess(
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    expected_model: str | None = None,
) -> Postprocess:
    """Read post-processing parameters from a JSON file.

    Accepts a calitag thresholds file with an ``events`` section, a bare ``events`` section, or the
    DCASE2019 CRNN authors' file (``localization_hysteresis``).

    Parameters
    ----------
    path : path
    class_names : sequence of str, optional
        The model's classes, checked against the file.
    expected_model : str, optional
        Refuse a thresholds file that names another model.

    Raises
    ------
    ThresholdsError
        Missing file, bad JSON, no events section.
    ThresholdsMismatchError
        Parameters for other classes or another model.
    """
    source = str(path)
    data = _read_json(source, what="post-processing file")
    if not isinstance(data, Mapping):
        raise ThresholdsError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if "localization_hysteresis" in data:
        pp = postprocess_from_authors(data)
        pp = Postprocess(pp.class_names, pp.params, frame_hop_s=pp.frame_hop_s,
                         fitted={**pp.fitted, "file": os.path.basename(source)})
        if class_names is not None and set(class_names) != set(pp.class_names):
            raise ThresholdsMismatchError(
                f"{source}: parameters for classes {list(pp.class_names)}, the model has "
                f"{list(class_names)}"
            )
        if class_names is not None:
            order = [pp.class_names.index(n) for n in class_names]
            pp = Postprocess(tuple(class_names), tuple(pp.params[i] for i in order),
                             frame_hop_s=pp.frame_hop_s, fitted=pp.fitted)
        return pp
    model = data.get("model")
    if expected_model is not None and isinstance(model, str) and model != expected_model:
        raise ThresholdsMismatchError(
            f"{source} was fitted for model {model!r}, not {expected_model!r}; "
            f"fix: run calitag calibrate-events with --model {expected_model}"
        )
    section = data.get("events", data if "classes" in data else None)
    if section is None:
        raise ThresholdsError(
            f"{source}: no 'events' section; fix: run `calitag calibrate-events` to add one, or pass "
            "a file with 'localization_hysteresis'"
        )
    return Postprocess.from_dict(section, class_names=class_names, source=source)


# --- DCASE TSV ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventTable:
    """Events read from a DCASE-style TSV.

    events: every event, in file order.
    files: every file named in the table, including files listed with no event.
    source: the TSV path.
    """

    events: tuple[Event, ...]
    files: tuple[str, ...]
    source: str = "<events>"

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(sorted({e.label for e in self.events}))


def read_events_tsv(path: str | os.PathLike) -> EventTable:
    """Read strong labels or detections in the DCASE layout.

    The header ``filename onset offset event_label`` (tab-separated, columns in any order) is
    optional; without one the columns are taken in that order. A line with only a file name lists a
    recording with no event.

    Parameters
    ----------
    path : path

    Returns
    -------
    EventTable

    Raises
    ------
    LabelsError
        Missing or unreadable file, wrong column count, non-numeric or negative times, or an offset
        before its onset; the message names the file and line.
    """
    source = str(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise LabelsError(f"events file not found: {source}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read {source} as UTF-8 text: {e}") from e
    rows = [(i + 1, r) for i, r in enumerate(csv.reader(text.splitlines(), delimiter="\t")) if any(c.strip() for c in r)]
    if not rows:
        raise LabelsError(f"{source}: no events and no header; expected {'<TAB>'.join(TSV_HEADER)}")
    columns = {name: i for i, name in enumerate(TSV_HEADER)}
    first = [c.strip() for c in rows[0][1]]
    if "filename" in first or "event_label" in first:
        missing = [c for c in TSV_HEADER if c not in first]
        if missing:
            raise LabelsError(f"{source}: header {first} lacks columns {missing}; expected {list(TSV_HEADER)}")
        columns = {name: first.index(name) for name in TSV_HEADER}
        rows = rows[1:]
    events: list[Event] = []
    files: dict[str, None] = {}
    width = max(columns.values()) + 1
    for line_no, row in rows:
        cells = [c.strip() for c in row] + [""] * max(0, width - len(row))
        name = cells[columns["filename"]]
        if not name:
            raise LabelsError(f"{source}:{line_no}: empty file name")
        files[name] = None
        onset, offset, label = (cells[columns[c]] for c in ("onset", "offset", "event_label"))
        if not onset and not offset and not label:
            continue
        try:
            on, off = float(onset), float(offset)
        except ValueError as e:
            raise LabelsError(
                f"{source}:{line_no}: onset/offset must be numbers of seconds, got {onset!r}, {offset!r}"
            ) from e
        if not label:
            raise LabelsError(f"{source}:{line_no}: event without a label")
        if not (math.isfinite(on) and math.isfinite(off) and 0.0 <= on <= off):
            raise LabelsError(
                f"{source}:{line_no}: expected 0 <= onset <= offset, got onset {on}, offset {off}"
            )
        events.append(Event(name, on, off, label))
    return EventTable(tuple(events), tuple(files), source)


def write_events_tsv(
    path: str | os.PathLike, events: Iterable[Event], *, files: Sequence[str] = ()
) -> Path:
    """Write events in the DCASE layout, atomically (temporary file, then rename).

    Parameters
    ----------
    path : path
        Output TSV; its folder must exist.
    events : iterable of Event
        Written sorted by file, onset, label; times with 3 decimals.
    files : sequence of str
        Recordings to list even when they have no event (written as a line with the name only).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    OutputError
        If the folder is missing or not writable.
    """
    out = Path(path)
    events = sorted(events, key=lambda e: (e.file, e.onset_s, e.label, e.offset_s))
    with_events = {e.file for e in events}
    lines = ["\t".join(TSV_HEADER)]
    lines += [f"{e.file}\t{e.onset_s:.3f}\t{e.offset_s:.3f}\t{e.label}" for e in events]
    lines += [f"{f}\t\t\t" for f in sorted(set(files) - with_events)]
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: folder {folder} does not exist")
    try:
        # File names that are not valid UTF-8 are written as their original bytes.
        write_atomic(out, ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape"))
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    return out
