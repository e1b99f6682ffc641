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

import csv
import errno
import fcntl
import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from calitag._fileio import check_output
from calitag.errors import OutputError

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
        self._synced = time.monotonic()
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
            now = time.monotonic()
            if now - self._synced >= SYNC_INTERVAL_S:
                os.fsync(self._fd)
                self._synced = now
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
PARQUET_EXTRA = "pip install 'calitag[parquet]'"


def _pyarrow():
    """pyarrow and pyarrow.parquet, or a one-line error naming the extra."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise OutputError(f"Parquet needs pyarrow, which is not installed: {PARQUET_EXTRA}") from err
    return pa, pq


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
                 resume: bool = False, rows_per_part: int = ROWS_PER_PART, flush_s: float = PART_FLUSH_S) -> None:
        import time
        import uuid

        from pyarrow.fs import FileType

        self._pa, self._pq = _pyarrow()
        self.path = str(path)
        self.format = "parquet"
        self.class_names = tuple(class_names)
        self.schema = parquet_schema(self.class_names, model=model, all_scores=all_scores)
        self._all_scores = all_scores
        self._rows_per_part, self._flush_s = rows_per_part, flush_s
        self._fs, self._root = output_filesystem(path)
        self.done: set[str] = set()
        try:
            kind = self._fs.get_file_info(self._root).type
            if kind == FileType.File:
                raise OutputError(f"{self.path} is a file; Parquet output is a folder of part files")
            parts = _part_files(self._fs, self._root) if kind == FileType.Directory else []
            if parts and not resume:
                raise OutputError(f"{self.path} holds results; pass --resume to continue it, or choose another folder")
            for part in parts:
                table = self._pq.read_table(part, columns=["path", "model"], filesystem=self._fs)
                models = set(table.column("model").to_pylist())
                if models - {model}:
                    raise OutputError(f"{part} holds results of {', '.join(sorted(models))}, not {model}: "
                                      "resume with the same model or choose another folder")
                self.done.update(table.column("path").to_pylist())
            self._fs.create_dir(self._root, recursive=True)
        except OutputError:
            raise
        except Exception as err:  # pyarrow raises OSError or ArrowInvalid for unreadable parts
            raise OutputError(f"cannot use {self.path} for Parquet output: {err}") from err
        # A new run id per writer: parts of a resumed run never collide with the old ones.
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._n_parts = 0
        self._buffer: list[dict[str, Any]] = []
        self._clock = time.monotonic
        self._last_flush = self._clock()

    def is_done(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is in a complete part file already (with ``resume``)."""
        return os.fspath(path) in self.done

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
        except Exception as err:
            raise OutputError(f"cannot write {final}: {err}") from err
        self._n_parts += 1
        self.done.update(r["path"] for r in self._buffer)
        self._buffer = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ParquetWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading batch outputs back (calibration from scores) ----------------------------------------


def read_all_scores(location: str | os.PathLike, *, model: str, class_names: tuple[str, ...]):
    """Clip scores of a batch output made with all scores: JSON lines, or a Parquet folder.

    Parameters
    ----------
    location : str or path-like
        A JSONL results file, or a Parquet output folder (local or URI).
    model, class_names
        The model the scores must come from, and its classes.

    Returns
    -------
    (paths, scores, errors)
        Paths of the scored files, float32 scores (n_files, n_classes) in ``class_names`` order,
        and ``{path: error}`` of the files that failed.

    Raises
    ------
    OutputError
        Unreadable output; records of another model; scores that are not all classes (a run
        without ``--all-scores``); a CSV file (its scores are rounded to 4 decimals).
    """
    import numpy as np  # on first use: `calitag --help` imports this module

    text = str(location)
    paths: list[str] = []
    rows: list = []
    errors: dict[str, str] = {}
    local = "://" not in text
    if local and Path(text).is_file():
        if Path(text).suffix.lower() == ".csv":
            raise OutputError(f"{text}: CSV results keep 4 decimals; run `calitag batch --all-scores` "
                              "with --format jsonl or parquet to calibrate from scores")
        wanted = set(class_names)
        with open(text, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith("\n"):
                    break  # a record cut by a kill
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise OutputError(f"{text}:{number}: not a JSON record: {err}") from err
                if record.get("model") != model:
                    raise OutputError(f"{text}:{number}: scores of {record.get('model')!r}, not {model!r}: "
                                      f"calibrate with --model {record.get('model')}")
                if record.get("error"):
                    errors[record["path"]] = record["error"]
                    continue
                scores = record.get("scores") or {}
                if set(scores) != wanted:
                    raise OutputError(f"{text}:{number}: {len(scores)} of the {len(wanted)} {model} class scores: "
                                      "run `calitag batch --all-scores` to calibrate from its output")
                paths.append(record["path"])
                rows.append([scores[c] for c in class_names])
        return paths, np.asarray(rows, dtype=np.float32).reshape(len(rows), len(class_names)), errors
    _, pq = _pyarrow()
    fs, root = output_filesystem(text)
    parts = _part_files(fs, root)
    if not parts:
        raise OutputError(f"{text}: neither a JSONL results file nor a folder of Parquet part files")
    for part in parts:
        try:
            table = pq.read_table(part, filesystem=fs)
        except Exception as err:
            raise OutputError(f"cannot read {part}: {err}") from err
        meta = table.schema.metadata or {}
        if meta.get(META_MODEL, b"").decode() != model:
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
