"""Result files written record by record: JSON lines or CSV, appended, flushed, resumable.

Each record is written with one ``write`` of a whole line before the next one, so a run killed
half-way leaves at most one partial last line; :class:`RecordWriter` with ``resume=True`` cuts
such a line off and knows the sources already done. A writer holds an exclusive lock on its
file, so two runs cannot append to the same results at once. The file is synced to the disk
(``fsync``, milliseconds per call) at most once a second and on close, so a crash of the machine
itself loses at most the last second of records.

File names are kept exactly: a name that is not valid UTF-8 (held by Python as lone surrogates,
see :func:`os.fsdecode`) is written as a ``\\udcXX`` escape in JSON and as its original bytes in
CSV, and reads back as the same string, so ``--resume`` recognises it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calitag._fileio import check_output, write_atomic
from calitag.errors import OutputError
from calitag.pipeline.review_formats import REVIEW_FORMATS, ReviewWriter, review_record

if TYPE_CHECKING:  # this module imports no numpy: `calitag --help` reads its FORMATTERS
    import numpy as np

    from calitag.pipeline.engine import FileResult

#: Seconds between syncs of the results file to the disk (every record is written at once regardless).
SYNC_INTERVAL_S = 1.0

CSV_COLUMNS = ("path", "duration_s", "tags", "scores", "model", "thresholds", "error")
#: CSV rows end in CRLF (RFC 4180), so the csv module quotes a field holding a lone CR too.
CSV_LINE_END = "\r\n"
CSV_HEADER = ",".join(CSV_COLUMNS) + CSV_LINE_END
#: Characters written as \\u escapes in JSON lines: lone surrogates (undecodable bytes of a file
#: name) cannot be UTF-8 encoded, and line/paragraph separators split lines in many readers.
_JSON_ESCAPE = re.compile("[\ud800-\udfff\u2028\u2029\x85]")


def _format_jsonl(record: dict[str, Any]) -> bytes:
    # JSON has no NaN or Infinity: refuse them rather than write a line other readers reject.
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except ValueError as err:
        raise OutputError(f"record of {record.get('path')} holds NaN or infinity, which JSON cannot carry: {err}") from err
    # These characters only occur inside JSON strings, where a \\u escape stands for them exactly.
    text = _JSON_ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return (text + "\n").encode("utf-8")


def _format_csv(record: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    row = []
    for column in CSV_COLUMNS:
        value = record.get(column)
        if column == "tags" and value is not None:
            value = ";".join(value)
        elif column == "scores" and value is not None:
            value = ";".join(f"{label}={score:.4f}" for label, score in value.items())
        row.append("" if value is None else value)
    csv.writer(buf, lineterminator=CSV_LINE_END).writerow(row)
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


FORMATTERS = {"jsonl": _format_jsonl, "csv": _format_csv}


def _lines(data: bytes) -> Iterator[tuple[str, int]]:
    """Complete lines (split on ``\\n`` only, not on U+2028 or U+0085) with the byte offset after each."""
    start = 0
    while (end := data.find(b"\n", start)) >= 0:
        yield data[start:end + 1].decode("utf-8", errors="surrogateescape"), end + 1
        start = end + 1


def sniff_format(path: str | os.PathLike) -> str | None:
    """The format of an existing results file: ``"jsonl"``, ``"csv"``, or None if it is neither (or empty)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(CSV_HEADER.encode()) or head.startswith(CSV_HEADER.rstrip().encode() + b"\n"):
        return "csv"
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"{"):
        try:
            if "path" in json.loads(first.decode("utf-8", errors="surrogateescape")):
                return "jsonl"
        except ValueError:
            # A first line longer than the sniffed bytes, or cut by a kill: still JSON lines.
            return "jsonl" if b'"path"' in first else None
    return None


@dataclass
class ResumeScan:
    """What an existing results file holds, read for a resume: nothing in it is ever dropped but a cut tail.

    done: the paths of its complete records; end: the byte length of its complete records (what follows is
    the tail a killed run left, cut by the writer); tail_is_partial: the tail is one partial line (a record cut
    by a kill), else it spans lines and is moved aside rather than dropped; notes: one line per damaged record
    (kept as it is, its file redone) and about the tail; settings: the (model, thresholds) of its records.
    """

    done: set[str]
    end: int
    tail_is_partial: bool = True
    notes: list[str] = dataclasses.field(default_factory=list)
    settings: set[tuple[Any, Any]] = dataclasses.field(default_factory=set)


def _take_record(scan: ResumeScan, record: Any, *, where: str) -> None:
    """Count one parsed record as done, or note it as damaged (it stays in the file)."""
    if not isinstance(record, dict) or not isinstance(record.get("path"), str) or not record["path"]:
        scan.notes.append(f"{where}: not a calitag record (no file path); kept as it is, not counted as done")
        return
    scan.done.add(record["path"])
    scan.settings.add((record.get("model") or None, record.get("thresholds") or None))  # CSV: "" for None


def _csv_records_at(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(text, start, end) of each complete CSV record: lines joined while a quoted field is open (an odd
    number of quote characters so far, as RFC 4180 doubles the quotes inside a field)."""
    start, parts = 0, []
    for line, offset in _lines(data):
        parts.append(line)
        text = "".join(parts)
        if text.count('"') % 2 == 0:
            yield text, start, offset
            start, parts = offset, []


def scan_results(data: bytes, fmt: str, *, name: str = "results") -> ResumeScan:
    """The one resume reader of JSON lines and CSV results: see :class:`ResumeScan`."""
    if fmt == "jsonl":
        scan = ResumeScan(set(), data.rfind(b"\n") + 1)  # after the last newline: a record cut by a kill
        for number, (line, _) in enumerate(_lines(data[:scan.end]), 1):
            try:
                record = json.loads(line)
            except ValueError:
                if line.strip():
                    scan.notes.append(f"{name}:{number}: not a JSON record; kept as it is, not counted as done")
                continue
            _take_record(scan, record, where=f"{name}:{number}")
        return scan
    scan = ResumeScan(set(), 0)
    for number, (text, _, end) in enumerate(_csv_records_at(data), 1):
        scan.end = end
        try:
            row = next(csv.reader([text]), [])
        except csv.Error:
            row = []
        if row == list(CSV_COLUMNS) or not text.strip():
            continue
        if len(row) != len(CSV_COLUMNS):
            scan.notes.append(f"{name}: row {number}: {len(row)} fields instead of {len(CSV_COLUMNS)}; "
                              "kept as it is, not counted as done")
            continue
        _take_record(scan, dict(zip(CSV_COLUMNS, row)), where=f"{name}: row {number}")
    scan.tail_is_partial = b"\n" not in data[scan.end:]
    return scan


def _done_sources(data: bytes, fmt: str) -> tuple[set[str], int]:
    """Sources with a complete record in ``data`` and the byte length of its complete records."""
    scan = scan_results(data, fmt)
    return scan.done, scan.end


def source_key(path: str | os.PathLike, *, cwd: str | None = None) -> str:
    """A file's identity for resuming: its folder resolved (any spelling, symlinked folders; a relative one against
    ``cwd``, the working folder of the run that recorded it, default this one) and its name as is. A URI is its own key."""
    path = os.fspath(path)
    if "://" in path:
        return path
    folder = os.path.dirname(path) or "."
    if cwd is not None and not os.path.isabs(folder):
        folder = os.path.join(cwd, folder)
    return os.path.join(os.path.realpath(folder), os.path.basename(path))


@dataclass(frozen=True)
class RunStamp:
    """What a run's records are made with, kept beside the output (:func:`stamp_location`): a resume with other
    settings is refused, and recorded relative paths are resolved against the runs' working folders ``cwds``.

    model: registry name; checkpoint: the weights (``name:sha256 prefix`` where known, else the resolved path;
    None: the published ones); thresholds: the thresholds file's id (None: the default); all_scores: records keep
    every class score.
    """

    model: str
    checkpoint: str | None = None
    thresholds: str | None = None
    all_scores: bool = False
    #: The working folders of the runs that wrote the records (a resume from another folder adds its own).
    cwds: tuple[str, ...] = dataclasses.field(default_factory=lambda: (os.path.realpath(os.getcwd()),),
                                              compare=False)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=1).encode()

    @classmethod
    def read(cls, data: bytes) -> RunStamp | None:
        """The stamp in ``data``, None where it is not one (an older output, or a damaged stamp)."""
        try:
            fields = json.loads(data)
            return cls(**{**fields, "cwds": tuple(fields.get("cwds", ()))})
        except (ValueError, TypeError, AttributeError):
            return None

    def refusal(self, recorded: RunStamp, *, where: str) -> str | None:
        """Why records made with ``recorded`` cannot be continued with these settings (None: they can)."""
        names = {"model": "--model", "checkpoint": "--checkpoint", "thresholds": "--thresholds",
                 "all_scores": "--all-scores"}
        changed = [f"{names[key]} {getattr(recorded, key)!r} there, {getattr(self, key)!r} now"
                   for key in names if getattr(recorded, key) != getattr(self, key)]
        if not changed:
            return None
        return (f"cannot resume {where} with other settings ({'; '.join(changed)}): its records would mix; "
                "resume with the settings it was made with, or choose another output")


def stamp_location(location: str, *, folder: bool) -> str:
    """Where the stamp of an output lives: ``_calitag.json`` in a Parquet folder (readers skip ``_`` names), else
    ``.NAME.calitag.json`` beside a results file."""
    if folder:
        return f"{location.rstrip('/')}/_calitag.json"
    head, name = os.path.split(location)
    return os.path.join(head, f".{name}.calitag.json")


class RecordWriter:
    """Appends one record per call and makes it durable before returning.

    Parameters
    ----------
    path : Path
        The results file. Its folder must exist.
    fmt : {"jsonl", "csv"} or None
        None: the format of the existing file when resuming, else ``.csv`` -> csv, anything else jsonl.
    resume : bool
        Continue an existing results file: cut a partial last record, skip the sources it holds.
    force : bool
        Replace an existing file (a results file or not); never an input.
    inputs : iterable of path-like
        The files the run reads: the results file may not be one of them.

    Raises
    ------
    OutputError
        The file exists (without ``resume`` or ``force``), is not a results file, is in another format,
        is being written by another run, is an input, or cannot be written.
    """

    def __init__(self, path: Path, fmt: str | None, *, resume: bool = False, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = (), stamp: RunStamp | None = None) -> None:
        if fmt is not None and fmt not in FORMATTERS:
            raise OutputError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATTERS)}")
        self.path = Path(path)
        self.done: set[str] = set()
        #: What the resume found worth saying (damaged records kept, a tail moved aside), one line each.
        self.notes: list[str] = []
        self._done_keys: set[str] = set()
        self._stamp = stamp
        self._cwds: tuple[str | None, ...] = (None,)
        check_output(self.path, inputs=inputs, kind="calitag results file (JSON lines or CSV)",
                     is_kind=lambda p: p.stat().st_size == 0 or sniff_format(p) is not None, force=force)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._synced = time.monotonic()
        try:
            self._lock()
            self.format = self._prepare(fmt, resume=resume, force=force)
            self._write_stamp()
        except BaseException:
            os.close(self._fd)
            raise
        self._done_keys = {source_key(p, cwd=cwd) for p in self.done for cwd in self._cwds}

    def _lock(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(
                    f"{self.path} is being written by another calitag run; wait for it to finish, "
                    "or choose another output file") from e
            raise OutputError(f"cannot lock {self.path}: {e.strerror or e}") from e

    def _prepare(self, fmt: str | None, *, resume: bool, force: bool) -> str:
        """Check the file under the lock, cut a partial record when resuming; the format to write."""
        size = os.fstat(self._fd).st_size
        if size and force:
            os.ftruncate(self._fd, 0)
            size = 0
        if size and not resume:
            raise OutputError(f"{self.path} exists; pass --resume to continue it, --force to replace it, "
                              "or choose another output file")
        if size:
            found = sniff_format(self.path)
            if found is None:
                raise OutputError(f"cannot resume {self.path}: it is not a calitag results file "
                                  "(JSON lines or CSV with a path column)")
            if fmt is not None and fmt != found:
                raise OutputError(f"cannot resume {self.path} as {fmt}: it holds {found} records; "
                                  f"drop --format or pass --format {found}")
            fmt = found
            with open(self.path, "rb") as handle:
                data = handle.read()
            scan = scan_results(data, fmt, name=str(self.path))
            self._check_settings(scan)
            self.done, self.notes = scan.done, scan.notes
            self._cut_tail(data, scan)
        fmt = fmt or _named_format(self.path)
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        if fmt == "csv" and self._size == 0:
            self._write(CSV_HEADER.encode())
        return fmt

    def _stamp_path(self) -> Path:
        return Path(stamp_location(str(self.path), folder=False))

    def _check_settings(self, scan: ResumeScan) -> None:
        """Refuse to continue records made with other settings (the stamp's, else the records' own)."""
        if self._stamp is None:
            return
        try:
            recorded = RunStamp.read(self._stamp_path().read_bytes())
        except OSError:
            recorded = None
        if recorded is not None:
            self._cwds = recorded.cwds or (None,)
            if (why := self._stamp.refusal(recorded, where=str(self.path))) is not None:
                raise OutputError(why)
        for model, thresholds in scan.settings:
            seen = dataclasses.replace(self._stamp, model=model, thresholds=thresholds)
            if (why := self._stamp.refusal(seen, where=str(self.path))) is not None:
                raise OutputError(why)

    def _cut_tail(self, data: bytes, scan: ResumeScan) -> None:
        """Cut what follows the complete records: a partial line is dropped, anything longer moved aside first."""
        tail = data[scan.end:]
        if not tail:
            return
        if scan.tail_is_partial:
            self.notes.append(f"{self.path}: cut a partial last record ({len(tail)} bytes) left by an interrupted run")
        else:
            aside = self.path.with_name(f"{self.path.name}.tail-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                write_atomic(aside, tail, replace=False)
            except OSError as e:
                raise OutputError(f"cannot resume {self.path}: its last {len(tail)} bytes are not complete records "
                                  f"and cannot be moved aside to {aside}: {e.strerror or e}") from e
            self.notes.append(f"{self.path}: its last {len(tail)} bytes were not complete records (an open quote?); "
                              f"moved aside to {aside}, their files are redone")
        os.ftruncate(self._fd, scan.end)

    def _write_stamp(self) -> None:
        if self._stamp is None:
            return
        cwds = tuple(dict.fromkeys([*(c for c in self._cwds if c is not None), *self._stamp.cwds]))
        try:
            write_atomic(self._stamp_path(), dataclasses.replace(self._stamp, cwds=cwds).to_json())
        except OSError as e:
            raise OutputError(f"cannot write {self._stamp_path()} (the settings of {self.path}): "
                              f"{e.strerror or e}") from e

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` at the end and sync; on failure cut the file back, so no partial record stays."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            now = time.monotonic()
            if now - self._synced >= SYNC_INTERVAL_S:
                os.fsync(self._fd)
                self._synced = now
        except BaseException as e:  # a full disk, or an interruption between two writes: no partial record stays
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            if not isinstance(e, OSError):
                raise
            hint = ("; free some space, then run again with --resume" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                    else "")
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}{hint}") from e
        self._size += len(data)

    def is_done(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` already has a record, under this spelling or another one of the same folder."""
        return os.fspath(path) in self.done or source_key(path) in self._done_keys

    def write(self, record: dict[str, Any]) -> None:
        self._write(FORMATTERS[self.format](record))
        self.done.add(record["path"])
        self._done_keys.add(source_key(record["path"]))

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)  # releases the lock
                self._fd = -1

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Parquet: a folder of part files, each complete before it gets its name ---------------------

#: Completed part files; anything else in the folder (temporary names of a killed run) is ignored.
PART_GLOB = "part-*.parquet"
#: Records per Parquet part file: at most this many files are redone after a kill.
ROWS_PER_PART = 1000
#: Seconds after which buffered records are written even if the part is not full.
PART_FLUSH_S = 60.0
#: Schema metadata keys.
META_MODEL, META_CLASSES, META_SCORES = b"calitag.model", b"calitag.class_names", b"calitag.scores"


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet.

    Raises
    ------
    MissingDependencyError
        pyarrow is not installed (the message names the ``parquet`` extra and how to install it).
    """
    from calitag._extras import import_optional

    what = "Parquet output (and URI sources)"
    return import_optional("pyarrow", extra="parquet", what=what), import_optional("pyarrow.parquet", extra="parquet",
                                                                                     what=what)


def output_filesystem(location: str | os.PathLike):
    """(pyarrow FileSystem, path inside it) for a local path or a URI (``file://``, ``s3://``, ``gs://``...).

    Raises
    ------
    OutputError
        For a URI pyarrow cannot open (unknown scheme, missing credentials).
    """
    _pyarrow()
    import pyarrow.fs as pafs

    text = str(location)
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).absolute())
    try:
        return pafs.FileSystem.from_uri(text)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... depending on the scheme
        raise OutputError(f"cannot open {text}: {err}") from err


def parquet_schema(class_names: tuple[str, ...], *, model: str, all_scores: bool):
    """The schema of batch records: all scores as a fixed-size list (class names in the metadata),
    or the top k as a map from class name to score."""
    pa, _ = _pyarrow()
    scores = pa.list_(pa.float32(), len(class_names)) if all_scores else pa.map_(pa.string(), pa.float32())
    return pa.schema(
        [("path", pa.string()), ("duration_s", pa.float64()), ("tags", pa.list_(pa.string())),
         ("scores", scores), ("model", pa.string()), ("thresholds", pa.string()), ("error", pa.string())],
        metadata={META_MODEL: model.encode(), META_CLASSES: json.dumps(list(class_names)).encode(),
                  META_SCORES: b"all" if all_scores else b"top_k"},
    )


def _part_files(fs, root: str) -> list[str]:
    import fnmatch

    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(root, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == FileType.File and fnmatch.fnmatch(i.base_name, PART_GLOB))


class ParquetWriter:
    """Records into a folder of Parquet part files (``part-<run>-<n>.parquet``).

    Records are buffered and written as one part file every ``rows_per_part`` records or
    ``flush_s`` seconds; a part is written under a temporary name and renamed once complete, so a
    killed run leaves only complete parts under a part name (the files of its unwritten buffer are
    not recorded, and ``resume`` redoes them). Same interface as :class:`RecordWriter`.

    Parameters
    ----------
    path : str or path-like
        The output folder (created), local or a URI pyarrow's filesystems open.
    class_names, model, all_scores
        Fix the schema (see :func:`parquet_schema`).
    resume : bool
        Continue an existing folder: ``done`` lists the paths of its complete parts.

    Raises
    ------
    OutputError
        The folder already holds part files and ``resume`` is False; ``path`` is a file; a part
        file cannot be read or written.
    """

    def __init__(self, path: str | os.PathLike, *, class_names: tuple[str, ...], model: str, all_scores: bool,
                 resume: bool = False, rows_per_part: int = ROWS_PER_PART, flush_s: float = PART_FLUSH_S,
                 stamp: RunStamp | None = None) -> None:
        import time
        import uuid

        self._pa, self._pq = _pyarrow()  # first: a missing pyarrow names its extra
        from pyarrow.fs import FileType

        self.path = str(path)
        self.format = "parquet"
        self.class_names = tuple(class_names)
        self.schema = parquet_schema(self.class_names, model=model, all_scores=all_scores)
        self._all_scores = all_scores
        self._rows_per_part, self._flush_s = rows_per_part, flush_s
        self._fs, self._root = output_filesystem(path)
        self.done: set[str] = set()
        self.notes: list[str] = []
        self._stamp = stamp or RunStamp(model, all_scores=all_scores)
        self._lock_fd = -1
        try:
            kind = self._fs.get_file_info(self._root).type
            if kind == FileType.File:
                raise OutputError(f"{self.path} is a file; Parquet output is a folder of part files")
            self._fs.create_dir(self._root, recursive=True)
            self._lock()
            parts = _part_files(self._fs, self._root)
            if parts and not resume:
                raise OutputError(f"{self.path} holds results; pass --resume to continue it, or choose another folder")
            cwds = self._check_parts(parts, model=model)
            self._remove_stale_temporaries()
            self._write_stamp(cwds)
        except BaseException as err:
            self._unlock()
            if isinstance(err, OutputError) or not isinstance(err, Exception):
                raise
            # pyarrow raises OSError or ArrowInvalid for unreadable parts
            raise OutputError(f"cannot use {self.path} for Parquet output: {err}") from err
        self._done_keys = {source_key(p, cwd=cwd) for p in self.done for cwd in cwds or (None,)}
        # A new run id per writer: parts of a resumed run never collide with the old ones.
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._n_parts = 0
        self._buffer: list[dict[str, Any]] = []
        self._clock = time.monotonic
        self._last_flush = self._clock()

    def _lock(self) -> None:
        """Hold ``.calitag.lock`` in a local folder, so two runs cannot write parts into it at once (a URI's
        filesystem has no locks: one run per folder is then the user's to ensure)."""
        from pyarrow.fs import LocalFileSystem

        if not isinstance(self._fs, LocalFileSystem):
            return
        lock = os.path.join(self._root, ".calitag.lock")
        try:
            self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) and self._lock_fd >= 0:
                raise OutputError(f"{self.path} is being written by another calitag run; wait for it to finish, "
                                  "or choose another output folder") from e
            raise OutputError(f"cannot lock {lock}: {e.strerror or e}") from e

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def _check_parts(self, parts: list[str], *, model: str) -> tuple[str, ...]:
        """Read the paths of complete parts; refuse parts of other settings. The working folders of their runs."""
        recorded = None
        with contextlib.suppress(OSError, FileNotFoundError):
            with self._fs.open_input_stream(stamp_location(self._root, folder=True)) as stream:
                recorded = RunStamp.read(stream.read())
        if parts and recorded is not None and (why := self._stamp.refusal(recorded, where=self.path)):
            raise OutputError(why)
        for part in parts:
            table = self._pq.read_table(part, columns=["path", "model", "thresholds"], filesystem=self._fs)
            models = set(table.column("model").to_pylist())
            if models - {model}:
                raise OutputError(f"{part} holds results of {', '.join(sorted(models))}, not {model}: "
                                  "resume with the same model or choose another folder")
            meta = self._pq.read_schema(part, filesystem=self._fs).metadata or {}
            if meta.get(META_SCORES) != self.schema.metadata[META_SCORES]:
                kept = "every class score" if meta.get(META_SCORES) == b"all" else "the top scores"
                raise OutputError(f"{part} keeps {kept}, this run would not: its parts would not read as one "
                                  f"table; resume {'with' if meta.get(META_SCORES) == b'all' else 'without'} "
                                  "--all-scores, or choose another folder")
            for thresholds in set(table.column("thresholds").to_pylist()) - {self._stamp.thresholds}:
                raise OutputError(f"{part} holds records tagged with thresholds {thresholds!r}, this run uses "
                                  f"{self._stamp.thresholds!r}: resume with the same --thresholds, or choose "
                                  "another folder")
            self.done.update(table.column("path").to_pylist())
        return recorded.cwds if recorded is not None and parts else ()

    def _remove_stale_temporaries(self) -> None:
        """Remove the temporary part files a killed or failed run left (no other run writes here: the lock)."""
        import fnmatch

        from pyarrow.fs import FileSelector, FileType

        for info in self._fs.get_file_info(FileSelector(self._root)):
            if info.type == FileType.File and fnmatch.fnmatch(info.base_name, f".{PART_GLOB}.tmp"):
                self._fs.delete_file(info.path)
                self.notes.append(f"{info.path}: removed, a part file a killed or failed run left unfinished")

    def _write_stamp(self, cwds: tuple[str, ...]) -> None:
        stamp = dataclasses.replace(self._stamp, cwds=tuple(dict.fromkeys([*cwds, *self._stamp.cwds])))
        with self._fs.open_output_stream(stamp_location(self._root, folder=True)) as stream:
            stream.write(stamp.to_json())

    def is_done(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is in a complete part file already (with ``resume``), under this spelling or another
        one of the same folder."""
        return os.fspath(path) in self.done or source_key(path) in self._done_keys

    def write(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        if len(self._buffer) >= self._rows_per_part or self._clock() - self._last_flush >= self._flush_s:
            self.flush()

    def _table(self, records: list[dict[str, Any]]):
        pa = self._pa
        columns: dict[str, list] = {name: [] for name in self.schema.names}
        for record in records:
            for name in columns:
                value = record.get(name)
                if name == "scores" and value is not None:
                    value = ([float(value[c]) for c in self.class_names] if self._all_scores
                             else list(value.items()))
                columns[name].append(value)
        return pa.table({name: pa.array(values, type=self.schema.field(name).type) for name, values in columns.items()},
                        schema=self.schema)

    def flush(self) -> None:
        """Write the buffered records as one complete part file."""
        self._last_flush = self._clock()
        if not self._buffer:
            return
        name = f"part-{self._run}-{self._n_parts:05d}.parquet"
        final = f"{self._root}/{name}"
        temporary = f"{self._root}/.{name}.tmp"
        try:
            with self._fs.open_output_stream(temporary) as stream:
                self._pq.write_table(self._table(self._buffer), stream)
            self._fs.move(temporary, final)
        except BaseException as err:  # a full disk, an interruption: no temporary part stays
            with contextlib.suppress(Exception):
                self._fs.delete_file(temporary)
            if not isinstance(err, Exception):
                raise
            hint = ("; free some space, then run again with --resume"
                    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) else "")
            raise OutputError(f"cannot write {final}: {err}{hint}") from err
        self._n_parts += 1
        self.done.update(r["path"] for r in self._buffer)
        self._done_keys.update(source_key(r["path"]) for r in self._buffer)
        self._buffer = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._unlock()

    def __enter__(self) -> "ParquetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- what a record holds, and the writer of a run -------------------------------------------------


@dataclass(frozen=True)
class RecordOptions:
    """What each batch record holds and how the records are written.

    fmt: "jsonl", "csv" or "parquet"; None: parquet with the Ray engine, else the format of the file being
      resumed, else from the name (``.csv`` -> csv, else jsonl).
    top_k: tags kept per record (None: every tag, as ``calitag tag``).
    top_scores: class scores kept per record besides those of its tags, and per segment (None: all).
    all_scores: keep every class score in the record (Parquet: a fixed-size list column); the segments
      keep ``top_scores``.
    rows_per_part: Parquet records per part file (a kill redoes at most this many files).
    top_n, merge_gap_s: review formats ("raven", "audacity"): the ``top_n`` best classes per segment
      instead of its tags; segments of a tag at most ``merge_gap_s`` apart joined into one event
      (:func:`calitag.pipeline.review_formats.timeline_events`).
    probabilities: thresholds whose probability maps add a record's calibrated ``probabilities``
      (for the classes of its ``scores``; JSON lines only), or None.
    uncertified: classes whose target could not be certified; a record's tags among them are listed
      in its ``uncertified`` field (JSON lines only).
    """

    fmt: str | None = None
    top_k: int | None = None
    top_scores: int | None = 5
    all_scores: bool = False
    rows_per_part: int = ROWS_PER_PART
    top_n: int | None = None
    merge_gap_s: float | None = None
    probabilities: Any = None
    uncertified: tuple[str, ...] = ()

    @property
    def keeps_all_scores(self) -> bool:
        """Whether a record holds every class score."""
        return self.all_scores or self.top_scores is None

    def record(self, result: FileResult, *, class_names: Sequence[str], model: str,
               thresholds_id: str | None = None) -> dict[str, Any]:
        """The record of one file (see :func:`batch_record`), its segments' timeline included."""
        if self.fmt in REVIEW_FORMATS:
            return review_record(result, top_n=self.top_n, merge_gap_s=self.merge_gap_s)
        record = batch_record(result, class_names=class_names, model=model, thresholds_id=thresholds_id,
                              top_k=self.top_k, top_scores=None if self.keeps_all_scores else self.top_scores,
                              segments=segment_records(result, class_names=class_names, top_scores=self.top_scores))
        if result.error is None and self.uncertified:
            record["uncertified"] = [label for label in record["tags"] if label in self.uncertified]
        if result.error is None and self.probabilities is not None:
            probs = self.probabilities.probabilities(result.scores)
            index = {name: i for i, name in enumerate(class_names)}
            record["probabilities"] = {name: round(float(probs[index[name]]), 6) for name in record["scores"]}
        return record


def batch_record(
    result: FileResult,
    *,
    class_names: Sequence[str],
    model: str,
    thresholds_id: str | None = None,
    top_k: int | None = None,
    top_scores: int | None = 5,
    segments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The record of one file: path, duration, tags, scores, model, thresholds (the same for every engine).

    ``tags`` holds at most ``top_k`` tags (all with None, as ``calitag tag``); ``scores`` holds every
    tag's score plus the ``top_scores`` highest (every class with ``top_scores=None``). A failed file
    gets ``path``, ``model``, ``thresholds`` and ``error`` (without the leading path); ``segments``
    (a timeline) is added when given.
    """
    if result.error is not None:
        return {"path": result.path, "model": model, "thresholds": thresholds_id,
                "error": result.error.removeprefix(result.path + ": ")}
    tags = result.tags[:top_k] if top_k is not None else result.tags
    order = list(result.scores.argsort()[::-1])
    if top_scores is not None:
        # Every tag keeps its score, with the top-scoring classes besides.
        index = {name: i for i, name in enumerate(class_names)}
        kept = {index[label] for label, _ in tags} | set(order[:top_scores])
        order = [i for i in order if i in kept]
    record = {
        "path": result.path,
        "duration_s": round(result.duration_s, 3),
        "tags": [label for label, _ in tags],
        "scores": {class_names[i]: round(float(result.scores[i]), 6) for i in order},
        "model": model,
        "thresholds": thresholds_id,
    }
    if segments is not None:
        record["segments"] = segments
    return record


def segment_records(result: FileResult, *, class_names: Sequence[str], top_scores: int | None
                    ) -> list[dict[str, Any]] | None:
    """The timeline of a segmented file: start, end, tags and the ``top_scores`` highest scores of each
    segment (None for a file without segments or a failed one)."""
    if result.error is not None or result.segments is None:
        return None
    timeline = result.segments
    tags = result.segment_tags or ((),) * len(timeline.probs)
    return [
        {"start_s": round(float(start), 3), "end_s": round(float(end), 3), "tags": [label for label, _ in labels],
         "scores": {class_names[i]: round(float(row[i]), 6) for i in (-row).argsort()[:top_scores]}}
        for start, end, labels, row in zip(timeline.starts_s, timeline.ends_s, tags, timeline.probs)
    ]


def open_writer(location: str | os.PathLike, options: RecordOptions, *, model: str, class_names: tuple[str, ...],
                resume: bool = False, force: bool = False, inputs: Iterable[str | os.PathLike] = (),
                stamp: RunStamp | None = None, high_freq_hz: float | None = None, audio_files: Sequence[str] = (),
                ) -> RecordWriter | ParquetWriter | ReviewWriter:
    """The writer of a batch run's records: a Parquet folder for ``options.fmt == "parquet"``, a folder of review
    files for "raven" and "audacity" (``high_freq_hz``: the top of Raven's band; ``audio_files``: the run's files,
    which name the review files), else a results file.

    Raises
    ------
    OutputError
        As :class:`RecordWriter` and :class:`ParquetWriter`.
    MissingDependencyError
        Parquet without pyarrow.
    """
    if options.fmt in REVIEW_FORMATS:
        return ReviewWriter(location, options.fmt, high_freq_hz=high_freq_hz or 0.0, resume=resume, force=force,
                            files=audio_files)
    if options.fmt == "parquet":
        return ParquetWriter(location, class_names=class_names, model=model, all_scores=options.keeps_all_scores,
                             resume=resume, rows_per_part=options.rows_per_part, stamp=stamp)
    return RecordWriter(Path(location), options.fmt, resume=resume, force=force,
                        inputs=[p for p in inputs if "://" not in os.fspath(p)], stamp=stamp)


# --- reading batch outputs back (calibration from scores) ----------------------------------------


def read_all_scores(location: str | os.PathLike, *, model: str | None, class_names: Sequence[str]
                    ) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Clip scores of a batch output made with all scores: JSON lines, CSV, or a Parquet folder.

    Parameters
    ----------
    location : str or path-like
        A JSONL or CSV results file, or a Parquet output folder (local or URI).
    model, class_names
        The model the scores must come from (None: any model), and its classes.

    Returns
    -------
    (paths, scores, errors)
        Paths of the scored files, float32 scores (n_files, n_classes) in ``class_names`` order
        (CSV keeps 4 decimals), and ``{path: error}`` of the files that failed. A last record cut
        by a kill is left out.

    Raises
    ------
    OutputError
        Unreadable output; records of another model; scores that are not all classes (a run
        without ``--all-scores``).
    MissingDependencyError
        A Parquet folder without pyarrow installed.
    """
    import numpy as np  # on first use: `calitag --help` imports this module

    text, names = os.fspath(location), tuple(class_names)
    if "://" not in text and not Path(text).exists():
        raise OutputError(f"{text}: no such results file or folder")
    if "://" not in text and Path(text).is_file():
        read = _csv_records if _file_format(text) == "csv" else _jsonl_records
        paths: list[str] = []
        rows: list[list[float]] = []
        errors: dict[str, str] = {}
        for where, record in read(text):
            row = _score_row(record, where=where, model=model, class_names=names)
            if row is None:
                errors[record["path"]] = record["error"]
            else:
                paths.append(record["path"])
                rows.append(row)
        return paths, np.asarray(rows, dtype=np.float32).reshape(len(rows), len(names)), errors
    return _read_parquet_scores(text, model=model, class_names=names)


def planned_format(location: str | os.PathLike, options: RecordOptions) -> str:
    """The format a run's records will take at ``location``: ``options.fmt``, else the one an existing
    results file holds, else the one its name says ("csv" for ``.csv``, else "jsonl")."""
    return options.fmt or _file_format(os.fspath(location))


def _file_format(path: str) -> str:
    """"csv" or "jsonl": the format a results file holds, else the one its name says."""
    return sniff_format(path) or _named_format(path)


def _named_format(path: str | os.PathLike) -> str:
    """The format a results file's name says: "csv" for ``.csv``, else "jsonl"."""
    return "csv" if Path(path).suffix.lower() == ".csv" else "jsonl"


def _jsonl_records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``path:line``, record) of each complete line of a JSONL results file."""
    with open(path, "rb") as handle:
        data = handle.read()
    for number, (line, _) in enumerate(_lines(data), 1):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise OutputError(f"{path}:{number}: not a JSON record: {err}") from err
        yield f"{path}:{number}", record


def _csv_records(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``path:row``, record) of each complete row of a CSV results file, its scores as a dict."""
    with open(path, "rb") as handle:
        data = handle.read()
    rows = csv.reader(line for line, _ in _lines(data))
    for number, row in enumerate(rows):
        if len(row) != len(CSV_COLUMNS):
            return  # a record cut by a kill or a full disk
        if number == 0 and row == list(CSV_COLUMNS):
            continue
        record: dict[str, Any] = dict(zip(CSV_COLUMNS, row))
        pairs = (item.rsplit("=", 1) for item in record["scores"].split(";") if item)
        try:
            record["scores"] = {label: float(value) for label, value in pairs}
        except ValueError as err:
            raise OutputError(f"{path}:{number + 1}: not a CSV record of calitag batch: {err}") from err
        yield f"{path}:{number + 1}", record


def _score_row(record: dict[str, Any], *, where: str, model: str | None, class_names: tuple[str, ...]
               ) -> list[float] | None:
    """The scores of one record in ``class_names`` order, or None for a failed file.

    Raises
    ------
    OutputError
        A record of another model, or without every class score.
    """
    if model is not None and record.get("model") != model:
        raise OutputError(f"{where}: scores of {record.get('model')!r}, not {model!r}: "
                          f"calibrate with --model {record.get('model')}")
    if record.get("error"):
        return None
    scores = record.get("scores") or {}
    if set(scores) != set(class_names):
        raise OutputError(f"{where}: {len(scores)} of the {len(class_names)} {model} class scores: "
                          "run `calitag batch --all-scores` to calibrate from its output")
    return [scores[c] for c in class_names]


def _read_parquet_scores(location: str, *, model: str | None, class_names: tuple[str, ...]
                         ) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """:func:`read_all_scores` of a folder of Parquet part files."""
    import numpy as np

    _, pq = _pyarrow()
    fs, root = output_filesystem(location)
    parts = _part_files(fs, root)
    if not parts:
        raise OutputError(f"{location}: neither a results file (JSON lines or CSV) nor a folder of Parquet part files")
    paths: list[str] = []
    rows: list[np.ndarray] = []
    errors: dict[str, str] = {}
    for part in parts:
        try:
            table = pq.read_table(part, filesystem=fs)
        except Exception as err:
            raise OutputError(f"cannot read {part}: {err}") from err
        meta = table.schema.metadata or {}
        if model is not None and meta.get(META_MODEL, b"").decode() != model:
            raise OutputError(f"{part}: scores of {meta.get(META_MODEL, b'?').decode()!r}, not {model!r}: "
                              "calibrate with that --model")
        if meta.get(META_SCORES) != b"all" or json.loads(meta[META_CLASSES]) != list(class_names):
            raise OutputError(f"{part}: not all {model} class scores: run `calitag batch --all-scores` "
                              "to calibrate from its output")
        for path, error in zip(table.column("path").to_pylist(), table.column("error").to_pylist()):
            if error:
                errors[path] = error
        ok = table.filter(table.column("error").is_null())
        paths.extend(ok.column("path").to_pylist())
        flat = ok.column("scores").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        rows.append(flat.astype(np.float32).reshape(len(ok), len(class_names)))
    scores = np.concatenate(rows) if rows else np.zeros((0, len(class_names)), np.float32)
    return paths, scores, errors
