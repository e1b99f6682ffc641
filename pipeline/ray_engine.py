"""Batch tagging on Ray Data: the same records as the local engine, on one machine or a cluster.

The plan is a Ray Data pipeline, driven from this process::

    paths --decode (Ray tasks, 1 CPU each)--> window chunks --score (actor pool)--> folded chunks
          --this process: combine chunks, apply thresholds--> one FileResult per file

- Decoding (:func:`calitag.pipeline.audio.stream_windows`, the local engine's reader) runs as
  Ray tasks; a file is cut into chunks of at most ``CHUNK_WINDOWS`` windows, so a long recording
  never travels as one object. A file that fails to decode becomes an error row, never a failed job.
- Scoring runs in a fixed pool of actors (``map_batches`` with a class): each loads the tagger
  once, stacks equally long windows from all the chunks of its batch into forward passes of
  ``batch_size`` windows, and folds the window scores of each chunk (max, or a sum for the mean).
  An actor that dies is restarted by Ray and the batch it was running is redone; as results
  are collected here and written once per file, no file is lost or written twice.
- This process combines the chunks of each file, decides the tags with the thresholds and hands
  each :class:`~calitag.pipeline.batch.FileResult` to ``on_result`` (the CLI writes it). Results
  are written where the driver runs, so a cluster needs no shared output folder.

Ray is an optional dependency (``pip install 'calitag[ray]'``), imported only here.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calitag.errors import AudioError, EngineError, TaggingError
from calitag.pipeline.audio import AUDIO_EXTENSIONS, Aggregate, stream_windows
from calitag.pipeline.batch import BatchProgress, FileResult, find_audio_files

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'calitag[ray]'"
#: Windows per decoded chunk: bounds the size of one object between decoding and scoring.
CHUNK_WINDOWS = 32
#: Files per decoding task.
FILES_PER_TASK = 4
#: CPUs reserved per decoding task: half a core, so that one actor and one decoder fit on a
#: single-CPU node (decoding waits on reads as well as computing).
DECODE_CPUS = 0.5
#: Memory reserved per decoding task, bytes (a chunk of windows and the decoder's buffers).
DECODE_MEMORY = 256 * 2**20
#: Chunks per actor call (each call stacks their windows into forward passes).
CHUNKS_PER_CALL = 8
#: The Tagger's default threshold (calitag.pipeline.tagger), without importing torch in the driver.
DEFAULT_THRESHOLD = 0.5


def import_ray():
    """The ``ray`` module with Ray Data, or a one-line :class:`EngineError` naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise EngineError(f"--engine ray needs Ray Data, which is not installed: {RAY_EXTRA}") from err
    return ray


# --- sources ----------------------------------------------------------------------------------


def _is_uri(text: str) -> bool:
    return "://" in text


def list_sources(source: str | os.PathLike, *, recursive: bool = False, pattern: str | None = None) -> list[str]:
    """The audio files of a batch SOURCE, sorted: a folder, a text file listing paths, or a URI.

    Parameters
    ----------
    source : str or path-like
        A local folder (as the local engine reads it), an audio file, a text file with one path
        or URI per line (blank lines and ``#`` comments skipped; relative paths are relative to
        the list's folder), or a URI of a folder or file that pyarrow's filesystems open
        (``file:///data/clips``, ``s3://bucket/clips``, ``gs://...``; credentials as pyarrow reads them).
    recursive : bool
        Also list sub-folders.
    pattern : str or None
        A glob on file names; default: the known audio extensions.

    Returns
    -------
    list of str
        Local paths, and URIs for files on other filesystems.

    Raises
    ------
    AudioError
        A source that does not exist or cannot be listed.
    """
    text = str(source)
    if _is_uri(text):
        return _list_uri(text, recursive=recursive, pattern=pattern)
    path = Path(text)
    if path.is_file() and path.suffix.lower() not in AUDIO_EXTENSIONS and (pattern is None or
                                                                        not fnmatch.fnmatch(path.name, pattern)):
        listed = []
        # One path per line (read_text has turned CRLF and CR into "\n"); splitlines() would also cut a name
        # at U+2028 or U+0085.
        for line in path.read_text(encoding="utf-8").split("\n"):
            line = line.strip(" \t")
            if line and not line.startswith("#"):
                listed.append(line if _is_uri(line) or Path(line).is_absolute() else str(path.parent / line))
        return listed
    return [str(p) for p in find_audio_files(path, recursive=recursive, pattern=pattern)]


def _list_uri(uri: str, *, recursive: bool, pattern: str | None) -> list[str]:
    from calitag.pipeline.records import output_filesystem
    from pyarrow.fs import FileSelector, FileType, LocalFileSystem

    try:
        fs, root = output_filesystem(uri)
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


# --- decoding (Ray tasks) -------------------------------------------------------------------------


def _local_copy(uri: str, folder: str) -> str:
    """Copy a remote file into ``folder`` (soundfile and PyAV read local files)."""
    from calitag.pipeline.records import output_filesystem

    fs, inner = output_filesystem(uri)
    target = os.path.join(folder, Path(inner).name)
    with fs.open_input_stream(inner) as src, open(target, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    return target


def _chunk_rows(path: str, windowing: dict, chunk_windows: int) -> Iterator[dict[str, Any]]:
    """Rows of one file: chunks of windows, the last one flagged with the file's length, or one error row."""
    part, pending, n_samples = 0, [], 0

    def row(last: bool, error: str = "") -> dict[str, Any]:
        windows = np.stack(pending) if pending else np.zeros((0, 1), np.float32)
        return {"path": path, "part": part, "last": last, "n_samples": n_samples, "windows": windows,
                "error": error}  # "" rather than None: an all-null column would have no type

    try:
        with tempfile.TemporaryDirectory(prefix="calitag-") as tmp:
            readable = _local_copy(path, tmp) if _is_uri(path) else path
            for window in stream_windows(readable, **windowing):
                n_samples = max(n_samples, window.start + window.n_valid)
                if pending and (len(pending) == chunk_windows or len(pending[0]) != len(window.samples)):
                    yield row(last=False)
                    part, pending = part + 1, []
                pending.append(window.samples)
    except TaggingError as err:
        pending = []
        yield row(last=True, error=str(err))
        return
    except Exception as err:  # one odd file must never stop a batch
        pending = []
        yield row(last=True, error=f"{path}: {type(err).__name__}: {err}")
        return
    yield row(last=True, error="" if n_samples or pending else f"{path}: no audio windows")


def _decode_batch(batch: dict[str, np.ndarray], *, windowing: dict, chunk_windows: int) -> dict[str, list]:
    """Ray task: the chunk rows of a batch of paths (errors become rows)."""
    out: dict[str, list] = {"path": [], "part": [], "last": [], "n_samples": [], "windows": [], "error": []}
    for path in batch["path"]:
        for row in _chunk_rows(str(path), windowing, chunk_windows):
            for key, value in row.items():
                out[key].append(value)
    out["windows"] = _object_array(out["windows"])
    return out


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    # Windows differ in count and length between chunks: a 1-D object array keeps each one whole.
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


# --- scoring (actors) ---------------------------------------------------------------------------------


class _Scorer:
    """Ray actor: the tagger loaded once; each call scores a batch of chunks, folded per chunk."""

    def __init__(self, model: str, *, checkpoint: str | None, cache_dir: str | None, device: str, batch_size: int,
                 optimize: bool, aggregate: Aggregate, precision: str = "fp32") -> None:
        from calitag.pipeline.tagger import Tagger

        self.tagger = Tagger.load(model, device=device, checkpoint=checkpoint, cache_dir=cache_dir,
                                  batch_size=batch_size, optimize=optimize, precision=precision)
        self.aggregate = aggregate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        n_rows = len(batch["path"])
        n_classes = len(self.tagger.class_names)
        folded = np.zeros((n_rows, n_classes), np.float64)
        n_windows = np.zeros(n_rows, np.int64)
        by_length: dict[int, list[tuple[int, np.ndarray]]] = {}
        for row, windows in enumerate(batch["windows"]):
            if not batch["error"][row]:
                for samples in np.asarray(windows, dtype=np.float32):
                    by_length.setdefault(len(samples), []).append((row, samples))
        size = self.tagger.batch_size
        for members in by_length.values():
            for start in range(0, len(members), size):
                group = members[start:start + size]
                probs = self.tagger.score_windows(np.stack([s for _, s in group]))
                for (row, _), scores in zip(group, probs):
                    scores = scores.astype(np.float64)
                    if n_windows[row] == 0:
                        folded[row] = scores
                    elif self.aggregate == "max":
                        np.maximum(folded[row], scores, out=folded[row])
                    else:
                        folded[row] += scores
                    n_windows[row] += 1
        return {"path": batch["path"], "part": batch["part"], "last": batch["last"],
                "n_samples": batch["n_samples"], "error": batch["error"], "n_windows": n_windows, "folded": folded}


# --- the driver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine runs.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or None to
      start a local instance (or use the one this process already started).
    actors: scoring actors, each with ``gpus_per_actor`` GPUs and ``cpus_per_actor`` CPUs.
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    chunk_windows: int = CHUNK_WINDOWS
    files_per_task: int = FILES_PER_TASK
    chunks_per_call: int = CHUNKS_PER_CALL
    init_options: dict = field(default_factory=dict)


@dataclass
class _Partial:
    parts: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    n_parts: int | None = None
    n_samples: int = 0
    error: str | None = None


def _tags(probs: np.ndarray, class_names: tuple[str, ...], thresholds: Any) -> tuple[tuple[str, float], ...]:
    """Labels passing their threshold (``score > threshold``), by decreasing score, as Tagger.tags_from_scores."""
    passed = (np.asarray(thresholds.apply(probs[None, :]), dtype=bool)[0] if thresholds is not None
              else probs > DEFAULT_THRESHOLD)
    chosen = [(class_names[c], float(probs[c])) for c in np.flatnonzero(passed)]
    chosen.sort(key=lambda pair: -pair[1])
    return tuple(chosen)


def run_ray_batch(
    model: str,
    paths: Sequence[str],
    *,
    options: RayOptions = RayOptions(),
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    thresholds: Any = None,
    batch_size: int = 8,
    optimize: bool = True,
    aggregate: Aggregate = "max",
    precision: str = "fp32",
    with_tags: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> list[FileResult]:
    """Score and tag many files on Ray Data, one :class:`FileResult` per file, errors included.

    Parameters
    ----------
    model : str
        A registered model; every actor loads it (its weights must be in each node's cache, or
        ``checkpoint`` a path every node reads).
    paths : sequence of str
        Local paths (readable on every node of a cluster) or URIs pyarrow's filesystems open.
    options : RayOptions
        Cluster address, actors and their resources.
    checkpoint, cache_dir, batch_size, optimize
        As :meth:`calitag.pipeline.tagger.Tagger.load`; ``optimize`` traces the network on CPU actors.
    thresholds : Thresholds or None
        Decide the tags (default 0.5 for every class).
    aggregate : {"max", "mean"}
        How window scores become the clip score.
    with_tags : bool
        False leaves ``tags`` empty.
    on_result, on_progress : callable or None
        As :func:`calitag.pipeline.batch.run_batch`; called in this process.

    Returns
    -------
    list of FileResult
        In completion order; the scores equal the local engine's to float rounding.

    Raises
    ------
    EngineError
        Ray not installed, the cluster unreachable, or the job failed.
    """
    if aggregate not in ("max", "mean"):
        raise AudioError(f"unknown aggregation {aggregate!r}; expected 'max' or 'mean'")
    if options.actors < 1:
        raise EngineError(f"actors must be at least 1, got {options.actors}")
    from calitag.models.registry import get_spec

    spec = get_spec(model)
    class_names = spec.class_names
    rate = spec.frontend.sample_rate
    paths = [str(p) for p in paths]
    if not paths:
        return []
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **options.init_options)
        except Exception as err:  # ConnectionError, RuntimeError, ValueError depending on the address
            raise EngineError(f"cannot start or join Ray at {options.address or 'a local instance'}: {err}") from err
    try:
        return _run(ray, model, paths, class_names, rate, options, checkpoint=checkpoint, cache_dir=cache_dir,
                    thresholds=thresholds, batch_size=batch_size, optimize=optimize, aggregate=aggregate,
                    precision=precision, with_tags=with_tags, on_result=on_result, on_progress=on_progress)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, model, paths, class_names, rate, options, *, checkpoint, cache_dir, thresholds, batch_size, optimize,
         aggregate, precision, with_tags, on_result, on_progress) -> list[FileResult]:
    from calitag.models.registry import get_spec

    spec = get_spec(model)
    windowing = {"sample_rate": rate, "window_s": spec.window_s, "hop_s": spec.hop_s,
                 "min_window_s": spec.min_window_s}
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    n_blocks = max(1, -(-len(paths) // options.files_per_task))
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=n_blocks)
    dataset = dataset.map_batches(
        # The memory reservation also keeps Ray Data from fusing decoding into the actors, where
        # it would run in turn with the model instead of beside it.
        _decode_batch, batch_size=options.files_per_task, batch_format="numpy", num_cpus=DECODE_CPUS,
        memory=DECODE_MEMORY,
        fn_kwargs={"windowing": windowing, "chunk_windows": options.chunk_windows},
    )
    dataset = dataset.map_batches(
        _Scorer, batch_size=options.chunks_per_call, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
        fn_constructor_kwargs={
            "model": model, "checkpoint": None if checkpoint is None else str(checkpoint),
            "cache_dir": None if cache_dir is None else str(cache_dir),
            "device": "cuda" if options.gpus_per_actor else "cpu", "batch_size": batch_size, "optimize": optimize,
            "aggregate": aggregate, "precision": precision,
        },
    )  # Ray Data restarts a dead actor and retries the batch it was running (max_restarts, max_task_retries)
    results: list[FileResult] = []
    partial: dict[str, _Partial] = {}
    failed = 0
    start = time.perf_counter()

    def finish(path: str, state: _Partial) -> None:
        nonlocal failed
        del partial[path]
        total = sum(n for _, n in state.parts.values())
        if state.error is not None or total == 0:
            result = FileResult(path=path, duration_s=None, scores=None,
                                error=state.error or f"{path}: no audio windows")
            failed += 1
        else:
            folded = [state.parts[i][0] for i in sorted(state.parts) if state.parts[i][1]]
            clip = np.maximum.reduce(folded) if aggregate == "max" else np.sum(folded, axis=0) / total
            clip = clip.astype(np.float32)
            tags = _tags(clip, class_names, thresholds) if with_tags else ()
            result = FileResult(path=path, duration_s=state.n_samples / rate, scores=clip, tags=tags)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if on_progress is not None:
            on_progress(BatchProgress(done=len(results), total=len(paths), failed=failed,
                                      elapsed_s=time.perf_counter() - start))

    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i, path in enumerate(batch["path"]):
                path = str(path)
                state = partial.setdefault(path, _Partial())
                part = int(batch["part"][i])
                error = batch["error"][i]
                if error:
                    state.error = str(error)
                state.parts[part] = (batch["folded"][i], int(batch["n_windows"][i]))
                if batch["last"][i]:
                    state.n_parts = part + 1
                    state.n_samples = int(batch["n_samples"][i])
                if state.n_parts is not None and len(state.parts) == state.n_parts:
                    finish(path, state)
    except TaggingError:
        raise
    except Exception as err:  # Ray wraps failures of tasks and actors in its own exception types
        raise EngineError(f"the Ray job failed: {type(err).__name__}: {err}") from err
    if partial:
        raise EngineError(f"the Ray job ended with {len(partial)} file(s) incomplete, e.g. {next(iter(partial))}")
    return results
