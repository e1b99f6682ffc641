"""Result files written record by record: JSON lines or CSV, appended, flushed, resumable.

Each record is written with one unbuffered ``write`` of a whole line, so a run killed half-way
leaves at most one partial last line; :func:`open_writer` with ``resume=True`` cuts such a line
off and returns the sources already done. The file is also synced to the disk (``fsync``, which
costs milliseconds per call) at most once a second and on close, so that a crash of the machine
itself loses at most the last second of records.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from calitag.errors import OutputError

#: Seconds between syncs of the results file to the disk (every record is written at once regardless).
SYNC_INTERVAL_S = 1.0

CSV_COLUMNS = ("path", "duration_s", "tags", "scores", "model", "thresholds", "error")


def _format_jsonl(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _format_csv(record: dict[str, Any]) -> str:
    buf = io.StringIO()
    row = []
    for column in CSV_COLUMNS:
        value = record.get(column)
        if column == "tags" and value is not None:
            value = ";".join(value)
        elif column == "scores" and value is not None:
            value = ";".join(f"{label}={score:.4f}" for label, score in value.items())
        row.append("" if value is None else value)
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


FORMATTERS = {"jsonl": _format_jsonl, "csv": _format_csv}


def _done_sources(path: Path, fmt: str) -> tuple[set[str], int]:
    """Sources with a complete record in ``path`` and the byte length of its complete lines."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a partial record
    done: set[str] = set()
    text = data[:end].decode("utf-8", errors="replace")
    if fmt == "jsonl":
        for line in text.splitlines():
            try:
                done.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue
    else:
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("path"):
                done.add(row["path"])
    return done, end


class RecordWriter:
    """Appends one record per call, written before returning and synced to the disk at least once a second."""

    def __init__(self, path: Path, fmt: str, *, resume: bool = False) -> None:
        if fmt not in FORMATTERS:
            raise OutputError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATTERS)}")
        self.path = Path(path)
        self.format = fmt
        self.done: set[str] = set()
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise OutputError(
                f"{self.path} exists; pass --resume to continue it, or choose another output file"
            )
        try:
            if exists:
                self.done, end = _done_sources(self.path, fmt)
                with open(self.path, "r+b") as f:
                    f.truncate(end)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._synced = time.monotonic()
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        if fmt == "csv" and not exists:
            self._write(",".join(CSV_COLUMNS) + "\n")

    def _write(self, line: str) -> None:
        os.write(self._fd, line.encode("utf-8"))  # in the OS's hands: survives a kill of this process
        now = time.monotonic()
        if now - self._synced >= SYNC_INTERVAL_S:
            os.fsync(self._fd)
            self._synced = now

    def write(self, record: dict[str, Any]) -> None:
        self._write(FORMATTERS[self.format](record))
        self.done.add(record["path"])

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
