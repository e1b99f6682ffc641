"""Result files written record by record: JSON lines or CSV, appended, flushed, resumable.

Each record is written with one ``write`` of a whole line and flushed to disk before the next
one, so a run killed half-way leaves at most one partial last line; :func:`open_writer` with
``resume=True`` cuts such a line off and returns the sources already done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from calitag.errors import OutputError

CSV_COLUMNS = ("path", "duration_s", "tags", "scores", "model", "thresholds", "error")


def _format_jsonl(record: dict[str, Any]) -> str:
    # JSON has no NaN or Infinity: refuse them rather than write a line other readers reject.
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError as err:
        raise OutputError(f"record of {record.get('path')} holds NaN or infinity, which JSON cannot carry: {err}") from err


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
    """Appends one record per call and makes it durable before returning."""

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
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        if fmt == "csv" and not exists:
            self._write(",".join(CSV_COLUMNS) + "\n")

    def _write(self, line: str) -> None:
        os.write(self._fd, line.encode("utf-8"))
        os.fsync(self._fd)

    def write(self, record: dict[str, Any]) -> None:
        self._write(FORMATTERS[self.format](record))
        self.done.add(record["path"])

    def close(self) -> None:
        os.close(self._fd)

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
