"""Files libsndfile does not read (m4a, ADTS aac, mp4 video, opus in webm) are decoded by FFmpeg (PyAV).

The compressed files are made here from audio_samples/ clips with PyAV's own encoders (no ffmpeg
binary), so every test compares a decoded file with the wav it was made from.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import soxr
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import AudioLoadError
from calitag.pipeline.audio import AUDIO_EXTENSIONS, load_audio, probe_audio, stream_audio
from calitag.pipeline.batch import find_audio_files
from calitag.pipeline.tagger import Tagger

SOURCE = "alarm_clock_01.wav"

#: name -> (container format, audio codec, encoding rate or None for the source's, with a video track)
LOSSY = {
    "clip.m4a": ("ipod", "aac", None, False),
    "clip.aac": ("adts", "aac", None, False),
    "clip.mp4": ("mp4", "aac", None, True),
    "clip.webm": ("webm", "libopus", 48_000, False),
}


def encode(path: Path, source: Path, *, container: str, codec: str, rate: int | None = None,
           video: bool = False) -> Path:
    """Encode ``source`` (mono wav) into ``path`` with PyAV; a few black video frames when ``video``."""
    samples, source_rate = soundfile.read(source, dtype="float32")
    rate = rate or source_rate
    if rate != source_rate:
        samples = soxr.resample(samples, source_rate, rate).astype(np.float32)
    with av.open(str(path), "w", format=container) as out:
        if video:
            picture = out.add_stream("mpeg4", rate=25)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(codec, rate=rate)
        sound.layout = "mono"
        context = sound.codec_context
        converter = av.AudioResampler(format=context.format.name, layout="mono", rate=rate,
                                      frame_size=context.frame_size or None)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0  # so the muxer records the encoder's priming samples (an mp4 edit list)
        for piece in converter.resample(frame) + converter.resample(None):
            out.mux(sound.encode(piece))
        out.mux(sound.encode(None))
        if video:
            black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for index in range(3):
                black.pts = index
                out.mux(picture.encode(black))
            out.mux(picture.encode(None))
    return path


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, audio_samples) -> dict[str, Path]:
    """The source clip as m4a, aac, mp4 (with video), webm/opus and lossless flac-in-Matroska."""
    folder = tmp_path_factory.mktemp("encoded")
    source = audio_samples / SOURCE
    files = {name: encode(folder / name, source, container=c, codec=k, rate=r, video=v)
             for name, (c, k, r, v) in LOSSY.items()}
    files["clip.mka"] = encode(folder / "clip.mka", source, container="matroska", codec="flac")
    return files


def test_probe_names_ffmpeg_backend(encoded):
    """An m4a file is probed by FFmpeg with its rate and channels; a wav stays with libsndfile."""
    info = probe_audio(encoded["clip.m4a"])
    assert (info.backend, info.sample_rate, info.channels) == ("ffmpeg", 16_000, 1)
    assert probe_audio(encoded["clip.mka"]).backend == "ffmpeg"
    assert "aac" in info.format


@pytest.mark.torch
def test_lossless_container_decodes_exactly(encoded, audio_samples):
    """FLAC in Matroska (FFmpeg path) gives the wav's samples and the debug model's scores exactly."""
    wav = load_audio(audio_samples / SOURCE, sample_rate=16_000).samples
    mka = load_audio(encoded["clip.mka"], sample_rate=16_000).samples
    assert len(mka) == len(wav)
    np.testing.assert_allclose(mka, wav, atol=1 / 32768)
    tagger = Tagger.load("debug", device="cpu")
    scores = tagger.scores([audio_samples / SOURCE, encoded["clip.mka"]]).probs
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-4)


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_file_holds_the_source_signal(encoded, audio_samples, name):
    """The decoded lossy file is the source signal (after the codec's delay) at more than 14 dB SNR."""
    wav = load_audio(audio_samples / SOURCE, sample_rate=16_000).samples
    decoded = load_audio(encoded[name], sample_rate=16_000).samples
    assert len(wav) <= len(decoded) <= len(wav) + 2048 + 1024
    n = len(wav) - 2048
    lags = [float(np.dot(wav[:n], decoded[k : k + n])) for k in range(0, 2049)]
    lag = int(np.argmax(lags))
    error = np.sqrt(np.mean((wav[:n] - decoded[lag : lag + n]) ** 2))
    assert error < 0.2 * np.sqrt(np.mean(wav[:n] ** 2))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_file_has_the_sources_top_tags_debug(encoded, audio_samples, name):
    """The debug model ranks the same top-3 classes for the compressed file as for its wav."""
    tagger = Tagger.load("debug", device="cpu")
    probs = tagger.scores([audio_samples / SOURCE, encoded[name]]).probs
    assert list(np.argsort(-probs[1])[:3]) == list(np.argsort(-probs[0])[:3])


@pytest.mark.parametrize("name", sorted(LOSSY))
def test_lossy_file_has_the_sources_top_tag_yamnet(encoded, audio_samples, name, yamnet_cached):
    """YAMNet's top-1 class of the compressed file equals that of its wav source."""
    tagger = Tagger.load("yamnet", device="cpu")
    probs = tagger.scores([audio_samples / SOURCE, encoded[name]]).probs
    assert int(np.argmax(probs[1])) == int(np.argmax(probs[0]))


def test_stream_in_blocks_equals_whole(encoded):
    """Decoding an m4a in small blocks gives the same samples as in large ones."""
    small = np.concatenate(list(stream_audio(encoded["clip.m4a"], sample_rate=22_050, block_frames=1000)))
    large = np.concatenate(list(stream_audio(encoded["clip.m4a"], sample_rate=22_050, block_frames=1 << 20)))
    np.testing.assert_array_equal(small, large)


def test_folder_of_m4a_is_found(encoded):
    """find_audio_files lists m4a, aac, mp4, webm and mka files (FFmpeg's extensions)."""
    found = {p.name for p in find_audio_files(encoded["clip.m4a"].parent)}
    assert found == {"clip.m4a", "clip.aac", "clip.mp4", "clip.webm", "clip.mka"}
    assert {".m4a", ".aac", ".mp4", ".mkv", ".webm"} <= AUDIO_EXTENSIONS


@pytest.mark.torch
def test_cli_tags_a_folder_of_m4a(tmp_path, audio_samples):
    """`calitag tag FOLDER` with only m4a files tags them instead of saying 'no audio files'."""
    encode(tmp_path / "a.m4a", audio_samples / SOURCE, container="ipod", codec="aac")
    result = CliRunner().invoke(main, ["tag", str(tmp_path), "--model", "debug", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "a.m4a:" in result.output


def test_video_without_audio_is_refused(tmp_path):
    """An mp4 with only a video track is refused with 'no audio track', naming the file."""
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        picture = out.add_stream("mpeg4", rate=25)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        for index in range(3):
            black.pts = index
            out.mux(picture.encode(black))
        out.mux(picture.encode(None))
    with pytest.raises(AudioLoadError, match="no audio track"):
        probe_audio(path)


def test_truncated_m4a_is_an_error_or_shorter(encoded, tmp_path):
    """An m4a cut in half is refused with a message naming the file (never a traceback)."""
    data = encoded["clip.m4a"].read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioLoadError, match="cut.m4a"):
        load_audio(cut, sample_rate=16_000)


def test_truncated_wav_warns_with_both_lengths(audio_samples, tmp_path, caplog):
    """A WAV cut in half is read as far as it goes, with a warning giving declared and present frames."""
    data = (audio_samples / SOURCE).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING", logger="calitag.pipeline.audio"):
        wave = load_audio(cut, sample_rate=16_000)
    assert abs(wave.duration_s - 1.25) < 0.01
    assert "truncated" in caplog.text and "40000 frames" in caplog.text and "cut.wav" in caplog.text


def test_complete_wav_gives_no_truncation_warning(audio_samples, caplog):
    """An intact WAV reads without a truncation warning (its header and data agree)."""
    with caplog.at_level("WARNING", logger="calitag.pipeline.audio"):
        load_audio(audio_samples / SOURCE, sample_rate=16_000)
    assert "truncated" not in caplog.text


# --- decoder failures become the file's error; files libsndfile cannot seek in; files that shrink ----------


def _wav_with_fmt(source: Path, path: Path, *, format_tag: int | None = None, bits: int | None = None) -> Path:
    """A copy of ``source`` whose fmt chunk claims another format tag or sample width (a hostile header)."""
    import struct

    data = bytearray(source.read_bytes())
    at = data.find(b"fmt ") + 8  # wFormatTag, nChannels, nSamplesPerSec, nAvgBytesPerSec, nBlockAlign, wBitsPerSample
    if format_tag is not None:
        data[at:at + 2] = struct.pack("<H", format_tag)
    if bits is not None:
        data[at + 14:at + 16] = struct.pack("<H", bits)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("change", [{"format_tag": 0x1234}, {"bits": 0}])
def test_a_wav_no_decoder_reads_is_one_audio_load_error(audio_samples, tmp_path, change):
    """A WAV with an unknown fmt tag or 0 bits per sample fails probe and load with AudioLoadError naming it."""
    bad = _wav_with_fmt(audio_samples / SOURCE, tmp_path / "bad.wav", **change)
    for read in (probe_audio, lambda p: load_audio(p, sample_rate=16_000)):
        with pytest.raises(AudioLoadError, match=r"bad\.wav: no decoder for its audio encoding"):
            read(bad)


@pytest.fixture()
def gsm_wav(audio_samples, tmp_path) -> Path:
    """A GSM 6.10 WAV (libsndfile writes it; it cannot seek in it) made from a real clip at 8 kHz."""
    samples, rate = soundfile.read(audio_samples / SOURCE, dtype="float32")
    path = tmp_path / "gsm.wav"
    soundfile.write(path, soxr.resample(samples, rate, 8000), 8000, subtype="GSM610")
    return path


def test_gsm610_wav_is_read_whole(gsm_wav):
    """A GSM 6.10 WAV (not seekable for libsndfile) is read to its end: its length and its signal survive."""
    info = soundfile.info(gsm_wav)
    reference, _ = soundfile.read(gsm_wav, frames=info.frames, dtype="float32")
    wave = load_audio(gsm_wav, sample_rate=8000)
    assert len(wave.samples) == info.frames
    np.testing.assert_array_equal(wave.samples, reference)


@pytest.mark.torch
def test_tag_cli_tags_a_gsm_wav_and_reports_a_bad_one(gsm_wav, audio_samples, tmp_path):
    """`calitag tag` tags a GSM 6.10 WAV and gives a WAV no decoder reads one skip line, then goes on."""
    bad = _wav_with_fmt(audio_samples / SOURCE, tmp_path / "bad.wav", format_tag=0x1234)
    result = CliRunner().invoke(main, ["tag", "--model", "debug", str(bad), str(gsm_wav)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"skip {bad}: no decoder for its audio encoding" in result.stderr
    assert "gsm.wav" in result.stdout


def test_a_wav_that_shrinks_while_read_gives_only_its_frames_and_warns(audio_samples, tmp_path, caplog):
    """A WAV cut short while it is being read yields the frames read (no repeated block) and a warning."""
    import os

    path = tmp_path / "shrinking.wav"
    path.write_bytes((audio_samples / SOURCE).read_bytes())
    info = soundfile.info(path)
    blocks = stream_audio(path, sample_rate=info.samplerate, block_frames=4096)
    first = next(blocks)
    keep = 3 * 4096
    os.truncate(path, 44 + 2 * keep)  # header (44 bytes, 16-bit mono) and three blocks
    rest = list(blocks)
    samples = np.concatenate([first, *rest])
    original, _ = soundfile.read(audio_samples / SOURCE, dtype="float32", frames=keep)
    assert len(samples) == keep
    np.testing.assert_array_equal(samples, original)
    assert any("it shrank while being read" in r.getMessage() and f"{keep} of the {info.frames}" in r.getMessage()
               for r in caplog.records)
