"""In-memory inputs of the Python API: integer PCM, multichannel arrays, non-audio values, overflowing audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from calitag.errors import AudioError, AudioTypeError, OutputError, TaggingError
from calitag.pipeline.audio import as_samples, load_audio
from calitag.pipeline.batch import run_batch
from calitag.pipeline.records import RecordWriter
from calitag.pipeline.tagger import Tagger
from calitag.pipeline.types import Waveform

CLIP = "speech_01.wav"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    """The random-weight debug model on the CPU (16 kHz)."""
    return Tagger.load("debug", device="cpu")


@pytest.fixture(scope="module")
def clip(audio_samples) -> np.ndarray:
    """A real 16-kHz speech clip as float32 in [-1, 1]."""
    return load_audio(audio_samples / CLIP, sample_rate=16_000).samples


@pytest.mark.torch
def test_int16_pcm_is_scaled_like_soundfile(tagger, audio_samples):
    """An int16 array scores as the same file read as float (int16 / 32768)."""
    as_int, _ = soundfile.read(audio_samples / CLIP, dtype="int16")
    as_float, _ = soundfile.read(audio_samples / CLIP, dtype="float32")
    probs = tagger.scores([as_int, as_float]).probs
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)


def test_int32_and_uint8_pcm_are_scaled(clip):
    """int32 PCM is divided by 2**31 and uint8 PCM centred on 128, giving samples in [-1, 1)."""
    int32 = np.round(clip * 2**30).astype(np.int32)
    np.testing.assert_allclose(as_samples(int32), clip / 2, atol=1e-7)
    uint8 = np.array([0, 128, 255], dtype=np.uint8)
    np.testing.assert_allclose(as_samples(uint8), [-1.0, 0.0, 127 / 128])


@pytest.mark.torch
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_stereo_array_is_one_recording_downmixed(tagger, clip, layout):
    """An (n, 2) or (2, n) array is one recording, scored as the mean of its channels."""
    stereo = np.stack([clip, 0.5 * clip], axis=1 if layout == "channels_last" else 0)
    scores = tagger.scores(stereo)
    assert scores.probs.shape == (1, len(tagger.class_names))
    mono = tagger.scores(0.75 * clip).probs
    np.testing.assert_allclose(scores.probs, mono, atol=1e-6)


@pytest.mark.torch
def test_stereo_waveform_is_downmixed(tagger, clip):
    """A Waveform holding (n, 2) samples at another rate is downmixed and resampled."""
    stereo = Waveform(samples=np.stack([clip, clip], axis=1), sample_rate=16_000)
    np.testing.assert_allclose(tagger.scores(stereo).probs, tagger.scores(clip).probs, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(8, 500), (40, 40_000), (2, 3, 16_000)])
def test_ambiguous_shapes_are_refused(tagger, shape):
    """A 2-D array whose channel axis is unclear (or a 3-D one) raises AudioError saying to pass a list."""
    with pytest.raises(AudioError, match="pass several recordings as a list"):
        tagger.scores(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(
    ("value", "named"),
    [(None, "NoneType"), (5, "int 5"), (np.array(["a", "b"]), "dtype <U1"),
     (np.array([object(), object()]), "dtype object"), (np.array([True, False]), "dtype bool")],
)
@pytest.mark.torch
def test_non_audio_inputs_raise_a_type_error_naming_them(tagger, value, named):
    """None, a number, string, object or bool arrays raise AudioTypeError (a TaggingError and a TypeError)."""
    with pytest.raises(AudioTypeError, match=named) as caught:
        tagger.scores(value)
    assert isinstance(caught.value, TaggingError) and isinstance(caught.value, TypeError)


@pytest.mark.torch
def test_zero_dimensional_array_is_refused(tagger):
    """A 0-D array (one number) raises AudioError naming it."""
    with pytest.raises(AudioError, match="0-D array"):
        tagger.scores(np.array(0.5, dtype=np.float32))


@pytest.mark.torch
def test_overflowing_audio_is_an_error_not_nan(tagger, clip):
    """Samples of amplitude 1e19 (NaN scores) raise AudioError naming the peak instead of returning NaN."""
    with pytest.raises(AudioError, match=r"NaN or infinite scores; the samples reach amplitude \d\.\d+e\+18"):
        tagger.scores(clip * np.float32(1e19))


@pytest.mark.torch
def test_overflowing_file_fails_in_batch_and_jsonl_stays_json(tagger, audio_samples, tmp_path, clip):
    """In run_batch a 1e19-amplitude file gets an error result; the good file still gets finite scores."""
    loud = tmp_path / "loud.wav"
    soundfile.write(loud, clip * np.float32(1e19), 16_000, subtype="FLOAT")
    results = {r.path: r for r in run_batch(tagger, [loud, audio_samples / CLIP], workers=0)}
    assert "NaN or infinite scores" in results[str(loud)].error
    assert np.isfinite(results[str(audio_samples / CLIP)].scores).all()


def test_jsonl_writer_refuses_nan(tmp_path):
    """A record holding NaN raises OutputError and writes nothing (JSON has no NaN)."""
    out = tmp_path / "r.jsonl"
    with RecordWriter(out, "jsonl") as writer:
        with pytest.raises(OutputError, match="NaN"):
            writer.write({"path": "a.wav", "scores": {"Speech": float("nan")}})
        writer.write({"path": "b.wav", "scores": {"Speech": 0.5}})
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == ["b.wav"]


# --- arguments of the wrong type or range: one precise calitag error each ---------------------------


@pytest.mark.parametrize(("call", "named"), [
    (lambda: Tagger.load("debug", device="cpu", thresholds=123), "thresholds must be a thresholds file.*got int 123"),
    (lambda: Tagger.load("debug", device="cpu", batch_size="8"), "batch_size must be a whole number, got str '8'"),
    (lambda: Tagger.load(["yamnet"]), r"name must be a model name \(str\).*got list \['yamnet'\]"),
])
def test_load_arguments_of_the_wrong_type_are_named(call, named):
    """load_tagger's thresholds=123, batch_size='8', a list of names: ArgumentTypeError naming argument and type."""
    from calitag.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match=named) as raised:
        call()
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, TaggingError)


@pytest.mark.torch
def test_float_top_k_is_an_argument_type_error(tagger, clip):
    """tag(top_k=1.5) is an ArgumentTypeError naming top_k, not a slice TypeError."""
    from calitag.errors import ArgumentTypeError

    with pytest.raises(ArgumentTypeError, match="top_k must be a whole number >= 1 or None, got float 1.5"):
        tagger.tag(clip, top_k=1.5)


@pytest.mark.torch
def test_run_batch_refuses_top_k_zero_like_tag(tagger, audio_samples):
    """run_batch with top_k=0 is refused with the message Tagger.tag gives (one check for both)."""
    from calitag.pipeline.records import RecordOptions

    with pytest.raises(AudioError, match="top_k must be at least 1, got 0") as from_batch:
        run_batch(tagger, [audio_samples / CLIP], records=RecordOptions(top_k=0))
    with pytest.raises(AudioError) as from_tag:
        tagger.tag(audio_samples / CLIP, top_k=0)
    assert str(from_batch.value) == str(from_tag.value)


@pytest.mark.torch
def test_numpy_matrix_scores_like_the_array(tagger, clip):
    """An np.matrix (1, n) of samples scores as the same plain array."""
    as_matrix = tagger.scores(np.matrix(clip)).probs
    np.testing.assert_allclose(as_matrix, tagger.scores(clip).probs, atol=1e-6)


@pytest.mark.torch
def test_detect_postprocess_of_the_wrong_type_is_named(tagger, clip):
    """detect(postprocess=5) is an ArgumentTypeError listing what it takes; an empty dict is a ThresholdsError."""
    from calitag.errors import ArgumentTypeError, ThresholdsError
    from calitag.pipeline.detect import resolve_postprocess

    with pytest.raises(ArgumentTypeError, match="postprocess must be a Postprocess.*got int 5"):
        resolve_postprocess(tagger, 5)
    with pytest.raises(ThresholdsError, match="the postprocess mapping: expected an events section"):
        resolve_postprocess(tagger, {})


@pytest.mark.torch
def test_detect_postprocess_dict_is_an_events_section(tagger):
    """A dict in Postprocess.to_dict's form is used as the events section."""
    from calitag.pipeline.detect import resolve_postprocess
    from calitag.thresholds.events import Postprocess

    stack = Postprocess.uniform(tagger.class_names)
    assert resolve_postprocess(tagger, stack.to_dict()) == stack


@pytest.mark.parametrize(("labels", "named"), [({"speech_01.wav": None}, "labels of 'speech_01.wav' must be a list"),
                                               (123, "labels must be a label file.*got int 123")])
@pytest.mark.torch
def test_calibrate_labels_of_the_wrong_type_are_labels_errors(tagger, audio_samples, labels, named):
    """calibrate(labels={f: None}) or labels=123 is a LabelsError naming what it takes."""
    from calitag.errors import LabelsError

    with pytest.raises(LabelsError, match=named):
        tagger.calibrate(audio_samples, labels)


@pytest.mark.torch
def test_calibrate_without_out_writes_nothing(tagger, audio_samples, tmp_path, monkeypatch):
    """tagger.calibrate(folder, labels) without out fits thresholds and writes no file."""
    monkeypatch.chdir(tmp_path)
    labels = {name: ["Speech"] if name.startswith("speech") else [] for name in
              ("speech_01.wav", "speech_02.wav", "speech_03.wav", "music_01.wav", "music_02.wav", "ding_01.wav")}
    result = tagger.calibrate(audio_samples, labels, seed=0)
    assert result.thresholds.n_classes == len(tagger.class_names)
    assert list(tmp_path.iterdir()) == []
