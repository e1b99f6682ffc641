"""Review files that other tools open: Raven Pro selection tables and Audacity label tracks.

One file per audio file, in a folder, so that a reviewer opens a recording with its detections:

- ``raven``: ``NAME.selections.txt``, a Raven Pro selection table (tab-separated, one header line): the
  columns Raven measures (``Selection``, ``View``, ``Channel``, ``Begin Time (s)``, ``End Time (s)``,
  ``Low Freq (Hz)``, ``High Freq (Hz)``), then ``Label`` and ``Score``. Times are seconds from the start
  of the file; the band is 0 Hz to half the model's sample rate (what the model hears).
- ``audacity``: ``NAME.labels.txt``, an Audacity label track (File > Import > Labels):
  ``start<TAB>end<TAB>label`` per line, the label being ``CLASS (SCORE)``.

``NAME`` is the audio file's base name with its extension (``tune_00.flac.selections.txt``), so two
recordings that differ only by extension keep apart; where two files of a run share a base name, every
file's path below their common folder (``site_a/0800.wav.selections.txt`` in a subfolder), as in events
tables (:func:`table_names`). Each format has its writer and reader here, and
nowhere else; the events come from :mod:`calitag.thresholds.events.segments`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calitag._fileio import write_atomic
from calitag.errors import LabelsError, OutputError

if TYPE_CHECKING:  # no numpy at import: the CLI reads REVIEW_FORMATS for its choices
    from calitag.pipeline.engine import FileResult
    from calitag.pipeline.tagger import Tagger
    from calitag.pipeline.types import SegmentScores
    from calitag.thresholds.events.segments import ScoredEvent

#: The review formats and the suffix of their files.
REVIEW_SUFFIXES = {"raven": ".selections.txt", "audacity": ".labels.txt"}
REVIEW_FORMATS = tuple(REVIEW_SUFFIXES)
#: Raven's own measurement columns, in Raven's order, then calitag's annotation columns.
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Label", "Score")
#: The view a selection belongs to: Raven's first spectrogram view.
RAVEN_VIEW = "Spectrogram 1"
_AUDACITY_SCORE = re.compile(r"^(?P<label>.*) \((?P<score>[0-9]*\.?[0-9]+)\)$")


def _check_format(fmt: str) -> None:
    if fmt not in REVIEW_SUFFIXES:
        raise OutputError(f"unknown review format {fmt!r}; choose one of {', '.join(REVIEW_FORMATS)}")


def table_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Names of a run's files in its events table or review folder: base names, or paths below their common
    folder where two base names are equal (A/x.flac and B/x.flac stay apart)."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    return [Path(os.path.relpath(a, root)).as_posix() for a in absolute]


def review_path(folder: str | os.PathLike, name: str, fmt: str) -> Path:
    """The review file of the audio file ``name`` (a base name, or a path below ``folder``'s counterpart)."""
    _check_format(fmt)
    return Path(folder) / (name + REVIEW_SUFFIXES[fmt])


def format_raven(events: Sequence[ScoredEvent], *, high_freq_hz: float) -> str:
    """A Raven selection table of one recording's events (selections numbered from 1 in time order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\")
    writer.writerow(RAVEN_COLUMNS)
    for number, event in enumerate(events, start=1):
        score = "" if event.score is None else f"{event.score:.4f}"
        writer.writerow([number, RAVEN_VIEW, 1, f"{event.onset_s:.3f}", f"{event.offset_s:.3f}", "0.0",
                         f"{high_freq_hz:.1f}", event.label, score])
    return buf.getvalue()


def format_audacity(events: Sequence[ScoredEvent]) -> str:
    """An Audacity label track of one recording's events: ``start<TAB>end<TAB>CLASS (SCORE)``."""
    lines = []
    for event in events:
        label = event.label if event.score is None else f"{event.label} ({event.score:.4f})"
        lines.append(f"{event.onset_s:.6f}\t{event.offset_s:.6f}\t{label}\n")
    return "".join(lines)


def write_review(folder: str | os.PathLike, name: str, events: Sequence[ScoredEvent], *, fmt: str,
                 high_freq_hz: float) -> Path:
    """Write the review file of one recording (replacing one there), atomically; returns its path.

    Raises
    ------
    OutputError
        An unknown format, a label with a tab or newline, or a file that cannot be written.
    """
    path = review_path(folder, name, fmt)
    bad = next((e.label for e in events if any(c in e.label for c in "\t\n\r")), None)
    if bad is not None:
        raise OutputError(f"cannot write {path}: the label {bad!r} holds a tab or newline")
    text = format_raven(events, high_freq_hz=high_freq_hz) if fmt == "raven" else format_audacity(events)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    return path


def _read_lines(path: str | os.PathLike) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LabelsError(f"cannot read {path}: {err}") from err


def _number(text: str, *, where: str, what: str) -> float:
    try:
        return float(text)
    except ValueError as err:
        raise LabelsError(f"{where}: {what} {text!r} is not a number") from err


def read_raven(path: str | os.PathLike, *, file: str | None = None) -> list[ScoredEvent]:
    """The selections of a Raven selection table (Raven's columns found by name, in any order).

    The label is the ``Label`` column (else ``Annotation``, Raven's default); ``Score`` is optional.
    ``file`` names the recording in the events (default: the table's name less its suffix).

    Raises
    ------
    LabelsError
        An unreadable table, one without the time columns, or a time that is not a number.
    """
    from calitag.thresholds.events.segments import ScoredEvent

    lines = _read_lines(path)
    header = lines[0].split("\t") if lines else []
    label_column = next((c for c in ("Label", "Annotation") if c in header), None)
    missing = [c for c in ("Begin Time (s)", "End Time (s)") if c not in header] + ([] if label_column else ["Label"])
    if missing:
        raise LabelsError(f"{path}: not a Raven selection table with labels; missing column(s) {', '.join(missing)}")
    name = file if file is not None else Path(path).name.removesuffix(REVIEW_SUFFIXES["raven"])
    events = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = dict(zip(header, line.split("\t")))
        where = f"{path}:{line_no}"
        score = cells.get("Score", "")
        events.append(ScoredEvent(name, _number(cells.get("Begin Time (s)", ""), where=where, what="Begin Time"),
                                  _number(cells.get("End Time (s)", ""), where=where, what="End Time"),
                                  cells.get(label_column, ""),
                                  _number(score, where=where, what="Score") if score else None))
    return events


def read_audacity(path: str | os.PathLike, *, file: str | None = None) -> list[ScoredEvent]:
    """The labels of an Audacity label track; a label ending in `` (SCORE)`` gives the score.

    Spectral-selection lines (``\\`` then the frequencies, under a label) are skipped.

    Raises
    ------
    LabelsError
        An unreadable file, a line without start and end, or times that are not numbers.
    """
    from calitag.thresholds.events.segments import ScoredEvent

    name = file if file is not None else Path(path).name.removesuffix(REVIEW_SUFFIXES["audacity"])
    events = []
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip() or line.startswith("\\"):
            continue
        cells = line.split("\t", 2)
        where = f"{path}:{line_no}"
        if len(cells) < 2:
            raise LabelsError(f"{where}: expected start<TAB>end<TAB>label, got {line!r}")
        text = cells[2] if len(cells) > 2 else ""
        match = _AUDACITY_SCORE.match(text)
        label, score = (match["label"], float(match["score"])) if match else (text, None)
        events.append(ScoredEvent(name, _number(cells[0], where=where, what="start"),
                                  _number(cells[1], where=where, what="end"), label, score))
    return events


def read_review(path: str | os.PathLike, *, fmt: str, file: str | None = None) -> list[ScoredEvent]:
    """The events of a review file in ``fmt`` (:func:`read_raven` or :func:`read_audacity`)."""
    _check_format(fmt)
    return read_raven(path, file=file) if fmt == "raven" else read_audacity(path, file=file)


# --- a batch run's review folder ---------------------------------------------------------------------


def timeline_events(timeline: SegmentScores, tags: Sequence[Sequence[tuple[str, float]]] | None, *, file: str,
                    top_n: int | None = None, merge_gap_s: float | None = None) -> list[ScoredEvent]:
    """The events of a timeline: the segments' ``tags`` (the thresholds' decision), or with ``top_n`` the
    ``top_n`` best classes of each segment, merged into runs with ``merge_gap_s``
    (:func:`calitag.thresholds.events.segments.segment_events`); ``file`` names the recording."""
    from calitag.thresholds.events.segments import segment_events, top_labels

    if top_n is not None:
        tags = top_labels(timeline.probs, timeline.class_names, top_n)
    elif tags is None:
        raise OutputError(f"{timeline.source}: a timeline without tags needs top_n")
    return segment_events(timeline.starts_s, timeline.ends_s, tags, file=file, merge_gap_s=merge_gap_s)


def tag_for_review(tagger: Tagger, path: str | os.PathLike, *, segment_s: float, aggregate: str = "max",
                   top_n: int | None = None, merge_gap_s: float | None = None) -> list[ScoredEvent]:
    """The review events of one recording: its timeline of ``segment_s`` segments, tagged with the tagger's
    thresholds (or its ``top_n`` best classes per segment), merged with ``merge_gap_s``.

    Raises
    ------
    AudioLoadError
        The file cannot be read.
    """
    timeline = tagger.segment_scores(path, segment_s=segment_s, aggregate=aggregate)
    tags = None if top_n is not None else tagger.decision.labels(timeline.probs)
    return timeline_events(timeline, tags, file=Path(path).name, top_n=top_n, merge_gap_s=merge_gap_s)


def review_record(result: FileResult, *, top_n: int | None = None,
                  merge_gap_s: float | None = None) -> dict[str, Any]:
    """The record of one file for a review folder: its path and events, or its error."""
    if result.error is not None:
        return {"path": result.path, "error": result.error}
    if result.segments is None:
        raise OutputError(f"{result.path}: review formats write a timeline; score with segment_s (--segment-s)")
    tags = result.segment_tags or ((),) * len(result.segments.probs)
    return {"path": result.path, "events": timeline_events(result.segments, tags, file=Path(result.path).name,
                                                           top_n=top_n, merge_gap_s=merge_gap_s)}


class ReviewWriter:
    """A batch run's review folder: one file per audio file, written when the file is done.

    Parameters
    ----------
    folder : path
        Created when missing (its parent must exist).
    fmt : {"raven", "audacity"}
    high_freq_hz : float
        The top of the band of Raven selections.
    resume : bool
        Keep the review files there and skip their audio files.
    force : bool
        Replace review files of this format already there.
    files : sequence of str
        The run's audio files, named by :func:`table_names` (a file not among them: its base name).

    Raises
    ------
    OutputError
        ``folder`` is a file or cannot be created, or holds review files of this format (without
        ``resume`` or ``force``).
    """

    def __init__(self, folder: str | os.PathLike, fmt: str, *, high_freq_hz: float, resume: bool = False,
                 force: bool = False, files: Sequence[str] = ()) -> None:
        _check_format(fmt)
        self.folder, self.format, self.high_freq_hz = Path(folder), fmt, high_freq_hz
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"cannot write review files to {self.folder}: it is a file; expected a folder")
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot create {self.folder}: {err.strerror or err}") from err
        found = sorted(self.folder.rglob("*" + REVIEW_SUFFIXES[fmt]))
        if found and not (resume or force):
            raise OutputError(f"{self.folder} holds {len(found)} {fmt} file(s), e.g. {found[0].name}; pass --resume "
                              "to continue, --force to replace them, or choose another folder")
        self.done = {p.relative_to(self.folder).as_posix().removesuffix(REVIEW_SUFFIXES[fmt]) for p in found
                     } if resume else set()
        self._names = dict(zip(map(os.fspath, files), table_names(files)))
        self._written: dict[str, str] = {}
        self.notes: list[str] = []  # what a resume found (none: a review file is written whole or not at all)

    def is_done(self, path: str | os.PathLike) -> bool:
        """Whether the audio file ``path`` has its review file (from the run being resumed)."""
        return self._name(path) in self.done

    def _name(self, path: str | os.PathLike) -> str:
        return self._names.get(os.fspath(path), Path(path).name)

    def write(self, record: dict[str, Any]) -> None:
        """Write the review file of a record of :func:`review_record` (nothing for a failed file)."""
        if "events" not in record:
            return
        name = self._name(record["path"])
        if self._written.get(name, record["path"]) != record["path"]:
            raise OutputError(f"{record['path']} and {self._written[name]} would write the same review file "
                              f"{review_path(self.folder, name, self.format)}; review one folder at a time")
        write_review(self.folder, name, record["events"], fmt=self.format, high_freq_hz=self.high_freq_hz)
        self._written[name] = record["path"]

    def close(self) -> None:
        """Nothing to flush: each file is complete when written."""

    def __enter__(self) -> ReviewWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_reviews(folder: str | os.PathLike, events: Iterable[ScoredEvent], files: Sequence[str], *, fmt: str,
                  high_freq_hz: float) -> list[Path]:
    """One review file per name of ``files`` (an empty one for a file without events), in ``folder``.

    Raises
    ------
    OutputError
        As :func:`write_review`.
    """
    by_file: dict[str, list[ScoredEvent]] = {name: [] for name in files}
    for event in events:
        by_file.setdefault(event.file, []).append(event)
    return [write_review(folder, name, found, fmt=fmt, high_freq_hz=high_freq_hz) for name, found in by_file.items()]
