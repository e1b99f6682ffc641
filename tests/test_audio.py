"""calitag.pipeline.audio: loading, downmixing, resampling, windowing and bad-file errors."""

from __future__ import annotations

import logging
import tracemalloc
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from calitag.errors import AudioError, AudioLoadError
from calitag.pipeline.audio import (
    MAX_CHANNELS,
    aggregate,
    load_audio,
    probe_audio,
    resample,
    stream_audio,
    stream_windows,
    windows,
)
from calitag.pipeline.types import Waveform


@pytest.fixture(scope="module")
def speech_clip(audio_samples: Path) -> Path:
    """A 10-s, 22.05-kHz FLAC soundscape of the bundled samples (speech and an alarm bell)."""
    return audio_samples / "soundscapes" / "tune_00.flac"


def _tone(path: Path, *, seconds: float, rate: int, freq: float = 1000.0, channels: int = 1, **kwargs) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1) if channels > 1 else mono
    soundfile.write(path, data, rate, **kwargs)
    return path


@pytest.mark.parametrize("rate", [16_000, 22_050, 32_000])
def test_load_audio_gives_mono_float32_of_the_right_duration(speech_clip: Path, rate: int) -> None:
    """A real clip loads as 1-D float32 at the requested rate, its duration +- 0.1 s, with 0 < std < 1."""
    wave = load_audio(speech_clip, sample_rate=rate)
    info = soundfile.info(str(speech_clip))
    assert wave.samples.ndim == 1 and wave.samples.dtype == np.float32
    assert wave.sample_rate == rate and wave.source == str(speech_clip)
    assert abs(wave.duration_s - info.duration) < 0.1
    assert 0 < float(wave.samples.std()) < 1


def test_load_audio_matches_librosa_default_resampling(speech_clip: Path) -> None:
    """Resampling equals librosa.load's default (soxr_hq), which the CRNN's golden features used."""
    ours = load_audio(speech_clip, sample_rate=22_050).samples
    reference, _ = librosa.load(speech_clip, sr=22_050)
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)) < 1e-6


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    """Both channels of a stereo file are averaged, so a tone in L and a scaled copy in R keep their mean."""
    path = _tone(tmp_path / "stereo.wav", seconds=1.0, rate=16_000, channels=2, subtype="FLOAT")
    stereo, _ = soundfile.read(path, dtype="float32")
    wave = load_audio(path, sample_rate=16_000)
    assert np.allclose(wave.samples, stereo.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_compressed_formats_load(tmp_path: Path, fmt: str) -> None:
    """FLAC, Ogg Vorbis and MP3 files written by libsndfile load with their duration."""
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = _tone(tmp_path / f"tone.{fmt.lower()}", seconds=2.0, rate=44_100, format=fmt)
    wave = load_audio(path, sample_rate=16_000)
    assert abs(wave.duration_s - 2.0) < 0.1
    spectrum = np.abs(np.fft.rfft(wave.samples))
    assert abs(np.argmax(spectrum) * 16_000 / len(wave.samples) - 1000.0) < 5.0


def test_streamed_windows_equal_in_memory_windows(speech_clip: Path) -> None:
    """Reading in small blocks and resampling in streaming mode gives the windows of a whole-file load."""
    wave = load_audio(speech_clip, sample_rate=16_000)
    in_memory = windows(wave, window_s=2.0, hop_s=0.75, min_window_s=1.0)
    streamed = list(stream_windows(speech_clip, sample_rate=16_000, window_s=2.0, hop_s=0.75, min_window_s=1.0,
                                   block_frames=4_096))
    assert [w.start for w in streamed] == [w.start for w in in_memory]
    for a, b in zip(streamed, in_memory):
        assert np.max(np.abs(a.samples - b.samples)) < 1e-6


def test_windows_cover_a_long_recording_without_padding(speech_clip: Path) -> None:
    """Long input: full windows every hop, the last one aligned to the end, every sample covered."""
    wave = load_audio(speech_clip, sample_rate=16_000)
    window_s, hop_s = 2.0, 1.5
    cut = windows(wave, window_s=window_s, hop_s=hop_s)
    n, win, hop = len(wave.samples), int(window_s * 16_000), int(hop_s * 16_000)
    assert all(len(w.samples) == win and w.n_valid == win for w in cut)
    assert all(b.start - a.start == hop for a, b in zip(cut[:-2], cut[1:-1]))
    assert cut[-1].start + win == n
    covered = np.zeros(n, dtype=bool)
    for w in cut:
        covered[w.start : w.start + win] = True
        assert np.array_equal(w.samples, wave.samples[w.start : w.start + win])
    assert covered.all()


def test_short_recording_is_one_zero_padded_window(speech_clip: Path) -> None:
    """A recording shorter than min_window_s becomes one window padded with zeros to that length."""
    wave = load_audio(speech_clip, sample_rate=16_000)
    short = Waveform(samples=wave.samples[:4_000], sample_rate=16_000)
    (only,) = windows(short, window_s=10.0, hop_s=5.0, min_window_s=1.0)
    assert len(only.samples) == 16_000 and only.n_valid == 4_000 and only.start == 0
    assert np.array_equal(only.samples[:4_000], short.samples)
    assert not only.samples[4_000:].any()


def test_recording_between_min_and_window_is_kept_unpadded(speech_clip: Path) -> None:
    """A clip no longer than the 10-s window, with a 1-s minimum, is one window of its own length."""
    wave = load_audio(speech_clip, sample_rate=16_000)
    (only,) = windows(wave, window_s=10.0, hop_s=5.0, min_window_s=1.0)
    assert len(only.samples) == len(wave.samples) == only.n_valid


def test_streaming_a_long_file_keeps_memory_bounded(tmp_path: Path) -> None:
    """Streaming windows of a 3-minute file allocates far less than the file decoded whole."""
    rate = 16_000
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as handle:
        for _ in range(18):  # 18 x 10 s
            handle.write((0.1 * rng.standard_normal((10 * rate, 2))).astype(np.float32))
    whole_bytes = 180 * 32_000 * 4  # the whole file at the model's 32 kHz, float32
    tracemalloc.start()
    n_windows = 0
    for window in stream_windows(path, sample_rate=32_000, window_s=10.0, hop_s=5.0, block_frames=32_768):
        n_windows += 1
        del window
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n_windows == 1 + (180 - 10) // 5  # full 10-s windows every 5 s, the last ending at 180 s
    assert peak < whole_bytes / 4


def test_aggregate_max_and_mean() -> None:
    """Clip scores are the per-class maximum (default) or mean of window scores; others are refused."""
    rng = np.random.default_rng(1)
    scores = rng.random((6, 4))
    assert np.array_equal(aggregate(scores), scores.max(axis=0))
    assert np.allclose(aggregate(scores, how="mean"), scores.mean(axis=0))
    with pytest.raises(AudioError, match="unknown aggregation 'median'"):
        aggregate(scores, how="median")  # type: ignore[arg-type]


def test_resample_refuses_ambiguous_multichannel_arrays() -> None:
    """A (100, 2) array is too short to tell samples from channels: refused with its shape."""
    with pytest.raises(AudioError, match=r"ambiguous shape \(100, 2\)"):
        resample(Waveform(samples=np.zeros((100, 2), np.float32), sample_rate=16_000), sample_rate=32_000)


def test_partly_nan_file_is_cleaned_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """NaN samples in an otherwise good file become zeros and a warning names the file and the count."""
    data = 0.1 * np.sin(np.linspace(0, 200, 16_000)).astype(np.float32)
    data[100:150] = np.nan
    path = tmp_path / "some_nan.wav"
    soundfile.write(path, data, 16_000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="calitag.pipeline.audio"):
        wave = load_audio(path, sample_rate=16_000)
    assert np.isfinite(wave.samples).all() and not wave.samples[100:150].any()
    assert "50 of 16000 samples were NaN" in caplog.text and "some_nan.wav" in caplog.text


# --- every bad-input kind gets its own typed error naming the file --------------------------------


def _missing(tmp: Path) -> Path:
    return tmp / "nowhere.wav"


def _folder(tmp: Path) -> Path:
    (tmp / "folder.wav").mkdir()
    return tmp / "folder.wav"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.wav").write_bytes(b"")
    return tmp / "empty.wav"


def _text(tmp: Path) -> Path:
    (tmp / "notes.wav").write_text("these are meeting notes, not a recording\n" * 20)
    return tmp / "notes.wav"


def _corrupt(tmp: Path) -> Path:
    good = _tone(tmp / "good.wav", seconds=0.5, rate=16_000)
    (tmp / "corrupt.wav").write_bytes(good.read_bytes()[:30])  # RIFF header cut before the data chunk
    return tmp / "corrupt.wav"


def _zero_samples(tmp: Path) -> Path:
    soundfile.write(tmp / "zero.wav", np.zeros((0, 1), np.float32), 16_000)
    return tmp / "zero.wav"


def _all_nan(tmp: Path) -> Path:
    soundfile.write(tmp / "nan.wav", np.full(8_000, np.nan, np.float32), 16_000, subtype="FLOAT")
    return tmp / "nan.wav"


def _many_channels(tmp: Path) -> Path:
    soundfile.write(tmp / "array.wav", np.zeros((1_600, MAX_CHANNELS + 8), np.float32), 16_000)
    return tmp / "array.wav"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "file not found"),
        (_folder, "not a regular file"),
        (_empty, "empty file"),
        (_text, "not audio"),
        (_corrupt, "corrupt or unreadable audio"),
        (_zero_samples, "zero samples"),
        (_all_nan, "NaN or infinite"),
        (_many_channels, "unsupported channel layout: 24 channels"),
    ],
)
def test_bad_files_raise_a_typed_error_naming_the_file(tmp_path: Path, make, message: str) -> None:
    """Each kind of bad file raises AudioLoadError whose message names the file and the problem."""
    path = make(tmp_path)
    with pytest.raises(AudioLoadError, match=message) as caught:
        load_audio(path, sample_rate=16_000)
    assert str(path) in str(caught.value)


def test_probe_reads_the_header_only(speech_clip: Path) -> None:
    """probe_audio reports the header's rate, channels and frames of a real file."""
    info = probe_audio(speech_clip)
    header = soundfile.info(str(speech_clip))
    assert (info.sample_rate, info.channels, info.frames) == (header.samplerate, header.channels, header.frames)


def test_stream_audio_concatenates_to_the_whole_file(speech_clip: Path) -> None:
    """The chunks of stream_audio, joined, are exactly what load_audio returns."""
    joined = np.concatenate(list(stream_audio(speech_clip, sample_rate=16_000, block_frames=10_000)))
    assert np.array_equal(joined, load_audio(speech_clip, sample_rate=16_000).samples)
