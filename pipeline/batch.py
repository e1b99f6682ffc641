"""The batch job: every audio file of a source scored and tagged, one record per file, on one engine.

:func:`run_batch` is the one entry point (``calitag.run_batch`` and ``calitag batch``). It does, once
for every engine:

- expand the source into files (:func:`scan_source`: a folder, a list of paths, a URI or the files themselves);
- open the output (:func:`calitag.pipeline.records.open_writer`) and skip the files already there (resume);
- run an engine, which only turns files into :class:`FileResult` objects (scores, errors):
  :func:`calitag.pipeline.local_engine.score_locally` (this machine's processes) or
  :func:`calitag.pipeline.ray_engine.score_on_ray` (Ray Data);
- decide each file's tags (and its segments') with the thresholds (:meth:`calitag.thresholds.io.Thresholds.labels`),
  write its record, and hand the result on.

Without ``out`` nothing is written and the results come back in memory.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from calitag.errors import AudioError, EngineError, OutputError, TaggingError
from calitag.pipeline.audio import AUDIO_EXTENSIONS, Aggregate, probe_audio
from calitag.pipeline.engine import BatchProgress, FileResult, check_segment_s, check_top_k
from calitag.pipeline.records import (
    ParquetWriter,
    RecordOptions,
    RecordWriter,
    RunStamp,
    open_writer,
    planned_format,
)
from calitag.pipeline.review_formats import REVIEW_FORMATS

if TYPE_CHECKING:
    from calitag.pipeline.ray_engine import RayOptions
    from calitag.pipeline.tagger import Tagger

__all__ = [
    "BatchPlan", "BatchProgress", "BatchSummary", "FileResult", "FolderScan", "RecordOptions", "audio_seconds",
    "find_audio_files", "list_sources", "run_batch", "scan_audio_files", "scan_source",
]


#: The engines of :func:`run_batch`.
ENGINES = ("local", "ray")
Engine = Literal["local", "ray"]


# --- sources ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds: the files to process and the entries left out, each with the reason.

    files: audio files by extension (or matching the pattern), sorted; broken symbolic links among them are
    kept, so that processing reports them (Paths from :func:`scan_audio_files`, str from :func:`scan_source`).
    ignored: (path, reason) of every other entry.
    """

    files: list
    ignored: list[tuple[Path, str]]


def _is_link_to_nothing(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _is_uri(text: str) -> bool:
    return "://" in text


def scan_audio_files(root: str | Path, *, recursive: bool = False, pattern: str | None = None) -> FolderScan:
    """The audio files in a folder, sorted, and every entry left out with the reason.

    Parameters
    ----------
    root : str or Path
        A folder (or a single file, returned as is).
    recursive : bool
        Also look in sub-folders.
    pattern : str or None
        A glob on the file name (e.g. ``"*.flac"``); default: every known audio extension.

    Raises
    ------
    AudioError
        If ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file():
        return FolderScan([root], [])
    if not root.is_dir():
        raise AudioError(f"{root}: no such file or folder")
    candidates = root.rglob(pattern or "*") if recursive else root.glob(pattern or "*")
    files: list[Path] = []
    ignored: list[tuple[Path, str]] = []
    for path in candidates:
        wanted = pattern is not None or path.suffix.lower() in AUDIO_EXTENSIONS
        if path.is_file() or (wanted and _is_link_to_nothing(path)):
            if wanted:
                files.append(path)
            else:
                ignored.append((path, f"not an audio file name ({path.suffix.lower() or 'no extension'})"))
        elif path.is_dir():
            if not recursive:
                ignored.append((path, "a folder (--recursive to enter it)"))
        elif _is_link_to_nothing(path):
            ignored.append((path, "a broken symbolic link"))
        else:
            ignored.append((path, "not a regular file"))
    return FolderScan(sorted(files), sorted(ignored))


def find_audio_files(root: str | Path, *, recursive: bool = False, pattern: str | None = None) -> list[Path]:
    """The audio files in a folder, sorted: :func:`scan_audio_files`'s files less its broken links."""
    return [p for p in scan_audio_files(root, recursive=recursive, pattern=pattern).files if not _is_link_to_nothing(p)]


def scan_source(source: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False,
                pattern: str | None = None) -> FolderScan:
    """The files of a batch source, and the entries of a folder left out with the reason.

    Parameters
    ----------
    source : str, path-like, or an iterable of them
        A local folder (:func:`scan_audio_files`), an audio file, a text file with one path or URI per
        line (blank lines and ``#`` comments skipped; relative paths are relative to the list's folder),
        a URI of a folder or file that pyarrow's filesystems open (``file:///data/clips``,
        ``s3://bucket/clips``, ``gs://...``; credentials as pyarrow reads them), or the files themselves.
    recursive : bool
        Also list sub-folders.
    pattern : str or None
        A glob on file names; default: the known audio extensions.

    Returns
    -------
    FolderScan
        ``files`` as str: local paths, and URIs for files on other filesystems.

    Raises
    ------
    AudioError
        A source that does not exist or cannot be listed.
    MissingDependencyError
        A URI without pyarrow installed.
    """
    if not isinstance(source, (str, os.PathLike)):
        return FolderScan([os.fspath(p) for p in source], [])
    text = os.fspath(source)
    if _is_uri(text):
        return FolderScan(_list_uri(text, recursive=recursive, pattern=pattern), [])
    path = Path(text)
    if path.is_file() and path.suffix.lower() not in AUDIO_EXTENSIONS and (pattern is None or
                                                                        not fnmatch.fnmatch(path.name, pattern)):
        return FolderScan(_read_path_list(path), [])
    scan = scan_audio_files(path, recursive=recursive, pattern=pattern)
    return FolderScan([str(p) for p in scan.files], scan.ignored)


def list_sources(source: str | os.PathLike, *, recursive: bool = False, pattern: str | None = None) -> list[str]:
    """The files of a batch source, sorted as listed: :func:`scan_source`'s files."""
    return scan_source(source, recursive=recursive, pattern=pattern).files


def _read_path_list(path: Path) -> list[str]:
    """The paths a list file names, one per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AudioError(f"{path}: neither an audio file name nor a UTF-8 list of paths ({err})") from err
    listed = []
    # One path per line (read_text has turned CRLF and CR into "\n"); splitlines() would also cut a name
    # at U+2028 or U+0085.
    for line in text.split("\n"):
        line = line.strip(" \t")
        if line and not line.startswith("#"):
            listed.append(line if _is_uri(line) or Path(line).is_absolute() else str(path.parent / line))
    return listed


def _list_uri(uri: str, *, recursive: bool, pattern: str | None) -> list[str]:
    from calitag.pipeline.records import output_filesystem

    fs, root = output_filesystem(uri)  # first: says which extra a missing pyarrow is
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem

    try:
        info = fs.get_file_info(root)
        if info.type == FileType.NotFound:
            raise AudioError(f"{uri}: no such file or folder")
        infos = [info] if info.type == FileType.File else fs.get_file_info(FileSelector(root, recursive=recursive))
    except TaggingError:
        raise
    except Exception as err:
        raise AudioError(f"cannot list {uri}: {err}") from err

    def wanted(name: str) -> bool:
        return fnmatch.fnmatch(name, pattern) if pattern else Path(name).suffix.lower() in AUDIO_EXTENSIONS

    found = sorted(i.path for i in infos if i.type == FileType.File and wanted(i.base_name))
    if isinstance(fs, LocalFileSystem):
        return found  # file:// URIs become plain local paths
    scheme = uri.split("://", 1)[0]
    return [f"{scheme}://{p}" for p in found]


def audio_seconds(paths: Iterable[str | Path]) -> float:
    """The total duration of ``paths`` from their headers (files that cannot be probed count 0), for progress."""
    total = 0.0
    for path in paths:
        try:
            total += probe_audio(path).duration_s
        except TaggingError:
            continue
    return total


# --- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """What a run is about to do, reported once before the first file (``run_batch(on_start=...)``).

    files: every file of the source; todo: those without a record yet (all of them without ``resume``);
    ignored: (path, reason) of the folder's other entries; audio_total_s: the seconds of ``todo`` when the
    local engine reports progress, else None; notes: what the resume found in ``out`` (damaged records kept,
    a cut or moved-aside tail, temporary files removed), one line each.
    """

    files: tuple[str, ...]
    todo: tuple[str, ...]
    ignored: tuple[tuple[Path, str], ...]
    audio_total_s: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchSummary:
    """The outcome of a run: files tagged, files failed, and the notes of files recovered on the way.

    recovered: ``path: note`` of each file read again after its decoder process died (its result is complete).
    """

    tagged: int
    failed: int
    recovered: tuple[str, ...]

    @classmethod
    def of(cls, results: Iterable[FileResult]) -> BatchSummary:
        """The summary of :func:`run_batch`'s results."""
        results = list(results)
        failed = sum(r.error is not None for r in results)
        notes = tuple(f"{r.path}: {note}" for r in results for note in r.notes)
        return cls(tagged=len(results) - failed, failed=failed, recovered=notes)

    @property
    def clean(self) -> bool:
        """Whether every file was tagged at the first attempt."""
        return not self.failed and not self.recovered


class _Recorder:
    """Each engine result in turn: its tags decided, its record written, handed to the caller."""

    def __init__(self, tagger: Tagger, writer: RecordWriter | ParquetWriter | None, records: RecordOptions, *,
                 with_tags: bool, on_result: Callable[[FileResult], None] | None) -> None:
        self.tagger, self.writer, self.records = tagger, writer, records
        self.with_tags, self.on_result = with_tags, on_result
        self.thresholds_id = tagger.thresholds_id
        self.results: list[FileResult] = []

    def decide(self, result: FileResult) -> FileResult:
        """``result`` with its tags and its segments' tags: the decision of the tagger's thresholds, the only one."""
        decision = self.tagger.decision  # warns once when it is the default
        segment_tags = () if result.segments is None else tuple(decision.labels(result.segments.probs))
        return dataclasses.replace(result, tags=decision.labels(result.scores)[0], segment_tags=segment_tags)

    def __call__(self, result: FileResult) -> None:
        if self.with_tags and result.error is None:
            result = self.decide(result)
        if self.writer is not None:
            self.writer.write(self.records.record(result, class_names=self.tagger.class_names, model=self.tagger.name,
                                                  thresholds_id=self.thresholds_id))
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)


def _check_engine(engine: str, *, workers: int | None, ray: RayOptions | None) -> None:
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "ray" and workers is not None:
        raise EngineError("workers are the local engine's processes: size the Ray engine with ray=RayOptions(...)")
    if engine == "local" and ray is not None:
        raise EngineError("ray options need engine='ray'")
    if engine == "ray":
        from calitag.pipeline.ray_engine import import_ray

        import_ray()  # before anything is listed or written


def _open_output(tagger: Tagger, out: str | os.PathLike, files: Sequence[str], *, records: RecordOptions,
                 segmented: bool, resume: bool, force: bool) -> RecordWriter | ParquetWriter:
    """The writer of ``out``, checked to hold segments when ``segmented``."""
    inputs = [*files, *(p for p in (tagger.thresholds_path, tagger.checkpoint) if p is not None)]
    fmt = planned_format(out, records)  # checked before the writer creates anything
    if fmt in REVIEW_FORMATS and not segmented:
        raise OutputError(f"the {fmt} format writes a timeline of each file: give segment_s (--segment-s)")
    if segmented and fmt not in ("jsonl", *REVIEW_FORMATS):
        raise OutputError(f"--segment-s writes a list of segments per record, which {fmt} cannot hold: "
                          "use a JSON lines --out (--format jsonl)")
    if records.probabilities is not None and fmt != "jsonl":
        raise OutputError(f"--probabilities adds a field to each record, which {fmt} cannot hold: "
                          "use a JSON lines --out (--format jsonl)")
    return open_writer(out, records, model=tagger.name, class_names=tagger.class_names, resume=resume,
                       force=force, inputs=inputs, stamp=_stamp(tagger, records),
                       high_freq_hz=tagger.spec.frontend.sample_rate / 2, audio_files=files)


def _stamp(tagger: Tagger, records: RecordOptions) -> RunStamp:
    """What ``tagger``'s records are made with: model, weights, thresholds, and whether they keep every score."""
    from calitag.models.checkpoints import known_sha256

    checkpoint = None
    if tagger.config.checkpoint is not None:  # a user's weights file; None: the published weights of the model
        sha256 = known_sha256(tagger.config.checkpoint)
        checkpoint = f"sha256:{sha256[:12]}" if sha256 else os.path.realpath(tagger.config.checkpoint)
    return RunStamp(tagger.name, checkpoint=checkpoint, thresholds=tagger.thresholds_id,
                    all_scores=records.keeps_all_scores)


def _score(engine: Engine, tagger: Tagger, paths: Sequence[str], recorder: _Recorder, *, workers: int | None,
           ray: RayOptions | None, aggregate: Aggregate, segment_s: float | None,
           on_progress: Callable[[BatchProgress], None] | None, audio_total_s: float | None) -> None:
    """Run ``engine`` on ``paths``, each result to ``recorder``."""
    if engine == "ray":
        from calitag.pipeline.ray_engine import RayOptions, score_on_ray

        score_on_ray(tagger, paths, options=ray or RayOptions(), aggregate=aggregate, segment_s=segment_s,
                     on_result=recorder, on_progress=on_progress)
    else:
        from calitag.pipeline.local_engine import score_locally

        score_locally(tagger, paths, workers=workers, aggregate=aggregate, segment_s=segment_s, on_result=recorder,
                      on_progress=on_progress, audio_total_s=audio_total_s)


def run_batch(
    tagger: Tagger, source: str | os.PathLike | Iterable[str | os.PathLike], *, out: str | os.PathLike | None = None,
    engine: Engine = "local", segment_s: float | None = None, resume: bool = False, force: bool = False,
    recursive: bool = False, pattern: str | None = None, workers: int | None = None, ray: RayOptions | None = None,
    records: RecordOptions = RecordOptions(), aggregate: Aggregate = "max", with_tags: bool = True,
    on_start: Callable[[BatchPlan], None] | None = None, on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> list[FileResult]:
    """Score and tag every audio file of a source; with ``out``, append one record per file there.

    Parameters
    ----------
    tagger : Tagger
        The model and its thresholds (none: 0.5 for every class, with a logged warning).
    source : path, URI, or an iterable of paths
        A folder (see ``recursive``, ``pattern``), a list file, a URI (Ray), or the files (:func:`scan_source`).
    out : path, optional
        A results file (JSON lines, or CSV for a .csv name) or a folder of Parquet part files
        (``records.fmt``; the default with Ray), written as files finish; None: nothing is written.
    engine : {"local", "ray"}
        This machine's processes (``workers``: 0 for none, default one per CPU for YAMNet, else one),
        or Ray Data (``ray``: :class:`calitag.pipeline.ray_engine.RayOptions`, a local instance by default).
    segment_s : float or None
        Also score consecutive segments of this many seconds (a ``segments`` timeline per record, JSON
        lines only); a file's clip score is the maximum over its segments.
    resume, force : bool
        Continue an existing ``out`` (skipping the files it holds), or replace it (never an input).
    records : RecordOptions
        Format of ``out``; tags and scores kept per record.
    aggregate : {"max", "mean"}
        How window scores become a clip (or segment) score.
    with_tags : bool
        Decide tags; False leaves them empty (scores only).
    on_start, on_result, on_progress : callable or None
        Called with the :class:`BatchPlan` before the first file, with each :class:`FileResult` once its
        record is written, and with a :class:`BatchProgress` after each model batch and each file.

    Returns
    -------
    list of FileResult
        One per file processed (failures included), in completion order.

    Raises
    ------
    AudioError
        No audio files in the source, a source that does not exist, or a URI on the local engine.
    OutputError
        ``out`` exists (without ``resume`` or ``force``), cannot be written, or cannot hold segments.
    EngineError
        An unknown engine, or one's options given to the other; a Ray job that failed.
    MissingDependencyError
        Parquet or a URI without pyarrow; the Ray engine without Ray.
    """
    _check_engine(engine, workers=workers, ray=ray)
    check_segment_s(segment_s)
    check_top_k(records.top_k)  # the check Tagger.tag applies: 0 is refused alike
    scan = scan_source(source, recursive=recursive, pattern=pattern)
    if engine == "local" and (remote := [p for p in scan.files if _is_uri(p)]):
        raise AudioError(f"{remote[0]}: a URI needs the Ray engine (engine='ray', --engine ray)")
    if not scan.files:
        raise AudioError(f"no audio files in {source}" + (f" matching {pattern}" if pattern else ""))
    if engine == "ray" and records.fmt is None and out is not None:
        records = dataclasses.replace(records, fmt="parquet")
    writer = None if out is None else _open_output(tagger, out, scan.files, records=records,
                                                   segmented=segment_s is not None, resume=resume, force=force)
    try:
        todo = [p for p in scan.files if writer is None or not writer.is_done(p)]
        audio_total_s = audio_seconds(todo) if engine == "local" and on_progress is not None else None
        if on_start is not None:
            on_start(BatchPlan(tuple(scan.files), tuple(todo), tuple(scan.ignored), audio_total_s,
                               tuple(writer.notes) if writer is not None else ()))
        recorder = _Recorder(tagger, writer, records, with_tags=with_tags, on_result=on_result)
        _score(engine, tagger, todo, recorder, workers=workers, ray=ray, aggregate=aggregate, segment_s=segment_s,
               on_progress=on_progress, audio_total_s=audio_total_s)
        return recorder.results
    finally:
        if writer is not None:
            writer.close()
