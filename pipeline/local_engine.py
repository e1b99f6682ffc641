"""The local batch engine: decoder processes, batched inference in this process, one result per file.

Worker processes read and resample files (:meth:`calitag.pipeline.engine.Windowing.windows`) and send
their analysis windows back, each on its own connection with a bounded buffer; the main process
stacks windows of equal length from any files into batches, runs the model, folds window scores
into clip scores (:class:`calitag.pipeline.engine.FileFold`) and hands one :class:`FileResult` per
file to the caller as soon as the file is complete. The buffer bound keeps memory flat whatever the
number or the length of the files.

For the YAMNet models on the CPU (numpy frontend, onnxruntime network) the workers do all of it
instead: each decodes, computes the log-Mel and runs its own single-threaded copy of the network,
and sends back window scores, one worker per CPU by default. Nothing is shared between them, so
every CPU computes all the time; the main process only folds scores.

The main process waits on the connections and the processes together, so a decoder that dies is
noticed at once and replaced (its file is read again once, then reported failed), and decoders end
when the main process dies, however it dies.

Called by :func:`calitag.pipeline.batch.run_batch`, which expands sources, decides tags and writes records.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calitag._host import usable_cpus
from calitag.errors import AudioError, TaggingError
from calitag.pipeline.audio import Aggregate
from calitag.pipeline.engine import BatchProgress, FileFold, FileResult, Windowing

if TYPE_CHECKING:  # decoder processes import this module: keep torch out of it
    from calitag.pipeline.tagger import Tagger

logger = logging.getLogger(__name__)

#: Windows waiting between the decoders and the model, per batch slot (shared among the decoders).
QUEUE_BATCHES = 4
#: Seconds the batch process waits for a message before looking again (deaths wake it at once).
POLL_S = 1.0
#: Files handed to a decoder ahead, so it never waits for the batch process between files.
TASKS_AHEAD = 2
#: Decoder deaths tolerated per decoder slot before the files left are reported instead of read.
MAX_DEATHS_PER_WORKER = 3
#: Seconds between a decoder's checks that the batch process still lives (where prctl is missing).
PARENT_POLL_S = 0.5
#: prctl option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class WorkerScorer:
    """Windows -> clip probabilities inside a batch worker process: the numpy frontend, then the network.

    Each worker runs its own copy of the network, made from its recipe. A single-threaded onnxruntime
    session has no threads of its own, so a forked worker uses the one made here before the fork
    (:meth:`load`, once, instead of once per worker at the same time: about 30 ms against 150 ms for the
    float graph on 2 cores); a session with a thread pool does not survive ``fork``, so with more threads
    each worker makes its own, as it does after pickling (spawn).
    """

    def __init__(self, frontend: Callable[[np.ndarray], np.ndarray], prepare: Callable | None, recipe: Any) -> None:
        self.frontend = frontend
        self.prepare = prepare
        self.recipe = recipe
        self._model: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None, "_pid": None}

    @property
    def forks_with_its_model(self) -> bool:
        """Whether a model made before a fork can run in the child: one intra-op thread, so no thread pool."""
        return self.recipe.threads == 1

    def load(self) -> None:
        """Make this process's copy of the network, unless it has one (or inherited a fork-safe one)."""
        if self._model is None or (self._pid != os.getpid() and not self.forks_with_its_model):
            self._model, self._pid = self.recipe.load(), os.getpid()

    def forget(self) -> None:
        """Drop the copy made in this process (the next call makes one again)."""
        self._model = self._pid = None

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Clip probabilities, float32 (B, n_classes), of equally long windows (B, n_samples)."""
        self.load()
        features = self.frontend(windows)
        if self.prepare is not None:
            features = self.prepare(features)
        return np.asarray(self._model(features), np.float32)


def worker_scorer(tagger: Tagger, *, threads: int | None = None) -> WorkerScorer | None:
    """A :class:`WorkerScorer` of ``tagger`` whose copies run ``threads`` intra-op threads each; None where the
    workers cannot run the model (torch models, a device other than the CPU): they then only decode."""
    recipe = getattr(tagger.model, "recipe", None)
    if getattr(tagger, "window_frontend", None) is None or recipe is None or str(tagger.device) != "cpu":
        return None
    return WorkerScorer(tagger.window_frontend, tagger.prepare_features, recipe(threads=threads))


def default_workers(tagger: Tagger) -> int:
    """Worker processes when none are asked for: one per usable CPU where the workers run the model
    (:func:`worker_scorer`), else one decoder process beside the model's own threads."""
    return usable_cpus() if worker_scorer(tagger) is not None else 1


def _file_messages(
    index: int, path: str, *, windowing: Windowing, frontend: Callable[[np.ndarray], np.ndarray] | None = None,
    scorer: WorkerScorer | None = None,
) -> Iterator[tuple]:
    """The messages of one file: its windows (samples or their features, end sample, segment) or, with a
    ``scorer``, their clip scores (scores, end sample, segment), then end (with its length) or error."""
    n_samples = 0
    try:
        for segment, window in windowing.windows(path):
            end = window.start + window.n_valid
            n_samples = max(n_samples, end)
            if scorer is not None:
                yield ("scores", index, (scorer(window.samples[None])[0], end, segment))
                continue
            payload = window.samples if frontend is None else frontend(window.samples[None])[0]
            yield ("window", index, (payload, end, segment))
    except TaggingError as err:
        yield ("error", index, str(err))
        return
    except Exception as err:  # one odd file must never stop a batch
        yield ("error", index, f"{path}: {type(err).__name__}: {err}")
        return
    yield ("end", index, n_samples)

def _exit_with_parent(parent_pid: int, *, pdeathsig: bool) -> None:
    """Make this decoder process end when the batch process dies, however it dies (even SIGKILL)."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:  # the kernel sends SIGKILL to this process when the thread that forked it ends
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:  # portable fallback: once orphaned, a process is re-parented
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="calitag-parent-watch", daemon=True).start()


def _decode(conn: Connection, options: dict, prefetch: int, parent_pid: int, pdeathsig: bool) -> None:
    """Decoder process: the messages of each (index, path) task received on ``conn``, sent back on it.

    A sender thread drains a bounded outbox, so the next windows are decoded while the batch process
    is busy with the model; a None task (or the batch process going away) ends the process.
    """
    _exit_with_parent(parent_pid, pdeathsig=pdeathsig)
    # Ctrl-C reaches the whole process group: the batch process handles it and ends its decoders, which
    # would otherwise each print a KeyboardInterrupt traceback. SIGTERM (sent by the batch process's close)
    # ends a decoder at once, whatever handler the batch process had when it forked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    scorer = options.get("scorer")
    if scorer is None:
        # Decoding is background work: at a lower priority it fills the queue in the model's gaps
        # instead of preempting its threads (on 2 cores that preemption cost about 15% of the run).
        os.nice(10)
    outbox: queue.Queue = queue.Queue(maxsize=prefetch)

    def send() -> None:
        try:
            while (message := outbox.get()) is not None:
                conn.send(message)
        except OSError:  # the batch process is gone
            os._exit(1)

    sender = threading.Thread(target=send, name="calitag-sender", daemon=True)
    sender.start()
    try:
        if scorer is not None:
            try:
                scorer.load()  # while the first files are on their way
            except Exception:  # noqa: BLE001  the scorer raises it again for each file, which reports it
                pass
        while (task := conn.recv()) is not None:
            for message in _file_messages(*task, **options):
                outbox.put(message)
    except (EOFError, OSError):
        os._exit(1)
    outbox.put(None)
    sender.join()


def _message_options(tagger: Tagger, windowing: Windowing, scorer: WorkerScorer | None = None) -> dict:
    """The keyword arguments of :func:`_file_messages` for ``tagger``'s files."""
    return {"windowing": windowing, "frontend": getattr(tagger, "window_frontend", None), "scorer": scorer}


class _InProcess:
    """The same messages as the decoder processes, made in this process (``workers=0``)."""

    def __init__(self, paths: Sequence[str], tagger: Tagger, windowing: Windowing) -> None:
        self._paths = paths
        self._options = _message_options(tagger, windowing)
        self.notes: dict[int, str] = {}

    def messages(self) -> Iterator[tuple]:
        for task in enumerate(self._paths):
            yield from _file_messages(*task, **self._options)

    def close(self) -> None:
        pass

def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode}"


@dataclass
class _Worker:
    """One decoder process, its connection, and the files it was given, oldest first."""

    proc: mp.process.BaseProcess
    conn: Connection
    assigned: list[int] = field(default_factory=list)


class _Decoders:
    """Decoder processes, each fed files and read through its own connection.

    The connections are waited on together with the processes' sentinels, so a process that dies
    (OOM killer, kill -9, a crash in a decoding library) is seen at once: the file it was reading is
    read again once by a new process, then reported failed, and the run goes on.
    """

    def __init__(self, paths: Sequence[str], tagger: Tagger, windowing: Windowing, workers: int,
                 scorer: WorkerScorer | None = None) -> None:
        # fork starts a decoder in milliseconds, as torch's DataLoader workers do; the children only
        # read and resample audio (no torch, no CUDA), and with a scorer make their own onnxruntime
        # session. Elsewhere, spawn.
        self._ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        if scorer is not None and self._ctx.get_start_method() == "fork" and scorer.forks_with_its_model:
            # Made and run once here, inherited by every worker: its first file then costs what the others
            # cost (a fresh session's first run and the frontend's first call take several times longer).
            try:
                scorer(np.zeros((1, round(windowing.window_s * windowing.sample_rate)), np.float32))
            except Exception:  # noqa: BLE001  each worker then tries itself and reports the failure per file
                scorer.forget()
        self._paths = paths
        self._options = _message_options(tagger, windowing, scorer)
        self._prefetch = max(2, QUEUE_BATCHES * tagger.batch_size // workers)
        self._todo: deque[int] = deque(range(len(paths)))
        self._attempts: dict[int, int] = {}
        self._suspects: set[int] = set()
        self._respawns_left = MAX_DEATHS_PER_WORKER * workers
        # PR_SET_PDEATHSIG fires when the forking *thread* ends: only safe from the main thread.
        self._pdeathsig = threading.current_thread() is threading.main_thread()
        self._workers: list[_Worker] = []
        self._retired: list[_Worker] = []
        self.notes: dict[int, str] = {}
        for _ in range(min(workers, len(paths))):
            self._spawn()

    def _spawn(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_decode, args=(child_conn, self._options, self._prefetch, os.getpid(), self._pdeathsig),
            daemon=True, name="calitag-decoder")
        # A forked child must never run a finaliser of the parent's objects: an onnxruntime session left
        # in an uncollected cycle here, destroyed by the child's garbage collector, waits forever on
        # the condition variables of thread-pool threads that do not exist there. Collect here, and fork
        # with everything frozen (the child's collector never visits what it inherits).
        gc.collect()
        gc.freeze()
        try:
            proc.start()
        finally:
            gc.unfreeze()
        child_conn.close()  # only the child holds its end now: its death reads as end-of-file here
        worker = _Worker(proc, parent_conn)
        self._workers.append(worker)
        self._feed(worker)

    def _feed(self, worker: _Worker) -> None:
        """Give ``worker`` files until it holds TASKS_AHEAD; a file read again is given alone."""
        while self._todo and len(worker.assigned) < TASKS_AHEAD:
            index = self._todo[0]
            # A file that was with a decoder when it died is given alone, so a second death names its cause.
            if worker.assigned and (index in self._suspects or worker.assigned[-1] in self._suspects):
                return
            self._todo.popleft()
            worker.assigned.append(index)
            try:
                worker.conn.send((index, self._paths[index]))
            except OSError:
                return  # it died: its sentinel reports it and the file is handed on

    def _lost(self, worker: _Worker) -> Iterator[tuple]:
        """A dead decoder: forget its partial files, read the one it died on again once, report it after that."""
        self._workers.remove(worker)
        worker.proc.join(timeout=1)
        if worker.proc.is_alive():  # its connection broke but it still runs: stop it
            worker.proc.kill()
            worker.proc.join(timeout=1)
        worker.conn.close()
        why = _exit_reason(worker.proc.exitcode)
        retry = []
        for position, index in enumerate(worker.assigned):
            yield ("restart", index, None)
            self._suspects.add(index)
            if position == 0:  # the file it was sending; the others may not have begun
                self._attempts[index] = self._attempts.get(index, 0) + 1
                if self._attempts[index] > 1:
                    self.notes.pop(index, None)
                    yield ("error", index, f"{self._paths[index]}: the decoder process {why} while reading "
                                           "this file, twice; not read")
                    continue
                self.notes[index] = f"the decoder process {why} while reading this file; it was read again"
            retry.append(index)
        self._todo.extendleft(reversed(retry))
        logger.warning("a decoder process %s; %d file(s) handed to a new one", why, len(retry))
        if self._todo and self._respawns_left > 0:
            self._respawns_left -= 1
            self._spawn()
        if not self._workers:  # every decoder died too often: report what is left rather than wait
            while self._todo:
                index = self._todo.popleft()
                yield ("error", index, f"{self._paths[index]}: not read: the decoder processes keep dying "
                                       f"(the last one {why})")

    def messages(self) -> Iterator[tuple]:
        while self._workers:
            by_handle: dict[object, _Worker] = {}
            for worker in self._workers:
                by_handle[worker.conn] = worker
                by_handle[worker.proc.sentinel] = worker
            ready = wait(list(by_handle), timeout=POLL_S)
            dead: list[_Worker] = []
            for handle in ready:
                worker = by_handle[handle]
                if worker in dead:
                    continue
                # A dead process's last complete messages are still readable: take them first.
                while True:
                    try:
                        if not worker.conn.poll():
                            break
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        dead.append(worker)
                        break
                    kind, index, _ = message
                    if kind in ("end", "error"):
                        worker.assigned.remove(index)
                        self._feed(worker)
                    yield message
                    if handle is worker.conn:
                        break  # one message per wake-up keeps the workers' turns fair
                if handle is worker.proc.sentinel and worker not in dead:
                    dead.append(worker)
            for worker in dead:
                yield from self._lost(worker)
            for worker in [w for w in self._workers if not w.assigned and not self._todo]:
                try:
                    worker.conn.send(None)  # nothing left to give it: let it end
                except OSError:
                    pass
                self._workers.remove(worker)
                self._retired.append(worker)

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in self._workers + self._retired:
            worker.proc.join(timeout=0.5)
            if worker.proc.is_alive():
                worker.proc.terminate()
                worker.proc.join(timeout=5)
            worker.conn.close()
        self._workers, self._retired = [], []


@dataclass
class _Pending:
    """A file whose windows are still arriving or waiting in a batch."""

    fold: FileFold
    windows_in: int = 0
    ended: bool = False
    n_samples: int = 0
    scored_samples: int = 0


class _LocalRun:
    """One :func:`score_locally` call: the files in progress, the windows waiting for a batch, the counts."""

    def __init__(self, tagger: Tagger, paths: Sequence[str], windowing: Windowing, *, aggregate: Aggregate,
                 on_result: Callable[[FileResult], None] | None,
                 on_progress: Callable[[BatchProgress], None] | None, audio_total_s: float | None) -> None:
        self.tagger, self.paths, self.windowing, self.aggregate = tagger, paths, windowing, aggregate
        self.on_result, self.on_progress, self.audio_total_s = on_result, on_progress, audio_total_s
        self.pending: dict[int, _Pending] = {}
        #: window (or features) shape -> (file index, payload, end sample, segment) waiting for a forward pass
        self.batches: dict[tuple, list[tuple[int, np.ndarray, int, int]]] = {}
        # With a window frontend the decoders send features, and this process only runs the network.
        self.score = (tagger.score_features if getattr(tagger, "window_frontend", None) is not None
                      else tagger.score_windows)
        self.notes: dict[int, str] = {}  # the decoders' notes, by file index
        self.results: list[FileResult] = []
        self.failed = 0
        self.audio_done_s = 0.0
        self.start = time.perf_counter()

    def handle(self, kind: str, index: int, payload: Any) -> None:
        """Take one message of a decoder (or of :class:`_InProcess`)."""
        if kind == "restart":  # its decoder died: what arrived of this file is void
            self.drop_windows(index)
            self.pending.pop(index, None)
            return
        if index not in self.pending:
            self.pending[index] = _Pending(FileFold(self.paths[index], how=self.aggregate))
        state = self.pending[index]
        if kind == "scores":  # scored by the worker
            row, end, segment = payload
            state.windows_in += 1
            self.fold(index, row, None, end, segment)
            self.report()
        elif kind == "window":
            data, end, segment = payload  # samples, or their features when the decoders run the frontend
            state.windows_in += 1
            batch = self.batches.setdefault(data.shape, [])
            batch.append((index, data, end, segment))
            if len(batch) == self.tagger.batch_size:
                self.run(data.shape)
        elif kind == "error":
            self.drop_windows(index)  # its windows still waiting in a batch; the file is reported failed
            state.fold.error = payload
            self.finish(index)
        elif kind == "end":
            state.ended = True
            state.n_samples = payload
            if state.fold.count == state.windows_in:
                self.finish(index)

    def fold(self, index: int, row: np.ndarray, samples: np.ndarray | None, end: int, segment: int) -> None:
        """One window's scores into its file's fold."""
        state = self.pending[index]
        state.fold.add(row, segment=segment, samples=samples)
        state.scored_samples = max(state.scored_samples, end)

    def run(self, shape: tuple) -> None:
        """Score the windows waiting with ``shape`` in one forward pass; finish the files they complete."""
        members = self.batches.pop(shape)
        probs = self.score(np.stack([data for _, data, _, _ in members]))
        for (index, data, end, segment), row in zip(members, probs):
            self.fold(index, row, data if data.ndim == 1 else None, end, segment)
        for index in {member[0] for member in members}:
            state = self.pending[index]
            if state.ended and state.fold.count == state.windows_in:
                self.finish(index)
        self.report()

    def flush(self) -> None:
        """Score every window still waiting (the decoders are done)."""
        for shape in list(self.batches):
            self.run(shape)

    def drop_windows(self, index: int) -> None:
        for shape in list(self.batches):
            self.batches[shape] = [member for member in self.batches[shape] if member[0] != index]
            if not self.batches[shape]:
                del self.batches[shape]

    def finish(self, index: int) -> None:
        state = self.pending.pop(index)
        notes = (self.notes[index],) if index in self.notes else ()
        result = state.fold.result(n_samples=state.n_samples, windowing=self.windowing,
                                   class_names=self.tagger.class_names, model=self.tagger.name, notes=notes)
        if result.error is not None:
            self.failed += 1
        else:
            self.audio_done_s += state.n_samples / self.windowing.sample_rate
        self.results.append(result)
        if self.on_result is not None:
            self.on_result(result)
        self.report()

    def report(self) -> None:
        if self.on_progress is not None:
            in_progress = sum(state.scored_samples for state in self.pending.values()) / self.windowing.sample_rate
            self.on_progress(BatchProgress(
                done=len(self.results), total=len(self.paths), failed=self.failed,
                elapsed_s=time.perf_counter() - self.start, audio_s=self.audio_done_s + in_progress,
                audio_total_s=self.audio_total_s))


def score_locally(
    tagger: Tagger,
    paths: Iterable[str | Path],
    *,
    workers: int | None = None,
    aggregate: Aggregate = "max",
    segment_s: float | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    audio_total_s: float | None = None,
) -> list[FileResult]:
    """Score many files on this machine, one :class:`FileResult` per file (without tags), errors included.

    Parameters
    ----------
    tagger : Tagger
        The loaded model (its ``batch_size`` sets the windows per forward pass in this process).
    paths : iterable of str or Path
        Files to process; a file that fails becomes a result with ``error`` set.
    workers : int or None
        Worker processes; 0 decodes and scores in this process. For the YAMNet models on the CPU
        each worker decodes, computes the log-Mel and runs its own copy of the network, on
        ``usable_cpus() // min(workers, number of files)`` onnxruntime threads (at least one), and this
        process only collects scores; for the others the workers decode and the model runs here. None:
        :func:`default_workers` (one per usable CPU for YAMNet, else one).
    aggregate : {"max", "mean"}
        How window scores become the clip score (each segment's score, with ``segment_s``).
    segment_s : float or None
        Also score consecutive segments of this many seconds; the clip score is their maximum.
    on_result : callable or None
        Called with each result as soon as it is complete.
    on_progress : callable or None
        Called with a :class:`BatchProgress` after each model batch and each file.
    audio_total_s : float or None
        The seconds of audio in ``paths``, passed on in the progress reports.

    Returns
    -------
    list of FileResult
        In completion order.

    Raises
    ------
    AudioError
        A negative ``workers``, an unknown ``aggregate`` or a bad ``segment_s``.
    """
    windowing = Windowing.of(tagger.spec, segment_s=segment_s)
    FileFold("", how=aggregate)  # checks the name before any decoder starts
    if workers is None:
        workers = default_workers(tagger)
    if workers < 0:
        raise AudioError(f"workers must be 0 or more, got {workers}")
    paths = [str(p) for p in paths]
    # Where the workers can run the model, each runs its own copy on its share of the CPUs: no thread of
    # this process competes with them, and nothing waits on another stage.
    processes = min(workers, len(paths))
    scorer = worker_scorer(tagger, threads=max(1, usable_cpus() // processes)) if processes > 0 else None
    run = _LocalRun(tagger, paths, windowing, aggregate=aggregate, on_result=on_result, on_progress=on_progress,
                    audio_total_s=audio_total_s)
    source = _Decoders(paths, tagger, windowing, workers, scorer) if processes > 0 else _InProcess(paths, tagger, windowing)
    run.notes = source.notes
    try:
        for message in source.messages():
            run.handle(*message)
        run.flush()
    finally:
        source.close()
    return run.results
