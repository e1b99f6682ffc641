"""Result files written record by record: JSON lines or CSV, appended, flushed, resumable.

Each record is written with one ``write`` of a whole line and flushed to disk before the next
one, so a run killed half-way leaves at most one partial last line; :class:`RecordWriter` with
``resume=True`` cuts such a line off and knows the sources already done. A writer holds an
exclusive lock on its file, so two runs cannot append to the same results at once.

File names are kept exactly: a name that is not valid UTF-8 (held by Python as lone surrogates,
see :func:`os.fsdecode`) is written as a ``\\udcXX`` escape in JSON and as its original bytes in
CSV, and reads back as the same string, so ``--resume`` recognises it.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from calitag._fileio import check_output
from calitag.errors import OutputError

CSV_COLUMNS = ("path", "duration_s", "tags", "scores", "model", "thresholds", "error")
#: CSV rows end in CRLF (RFC 4180), so the csv module quotes a field holding a lone CR too.
CSV_LINE_END = "\r\n"
CSV_HEADER = ",".join(CSV_COLUMNS) + CSV_LINE_END
#: Characters written as \\u escapes in JSON lines: lone surrogates (undecodable bytes of a file
#: name) cannot be UTF-8 encoded, and line/paragraph separators split lines in many readers.
_JSON_ESCAPE = re.compile("[\ud800-\udfff\u2028\u2029\x85]")


def _format_jsonl(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False)
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


def _done_sources(data: bytes, fmt: str) -> tuple[set[str], int]:
    """Sources with a complete record in ``data`` and the byte length of its complete records."""
    done: set[str] = set()
    if fmt == "jsonl":
        end = data.rfind(b"\n") + 1  # everything after the last newline is a partial record
        for line, _ in _lines(data[:end]):
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue
        return done, end
    # CSV: a quoted file name may hold newlines, so a record ends where the csv module says it does.
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        for line, offset in _lines(data):
            consumed = offset
            yield line

    end = 0
    for row in csv.reader(feed()):
        if len(row) != len(CSV_COLUMNS):
            break  # a record cut by a kill or a full disk: drop it and what follows
        if row[0] and row != list(CSV_COLUMNS):
            done.add(row[0])
        end = consumed
    return done, end


def source_key(path: str | os.PathLike) -> str:
    """A file's identity for resuming: its folder resolved (any spelling, symlinked folders) and its name as is."""
    path = os.fspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))


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
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
        if fmt is not None and fmt not in FORMATTERS:
            raise OutputError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATTERS)}")
        self.path = Path(path)
        self.done: set[str] = set()
        self._done_keys: set[str] = set()
        check_output(self.path, inputs=inputs, kind="calitag results file (JSON lines or CSV)",
                     is_kind=lambda p: p.stat().st_size == 0 or sniff_format(p) is not None, force=force)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        try:
            self._lock()
            self.format = self._prepare(fmt, resume=resume, force=force)
        except BaseException:
            os.close(self._fd)
            raise
        self._done_keys = {source_key(p) for p in self.done}

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
                self.done, end = _done_sources(handle.read(), fmt)
            os.ftruncate(self._fd, end)
        fmt = fmt or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        if fmt == "csv" and self._size == 0:
            self._write(CSV_HEADER.encode())
        return fmt

    def _write(self, data: bytes) -> None:
        """Write all of ``data`` at the end and sync; on failure cut the file back, so no partial record stays."""
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
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
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
