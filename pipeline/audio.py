"""Audio input: read any file libsndfile or FFmpeg reads, downmix, resample with soxr, cut into windows.

libsndfile reads wav, flac, ogg/opus, mp3, aiff and the like; what it does not open (m4a/aac, the
audio track of mp4/mkv/webm, opus in webm, wma, ...) is decoded by FFmpeg through PyAV. Files are
read block by block and resampled with a streaming soxr resampler, so a recording of
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

from calitag.errors import AudioError, AudioLoadError, AudioTypeError
from calitag.pipeline.types import Waveform

logger = logging.getLogger(__name__)

#: Up to 16 channels (7.1.4 surround, third-order ambisonics) are downmixed by averaging.
MAX_CHANNELS = 16
#: Frames read per block from the file: about 6 s at 44.1 kHz, 2 MiB of stereo float32.
BLOCK_FRAMES = 1 << 18
#: Extensions of what libsndfile 1.1+ commonly reads.
SNDFILE_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)
#: Extensions of audio and video containers FFmpeg (PyAV) demuxes whose audio track is decoded.
#: A fixed list: FFmpeg's own extension lists also name images, subtitles and text files.
FFMPEG_EXTENSIONS = frozenset(
    {".m4a", ".m4b", ".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".aac", ".adts", ".mkv", ".mka", ".webm", ".weba",
     ".wma", ".wmv", ".asf", ".avi", ".flv", ".ts", ".mts", ".ac3", ".eac3", ".dts", ".amr", ".mp2", ".mpc",
     ".ape", ".wv", ".tta", ".spx", ".dsf", ".mpg", ".mpeg", ".vob"}
)
#: Extensions taken when a folder is expanded into files.
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
#: First bytes of audio containers: a file that starts so but fails to open is corrupt rather
#: than "not audio". (ISO media "ftyp" and Matroska/WebM EBML are checked apart.)
_AUDIO_MAGIC = (b"RIFF", b"RF64", b"BW64", b"FORM", b"fLaC", b"OggS", b"ID3", b".snd", b"caff", b"riff",
                b"\x1a\x45\xdf\xa3", b"\x30\x26\xb2\x75")

Aggregate = Literal["max", "mean"]
#: What libsndfile raises on a file it cannot read.
_SNDFILE_ERRORS = (soundfile.LibsndfileError, RuntimeError)


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says.

    frames: samples per channel (for FFmpeg containers the container's estimate, 0 when it gives none);
    sample_rate: Hz; channels: interleaved channels.
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    #: "sndfile" or "ffmpeg": the library that decodes the file.
    backend: str = "sndfile"
    #: Frames the header declares, where it can be checked against the data (RIFF/WAVE); a larger
    #: value than ``frames`` means the file was cut short.
    declared_frames: int | None = None

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
    if head.startswith(_AUDIO_MAGIC) or head[4:8] == b"ftyp":
        return True
    # An MPEG audio frame starts with 11 set sync bits.
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _riff_declared_frames(path: Path, info: "soundfile._SoundFileInfo") -> int | None:
    """Frames the ``data`` chunk of a RIFF/WAVE header declares (libsndfile reports what is present)."""
    if info.format != "WAV":
        return None
    block_align = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                   "ULAW": 1, "ALAW": 1}.get(info.subtype)
    if block_align is None:
        return None
    with path.open("rb") as handle:
        if handle.read(4) != b"RIFF" or handle.read(4) == b"" or handle.read(4) != b"WAVE":
            return None
        while len(header := handle.read(8)) == 8:
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                return size // (block_align * info.channels)
            handle.seek(size + (size & 1), 1)  # chunks are padded to an even length
    return None


def _probe_ffmpeg(path: Path) -> AudioInfo:
    """Header facts of the first audio track of a container FFmpeg demuxes (raises av.FFmpegError)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            kinds = sorted({stream.type for stream in container.streams}) or ["no"]
            raise AudioLoadError(
                f"{path}: no audio track ({container.format.name} container with {', '.join(kinds)} streams); "
                "expected a file with sound"
            )
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # FFmpeg demuxes the stream but has no decoder for its encoding
            raise AudioLoadError(f"{path}: no decoder for its audio encoding (FFmpeg opens the "
                                 f"{container.format.name} container but cannot decode the stream)")
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        channels = int(stream.codec_context.channels or 0)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = 0.0
        codec = stream.codec_context.name
        return AudioInfo(path=path, sample_rate=rate, channels=channels, frames=max(0, round(seconds * rate)),
                         format=f"{container.format.name}/{codec}", backend="ffmpeg")


def probe_audio(path: str | Path) -> AudioInfo:
    """Check that ``path`` is a readable audio file and return its header facts.

    libsndfile is asked first; a file it does not open is tried with FFmpeg (PyAV), which takes
    the first audio track of any container it demuxes.

    Parameters
    ----------
    path : str or Path
        The file to check.

    Returns
    -------
    AudioInfo
        Sample rate, channels, frames, format and decoding backend from the header.

    Raises
    ------
    AudioLoadError
        If the file is missing, not a regular file, empty, not audio, corrupt, holds zero
        samples or no audio track, or has more than :data:`MAX_CHANNELS` channels (or none).
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
        sf_info = soundfile.info(_sf_name(path))
    except _SNDFILE_ERRORS as sf_err:
        try:
            info = _probe_ffmpeg(path)
        except AudioLoadError as ff_err:
            raise AudioLoadError(f"{ff_err}; libsndfile: {sf_err}; re-encode it (e.g. to PCM WAV or FLAC)") from sf_err
        except Exception as ff_err:  # noqa: BLE001  whatever a decoding library raises is this file's error
            ff_err = _decoder_message(ff_err)
            if looks_like_audio:
                raise AudioLoadError(
                    f"{path}: corrupt or unreadable audio (libsndfile: {sf_err}; FFmpeg: {ff_err}); expected a "
                    "complete audio file, re-export or re-download it"
                ) from sf_err
            raise AudioLoadError(
                f"{path}: not audio: neither libsndfile nor FFmpeg recognises its format (libsndfile: {sf_err}; "
                f"FFmpeg: {ff_err}); expected wav, flac, ogg/opus, mp3, m4a/aac, or a video with an audio track"
            ) from sf_err
    else:
        info = AudioInfo(
            path=path, sample_rate=int(sf_info.samplerate), channels=int(sf_info.channels),
            frames=int(sf_info.frames), format=str(sf_info.format),
            declared_frames=_riff_declared_frames(path, sf_info),
        )
        if info.frames <= 0:
            raise AudioLoadError(f"{path}: zero samples (the header says {info.frames} frames)")
    if info.channels < 1 or info.channels > MAX_CHANNELS:
        raise AudioLoadError(
            f"{path}: unsupported channel layout: {info.channels} channels; expected 1 to "
            f"{MAX_CHANNELS} channels, which are averaged to mono; extract the channels you want first"
        )
    if info.sample_rate <= 0:
        raise AudioLoadError(f"{path}: corrupt header: sample rate {info.sample_rate} Hz")
    return info


def _decoder_message(err: BaseException) -> str:
    """A decoding library's exception as text: its message, with the type where the message alone says little."""
    text = str(err)
    own = isinstance(err, _SNDFILE_ERRORS) or type(err).__module__.split(".")[0] == "av"  # already says what failed
    return text if own and text else f"{type(err).__name__}: {text}"


def _sndfile_blocks(info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    """(frames, channels) float32 blocks read by libsndfile, each holding only the frames actually read.

    ``SoundFile.blocks`` is not used: it reads into one reused buffer sized from the header and ignores short
    reads (a file that shrinks while it is read repeats its last block up to the header's length), and it
    refuses files libsndfile cannot seek in (GSM 6.10 WAV). ``read`` returns what was read; an empty block ends.
    """
    with soundfile.SoundFile(_sf_name(info.path)) as handle:
        while len(block := handle.read(block_frames, dtype="float32", always_2d=True)):
            yield block


def _ffmpeg_blocks(info: AudioInfo, block_frames: int) -> Iterator[np.ndarray]:
    """(frames, channels) float32 blocks of the first audio track, decoded by FFmpeg (PyAV)."""
    import av

    # Only the sample format changes (to float planar); rate and layout stay the file's.
    converter = av.AudioResampler(format="fltp")
    pending: list[np.ndarray] = []
    n_pending = 0
    with av.open(str(info.path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            if frame.sample_rate != info.sample_rate:
                raise AudioLoadError(
                    f"{info.path}: the sample rate changes inside the audio track ({info.sample_rate} Hz, then "
                    f"{frame.sample_rate} Hz); re-encode it at one rate"
                )
            for converted in converter.resample(frame):
                planes = converted.to_ndarray()  # (channels, n)
                pending.append(planes.T)
                n_pending += planes.shape[1]
            if n_pending >= block_frames:
                yield np.concatenate(pending)
                pending, n_pending = [], 0
        for converted in converter.resample(None):
            pending.append(converted.to_ndarray().T)
    if pending:
        yield np.concatenate(pending)


def stream_audio(
    path: str | Path, *, sample_rate: int, block_frames: int = BLOCK_FRAMES
) -> Iterator[np.ndarray]:
    """Read a file block by block as mono float32 at ``sample_rate``.

    Channels are averaged; non-finite samples are set to zero (with a logged warning);
    resampling is soxr "HQ" in streaming mode, identical to a one-shot ``soxr.resample``. A WAV
    file whose header declares more frames than it holds (cut short in a copy or download) is
    read as far as it goes, with a logged warning giving both lengths.

    Parameters
    ----------
    path : str or Path
        An audio file libsndfile or FFmpeg reads.
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
    blocks = _ffmpeg_blocks if info.backend == "ffmpeg" else _sndfile_blocks
    n_read = 0
    n_bad = 0
    try:
        for block in blocks(info, block_frames):
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            bad = ~np.isfinite(mono)
            if bad.any():
                n_bad += int(bad.sum())
                mono = np.where(bad, np.float32(0.0), mono)
            n_read += len(mono)
            chunk = resampler.resample_chunk(mono, last=False) if resampler else mono
            if len(chunk):
                yield np.ascontiguousarray(chunk, dtype=np.float32)
    except AudioLoadError:
        raise
    except Exception as err:  # noqa: BLE001  whatever a decoding library raises is this file's error
        raise AudioLoadError(f"{info.path}: corrupt audio, decoding failed after {n_read} frames "
                             f"({_decoder_message(err)})") from err
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
    if info.backend == "sndfile" and n_read < info.frames:
        logger.warning(
            "%s: the file ended after %d of the %d frames it held when opened (it shrank while being read, or its "
            "data is damaged); tagged as the %.2f s read", info.path, n_read, info.frames, n_read / info.sample_rate)
    elif info.declared_frames is not None and info.declared_frames > n_read:
        logger.warning(
            "%s: truncated file: the header declares %d frames (%.2f s) but only %d (%.2f s) are present; "
            "tagged as the %.2f s present", info.path, info.declared_frames, info.declared_frames / info.sample_rate,
            n_read, n_read / info.sample_rate, n_read / info.sample_rate,
        )


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


#: A 2-D array is one recording with channels on its short axis only when the long axis is at
#: least this many times longer: (32000, 2) is stereo, (8, 500) is refused as ambiguous.
MIN_SAMPLES_PER_CHANNEL_RATIO = 100


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def as_samples(samples: object, *, source: str = "<array>") -> np.ndarray:
    """Check one recording's samples and return them as mono float32, shape (n_samples,).

    The one input check of every in-memory entry point (:class:`Tagger` arrays and Waveforms,
    :func:`resample`). Integer PCM is scaled to [-1, 1) (int16 by 2**15, int32 by 2**31, uint8
    offset by 128); a 2-D array is one recording whose channels lie on its short axis, averaged
    to mono, when that axis has at most :data:`MAX_CHANNELS` entries and the other is at least
    :data:`MIN_SAMPLES_PER_CHANNEL_RATIO` times longer (channels-first or channels-last).
    Non-finite samples are set to zero.

    Parameters
    ----------
    samples : numpy.ndarray
        Shape (n_samples,), (n_samples, n_channels) or (n_channels, n_samples); float or integer.
    source : str
        Named in errors.

    Returns
    -------
    numpy.ndarray
        float32, shape (n_samples,).

    Raises
    ------
    AudioTypeError
        For anything but a numeric array (None, a number, a string, object or bool arrays).
    AudioError
        For a 0-D array, an ambiguous or higher-dimensional shape, no samples, unsigned integers
        other than uint8, or samples that are all NaN or infinite.
    """
    if not isinstance(samples, np.ndarray):
        raise AudioTypeError(f"expected audio samples as a numpy array, got {_describe(samples)} ({source})")
    kind = samples.dtype.kind
    if kind not in "iuf":
        raise AudioTypeError(
            f"expected numeric audio samples (float or integer PCM), got an array of dtype {samples.dtype} "
            f"({source})"
        )
    if samples.ndim == 0:
        raise AudioError(f"expected an array of samples, got a 0-D array (a single number {samples.item()!r}) "
                         f"({source})")
    if samples.ndim > 2:
        raise AudioError(f"expected samples of shape (n_samples,) or (n_samples, n_channels), got shape "
                         f"{samples.shape} ({source}); pass several recordings as a list")
    if samples.size == 0:
        raise AudioError(f"zero samples, shape {samples.shape} ({source})")
    if kind == "i":
        samples = samples.astype(np.float32) / np.float32(2 ** (8 * samples.dtype.itemsize - 1))
    elif kind == "u":
        if samples.dtype != np.uint8:
            raise AudioError(f"unsigned {samples.dtype} samples have no standard PCM scaling ({source}); "
                             "convert them to float in [-1, 1]")
        samples = (samples.astype(np.float32) - np.float32(128)) / np.float32(128)
    if samples.ndim == 2:
        short_axis = int(np.argmin(samples.shape))
        n_channels, n_samples = samples.shape[short_axis], samples.shape[1 - short_axis]
        if n_channels > MAX_CHANNELS or n_samples < MIN_SAMPLES_PER_CHANNEL_RATIO * n_channels:
            raise AudioError(
                f"ambiguous shape {samples.shape} ({source}): a 2-D array is read as one recording with up to "
                f"{MAX_CHANNELS} channels on its short axis and at least {MIN_SAMPLES_PER_CHANNEL_RATIO} times as "
                "many samples on the other; pass several recordings as a list of 1-D arrays"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            samples = samples.astype(np.float32, copy=False).mean(axis=short_axis, dtype=np.float32)
    samples = samples.astype(np.float32, copy=False)
    finite = np.isfinite(samples)
    if not finite.any():
        raise AudioError(f"all {samples.size} samples are NaN or infinite ({source})")
    if not finite.all():
        samples = np.where(finite, samples, np.float32(0.0))
    return samples


def resample(waveform: Waveform, *, sample_rate: int) -> Waveform:
    """Return ``waveform`` at ``sample_rate`` (soxr "HQ"), mono float32; unchanged when the rate matches.

    The samples are checked and converted by :func:`as_samples` (integer PCM scaled, channels
    averaged).

    Raises
    ------
    AudioTypeError, AudioError
        As :func:`as_samples`; also for a sample rate that is not a positive number.
    """
    samples = as_samples(waveform.samples, source=waveform.source)
    if not isinstance(waveform.sample_rate, (int, np.integer)) or waveform.sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive whole number of Hz, got {waveform.sample_rate!r} "
                         f"({waveform.source})")
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


def split_segments(chunks: Iterable[np.ndarray], *, segment_samples: int) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup a stream of sample chunks into consecutive segments of ``segment_samples``.

    Yields
    ------
    (int, numpy.ndarray)
        Each segment's first sample index and its float32 samples; the last one may be shorter.
    """
    pending: list[np.ndarray] = []
    n_pending = 0
    start = 0
    for chunk in chunks:
        pending.append(chunk)
        n_pending += len(chunk)
        if n_pending < segment_samples:
            continue
        joined = np.concatenate(pending)
        n_whole = len(joined) // segment_samples * segment_samples
        for offset in range(0, n_whole, segment_samples):
            yield start, joined[offset : offset + segment_samples]
            start += segment_samples
        pending, n_pending = [joined[n_whole:]], len(joined) - n_whole
    if n_pending:
        yield start, np.concatenate(pending)


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


def check_finite_scores(probs: np.ndarray, samples: np.ndarray | None, source: str) -> None:
    """Raise if a window's scores hold NaN or inf (audio far outside [-1, 1] overflows the frontend).

    ``samples`` are the window's samples, or None where only its features are at hand.

    Raises
    ------
    AudioError
        Naming the source and, with ``samples``, the window's peak amplitude.
    """
    if not np.isfinite(probs).all():
        peak = f"the samples reach amplitude {float(np.max(np.abs(samples))):.3g}, " if samples is not None else ""
        raise AudioError(
            f"{source}: the model gave NaN or infinite scores; {peak}expected audio in [-1, 1] "
            "(scale integer PCM or normalise the recording)"
        )


class RunningAggregate:
    """Window scores folded into one clip score as they arrive, so a long file holds one row per class.

    The one implementation of ``--aggregate``: :func:`aggregate`, the Tagger and the batch runner use it.

    Raises
    ------
    AudioError
        For an unknown ``how`` (at construction), or :meth:`result` before any window.
    """

    def __init__(self, how: Aggregate = "max") -> None:
        if how not in ("max", "mean"):
            raise AudioError(f"unknown aggregation {how!r}; expected 'max' or 'mean'")
        self.how = how
        self.count = 0
        self._folded: np.ndarray | None = None

    def add(self, window_scores: np.ndarray) -> None:
        """Fold the scores of one window, shape (n_classes,), in float64."""
        row = np.asarray(window_scores, dtype=np.float64)
        if self._folded is None:
            self._folded = row.copy()
        elif self.how == "max":
            np.maximum(self._folded, row, out=self._folded)
        else:
            self._folded += row
        self.count += 1

    def result(self) -> np.ndarray:
        """The clip score, float64 of shape (n_classes,)."""
        if self._folded is None:
            raise AudioError("no window scores to aggregate")
        return self._folded / self.count if self.how == "mean" else self._folded.copy()


def aggregate(window_scores: np.ndarray, *, how: Aggregate = "max") -> np.ndarray:
    """Combine per-window scores (n_windows, n_classes) into one clip score (n_classes,), in their dtype.

    Raises
    ------
    AudioError
        For an unknown ``how`` or an empty score matrix.
    """
    if window_scores.ndim != 2 or window_scores.shape[0] == 0:
        raise AudioError(f"expected window scores of shape (n_windows>0, n_classes), got {window_scores.shape}")
    folded = RunningAggregate(how)
    for row in window_scores:
        folded.add(row)
    return folded.result().astype(window_scores.dtype)
