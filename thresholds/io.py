"""The thresholds file: a fitted artefact that records where it came from.

Layout of a thresholds file (JSON, format version 3; version 1 lacks ``per_class``, version 2 the
targets, the guard's "fallback" and ``probabilities``)::

    {"format_version": 2, "calitag_version": "0.1.0", "created": "2026-01-01T12:00:00+00:00",
     "model": "yamnet", "model_sha256": null,
     "class_names": ["Speech", ...], "thresholds": [0.31, ...],
     "method": "sgl", "options": {"lr": 0.01, ...}, "objective": "micro_f1",
     "validation": {"micro_f1": 0.62, "macro_f1": 0.41, "objective": 0.62, "n_clips": 488},
     "events": null,
     "per_class": {"positives": [120, ...], "kept": ["fit", ...], "reason": [null, ...],
                   "target": ["precision=0.9", ...], "certified": [true, ...], "best_level": [0.93, ...]},
     "probabilities": {"method": "auto", "maps": [{"kind": "platt", "a": 1.2, "b": -0.3}, ...]}}

``per_class.target``, ``certified`` and ``best_level`` are present when the thresholds certify
targets (:mod:`calitag.thresholds.targets`; null for a class without one); ``probabilities`` holds
the per-class calibration maps (:mod:`calitag.thresholds.probability`); a file without maps has no
such key.

``events`` is the post-processing stack of sound event detection
(:class:`calitag.thresholds.events.postprocess.Postprocess`, its layout in that module), or null.
:func:`load_postprocess` reads such a stack from any file that holds one (a thresholds file, a bare
``events`` section, or the DCASE2019 CRNN authors' parameters); it lives here, above the events
modules, because one of those layouts is a thresholds file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calitag._version import __version__
from calitag._fileio import MAX_JSON_BYTES, parse_json, read_input, write_atomic
from calitag.errors import ScoresError, ThresholdsError, ThresholdsMismatchError
from calitag.thresholds.events.postprocess import Postprocess, postprocess_from_authors, read_json
from calitag.thresholds.probability import ProbabilityMaps

#: Version 2 adds ``per_class`` (positives seen, fit or default kept, and why); version 3 the
#: certified targets, the guard's fitted fallback and the probability maps. Older files are still read.
FORMAT_VERSION = 3
#: The threshold of every class that no calibration has touched: ``score > 0.5`` decides. The one
#: definition of the default; every path that turns scores into tags goes through :class:`Thresholds`.
DEFAULT_THRESHOLD = 0.5
#: What ``per_class["kept"]`` may say for a class: the fitted value, the default threshold, the
#: guard's fitted fallback (the label-rate threshold), or the threshold of a target.
KEPT = ("fit", "default", "fallback", "target")
#: The optional per-class columns of targets (version 3).
TARGET_COLUMNS = ("target", "certified", "best_level")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any, *, where: str) -> Any:
    """Convert numpy scalars/arrays and tuples to plain JSON types; refuse anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ThresholdsError(f"{where} holds a non-finite number {value!r}: a thresholds file stores finite values only")
        return float(value)
    if isinstance(value, np.ndarray):
        return [_jsonable(v, where=where) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where=where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where=f"{where}.{k}") for k, v in value.items()}
    raise ThresholdsError(f"{where} holds a {type(value).__name__}, which a thresholds file cannot store")


def _check_per_class(per_class: Any, n_classes: int) -> dict[str, list[Any]]:
    """Validate the per-class provenance record (see :class:`Thresholds`)."""
    if not isinstance(per_class, dict):
        raise ThresholdsError(f"per_class must be a JSON object, got {type(per_class).__name__}")
    out: dict[str, list[Any]] = {}
    for key in ("positives", "kept", "reason"):
        column = per_class.get(key)
        if not isinstance(column, (list, tuple)) or len(column) != n_classes:
            raise ThresholdsError(f"per_class.{key} must be a list with one entry per class ({n_classes})")
        out[key] = list(column)
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in out["positives"]):
        raise ThresholdsError("per_class.positives must be counts (integers >= 0)")
    out["positives"] = [int(n) for n in out["positives"]]
    if not all(k in KEPT for k in out["kept"]):
        raise ThresholdsError(f"per_class.kept entries must be one of {', '.join(KEPT)}")
    if not all(r is None or isinstance(r, str) for r in out["reason"]):
        raise ThresholdsError("per_class.reason entries must be strings or null")
    out.update(_check_target_columns(per_class, n_classes))
    return out


def _check_target_columns(per_class: dict[str, Any], n_classes: int) -> dict[str, list[Any]]:
    """The optional target columns of ``per_class`` (all three or none)."""
    present = [key for key in TARGET_COLUMNS if key in per_class]
    if not present:
        return {}
    if len(present) != len(TARGET_COLUMNS):
        raise ThresholdsError(f"per_class must hold all of {', '.join(TARGET_COLUMNS)} or none of them")
    out = {key: per_class[key] for key in TARGET_COLUMNS}
    if not all(isinstance(out[key], (list, tuple)) and len(out[key]) == n_classes for key in TARGET_COLUMNS):
        raise ThresholdsError(f"per_class.{', '.join(TARGET_COLUMNS)} must be lists with one entry per class ({n_classes})")
    if not all(t is None or isinstance(t, str) for t in out["target"]):
        raise ThresholdsError("per_class.target entries must be strings like 'precision=0.9' or null")
    if not all(c is None or isinstance(c, bool) for c in out["certified"]):
        raise ThresholdsError("per_class.certified entries must be true, false or null")
    if not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
               for v in out["best_level"]):
        raise ThresholdsError("per_class.best_level entries must be numbers in [0, 1] or null")
    return {key: list(column) for key, column in out.items()}


def _read_probabilities(section: dict[str, Any] | None, n_classes: int) -> ProbabilityMaps | None:
    """The ``probabilities`` section as maps (None when absent)."""
    from calitag.errors import CalibrationError

    if section is None:
        return None
    try:
        return ProbabilityMaps.from_dict(section, n_classes=n_classes)
    except CalibrationError as err:
        raise ThresholdsError(str(err)) from err


def _read_events(section: dict[str, Any] | None, *, source: str) -> Postprocess | None:
    """The ``events`` section of a thresholds file as a typed stack (None when absent)."""
    return None if section is None else Postprocess.from_dict(section, source=source)


def is_thresholds_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a calitag thresholds file: a JSON object with its keys."""
    from calitag._fileio import is_json_object_with

    return is_json_object_with(path, ("format_version", "class_names", "thresholds"))


@dataclass(frozen=True)
class Thresholds:
    """One decision threshold per class, with the provenance of the fit.

    Attributes
    ----------
    values : numpy.ndarray
        (n_classes,) float64 in [0, 1]; a clip has a class when ``score > value`` (strict).
    class_names : tuple of str
        One per value, in score-column order.
    model : str or None
        Registry name of the model whose scores were calibrated, when known.
    model_sha256 : str or None
        Checkpoint sha256 of that model, when known.
    method : str
        Solver that produced the values ("sgl", "default", "heuristic", "numeric", "exact", ...).
    options : dict
        The solver's resolved options (JSON-serialisable).
    objective : str
        Objective the solver maximised, e.g. "micro_f1".
    validation : dict
        Scores on the fitting set, e.g. ``{"micro_f1": .., "macro_f1": .., "objective": .., "n_clips": ..}``.
    created : str
        ISO 8601 UTC creation time.
    calitag_version : str
        Version that wrote the object.
    events : Postprocess or None
        Sound-event post-processing stack (a mapping in the file's layout is parsed into one).
    per_class : dict or None
        Per-class provenance, lists in class order: ``positives`` (positive clips seen by the
        fit), ``kept`` ("fit" or "default": whether the fitted value or the default threshold
        was kept) and ``reason`` (why the default was kept, else None); with targets also
        ``target`` ("precision=0.9" or None), ``certified`` (whether the target holds at the
        fit's confidence; None without a target) and ``best_level`` (the best level of that
        metric the fitting clips certify).
    probability_maps : ProbabilityMaps or None
        Per-class calibration maps (:meth:`probabilities`); the file's ``probabilities`` section.
    """

    values: np.ndarray
    class_names: tuple[str, ...]
    model: str | None = None
    model_sha256: str | None = None
    method: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
    objective: str = "micro_f1"
    validation: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)
    calitag_version: str = __version__
    events: Postprocess | None = None
    per_class: dict[str, list[Any]] | None = None
    probability_maps: ProbabilityMaps | None = None

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64).reshape(-1) if np.ndim(self.values) <= 1 else None
        if values is None:
            raise ThresholdsError(f"thresholds must be a 1-D sequence, got shape {np.shape(self.values)}")
        names = tuple(str(n) for n in self.class_names)
        if len(names) != values.size:
            raise ThresholdsError(f"{values.size} thresholds for {len(names)} class names: expected one per class")
        if values.size == 0:
            raise ThresholdsError("thresholds are empty: expected at least one class")
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ThresholdsError(f"class names must be unique, got duplicates {dupes[:5]}")
        bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ThresholdsError(
                f"threshold of class {names[i]!r} is {values[i]!r}: expected a finite value in [0, 1]"
            )
        if self.model_sha256 is not None and not _SHA256.match(str(self.model_sha256)):
            raise ThresholdsError(f"model_sha256 must be 64 lower-case hex digits, got {self.model_sha256!r}")
        if isinstance(self.events, dict):
            object.__setattr__(self, "events", Postprocess.from_dict(self.events))
        if self.events is not None and not isinstance(self.events, Postprocess):
            raise ThresholdsError(f"events must be a Postprocess, a JSON object or None, got {type(self.events).__name__}")
        if self.per_class is not None:
            object.__setattr__(self, "per_class", _check_per_class(self.per_class, len(names)))
        if isinstance(self.probability_maps, dict):
            object.__setattr__(self, "probability_maps", _read_probabilities(self.probability_maps, len(names)))
        if self.probability_maps is not None and (not isinstance(self.probability_maps, ProbabilityMaps)
                                                  or len(self.probability_maps.maps) != len(names)):
            raise ThresholdsError(f"probability_maps must be ProbabilityMaps with one map per class ({len(names)})")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "validation", dict(self.validation))

    @property
    def n_classes(self) -> int:
        return int(self.values.size)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Decisions ``probs > values`` (strict), as a bool array of the input's shape.

        Parameters
        ----------
        probs : numpy.ndarray
            Scores ``(n_clips, n_classes)`` or ``(n_classes,)`` (any leading shape), finite.

        Returns
        -------
        numpy.ndarray
            bool, same shape as ``probs``.

        Raises
        ------
        ScoresError
            The last axis is not ``n_classes`` long, or a score is NaN/inf.
        """
        array = np.asarray(probs)
        if array.ndim == 0 or array.shape[-1] != self.n_classes:
            raise ScoresError(
                f"thresholds are for {self.n_classes} classes, got scores of shape {array.shape}: "
                "the last axis must hold one score per class"
            )
        if array.dtype.kind not in "fiub" or not np.isfinite(array).all():
            raise ScoresError("scores to threshold must be finite numbers (found NaN/inf or a non-numeric dtype)")
        return array > self.values

    @classmethod
    def uniform(cls, class_names: Sequence[str], *, value: float = DEFAULT_THRESHOLD, model: str | None = None
                ) -> Thresholds:
        """The same threshold for every class (the default decision when no thresholds file is given)."""
        names = tuple(class_names)
        return cls(values=np.full(len(names), float(value)), class_names=names, model=model, method="default",
                   options={"init": float(value)})

    def labels(self, probs: np.ndarray, *, top_k: int | None = None,
               probabilities: bool = False) -> list[tuple[tuple[str, float], ...]]:
        """The (class name, score) pairs that pass their threshold, per row, by decreasing score.

        This is the one decision of calitag: the Tagger, the batch engines and the segment timelines
        all turn scores into tags here.

        Parameters
        ----------
        probs : numpy.ndarray
            Scores ``(n_rows, n_classes)`` or ``(n_classes,)``, finite.
        top_k : int or None
            Keep at most this many labels per row (the highest scores); ties keep class order.
        probabilities : bool
            Pair each tag with its calibrated probability (:meth:`probabilities`) instead of its
            score; the decision is the same.

        Returns
        -------
        list of tuple of (str, float)
            One tuple per row (a single tuple in a list for a 1-D input).

        Raises
        ------
        ScoresError
            As :meth:`apply`.
        ThresholdsError
            ``probabilities`` without probability maps.
        """
        rows = np.atleast_2d(np.asarray(probs))
        passed = self.apply(rows)
        if probabilities:
            rows = self.probabilities(rows)
        out = []
        for row, chosen in zip(rows, passed):
            columns = np.flatnonzero(chosen)
            pairs = sorted(((self.class_names[c], float(row[c])) for c in columns), key=lambda pair: -pair[1])
            out.append(tuple(pairs[:top_k]))
        return out

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``scores`` through the per-class maps of the file.

        Parameters
        ----------
        scores : numpy.ndarray
            ``(n, n_classes)`` or ``(n_classes,)`` scores, finite.

        Returns
        -------
        numpy.ndarray
            float64, the shape of ``scores``.

        Raises
        ------
        ScoresError
            As :meth:`apply`.
        ThresholdsError
            The thresholds hold no probability maps (fit them with ``probabilities="auto"``).
        """
        self.apply(scores)  # the same checks of shape and values
        if self.probability_maps is None:
            raise ThresholdsError("these thresholds hold no probability maps: fit them with --probabilities "
                                  "auto|platt|isotonic (probabilities='auto' in Python)")
        return self.probability_maps(np.asarray(scores, dtype=np.float64))

    def probability_thresholds(self) -> np.ndarray:
        """The thresholds on the probability scale: each class's map of its threshold, (n_classes,)."""
        return self.probabilities(self.values[None, :])[0]

    @property
    def uncertified(self) -> tuple[str, ...]:
        """The classes whose target could not be certified (``per_class.certified`` false)."""
        certified = (self.per_class or {}).get("certified") or [None] * self.n_classes
        return tuple(name for name, ok in zip(self.class_names, certified) if ok is False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this object (see the module docstring for the layout)."""
        document = {
            "format_version": FORMAT_VERSION,
            "calitag_version": self.calitag_version,
            "created": self.created,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "class_names": list(self.class_names),
            "thresholds": [float(v) for v in self.values],
            "method": self.method,
            "options": _jsonable(self.options, where="options"),
            "objective": self.objective,
            "validation": _jsonable(self.validation, where="validation"),
            "events": _jsonable(self.events.to_dict(), where="events") if self.events is not None else None,
            "per_class": _jsonable(self.per_class, where="per_class") if self.per_class is not None else None,
        }
        if self.probability_maps is not None:
            document["probabilities"] = _jsonable(self.probability_maps.to_dict(), where="probabilities")
        return document

    @classmethod
    def from_dict(cls, document: Any, *, source: str = "<dict>") -> Thresholds:
        """Build from a parsed thresholds document, checking every field.

        Raises
        ------
        ThresholdsError
            Missing/ill-typed fields, an unsupported format version, or unusable values.
        """
        if not isinstance(document, dict):
            raise ThresholdsError(f"{source} is not a thresholds file: expected a JSON object, got {type(document).__name__}")
        version = document.get("format_version")
        if version is None:
            raise ThresholdsError(f"{source} has no format_version: is it a calitag thresholds file?")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ThresholdsError(f"{source}: format_version must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ThresholdsError(
                f"{source} has format version {version}, this calitag ({__version__}) reads up to "
                f"{FORMAT_VERSION}: upgrade calitag"
            )
        if version < 1:
            raise ThresholdsError(f"{source}: format_version {version} is not valid (expected 1 to {FORMAT_VERSION})")

        def need(key: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
            if key not in document:
                if optional:
                    return None
                raise ThresholdsError(f"{source} lacks the field {key!r}")
            value = document[key]
            if value is None and optional:
                return None
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                names = " or ".join(k.__name__ for k in kinds)
                raise ThresholdsError(f"{source}: field {key!r} must be {names}, got {type(value).__name__}")
            return value

        names = need("class_names", (list,))
        if not all(isinstance(n, str) for n in names):
            raise ThresholdsError(f"{source}: class_names must all be strings")
        raw = need("thresholds", (list,))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            raise ThresholdsError(f"{source}: thresholds must all be numbers")
        if len(raw) != len(names):
            raise ThresholdsError(
                f"{source} has {len(raw)} thresholds for {len(names)} class names: expected one per class"
            )
        try:
            return cls(
                values=np.asarray(raw, dtype=np.float64),
                class_names=tuple(names),
                model=need("model", (str,), optional=True),
                model_sha256=need("model_sha256", (str,), optional=True),
                method=need("method", (str,)),
                options=need("options", (dict,), optional=True) or {},
                objective=need("objective", (str,)),
                validation=need("validation", (dict,), optional=True) or {},
                created=need("created", (str,), optional=True) or "",
                calitag_version=need("calitag_version", (str,), optional=True) or "",
                events=_read_events(need("events", (dict,), optional=True), source=source),
                per_class=need("per_class", (dict,), optional=True),
                probability_maps=need("probabilities", (dict,), optional=True),
            )
        except ThresholdsError as err:
            raise ThresholdsError(f"{source}: {err}") from err

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the JSON file atomically (temporary file in the same folder, then rename).

        Returns
        -------
        pathlib.Path
            The path written.

        Raises
        ------
        ThresholdsError
            The folder does not exist or is not writable.
        """
        target = Path(path)
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise ThresholdsError(f"cannot write {target}: folder {folder} does not exist")
        try:
            write_atomic(target, text)  # permissions from the umask, like any new file
        except OSError as err:
            raise ThresholdsError(f"cannot write thresholds file {target}: {err}") from err
        return target

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        expected_model: str | None = None,
        expected_classes: Sequence[str] | None = None,
    ) -> Thresholds:
        """Read and validate a thresholds file.

        Parameters
        ----------
        path : path-like
            The JSON file.
        expected_model : str, optional
            Refuse a file fitted for another model (a file that names no model is accepted).
        expected_classes : sequence of str, optional
            Refuse a file whose class list differs (count, names or order).

        Returns
        -------
        Thresholds

        Raises
        ------
        ThresholdsError
            Missing, unreadable, not JSON, or invalid contents.
        ThresholdsMismatchError
            Made for another model or class list.
        """
        source = str(path)
        data = read_input(path, what="thresholds file", error=ThresholdsError, max_bytes=MAX_JSON_BYTES)
        if not data.strip():
            raise ThresholdsError(f"thresholds file {source} is empty: expected a JSON object from `calitag thresholds fit`")
        # Numbers no field can hold (1e400, 5,000 digits) are refused here, naming their key.
        document = parse_json(data, source=source, what="thresholds file", error=ThresholdsError)
        thresholds = cls.from_dict(document, source=source)
        thresholds.check_compatible(expected_model=expected_model, expected_classes=expected_classes, source=source)
        return thresholds

    def check_compatible(
        self,
        *,
        expected_model: str | None = None,
        expected_classes: Sequence[str] | None = None,
        source: str = "thresholds",
    ) -> None:
        """Raise :class:`ThresholdsMismatchError` unless these thresholds fit the model and classes."""
        if expected_model is not None and self.model is not None and self.model != expected_model:
            raise ThresholdsMismatchError(
                f"{source} was fitted for model {self.model!r}, not {expected_model!r}: "
                f"re-run calibration for {expected_model!r} or pick the matching thresholds file"
            )
        if expected_classes is not None:
            expected = tuple(str(n) for n in expected_classes)
            if len(expected) != self.n_classes:
                raise ThresholdsMismatchError(
                    f"{source} holds {self.n_classes} classes, the scores have {len(expected)}: "
                    "the file was made for another class list"
                )
            if expected != self.class_names:
                i = next(i for i, (a, b) in enumerate(zip(expected, self.class_names)) if a != b)
                raise ThresholdsMismatchError(
                    f"{source} class {i} is {self.class_names[i]!r}, the scores have {expected[i]!r}: "
                    "the file was made for another class list (or order)"
                )


# --- post-processing files: a thresholds file's events section, or the CRNN authors' file ----------


def load_postprocess(
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    expected_model: str | None = None,
) -> Postprocess:
    """Read post-processing parameters from a JSON file.

    Accepts a calitag thresholds file with an ``events`` section (checked whole by
    :meth:`Thresholds.from_dict`), a bare ``events`` section, or the DCASE2019 CRNN authors' file
    (``localization_hysteresis``). Also exported as ``calitag.thresholds.events.load_postprocess``.

    Parameters
    ----------
    path : path
    class_names : sequence of str, optional
        The model's classes, checked against the file; the result follows their order.
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
    data = read_json(source, what="post-processing file")
    if not isinstance(data, Mapping):
        raise ThresholdsError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if "localization_hysteresis" in data:
        pp = postprocess_from_authors(data)
        pp = Postprocess(pp.class_names, pp.params, frame_hop_s=pp.frame_hop_s,
                         fitted={**pp.fitted, "file": os.path.basename(source)})
    elif "thresholds" in data:
        thresholds = Thresholds.from_dict(data, source=source)
        if expected_model is not None and thresholds.model is not None and thresholds.model != expected_model:
            raise ThresholdsMismatchError(
                f"{source} was fitted for model {thresholds.model!r}, not {expected_model!r}; "
                f"fix: run calitag calibrate-events with --model {expected_model}"
            )
        if thresholds.events is None:
            raise ThresholdsError(
                f"{source}: no 'events' section; fix: run `calitag calibrate-events` to add one, or pass "
                "a file with 'localization_hysteresis'"
            )
        pp = thresholds.events
    elif isinstance(data.get("events"), Mapping) or "classes" in data:
        pp = Postprocess.from_dict(data.get("events", data), source=source)
    else:
        raise ThresholdsError(
            f"{source}: no 'events' section; fix: run `calitag calibrate-events` to add one, or pass "
            "a file with 'localization_hysteresis'"
        )
    return pp if class_names is None else pp.for_classes(class_names, source=source)
