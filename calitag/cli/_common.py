"""What every command of the calitag CLI shares: options, the error style, the per-file skip loop, progress.

Heavy imports (numpy, torch, the models) happen inside functions so that `calitag --help` stays fast.
Every failure a command reports is one ``error: MESSAGE`` line on stderr and exit code 1
(:class:`CommandError`); a file that fails inside a run of many is one ``skip PATH: REASON`` line
(:func:`for_each_file`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

# Choice lists come from the library (modules that import no numpy or torch).
from calitag.errors import TaggingError
from calitag.models.registry import available_models
from calitag.pipeline.records import FORMATTERS as RECORD_FORMATTERS
from calitag.pipeline.review_formats import REVIEW_FORMATS
from calitag.thresholds.choices import METHODS, OBJECTIVES, SGL_ENGINES

CLI_OBJECTIVES = [name.replace("_", "-") for name in OBJECTIVES]
T = TypeVar("T")


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received: raised in the main thread so that every ``finally`` and ``except BaseException``
    cleanup runs (temporary files, decoder processes, a Ray instance started here), as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Run a command with SIGTERM handled like SIGINT; an interruption ends it with one stderr line and exit
    code 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), after the cleanups have run."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = None
    # Handlers can only be set from the main thread; a SIGTERM someone chose to ignore stays ignored.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        click.echo(f"error: interrupted by {signal.Signals(signum).name}; nothing partial was kept "
                   "(`calitag batch --resume` continues a run)", err=True)
        raise SystemExit(128 + signum) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class CalitagGroup(click.Group):
    """The command group: every command runs :func:`interruptible`."""

    def invoke(self, ctx: click.Context) -> Any:
        with interruptible():
            return super().invoke(ctx)


class CommandError(click.ClickException):
    """A command's failure: printed as one ``error: MESSAGE`` line on stderr, exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@contextmanager
def reported() -> Iterator[None]:
    """Turn a library error (TaggingError) raised inside the block into the command's error line."""
    try:
        yield
    except TaggingError as err:
        raise CommandError(str(err)) from err


def echo_skip(path: object, message: str) -> str:
    """The one ``skip PATH: REASON`` line of a failed file; library messages that start with the path lose it."""
    reason = message.removeprefix(f"{path}: ")
    click.echo(f"skip {path}: {reason}", err=True)
    return reason


def for_each_file(paths: Sequence[Path], work: Callable[[Path], T],
                  on_skip: Callable[[Path, str], None] | None = None) -> list[tuple[Path, T]]:
    """``work(path)`` for each path; a file whose work raises TaggingError is skipped with its line.

    Returns the (path, result) pairs of the files that worked. After the loop, :func:`exit_if_failed`
    ends the command with code 1 when any file failed.
    """
    done = []
    for path in paths:
        try:
            done.append((path, work(path)))
        except TaggingError as err:
            reason = echo_skip(path, str(err))
            if on_skip is not None:
                on_skip(path, reason)
    return done


def exit_if_failed(n_done: int, n_total: int) -> None:
    """``N of M file(s) failed`` on stderr and exit code 1 when some of the files failed."""
    failed = n_total - n_done
    if failed:
        click.echo(f"{failed} of {n_total} file(s) failed", err=True)
        raise SystemExit(1)


CACHE_DIR_OPTION = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Checkpoint cache (default: $CALITAG_CACHE, else $XDG_CACHE_HOME/calitag, else ~/.cache/calitag).",
)
CHECKPOINT_OPTION = click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Weights file to use instead of the cached published checkpoint.")
SEGMENT_OPTION = click.option(
    "--segment-s", type=click.FloatRange(min=0, min_open=True, max=1e6), default=None,
    help="Also give tags per consecutive segment of this many seconds (a timeline of long files).")

# The review formats (raven, audacity) of `tag`, `batch` and `detect`, and how segments become their events.
TOP_N_OPTION = click.option(
    "--top-n", type=click.IntRange(min=1), default=None,
    help="Review formats: the N best classes of each segment, whatever the thresholds (default: the segment's tags).")
MERGE_OPTION = click.option(
    "--merge", is_flag=True, help="Review formats: join consecutive segments with the same tag into one event "
                                  "(scored with the highest of their scores).")
MERGE_GAP_OPTION = click.option(
    "--merge-gap", "merge_gap_s", type=click.FloatRange(min=0), default=0.0, show_default=True,
    help="With --merge: segments of a tag at most this many seconds apart are joined.")


REVIEW_OUT_OPTION = click.option(
    "--out", "out_path", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Review formats: the folder of the review files (created; existing ones of the format are replaced).")


def check_review_folder(folder: Path) -> None:
    """A review folder can be made: its parent exists and it is not a file (the command's error otherwise)."""
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"cannot write review files to {folder}: it is a file; expected a folder")
    if not folder.parent.is_dir():
        raise CommandError(f"cannot write {folder}: folder {folder.parent} does not exist; create it first")
    folder.mkdir(exist_ok=True)


def merge_gap(merge: bool, merge_gap_s: float) -> float | None:
    """The ``merge_gap_s`` of the library (None: no merging) from --merge and --merge-gap."""
    if merge_gap_s and not merge:
        raise click.UsageError("--merge-gap is the tolerance of --merge: pass --merge too")
    return merge_gap_s if merge else None


FORCE_OPTION = click.option(
    "--force", is_flag=True,
    help="Replace an existing --out file even if it is not this command's kind of output (never an input).")


def is_thresholds_file(path: Path) -> bool:
    """Whether ``path`` is a calitag thresholds file (which writing commands may replace)."""
    from calitag.thresholds.io import is_thresholds_file as check

    return check(path)


def check_out(path: Path, *, inputs: Iterable[Any], kind: str, is_kind: Callable[[Path], bool] | None = None,
              force: bool = False) -> None:
    """The overwrite rule of every writing command (calitag._fileio.check_output), as a CLI error."""
    from calitag._fileio import check_output

    with reported():
        check_output(path, inputs=[p for p in inputs if p is not None], kind=kind, is_kind=is_kind, force=force)


DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="auto: CUDA when available, else CPU.")
PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True,
    help="bf16: the torch taggers' convolutions in bfloat16 (CPUs with AVX512-BF16/AMX, or CUDA); "
         "auto: bf16 where native and faster, else fp32.")


def download_progress(desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by ``on_progress(done, total)`` callbacks (tqdm imported on the first one)."""
    import sys

    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            from tqdm import tqdm

            state["bar"] = tqdm(total=total or None, unit="B", unit_scale=True, desc=desc, file=sys.stderr)
        state["bar"].update(done - state["bar"].n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return update, close


def expand_inputs(paths: tuple[Path, ...], *, recursive: bool = False) -> list[Path]:
    """Files as given; a folder becomes the audio files directly inside it (``recursive``: in its sub-folders too), sorted.

    A folder with no audio file is kept as it is, so that it is reported as a failed input rather than
    skipped in silence; the other entries a folder holds are counted on stderr.
    """
    from calitag.pipeline.batch import scan_audio_files

    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            scan = scan_audio_files(path, recursive=recursive)
            expanded.extend(scan.files or [path])
            echo_ignored(scan.ignored, path)
        else:
            expanded.append(path)
    return expanded


def echo_ignored(ignored: Sequence[tuple[Path, str]], folder: Path) -> None:
    """One stderr line per reason for the entries of ``folder`` that were left out, with a count and an example."""
    from collections import Counter

    counts = Counter(reason for _, reason in ignored)
    for reason, count in sorted(counts.items()):
        example = next(p for p, r in ignored if r == reason)
        click.echo(f"ignored {count} entr{'y' if count == 1 else 'ies'} of {folder}: {reason}, e.g. {example.name}",
                   err=True)


@dataclass(frozen=True)
class ModelChoice:
    """The model options of a command (--model, --checkpoint, --device, --cache-dir, --precision) as one object."""

    name: str
    checkpoint: Path | None = None
    device: str = "auto"
    cache_dir: Path | None = None
    precision: str = "fp32"

    def load(self, *, thresholds: Path | None = None, batch_size: int = 8, optimize: bool = False) -> Any:
        """The Tagger, with a download bar on stderr while its weights are fetched; errors as the command's."""
        from calitag.pipeline.tagger import Tagger

        update, close = download_progress(f"fetching {self.name}")
        try:
            with reported():
                return Tagger.load(self.name, device=self.device, checkpoint=self.checkpoint, thresholds=thresholds,
                                   cache_dir=self.cache_dir, batch_size=batch_size, optimize=optimize,
                                   precision=self.precision, on_progress=update)
        finally:
            close()


def option_group(name: str, build: Callable[..., Any], *options: Callable) -> Callable:
    """Add ``options`` to a command, which receives them as one argument ``name`` = ``build(**their values)``.

    Keeps command signatures short: a group of related options (the model's, Ray's, the records') travels
    as one small object instead of one parameter each.
    """
    import functools

    def decorate(command: Callable) -> Callable:
        names: list[str] = []

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in names}
            return command(*args, **{name: build(**values)}, **kwargs)

        wrapper.__click_params__ = list(getattr(command, "__click_params__", []))  # type: ignore[attr-defined]
        before = len(wrapper.__click_params__)  # type: ignore[attr-defined]
        for option in reversed(options):
            wrapper = option(wrapper)
        names.extend(param.name for param in wrapper.__click_params__[before:])  # type: ignore[attr-defined]
        return wrapper

    return decorate


def model_options(*, choices: Sequence[str] | None = None, default: str = "yamnet", model_help: str | None = None,
                  precision: bool = True) -> Callable:
    """Add the model options to a command; it receives them as one ``model: ModelChoice`` argument."""
    def build(model_name: str, checkpoint: Path | None, device: str, cache_dir: Path | None,
              precision: str = "fp32") -> ModelChoice:
        return ModelChoice(model_name, checkpoint=checkpoint, device=device, cache_dir=cache_dir, precision=precision)

    return option_group(
        "model", build,
        click.option("--model", "model_name", type=click.Choice(list(choices or available_models())),
                     default=default, show_default=True, help=model_help),
        CHECKPOINT_OPTION, DEVICE_OPTION, CACHE_DIR_OPTION, *([PRECISION_OPTION] if precision else []),
    )


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")


def echo_warnings(caught: Iterable[Any]) -> None:
    """One ``warning: MESSAGE`` line per warning the library issued (warnings.catch_warnings(record=True))."""
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)




def _eta(left: float, rate: float) -> str:
    """``ETA N s``, or ``ETA unknown`` before anything was measured (no rate yet)."""
    return f"ETA {left / rate:.0f} s" if rate > 0 else "ETA unknown"


class Progress:
    """Batch progress on stderr: a tqdm bar on a terminal, a plain line every few seconds otherwise.

    With ``audio_total_s`` it counts seconds of audio, so long files move the bar as they are scored;
    otherwise files.
    """

    def __init__(self, total: int, desc: str, *, every_s: float = 10.0, audio_total_s: float | None = None) -> None:
        import sys

        self.total = total
        self.audio_total_s = audio_total_s if audio_total_s else None
        self.every_s = every_s
        self.last = 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            if self.audio_total_s is not None:
                self.bar = tqdm(total=round(self.audio_total_s, 1), desc=desc, unit="s", unit_scale=True,
                                file=sys.stderr)
            else:
                self.bar = tqdm(total=total, desc=desc, unit="file", file=sys.stderr)

    def __call__(self, progress: Any) -> None:
        by_audio = self.audio_total_s is not None
        if self.bar is not None:
            if by_audio and progress.audio_s > self.bar.total:
                self.bar.total = round(progress.audio_s, 1)  # estimated durations of compressed files ran short
            self.bar.update(round(progress.audio_s if by_audio else progress.done, 1) - self.bar.n)
            self.bar.set_postfix(files=f"{progress.done}/{progress.total}", failed=progress.failed)
            return
        if progress.elapsed_s - self.last >= self.every_s or progress.done == progress.total:
            if progress.done == progress.total and self.last < 0:
                return  # the final line is printed once
            self.last = progress.elapsed_s if progress.done < progress.total else -1.0
            elapsed = max(progress.elapsed_s, 1e-9)
            if by_audio:
                rate = progress.audio_s / elapsed
                # Headers of compressed files give estimated durations: the decoded audio may run past their sum.
                total_s = max(self.audio_total_s, progress.audio_s)
                click.echo(f"{progress.audio_s:.0f}/{total_s:.0f} s of audio ({rate:.1f}x real time), "
                           f"{progress.done}/{progress.total} files, {_eta(total_s - progress.audio_s, rate)}, "
                           f"{progress.failed} failed", err=True)
            else:
                rate = progress.done / elapsed
                click.echo(f"{progress.done}/{progress.total} files, {rate:.2f} files/s, "
                           f"{_eta(progress.total - progress.done, rate)}, {progress.failed} failed", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
