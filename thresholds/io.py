"""The thresholds file (a fitted artefact that records where it came from) and score-file readers.

Layout of a thresholds file (JSON, format version 1)::

    {"format_version": 1, "calitag_version": "0.1.0", "created": "2026-01-01T12:00:00+00:00",
     "model": "yamnet", "model_sha256": null,
     "class_names": ["Speech", ...], "thresholds": [0.31, ...],
     "method": "sgl", "options": {"lr": 0.01, ...}, "objective": "micro_f1",
     "validation": {"micro_f1": 0.62, "macro_f1": 0.41, "objective": 0.62, "n_clips": 488},
     "events": null}

``events`` belongs to sound event detection (its contents are not checked here beyond being a
JSON object or null).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calitag._version import __version__
from calitag._fileio import write_atomic
from calitag.errors import ScoresError, ThresholdsError, ThresholdsMismatchError
from calitag.thresholds.metrics import check_labels, check_scores

FORMAT_VERSION = 1
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
    events : dict or None
        Sound-event post-processing section (owned by calitag's detection stage).
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
    events: dict[str, Any] | None = None

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
        if self.events is not None and not isinstance(self.events, dict):
            raise ThresholdsError(f"events must be a JSON object or None, got {type(self.events).__name__}")
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

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this object (see the module docstring for the layout)."""
        return {
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
            "events": _jsonable(self.events, where="events") if self.events is not None else None,
        }

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
            raise ThresholdsError(f"{source}: format_version {version} is not valid (expected 1)")

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
                events=need("events", (dict,), optional=True),
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
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise ThresholdsError(f"thresholds file not found: {source}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ThresholdsError(f"cannot read thresholds file {source}: {err}") from err
        if not text.strip():
            raise ThresholdsError(f"thresholds file {source} is empty: expected a JSON object from `calitag thresholds fit`")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise ThresholdsError(f"thresholds file {source} is not valid JSON: {err}") from err
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


@dataclass(frozen=True)
class ScoreSet:
    """Clip scores and labels read from a file, split into validation and optional evaluation parts.

    val_scores/val_labels: (N, C); eval_scores/eval_labels: (M, C) or None; labels are bool and
    may be None when only scores were given.
    """

    val_scores: np.ndarray
    val_labels: np.ndarray | None
    eval_scores: np.ndarray | None
    eval_labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    source: str

    @property
    def n_classes(self) -> int:
        return int(self.val_scores.shape[1])

    def names(self) -> tuple[str, ...]:
        """Class names from the file, or "0", "1", ... when it has none."""
        return self.class_names if self.class_names is not None else tuple(str(i) for i in range(self.n_classes))


def _read_matrix(path: Path, *, what: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A numeric matrix from .npy or .csv (optionally with a header row of class names)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ScoresError(f"cannot read {what} file {path}: {err}") from err
        return array, None
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [row for row in csv.reader(handle, delimiter=delimiter) if row and any(c.strip() for c in row)]
        except (OSError, UnicodeDecodeError) as err:
            raise ScoresError(f"cannot read {what} file {path}: {err}") from err
        if not rows:
            raise ScoresError(f"{what} file {path} is empty: expected rows of numbers")
        header = None
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            header, rows = tuple(c.strip() for c in rows[0]), rows[1:]
        if not rows:
            raise ScoresError(f"{what} file {path} has a header but no rows")
        if len({len(r) for r in rows}) != 1:
            raise ScoresError(f"{what} file {path} has rows of different lengths: expected one column per class")
        try:
            array = np.array([[float(c) for c in row] for row in rows], dtype=np.float64)
        except ValueError as err:
            raise ScoresError(f"{what} file {path} holds a non-numeric value: {err}") from err
        if header is not None and len(header) != array.shape[1]:
            raise ScoresError(f"{what} file {path}: header has {len(header)} names for {array.shape[1]} columns")
        return array, header
    raise ScoresError(f"{what} file {path} has an unsupported extension {path.suffix!r}: expected .npz, .npy or .csv")


def _sigmoid(array: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(array, dtype=np.float64))


def read_scores(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    logits: bool = False,
) -> ScoreSet:
    """Read clip scores (and labels) for calibration or evaluation.

    Parameters
    ----------
    path : path-like
        ``.npz`` with ``val_scores``, ``val_labels`` and optional ``eval_scores``, ``eval_labels``,
        ``classes`` (the layout of the SGL-Thresh data); or a ``.npy``/``.csv`` score matrix
        (a CSV may start with a header row of class names).
    labels : path-like, optional
        ``.npy``/``.csv`` 0/1 matrix for a ``.npy``/``.csv`` score file (ignored for ``.npz``).
    logits : bool
        The file holds logits: a sigmoid maps them to [0, 1] first.

    Returns
    -------
    ScoreSet

    Raises
    ------
    ScoresError
        Missing/unreadable/empty file, missing arrays, bad shapes or values.
    """
    file = Path(path)
    source = str(file)
    if not file.is_file():
        raise ScoresError(f"score file not found: {source}")
    if file.stat().st_size == 0:
        raise ScoresError(f"score file {source} is empty (0 bytes)")
    class_names: tuple[str, ...] | None = None
    eval_scores = eval_labels = None
    if file.suffix.lower() == ".npz":
        try:
            with np.load(file, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as err:
            raise ScoresError(f"cannot read {source} as .npz: {err}") from err
        if "val_scores" not in arrays:
            found = ", ".join(sorted(arrays)) or "nothing"
            raise ScoresError(f"{source} has no 'val_scores' array (found {found}): expected val_scores, val_labels[, eval_scores, eval_labels, classes]")
        val_scores = arrays["val_scores"]
        val_labels = arrays.get("val_labels")
        eval_scores = arrays.get("eval_scores")
        eval_labels = arrays.get("eval_labels")
        if (eval_scores is None) != (eval_labels is None):
            raise ScoresError(f"{source} has only one of eval_scores/eval_labels: give both or neither")
        if "classes" in arrays:
            class_names = tuple(str(c) for c in np.asarray(arrays["classes"]).reshape(-1))
    else:
        val_scores, class_names = _read_matrix(file, what="score")
        val_labels = None
        if labels is not None:
            val_labels, _ = _read_matrix(Path(labels), what="label")
    if logits:
        val_scores = _sigmoid(val_scores)
        eval_scores = _sigmoid(eval_scores) if eval_scores is not None else None
    val_scores = check_scores(val_scores, source=source, name="val_scores" if file.suffix == ".npz" else "scores")
    if val_labels is not None:
        val_labels = check_labels(val_labels, val_scores.shape, source=source, name="val_labels")
    if eval_scores is not None:
        eval_scores = check_scores(eval_scores, source=source, name="eval_scores")
        if eval_scores.shape[1] != val_scores.shape[1]:
            raise ScoresError(
                f"{source}: eval_scores have {eval_scores.shape[1]} classes, val_scores {val_scores.shape[1]}"
            )
        eval_labels = check_labels(eval_labels, eval_scores.shape, source=source, name="eval_labels")
    if class_names is not None and len(class_names) != val_scores.shape[1]:
        raise ScoresError(f"{source}: {len(class_names)} class names for {val_scores.shape[1]} score columns")
    return ScoreSet(val_scores, val_labels, eval_scores, eval_labels, class_names, source)
