"""Score-file readers: clip scores and their 0/1 targets from .npz, .npy or .csv files."""

from __future__ import annotations

import array
import csv
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calitag._fileio import load_arrays, read_input
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
        return load_arrays(path, what=f"{what} file", error=ScoresError)[""], None
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        return _csv_matrix(path, what=what, delimiter=delimiter)
    raise ScoresError(f"{what} file {path} has an unsupported extension {path.suffix!r}: expected .npz, .npy or .csv")


def _csv_rows(path: Path, *, what: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of the non-blank rows of a CSV, read with the bounded reader (a UTF-8 BOM is dropped)."""
    data = read_input(path, what=f"{what} file", error=ScoresError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ScoresError(f"cannot read {what} file {path}: it is not UTF-8 text (a binary file?): {err}") from err
    del data
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                yield reader.line_num, row
    except csv.Error as err:
        raise ScoresError(f"cannot read {what} file {path}, line {reader.line_num}: {err}") from err


def _csv_matrix(path: Path, *, what: str, delimiter: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """A float64 matrix from a CSV, with the header row of class names when row 1 is one.

    Rows are converted as they are read into one flat float64 buffer (8 bytes a cell), so the memory
    is bounded by the file's size, whatever its shape.
    """
    rows = _csv_rows(path, what=what, delimiter=delimiter)
    first = next(rows, None)
    if first is None:
        raise ScoresError(f"{what} file {path} is empty: expected rows of numbers")
    header = None
    # Row 1 is a header when a non-blank cell is not a number; a blank cell among numbers is
    # a missing value, reported below like any other row's.
    if not all(_is_number(c) for c in first[1] if c.strip()):
        header, first = tuple(c.strip() for c in first[1]), next(rows, None)
    if first is None:
        raise ScoresError(f"{what} file {path} has a header but no rows")
    width = len(first[1])
    cells = array.array("d")
    n_rows = 0
    for number, (_, row) in enumerate(itertools.chain([first], rows), start=2 if header is not None else 1):
        if len(row) != width:
            raise ScoresError(f"{what} file {path} has rows of different lengths: expected one column per class")
        blank = next((k for k, c in enumerate(row, start=1) if not c.strip()), None)
        if blank is not None:
            raise ScoresError(f"{what} file {path}: row {number}, column {blank} is blank: expected a number")
        try:
            cells.extend(float(c) for c in row)
        except ValueError as err:
            raise ScoresError(f"{what} file {path} holds a non-numeric value: {err}") from err
        n_rows += 1
    if header is not None and len(header) != width:
        raise ScoresError(f"{what} file {path}: header has {len(header)} names for {width} columns")
    return np.frombuffer(cells, dtype=np.float64).reshape(n_rows, width).copy(), header


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _class_names(classes: np.ndarray, *, source: str) -> tuple[str, ...]:
    """The class names of an npz's ``classes`` array: text, or bytes decoded as UTF-8 (not ``"b'a'"``)."""
    names = []
    for name in np.asarray(classes).reshape(-1).tolist():
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ScoresError(f"{source}: class name {name!r} is not UTF-8 text") from err
        names.append(str(name))
    return tuple(names)


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
    if not file.exists():
        raise ScoresError(f"score file not found: {source}")
    if file.is_file() and file.stat().st_size == 0:
        raise ScoresError(f"score file {source} is empty (0 bytes)")
    class_names: tuple[str, ...] | None = None
    eval_scores = eval_labels = None
    if file.suffix.lower() == ".npz":
        arrays = load_arrays(file, what="score file", error=ScoresError)
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
            class_names = _class_names(arrays["classes"], source=source)
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
