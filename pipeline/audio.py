"""Audio input: read any file libsndfile reads, downmix, resample with soxr, cut into windows.

Files are read block by block and resampled with a streaming soxr resampler, so a recording of
any length is analysed in bounded memory; a whole-file load (:func:`load_audio`) goes through the
same code and gives the same samples. Resampling uses soxr's "HQ" quality, which is what
``librosa.load(path, sr=...)`` uses by default (``res_type="soxr_hq"``).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile
import soxr

from calitag.errors import AudioError, AudioLoadError
from calitag.pipeline.types import Waveform

logger = logging.getLogger(__name__)

#: Up to 16 channels (7.1.4 surround, third-order ambisonics) are downmixed by averaging.
MAX_CHANNELS = 16
#: Frames read per block from the file: about 6 s at 44.1 kHz, 2 MiB of stereo float32.
BLOCK_FRAMES = 1 << 18
#: Extensions taken when a folder is expanded into files (what libsndfile 1.1+ commonly reads).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)
#: First bytes of the containers libsndfile reads: a file that starts so but fails to open is
#: corrupt rather than "not audio".
_AUDIO_MAGIC = (b"RIFF", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b"ID3", b".snd", b"caff", b"riff")

Aggregate = Literal["max", "mean"]


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says.

    frames: samples per channel; sample_rate: Hz; channels: interleaved channels.
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class Window:
    """One analysis window of a recording.

    samples: float32, shape (n_samples,), zero-padded at the end where the recording is short.
    start: index of its first sample in the (resampled) recording.
    n_valid: how many of its samples are real audio (the rest is padding).
    """

    samples: np.ndarray
    start: int
    n_valid: int


def _sf_name(path: Path) -> str | bytes:
    """The name to give soundfile, which encodes str names strictly: bytes for a name that is not valid UTF-8."""
    name = os.fspath(path)
    try:
        name.encode()
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _looks_like_audio(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(12)
    if head.startswith(_AUDIO_MAGIC):
        return True
    # An MPEG audio frame starts with 11 set sync bits.
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def probe_audio(path: str | Path) -> AudioInfo:
    """Check that ``path`` is a readable audio file and return its header facts.

    Parameters
    ----------
    path : str or Path
        The file to check.

    Returns
    -------
    AudioInfo
        Sample rate, channels, frames and format from the header.

    Raises
    ------
    AudioLoadError
        If the file is missing, not a regular file, empty, not audio, corrupt, holds zero
        samples, or has more than :data:`MAX_CHANNELS` channels (or none).
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise AudioLoadError(f"{path}: symlink loop (too many levels of symbolic links); "
                                         "fix or remove the link") from err
            raise AudioLoadError(f"{path}: dangling symlink: its target {os.readlink(path)} does not exist")
        raise AudioLoadError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise AudioLoadError(f"{path}: not a regular file (expected an audio file, got a folder or device)")
    try:
        size = path.stat().st_size
        looks_like_audio = _looks_like_audio(path) if size else False
    except OSError as err:
        raise AudioLoadError(f"{path}: cannot read the file ({err.strerror}); check its permissions") from err
    if size == 0:
        raise AudioLoadError(f"{path}: empty file (0 bytes, zero samples)")
    try:
        info = soundfile.info(_sf_name(path))
    except (soundfile.LibsndfileError, RuntimeError) as err:
        if looks_like_audio:
            raise AudioLoadError(
                f"{path}: corrupt or unreadable audio ({err}); expected a complete audio file, "
                "re-export or re-download it"
            ) from err
        raise AudioLoadError(
            f"{path}: not audio: libsndfile does not recognise its format ({err}); expected wav, "
            "flac, ogg/opus, mp3 or another format libsndfile reads"
        ) from err
    if info.channels < 1 or info.channels > MAX_CHANNELS:
        raise AudioLoadError(
            f"{path}: unsupported channel layout: {info.channels} channels; expected 1 to "
            f"{MAX_CHANNELS} channels, which are averaged to mono; extract the channels you want first"
        )
    if info.frames <= 0:
        raise AudioLoadError(f"{path}: zero samples (the header says {info.frames} frames)")
    if info.samplerate <= 0:
        raise AudioLoadError(f"{path}: corrupt header: sample rate {info.samplerate} Hz")
    return AudioInfo(
        path=path, sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames),
        format=str(info.format),
    )


def stream_audio(
    path: str | Path, *, sample_rate: int, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Read a file block by block as mono float32 at ``sample_rate``.

    Channels are averaged; non-finite samples are set to zero (with a logged warning);
    resampling is soxr "HQ" in streaming mode, identical to a one-shot ``soxr.resample``.

    Parameters
    ----------
    path : str or Path
        An audio file libsndfile reads.
    sample_rate : int
        The rate to deliver, Hz.
    block_frames : int
        Frames read from the file per block; bounds the memory used.

    Yields
    ------
    numpy.ndarray
        Consecutive float32 chunks, shape (n,), which concatenate to the whole recording.

    Raises
    ------
    AudioLoadError
        Everything :func:`probe_audio` checks; a decoding error part-way through; a file whose
        samples are all NaN or infinite (raised once the file has been read).
    """
    info = probe_audio(path)
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate} ({info.path})")
    resampler = None
    if info.sample_rate != sample_rate:
        resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    n_read = 0
    n_bad = 0
    try:
        with soundfile.SoundFile(_sf_name(info.path)) as handle:
            for block in handle.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                bad = ~np.isfinite(mono)
                if bad.any():
                    n_bad += int(bad.sum())
                    mono = np.where(bad, np.float32(0.0), mono)
                n_read += len(mono)
                chunk = resampler.resample_chunk(mono, last=False) if resampler else mono
                if len(chunk):
                    yield np.ascontiguousarray(chunk, dtype=np.float32)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise AudioLoadError(f"{info.path}: corrupt audio, decoding failed after {n_read} frames ({err})") from err
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield np.ascontiguousarray(tail, dtype=np.float32)
    if n_read == 0:
        raise AudioLoadError(f"{info.path}: zero samples could be decoded (the header says {info.frames})")
    if n_bad == n_read:
        raise AudioLoadError(f"{info.path}: all {n_read} samples are NaN or infinite; expected finite audio")
    if n_bad:
        logger.warning("%s: %d of %d samples were NaN or infinite and were set to 0", info.path, n_bad, n_read)


def load_audio(path: str | Path, *, sample_rate: int) -> Waveform:
    """Load a whole file as mono float32 at ``sample_rate``.

    Parameters
    ----------
    path : str or Path
        An audio file libsndfile reads (wav, flac, ogg/opus, mp3, ...).
    sample_rate : int
        Target rate in Hz; the file is resampled with soxr "HQ" when it differs.

    Returns
    -------
    Waveform
        ``samples`` float32 of shape (n_samples,), ``source`` the path.

    Raises
    ------
    AudioLoadError
        If the file is missing, unreadable or corrupt, not audio, has zero samples, is all NaN,
        or has an unsupported channel layout; the message names the file.
    """
    samples = np.concatenate(list(stream_audio(path, sample_rate=sample_rate)))
    return Waveform(samples=samples, sample_rate=sample_rate, source=str(path))


def resample(waveform: Waveform, *, sample_rate: int) -> Waveform:
    """Return ``waveform`` at ``sample_rate`` (soxr "HQ"), float32; unchanged when the rate matches.

    Raises
    ------
    AudioError
        If the samples are not a 1-D array, are empty, or are all non-finite.
    """
    samples = np.asarray(waveform.samples)
    if samples.ndim != 1:
        raise AudioError(
            f"expected mono samples of shape (n_samples,), got shape {samples.shape} ({waveform.source}); "
            "average the channels first"
        )
    if samples.size == 0:
        raise AudioError(f"zero samples ({waveform.source})")
    samples = samples.astype(np.float32, copy=False)
    finite = np.isfinite(samples)
    if not finite.any():
        raise AudioError(f"all {samples.size} samples are NaN or infinite ({waveform.source})")
    if not finite.all():
        samples = np.where(finite, samples, np.float32(0.0))
    if waveform.sample_rate != sample_rate:
        samples = soxr.resample(samples, waveform.sample_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return Waveform(samples=samples, sample_rate=sample_rate, source=waveform.source)


def window_chunks(
    chunks: Iterable[np.ndarray], *, window: int, hop: int, min_length: int, source: str = "<array>"
) -> Iterator[Window]:
    """Cut a stream of consecutive sample chunks into analysis windows.

    Windows of ``window`` samples start every ``hop`` samples; the last one is aligned to the end
    of the recording so that no window needs padding. A recording shorter than ``window`` gives one
    window holding all of it, zero-padded to ``min_length`` when shorter than that. Only about one
    window plus one chunk is held in memory.

    Parameters
    ----------
    chunks : iterable of numpy.ndarray
        Float32 chunks, shape (n,), in order.
    window, hop, min_length : int
        In samples; ``0 < hop`` and ``min_length <= window``.
    source : str
        Named in errors.

    Yields
    ------
    Window
        Float32 windows, each of ``window`` samples except for a short recording.

    Raises
    ------
    AudioError
        If the chunks hold no samples, or the sizes are inconsistent.
    """
    if window <= 0 or hop <= 0 or min_length > window:
        raise AudioError(f"bad windowing: window {window}, hop {hop}, min_length {min_length} samples ({source})")
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0  # index in the recording of buffer[0]
    total = 0
    next_start = 0
    last_start: int | None = None
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk.astype(np.float32, copy=False)])
        total += len(chunk)
        while next_start + window <= total:
            offset = next_start - buffer_start
            yield Window(samples=buffer[offset : offset + window].copy(), start=next_start, n_valid=window)
            last_start = next_start
            next_start += hop
        # Keep what the next regular window and an end-aligned last window may still need.
        keep_from = max(buffer_start, min(next_start, total - window))
        buffer = buffer[keep_from - buffer_start :]
        buffer_start = keep_from
    if total == 0:
        raise AudioError(f"zero samples ({source})")
    if last_start is None:
        padded = np.zeros(max(total, min_length), dtype=np.float32)
        padded[:total] = buffer[-total:]
        yield Window(samples=padded, start=0, n_valid=total)
    elif last_start + window < total:
        yield Window(samples=buffer[len(buffer) - window :].copy(), start=total - window, n_valid=window)


def _sizes(sample_rate: int, window_s: float, hop_s: float, min_window_s: float | None) -> tuple[int, int, int]:
    window = int(round(window_s * sample_rate))
    hop = int(round(hop_s * sample_rate))
    min_length = window if min_window_s is None else int(round(min_window_s * sample_rate))
    return window, hop, min(min_length, window)


def windows(
    waveform: Waveform, *, window_s: float, hop_s: float, min_window_s: float | None = None
) -> list[Window]:
    """Cut an in-memory waveform into analysis windows (see :func:`window_chunks`).

    Parameters
    ----------
    waveform : Waveform
        Mono float32 samples.
    window_s, hop_s : float
        Window length and step, seconds.
    min_window_s : float or None
        A recording shorter than ``window_s`` is padded to this length; None pads to ``window_s``.

    Returns
    -------
    list of Window
    """
    window, hop, min_length = _sizes(waveform.sample_rate, window_s, hop_s, min_window_s)
    return list(window_chunks([np.asarray(waveform.samples, dtype=np.float32)], window=window, hop=hop,
                              min_length=min_length, source=waveform.source))


def stream_windows(
    path: str | Path, *, sample_rate: int, window_s: float, hop_s: float, min_window_s: float | None = None,
    block_frames: int = BLOCK_FRAMES,
) -> Iterator[Window]:
    """Read a file in blocks and yield its analysis windows at ``sample_rate``, in bounded memory.

    Gives the same windows as ``windows(load_audio(path, sample_rate=...), ...)``.

    Raises
    ------
    AudioLoadError
        As :func:`stream_audio`.
    """
    window, hop, min_length = _sizes(sample_rate, window_s, hop_s, min_window_s)
    chunks = stream_audio(path, sample_rate=sample_rate, block_frames=block_frames)
    yield from window_chunks(chunks, window=window, hop=hop, min_length=min_length, source=str(path))


def aggregate(window_scores: np.ndarray, *, how: Aggregate = "max") -> np.ndarray:
    """Combine per-window scores (n_windows, n_classes) into one clip score (n_classes,).

    Raises
    ------
    AudioError
        For an unknown ``how`` or an empty score matrix.
    """
    if window_scores.ndim != 2 or window_scores.shape[0] == 0:
        raise AudioError(f"expected window scores of shape (n_windows>0, n_classes), got {window_scores.shape}")
    if how == "max":
        return window_scores.max(axis=0)
    if how == "mean":
        return window_scores.mean(axis=0)
    raise AudioError(f"unknown aggregation {how!r}; expected 'max' or 'mean'")
