"""Batch processing of whole folders: parallel decoding, batched inference, one record per file.

Worker processes read and resample files (:func:`calitag.pipeline.audio.stream_windows`) and put
their analysis windows on a bounded queue; the main process stacks windows of equal length from
any files into batches, runs the model, folds window scores into clip scores and hands one
:class:`FileResult` per file to the caller as soon as the file is complete. The queue bound keeps
memory flat whatever the number or the length of the files.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calitag.errors import AudioError, TaggingError
from calitag.pipeline.audio import AUDIO_EXTENSIONS, Aggregate, stream_windows
from calitag.pipeline.types import Scores

if TYPE_CHECKING:  # decoder processes import this module: keep torch out of it
    from calitag.pipeline.tagger import Tagger

#: Windows waiting between the decoders and the model, per batch slot.
QUEUE_BATCHES = 4
#: Seconds between liveness checks of the decoder processes while the queue is empty.
POLL_S = 1.0


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: its clip scores and tags, or the error that stopped it.

    scores: float32 (n_classes,) or None when ``error`` is set.
    tags: (label, score) pairs that passed their thresholds, by decreasing score.
    """

    path: str
    duration_s: float | None
    scores: np.ndarray | None
    tags: tuple[tuple[str, float], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class BatchProgress:
    """Counts reported after each file."""

    done: int
    total: int
    failed: int
    elapsed_s: float


@dataclass
class _Pending:
    """A file whose windows are still arriving or waiting in a batch."""

    windows_in: int = 0
    windows_done: int = 0
    ended: bool = False
    n_samples: int = 0
    folded: np.ndarray | None = None
    error: str | None = None


def find_audio_files(root: str | Path, *, recursive: bool = False, pattern: str | None = None) -> list[Path]:
    """The audio files in a folder, sorted.

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
        return [root]
    if not root.is_dir():
        raise AudioError(f"{root}: no such file or folder")
    candidates = root.rglob(pattern or "*") if recursive else root.glob(pattern or "*")
    return sorted(
        p for p in candidates
        if p.is_file() and (pattern is not None or p.suffix.lower() in AUDIO_EXTENSIONS)
    )


def _file_messages(
    index: int, path: str, *, sample_rate: int, window_s: float, hop_s: float, min_window_s: float | None,
    frontend: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[tuple]:
    """The messages of one file: start, its windows (or their features), then end (with its length) or error."""
    yield ("start", index, None)
    n_samples = 0
    try:
        for window in stream_windows(
            path, sample_rate=sample_rate, window_s=window_s, hop_s=hop_s, min_window_s=min_window_s
        ):
            n_samples = max(n_samples, window.start + window.n_valid)
            yield ("window", index, window.samples if frontend is None else frontend(window.samples[None])[0])
    except TaggingError as err:
        yield ("error", index, str(err))
        return
    except Exception as err:  # one odd file must never stop a batch
        yield ("error", index, f"{path}: {type(err).__name__}: {err}")
        return
    yield ("end", index, n_samples)


def _decode(tasks: "mp.Queue[tuple[int, str] | None]", out: "mp.Queue[tuple]", windowing: dict) -> None:
    """Decoder process: the messages of each (index, path) task, onto ``out``, until a None task."""
    # Decoding is background work: at a lower priority it fills the queue in the model's gaps
    # instead of preempting its threads (on 2 cores that preemption cost about 15% of the run).
    os.nice(10)
    while (task := tasks.get()) is not None:
        for message in _file_messages(*task, **windowing):
            out.put(message)


def _windowing(tagger: Tagger) -> dict:
    spec = tagger.spec
    return {"sample_rate": spec.frontend.sample_rate, "window_s": spec.window_s, "hop_s": spec.hop_s,
            "min_window_s": spec.min_window_s, "frontend": getattr(tagger, "window_frontend", None)}


class _InProcess:
    """The same messages as the decoder processes, made in this process (``workers=0``)."""

    def __init__(self, paths: Sequence[str], tagger: Tagger) -> None:
        self._paths = paths
        self._windowing = _windowing(tagger)

    def messages(self) -> Iterator[tuple]:
        for task in enumerate(self._paths):
            yield from _file_messages(*task, **self._windowing)

    def close(self) -> None:
        pass


class _Decoders:
    """A pool of decoder processes fed from a task queue, read through one bounded queue."""

    def __init__(self, paths: Sequence[str], tagger: Tagger, workers: int) -> None:
        # fork starts a decoder in milliseconds, as torch's DataLoader workers do; the children only
        # read and resample audio (no torch, no CUDA). Elsewhere, spawn.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._out: mp.Queue = ctx.Queue(maxsize=QUEUE_BATCHES * tagger.batch_size)
        self._tasks: mp.Queue = ctx.Queue()
        for task in enumerate(paths):
            self._tasks.put(task)
        for _ in range(workers):
            self._tasks.put(None)
        args = (self._tasks, self._out, _windowing(tagger))
        self._procs = [ctx.Process(target=_decode, args=args, daemon=True) for _ in range(workers)]
        for proc in self._procs:
            proc.start()
        self._n_paths = len(paths)

    def messages(self) -> Iterator[tuple]:
        started: set[int] = set()
        done: set[int] = set()
        while len(done) < self._n_paths:
            try:
                message = self._out.get(timeout=POLL_S)
            except queue.Empty:
                if any(p.is_alive() for p in self._procs):
                    continue
                # Every decoder has exited with files left: report them rather than wait forever.
                for index in range(self._n_paths):
                    if index not in done:
                        reason = "stopped while reading" if index in started else "stopped before reading"
                        yield ("error", index, f"the decoder process {reason} this file")
                return
            kind, index, _ = message
            if kind == "start":
                started.add(index)
            elif kind in ("end", "error"):
                done.add(index)
            yield message

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)


def run_batch(
    tagger: Tagger,
    paths: Iterable[str | Path],
    *,
    workers: int = 1,
    aggregate: Aggregate = "max",
    with_tags: bool = True,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> list[FileResult]:
    """Score and tag many files, one :class:`FileResult` per file, errors included.

    Parameters
    ----------
    tagger : Tagger
        The loaded model (its ``batch_size`` sets the windows per forward pass).
    paths : iterable of str or Path
        Files to process; a file that fails becomes a result with ``error`` set.
    workers : int
        Decoder processes; 0 decodes in this process.
    aggregate : {"max", "mean"}
        How window scores become the clip score.
    with_tags : bool
        Apply the tagger's thresholds; False leaves ``tags`` empty (scores only).
    on_result : callable or None
        Called with each result as soon as it is complete (e.g. to append it to a file).
    on_progress : callable or None
        Called with a :class:`BatchProgress` after each file.

    Returns
    -------
    list of FileResult
        In completion order.
    """
    if aggregate not in ("max", "mean"):
        raise AudioError(f"unknown aggregation {aggregate!r}; expected 'max' or 'mean'")
    if workers < 0:
        raise AudioError(f"workers must be 0 or more, got {workers}")
    paths = [str(p) for p in paths]
    rate = tagger.spec.frontend.sample_rate
    pending: dict[int, _Pending] = {}
    batches: dict[tuple, list[tuple[int, np.ndarray]]] = {}  # window (or features) shape -> (file index, payload)
    # With a window frontend the decoders send features, and the main process only runs the network.
    score = tagger.score_features if getattr(tagger, "window_frontend", None) is not None else tagger.score_windows
    results: list[FileResult] = []
    failed = 0
    start = time.perf_counter()

    def finish(index: int) -> None:
        nonlocal failed
        state = pending.pop(index)
        if state.error is not None or state.folded is None:
            result = FileResult(path=paths[index], duration_s=None, scores=None,
                                error=state.error or f"{paths[index]}: no audio windows")
            failed += 1
        else:
            clip = state.folded / state.windows_done if aggregate == "mean" else state.folded
            clip = clip.astype(np.float32)
            scores = Scores(probs=clip[None, :], class_names=tagger.class_names, model=tagger.name,
                            sources=(paths[index],))
            tags = tagger.tags_from_scores(scores)[0].labels if with_tags else ()
            result = FileResult(path=paths[index], duration_s=state.n_samples / rate, scores=clip, tags=tags)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if on_progress is not None:
            on_progress(BatchProgress(done=len(results), total=len(paths), failed=failed,
                                      elapsed_s=time.perf_counter() - start))

    def run(shape: tuple) -> None:
        members = batches.pop(shape)
        probs = score(np.stack([samples for _, samples in members]))
        for (index, _), row in zip(members, probs):
            state = pending[index]
            row = row.astype(np.float64)
            if state.folded is None:
                state.folded = row
            elif aggregate == "max":
                np.maximum(state.folded, row, out=state.folded)
            else:
                state.folded += row
            state.windows_done += 1
        for index in {i for i, _ in members}:
            state = pending[index]
            if state.ended and state.windows_done == state.windows_in:
                finish(index)

    source = _Decoders(paths, tagger, workers) if workers > 0 and paths else _InProcess(paths, tagger)
    try:
        for kind, index, payload in source.messages():
            state = pending.setdefault(index, _Pending())
            if kind == "window":
                state.windows_in += 1
                batch = batches.setdefault(payload.shape, [])
                batch.append((index, payload))
                if len(batch) == tagger.batch_size:
                    run(payload.shape)
            elif kind == "error":
                # Drop its windows still waiting in a batch; the file is reported failed.
                for length in list(batches):
                    batches[length] = [(i, s) for i, s in batches[length] if i != index]
                    if not batches[length]:
                        del batches[length]
                state.error = payload
                finish(index)
            elif kind == "end":
                state.ended = True
                state.n_samples = payload
                if state.windows_done == state.windows_in:
                    finish(index)
        for length in list(batches):
            run(length)
    finally:
        source.close()
    return results
