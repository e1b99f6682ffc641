"""Events in the DCASE TSV layout: ``filename<TAB>onset<TAB>offset<TAB>event_label`` with that header."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from calitag._fileio import write_atomic
from calitag.errors import LabelsError, OutputError
from calitag.thresholds.events.postprocess import MAX_EVENT_TIME_S, Event

logger = logging.getLogger(__name__)

TSV_HEADER = ("filename", "onset", "offset", "event_label")


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
        Missing or unreadable file, wrong column count, non-numeric or negative times, an offset
        before its onset, or a time past :data:`MAX_EVENT_TIME_S`; the message names the file and line.

    Rows repeating an earlier event exactly (file, onset, offset, label) are dropped with a logged
    warning naming both lines: a repeated row would count as a second event no detection can match.
    """
    source = str(path)
    rows = _rows(_read_text(source))
    if not rows:
        raise LabelsError(f"{source}: no events and no header; expected {'<TAB>'.join(TSV_HEADER)}")
    columns, rows = _columns(rows, source)
    events: list[Event] = []
    seen: dict[Event, int] = {}
    duplicates: list[tuple[int, int]] = []
    files: dict[str, None] = {}
    width = max(columns.values()) + 1
    for line_no, row in rows:
        cells = [c.strip() for c in row] + [""] * max(0, width - len(row))
        name = cells[columns["filename"]]
        if not name:
            raise LabelsError(f"{source}:{line_no}: empty file name")
        files[name] = None
        event = _event(name, cells, columns, where=f"{source}:{line_no}")
        if event is None:
            continue
        if event in seen:
            duplicates.append((line_no, seen[event]))
            continue
        seen[event] = line_no
        events.append(event)
    if duplicates:
        shown = ", ".join(f"line {line} repeats line {first}" for line, first in duplicates[:5])
        logger.warning("%s: %d duplicate event row(s) ignored (%s%s)", source, len(duplicates), shown,
                       ", ..." if len(duplicates) > 5 else "")
    return EventTable(tuple(events), tuple(files), source)


def _read_text(source: str) -> str:
    """The whole file as text; LabelsError when it is missing or not UTF-8."""
    try:
        # newline="": only CR/LF end a row; splitlines() would also split at U+2028 in a file name.
        with open(source, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError as e:
        raise LabelsError(f"events file not found: {source}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"cannot read {source} as UTF-8 text: {e}") from e


def _rows(text: str) -> list[tuple[int, list[str]]]:
    """(1-based line number, cells) of every tab-separated row that holds anything but blanks."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    return [(i + 1, r) for i, r in enumerate(reader) if any(c.strip() for c in r)]


def _columns(rows: list[tuple[int, list[str]]], source: str) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The index of each of :data:`TSV_HEADER`'s columns, and the rows below the header (if any)."""
    first = [c.strip() for c in rows[0][1]]
    if "filename" not in first and "event_label" not in first:
        return {name: i for i, name in enumerate(TSV_HEADER)}, rows
    missing = [c for c in TSV_HEADER if c not in first]
    if missing:
        raise LabelsError(f"{source}: header {first} lacks columns {missing}; expected {list(TSV_HEADER)}")
    return {name: first.index(name) for name in TSV_HEADER}, rows[1:]


def _event(name: str, cells: list[str], columns: dict[str, int], *, where: str) -> Event | None:
    """The event of one row (None for a row that only lists its file); ``where`` is "file:line"."""
    onset, offset, label = (cells[columns[c]] for c in ("onset", "offset", "event_label"))
    if not onset and not offset and not label:
        return None
    try:
        on, off = float(onset), float(offset)
    except ValueError as e:
        raise LabelsError(f"{where}: onset/offset must be numbers of seconds, got {onset!r}, {offset!r}") from e
    if not label:
        raise LabelsError(f"{where}: event without a label")
    if not (math.isfinite(on) and math.isfinite(off) and 0.0 <= on <= off <= MAX_EVENT_TIME_S):
        raise LabelsError(
            f"{where}: expected 0 <= onset <= offset <= {MAX_EVENT_TIME_S:.0e} s, got onset {on}, offset {off}"
        )
    return Event(name, on, off, label)


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
