"""Clip-level label files (`filename,labels` CSV/TSV, the DCASE weak-label TSV) and their file names.

:func:`match_recorded` is the one matcher of label-file names to the paths a batch output records
(``calitag calibrate --scores`` and ``calitag thresholds report`` both use it).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np

from calitag._fileio import read_input
from calitag.errors import LabelsError

#: Column names accepted for the file and the label columns (DCASE weak TSV and our CSV).
FILE_COLUMNS = ("filename", "file", "path")
LABEL_COLUMNS = ("labels", "event_labels", "label")


@dataclass(frozen=True)
class ClipLabels:
    """Clip annotations: the class names of each clip of a folder, as read from a label file.

    Words, one meaning each: *labels* are these annotations; *class names* are a model's output
    classes; *targets* are the 0/1 matrices (clips x classes) built from labels for the solvers.

    labels: file name (relative to the folder, as written in the file) -> its class names.
    source: the label file.
    """

    labels: dict[str, tuple[str, ...]]
    source: str

    def targets(self, files: list[str], class_names: tuple[str, ...]) -> np.ndarray:
        """0/1 targets, shape (len(files), len(class_names)), rows in the order of ``files``."""
        index = {name: i for i, name in enumerate(class_names)}
        out = np.zeros((len(files), len(class_names)), dtype=np.float32)
        for row, name in enumerate(files):
            for label in self.labels[name]:
                out[row, index[label]] = 1.0
        return out


def _split_labels(cell: str, known: frozenset[str]) -> tuple[str, ...]:
    """Labels of one cell: separated by ';', or by ',' where that does not cut a known class name.

    AudioSet names may hold commas ("Beep, bleep"), so comma-separated pieces are joined back
    greedily, longest first, wherever the joined text is one of ``known``.
    """
    labels: list[str] = []
    for part in cell.split(";"):
        part = part.strip()
        if not part:
            continue
        if part in known or "," not in part:
            labels.append(part)
            continue
        pieces = [p.strip() for p in part.split(",")]
        i = 0
        while i < len(pieces):
            for j in range(len(pieces), i, -1):
                joined = ", ".join(pieces[i:j])
                if j == i + 1 or joined in known:
                    if joined:
                        labels.append(joined)
                    i = j
                    break
    return tuple(dict.fromkeys(labels))


def _check_unquoted_comma(
    row: list[str], *, label_col: int, named_columns: int, strict: bool, known: frozenset[str], where: str
) -> None:
    """Raise if the labels cell of a CSV row was cut by an unquoted comma (``a.wav,Animal;Cattle, bovinae``).

    Cells past the named columns are the tell: with a header any such non-empty cell is one; without
    a header, only when joining them back to the labels cell makes a known class name.
    """
    extra = row[max(named_columns, label_col + 1):]
    if label_col != named_columns - 1 or not any(cell.strip() for cell in extra):
        return
    joined = ",".join([row[label_col], *extra])
    rejoined = [label for label in _split_labels(joined, known) if "," in label and label in known]
    if not rejoined and not strict:
        return
    cause = f"the class {rejoined[0]!r} was cut at its comma" if rejoined else f"{len(extra)} cell(s) past the header"
    raise LabelsError(
        f"{where}: the labels cell is split by an unquoted comma ({cause}); quote the field: "
        f"{row[0].strip()},\"{joined.strip()}\""
    )


def label_key(name: str) -> str:
    """The file a label-file name stands for, as one key: ``./a.wav``, ``a.wav`` and ``b/../a.wav`` are one file."""
    return posixpath.normpath(PurePath(name).as_posix())


def _check_unique(name: str, first: tuple[str, int | None], seen: dict[str, tuple[str, int | None]], *,
                  where: str) -> None:
    """Record ``name`` in ``seen`` (by :func:`label_key`), or raise LabelsError if it names a file listed before."""
    earlier = seen.setdefault(label_key(name), first)
    if earlier is first:
        return
    other, line = earlier
    same = "" if other == name else f" (as {other}" + (f" on line {line})" if line is not None else ")")
    raise LabelsError(f"{where}: {name} is listed twice{same}: list each file once")


def read_clip_labels(path: str | Path, *, class_names: Sequence[str] = ()) -> ClipLabels:
    """Read a clip-level label file.

    Accepted layouts, with a header row naming the columns (``filename`` and ``labels`` or
    ``event_labels``) or, without one, the file in column 1 and the labels in column 2:

    - CSV ``filename,labels`` where several labels are separated by ``;`` (or by ``,`` inside quotes);
    - TSV ``filename<TAB>event_labels`` with comma-separated labels (DCASE weak labels).

    An empty labels cell means the clip has none of the classes. Further columns are ignored.
    ``class_names`` (the model's) lets comma-separated labels keep names that contain a comma.

    Raises
    ------
    LabelsError
        If the file is missing, empty, has no file column, or lists a file twice.
    """
    path = Path(path)
    data = read_input(path, what="label file", error=LabelsError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelsError(f"label file {path} is not UTF-8 text") from e
    del data
    # As text mode would: CRLF and CR become "\n"; splitlines() would also cut a file name at U+2028 or U+0085.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not numbered:
        raise LabelsError(f"label file {path} is empty")
    line_numbers = [n for n, _ in numbered]  # rows are numbered as lines of the file, blank ones included
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    reader = csv.reader(io.StringIO("\n".join(line for _, line in numbered)), delimiter=delimiter)
    try:
        rows = list(reader)
    except csv.Error as e:  # a cell over the csv module's field limit (131,072 characters), a NUL byte
        line = line_numbers[min(reader.line_num, len(line_numbers)) - 1]
        raise LabelsError(f"{path}, line {line}: {e}; is it a label file?") from e
    header = [cell.strip().lower() for cell in rows[0]]
    file_col = next((header.index(c) for c in FILE_COLUMNS if c in header), None)
    has_header = file_col is not None
    if has_header:
        label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
        if label_col is None:
            raise LabelsError(
                f"label file {path} has a header {rows[0]} but no labels column "
                f"(expected one of {', '.join(LABEL_COLUMNS)})"
            )
        rows, line_numbers = rows[1:], line_numbers[1:]
        named_columns = len(header)
    else:
        file_col, label_col, named_columns = 0, 1, 2
    known = frozenset(class_names)
    labels: dict[str, tuple[str, ...]] = {}
    seen: dict[str, tuple[str, int]] = {}
    for line_no, row in zip(line_numbers, rows):
        if len(row) <= file_col or not row[file_col].strip():
            raise LabelsError(f"{path}, line {line_no}: no file name")
        name = row[file_col].strip()
        _check_unique(name, (name, line_no), seen, where=f"{path}, line {line_no}")
        if delimiter == ",":
            _check_unquoted_comma(row, label_col=label_col, named_columns=named_columns, strict=has_header,
                                  known=known, where=f"{path}, line {line_no}")
        labels[name] = _split_labels(row[label_col], known) if len(row) > label_col else ()
    if not labels:
        raise LabelsError(f"label file {path} lists no files")
    return ClipLabels(labels=labels, source=str(path))


def check_label_names(clip_labels: ClipLabels, class_names: tuple[str, ...], *, model: str) -> None:
    """Raise LabelsError if a label is not one of the model's classes, naming the closest ones."""
    from calitag._names import unknown_names_hint

    known = set(class_names)
    unknown = sorted({lab for labs in clip_labels.labels.values() for lab in labs if lab not in known})
    if unknown:
        raise LabelsError(
            f"{clip_labels.source}: {len(unknown)} label(s) are not classes of model {model}: "
            + unknown_names_hint(unknown, class_names)
        )


#: What to do when a label-file name matches several recorded paths, unless the caller knows better.
AMBIGUOUS_NAME_FIX = "name files by a longer path in the labels"


def match_recorded(
    names: Sequence[str],
    paths: Sequence[str],
    *,
    source: str,
    folder: Path | None = None,
    fix: str = AMBIGUOUS_NAME_FIX,
) -> dict[str, int]:
    """Match label-file names to the paths a batch output records.

    A name matches the recorded path that is ``folder / name`` (both resolved; only with ``folder``),
    else the recorded path that equals it or ends with ``/`` + it, compared as POSIX paths (so
    ``./a.wav`` is ``a.wav`` and ``b/a.wav`` does not match ``/x/ab/a.wav``).

    Parameters
    ----------
    names : sequence of str
        File names as a label file writes them.
    paths : sequence of str
        The recorded paths.
    source : str
        The batch output, for messages.
    folder : Path, optional
        The folder the names are relative to.
    fix : str
        How to resolve a name that matches several paths (ends the error message).

    Returns
    -------
    dict
        Name -> index into ``paths``, for the names that match one.

    Raises
    ------
    LabelsError
        A name (the first in ``names`` order) matches several recorded paths.
    """
    resolved = {str(Path(p).resolve()): i for i, p in enumerate(paths)} if folder is not None else {}
    posix = [PurePath(p).as_posix() for p in paths]
    by_base: dict[str, list[int]] = {}
    for i, path in enumerate(posix):
        by_base.setdefault(path.rsplit("/", 1)[-1], []).append(i)
    matched: dict[str, int] = {}
    for name in names:
        if folder is not None and (index := resolved.get(str((folder / name).resolve()))) is not None:
            matched[name] = index
            continue
        key = PurePath(name).as_posix()
        found = [i for i in by_base.get(key.rsplit("/", 1)[-1], []) if posix[i] == key or posix[i].endswith("/" + key)]
        if len(found) > 1:
            listed = ", ".join(paths[i] for i in found[:3])
            raise LabelsError(f"{source}: {name} matches {len(found)} recorded files ({listed}); {fix}")
        if found:
            matched[name] = found[0]
    return matched


def as_clip_labels(labels: str | Path | Mapping[str, Sequence[str]] | ClipLabels, *,
                   class_names: Sequence[str] = ()) -> ClipLabels:
    """Clip annotations from a label file, a mapping ``{file name: [class, ...]}`` or a ClipLabels.

    Raises
    ------
    LabelsError
        An unreadable label file, or a mapping whose values are not lists of class names.
    """
    if isinstance(labels, ClipLabels):
        return labels
    if isinstance(labels, Mapping):
        parsed: dict[str, tuple[str, ...]] = {}
        seen: dict[str, tuple[str, int | None]] = {}
        for name, classes in labels.items():
            if not isinstance(name, (str, PurePath)):
                raise LabelsError(f"the labels mapping's keys must be file names (str or Path), got "
                                  f"{type(name).__name__} {name!r}")
            listed = tuple(classes) if isinstance(classes, Iterable) and not isinstance(classes, (str, bytes)) else None
            if listed is None or not all(isinstance(c, str) for c in listed):
                raise LabelsError(f"labels of {name!r} must be a list of class names, got "
                                  f"{type(classes).__name__} {classes!r}")
            _check_unique(str(name), (str(name), None), seen, where="the labels mapping")
            parsed[str(name)] = tuple(dict.fromkeys(listed))
        if not parsed:
            raise LabelsError("the labels mapping lists no files")
        return ClipLabels(labels=parsed, source="<mapping>")
    if not isinstance(labels, (str, os.PathLike)):
        raise LabelsError(f"labels must be a label file (str or Path), a mapping {{file name: [class, ...]}} or "
                          f"ClipLabels, got {type(labels).__name__} {labels!r:.40}")
    return read_clip_labels(labels, class_names=class_names)
