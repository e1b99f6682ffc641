"""The Ray Data batch engine: the local engine's results, on one machine or a cluster.

The plan is a Ray Data pipeline, driven from this process::

    paths --decode (Ray tasks)--> window chunks --score (actor pool)--> window scores
          --this process: FileFold per file--> one FileResult per file

- Decoding (:meth:`calitag.pipeline.engine.Windowing.windows`, the local engine's reader, segments
  included) runs as Ray tasks; a file is cut into chunks of at most ``CHUNK_WINDOWS`` windows, so a
  long recording never travels as one object. A file that fails to decode becomes an error row, never
  a failed job.
- Scoring runs in a fixed pool of actors (``map_batches`` with a class): each rebuilds the tagger once
  from the driver's tagger, and stacks equally long windows from all the chunks of its batch into forward
  passes of ``batch_size`` windows. An actor that dies is restarted by Ray and the batch it was running
  is redone; a chunk that arrives twice is folded once.
- This process folds the window scores of each file with :class:`calitag.pipeline.engine.FileFold` (the
  one fold of every engine) and hands each :class:`FileResult` to ``on_result``, so results are
  written where the driver runs and a cluster needs no shared output folder. Tags and records are
  :func:`calitag.pipeline.batch.run_batch`'s job, as for the local engine.

Ray is an optional dependency (the ``ray`` extra), imported only here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calitag.errors import EngineError, TaggingError
from calitag._extras import import_optional
from calitag.pipeline.audio import Aggregate
from calitag.pipeline.engine import BatchProgress, FileFold, FileResult, Windowing

if TYPE_CHECKING:  # the actors rebuild the Tagger by reference: this module never imports it
    from calitag.pipeline.tagger import Tagger

logger = logging.getLogger(__name__)

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


def import_ray() -> Any:
    """The ``ray`` module with Ray Data.

    Raises
    ------
    MissingDependencyError
        Ray Data is not installed (the message names the ``ray`` extra and how to install it).
    """
    import_optional("ray.data", extra="ray", what="the Ray engine (--engine ray)")
    return import_optional("ray", extra="ray", what="the Ray engine (--engine ray)")


def _is_uri(text: str) -> bool:
    return "://" in text


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


def _chunk_rows(path: str, windowing: Windowing, chunk_windows: int) -> Iterator[dict[str, Any]]:
    """Rows of one file: chunks of windows (with each window's segment), the last one flagged with the
    file's length, or one error row."""
    part, pending, segments, n_samples = 0, [], [], 0

    def row(last: bool, error: str = "") -> dict[str, Any]:
        windows = np.stack(pending) if pending else np.zeros((0, 1), np.float32)
        return {"path": path, "part": part, "last": last, "n_samples": n_samples, "windows": windows,
                "segments": np.asarray(segments, np.int64),
                "error": error}  # "" rather than None: an all-null column would have no type

    try:
        with tempfile.TemporaryDirectory(prefix="calitag-") as tmp:
            readable = _local_copy(path, tmp) if _is_uri(path) else path
            for segment, window in windowing.windows(readable):
                n_samples = max(n_samples, window.start + window.n_valid)
                if pending and (len(pending) == chunk_windows or len(pending[0]) != len(window.samples)):
                    yield row(last=False)
                    part, pending, segments = part + 1, [], []
                pending.append(window.samples)
                segments.append(segment)
    except TaggingError as err:
        pending, segments = [], []
        yield row(last=True, error=str(err))
        return
    except Exception as err:  # one odd file must never stop a batch
        pending, segments = [], []
        yield row(last=True, error=f"{path}: {type(err).__name__}: {err}")
        return
    yield row(last=True, error="" if n_samples or pending else f"{path}: no audio windows")


def _decode_batch(batch: dict[str, np.ndarray], *, windowing: Windowing, chunk_windows: int) -> dict[str, Any]:
    """Ray task: the chunk rows of a batch of paths (errors become rows)."""
    out: dict[str, list] = {"path": [], "part": [], "last": [], "n_samples": [], "windows": [], "segments": [],
                            "error": []}
    for path in batch["path"]:
        for row in _chunk_rows(str(path), windowing, chunk_windows):
            for key, value in row.items():
                out[key].append(value)
    return {**out, "windows": _object_array(out["windows"]), "segments": _object_array(out["segments"])}


def _object_array(items: list[np.ndarray]) -> np.ndarray:
    # Arrays differ in length between chunks: a 1-D object array keeps each one whole.
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        array[i] = item
    return array


# --- scoring (actors) ---------------------------------------------------------------------------------


class _Scorer:
    """Ray actor: the tagger rebuilt once; each call scores the windows of a batch of chunks."""

    def __init__(self, make_tagger: Callable[[], Tagger]) -> None:
        self.tagger = make_tagger()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        n_classes = len(self.tagger.class_names)
        scores = [np.zeros((len(np.asarray(w)), n_classes), np.float32) for w in batch["windows"]]
        by_length: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for row, windows in enumerate(batch["windows"]):
            if not batch["error"][row]:
                for position, samples in enumerate(np.asarray(windows, dtype=np.float32)):
                    by_length.setdefault(len(samples), []).append((row, position, samples))
        size = self.tagger.batch_size
        for members in by_length.values():
            for start in range(0, len(members), size):
                group = members[start:start + size]
                probs = self.tagger.score_windows(np.stack([samples for _, _, samples in group]))
                for (row, position, _), window_scores in zip(group, probs):
                    scores[row][position] = window_scores
        return {"path": batch["path"], "part": batch["part"], "last": batch["last"], "n_samples": batch["n_samples"],
                "error": batch["error"], "segments": batch["segments"], "scores": _object_array(scores)}


def _actor_loader(tagger: Tagger, *, device: str) -> Callable[[], Tagger]:
    """What each actor calls to rebuild ``tagger`` on ``device``: its class's ``from_config``, pickled by
    reference, with its config (the driver decides the tags, so the actors need no thresholds)."""
    return functools.partial(type(tagger).from_config, dataclasses.replace(tagger.config, device=device))


# --- the driver ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How the Ray engine runs.

    address: a running cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``) or None to
      start a local instance (or use the one this process already started).
    actors: scoring actors, each with ``gpus_per_actor`` GPUs (the model then runs on CUDA) and
      ``cpus_per_actor`` CPUs.
    """

    address: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    chunk_windows: int = CHUNK_WINDOWS
    files_per_task: int = FILES_PER_TASK
    chunks_per_call: int = CHUNKS_PER_CALL
    init_options: dict = field(default_factory=dict)


def _dataset(ray: Any, paths: Sequence[str], windowing: Windowing, options: RayOptions,
             make_tagger: Callable[[], Tagger]) -> Any:
    """The Ray Data plan: decoding tasks, then the pool of scoring actors."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    n_blocks = max(1, -(-len(paths) // options.files_per_task))
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=n_blocks)
    dataset = dataset.map_batches(
        # The memory reservation also keeps Ray Data from fusing decoding into the actors, where
        # it would run in turn with the model instead of beside it.
        _decode_batch, batch_size=options.files_per_task, batch_format="numpy", num_cpus=DECODE_CPUS,
        memory=DECODE_MEMORY, fn_kwargs={"windowing": windowing, "chunk_windows": options.chunk_windows},
    )
    # Ray Data restarts a dead actor and retries the batch it was running (max_restarts, max_task_retries).
    return dataset.map_batches(
        _Scorer, batch_size=options.chunks_per_call, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None,
        fn_constructor_kwargs={"make_tagger": make_tagger},
    )


@dataclass
class _Partial:
    """A file whose chunks are still arriving."""

    fold: FileFold
    parts: set[int] = field(default_factory=set)
    n_parts: int | None = None
    n_samples: int = 0


class _Collector:
    """The driver's side: folds each file's chunks as they arrive and finishes the files they complete."""

    def __init__(self, tagger: Tagger, paths: Sequence[str], windowing: Windowing, *, aggregate: Aggregate,
                 on_result: Callable[[FileResult], None] | None,
                 on_progress: Callable[[BatchProgress], None] | None) -> None:
        self.class_names, self.model = tagger.class_names, tagger.name
        self.total, self.windowing, self.aggregate = len(paths), windowing, aggregate
        self.on_result, self.on_progress = on_result, on_progress
        self.partial: dict[str, _Partial] = {}
        self.results: list[FileResult] = []
        self.failed = 0
        self.start = time.perf_counter()

    def take(self, batch: dict[str, np.ndarray]) -> None:
        """Fold the window scores of one batch of scored chunks."""
        for i, path in enumerate(batch["path"]):
            path = str(path)
            state = self.partial.setdefault(path, _Partial(FileFold(path, how=self.aggregate)))
            part = int(batch["part"][i])
            if part in state.parts:
                continue  # a retried batch delivered it again
            state.parts.add(part)
            if batch["error"][i]:
                state.fold.error = state.fold.error or str(batch["error"][i])
            for window_scores, segment in zip(np.asarray(batch["scores"][i]), np.asarray(batch["segments"][i])):
                state.fold.add(window_scores, segment=int(segment))
            if batch["last"][i]:
                state.n_parts = part + 1
                state.n_samples = int(batch["n_samples"][i])
            if state.n_parts is not None and len(state.parts) == state.n_parts:
                self.finish(path)

    def finish(self, path: str) -> None:
        state = self.partial.pop(path)
        result = state.fold.result(n_samples=state.n_samples, windowing=self.windowing, class_names=self.class_names,
                                   model=self.model)
        self.failed += result.error is not None
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        if self.on_progress is not None:
            self.on_progress(BatchProgress(done=len(self.results), total=self.total, failed=self.failed,
                                           elapsed_s=time.perf_counter() - self.start))


def score_on_ray(
    tagger: Tagger,
    paths: Sequence[str],
    *,
    options: RayOptions = RayOptions(),
    aggregate: Aggregate = "max",
    segment_s: float | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> list[FileResult]:
    """Score many files on Ray Data, one :class:`FileResult` per file (without tags), errors included.

    Parameters
    ----------
    tagger : Tagger
        The model; every actor rebuilds it from its load options on its own device (CUDA with
        ``options.gpus_per_actor``, else the CPU), so its weights must be in each node's cache, or its
        checkpoint a path every node reads.
    paths : sequence of str
        Local paths (readable on every node of a cluster) or URIs pyarrow's filesystems open.
    options : RayOptions
        Cluster address, actors and their resources.
    aggregate, segment_s, on_result, on_progress
        As :func:`calitag.pipeline.local_engine.score_locally`; the callbacks run in this process.

    Returns
    -------
    list of FileResult
        In completion order; the scores equal the local engine's to float rounding.

    Raises
    ------
    MissingDependencyError
        Ray not installed.
    EngineError
        Fewer than one actor, the cluster unreachable, or the job failed.
    """
    windowing = Windowing.of(tagger.spec, segment_s=segment_s)
    FileFold("", how=aggregate)  # checks the name before Ray starts
    if options.actors < 1:
        raise EngineError(f"actors must be at least 1, got {options.actors}")
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
        make_tagger = _actor_loader(tagger, device="cuda" if options.gpus_per_actor else "cpu")
        dataset = _dataset(ray, paths, windowing, options, make_tagger)
        collector = _Collector(tagger, paths, windowing, aggregate=aggregate, on_result=on_result,
                               on_progress=on_progress)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                collector.take(batch)
        except TaggingError:
            raise
        except Exception as err:  # Ray wraps failures of tasks and actors in its own exception types
            raise EngineError(f"the Ray job failed: {type(err).__name__}: {err}") from err
        if collector.partial:
            raise EngineError(f"the Ray job ended with {len(collector.partial)} file(s) incomplete, "
                              f"e.g. {next(iter(collector.partial))}")
        return collector.results
    finally:
        if started_here:
            ray.shutdown()
