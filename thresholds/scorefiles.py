"""Score-file readers: clip scores and their 0/1 targets from .npz, .npy or .csv files."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calitag.errors import ScoresError
from calitag.thresholds.metrics import check_scores, check_targets


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

    def split(self, which: str = "auto") -> tuple[str, np.ndarray, np.ndarray | None]:
        """The split to evaluate on: ``(name, scores, labels)``; "auto" is eval when present, else val.

        Raises
        ------
        ScoresError
            ``which="eval"`` for a file without an eval split, or an unknown split name.
        """
        if which not in ("auto", "eval", "val"):
            raise ScoresError(f"unknown split {which!r}; expected auto, eval or val")
        name = ("eval" if self.eval_scores is not None else "val") if which == "auto" else which
        if name == "eval" and self.eval_scores is None:
            raise ScoresError(f"{self.source} has no eval split (eval_scores/eval_labels): use --split val")
        if name == "eval":
            return name, self.eval_scores, self.eval_labels
        return name, self.val_scores, self.val_labels


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
        # Row 1 is a header when a non-blank cell is not a number; a blank cell among numbers is
        # a missing value, reported below like any other row's.
        if not all(_is_number(c) for c in rows[0] if c.strip()):
            header, rows = tuple(c.strip() for c in rows[0]), rows[1:]
        if not rows:
            raise ScoresError(f"{what} file {path} has a header but no rows")
        if len({len(r) for r in rows}) != 1:
            raise ScoresError(f"{what} file {path} has rows of different lengths: expected one column per class")
        for number, row in enumerate(rows, start=2 if header is not None else 1):
            blank = [k for k, c in enumerate(row, start=1) if not c.strip()]
            if blank:
                raise ScoresError(f"{what} file {path}: row {number}, column {blank[0]} is blank: expected a number")
        try:
            array = np.array([[float(c) for c in row] for row in rows], dtype=np.float64)
        except ValueError as err:
            raise ScoresError(f"{what} file {path} holds a non-numeric value: {err}") from err
        if header is not None and len(header) != array.shape[1]:
            raise ScoresError(f"{what} file {path}: header has {len(header)} names for {array.shape[1]} columns")
        return array, header
    raise ScoresError(f"{what} file {path} has an unsupported extension {path.suffix!r}: expected .npz, .npy or .csv")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


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
        # Labels from a file of their own are named by that file, not the scores file.
        label_source = str(labels) if labels is not None and file.suffix.lower() != ".npz" else source
        val_labels = check_targets(val_labels, val_scores.shape, source=label_source, name="val_labels")
    if eval_scores is not None:
        eval_scores = check_scores(eval_scores, source=source, name="eval_scores")
        if eval_scores.shape[1] != val_scores.shape[1]:
            raise ScoresError(
                f"{source}: eval_scores have {eval_scores.shape[1]} classes, val_scores {val_scores.shape[1]}"
            )
        eval_labels = check_targets(eval_labels, eval_scores.shape, source=source, name="eval_labels")
    if class_names is not None and len(class_names) != val_scores.shape[1]:
        raise ScoresError(f"{source}: {len(class_names)} class names for {val_scores.shape[1]} score columns")
    return ScoreSet(val_scores, val_labels, eval_scores, eval_labels, class_names, source)
