"""calitag.pipeline.tagger: device resolution, clip and frame scores, tags and thresholds."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

from calitag.errors import AudioLoadError, DeviceError, ModelNotFoundError, ThresholdsMismatchError
from calitag.models import debug
from calitag.models.registry import get_spec
from calitag.pipeline.audio import load_audio
from calitag.pipeline.tagger import DEFAULT_THRESHOLD, Tagger, resolve_device
from calitag.pipeline.types import Waveform
from calitag.thresholds import Thresholds


@pytest.fixture(scope="module")
def speech_clip(audio_samples: Path) -> Path:
    """A 10-s, 22.05-kHz soundscape of the bundled samples (speech and an alarm bell)."""
    return audio_samples / "soundscapes" / "tune_00.flac"


@pytest.fixture(scope="module")
def audioset_clip(shared: Path) -> Path:
    """The 7-s, 32-kHz AudioSet clip (speech and a telephone bell) in ../shared."""
    return shared / "audio" / "R9_ZSCveAHg_7s.wav"


@pytest.fixture(scope="module")
def tagger() -> Tagger:
    """The random-weight debug model on the CPU."""
    return Tagger.load("debug", device="cpu")


def test_resolve_device_cpu_and_auto() -> None:
    """'cpu' is the CPU; 'auto' is CUDA exactly when torch sees a GPU."""
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_refuses_what_is_not_there() -> None:
    """Unknown names raise DeviceError; so does 'cuda' on a machine without CUDA."""
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    else:
        with pytest.raises(DeviceError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_scores_shape_range_and_provenance(tagger: Tagger, speech_clip: Path) -> None:
    """Clip scores have one row per input, one column per class, values in [0, 1], model and sources."""
    scores = tagger.scores([speech_clip, speech_clip])
    assert scores.probs.shape == (2, len(get_spec("debug").class_names)) and scores.probs.dtype == np.float32
    assert ((scores.probs >= 0) & (scores.probs <= 1)).all()
    assert scores.model == "debug" and scores.sources == (str(speech_clip),) * 2
    assert np.array_equal(scores.probs[0], scores.probs[1])


def test_debug_model_is_deterministic_for_a_seed(speech_clip: Path) -> None:
    """Two loads with one seed give equal scores; another seed gives different ones."""
    a = Tagger.load("debug", device="cpu", seed=5).scores(speech_clip).probs
    b = Tagger.load("debug", device="cpu", seed=5).scores(speech_clip).probs
    c = Tagger.load("debug", device="cpu", seed=6).scores(speech_clip).probs
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_path_array_and_waveform_inputs_agree(tagger: Tagger, speech_clip: Path) -> None:
    """A path, its samples at the model rate, and a Waveform at the file's own rate score the same."""
    rate = get_spec("debug").frontend.sample_rate
    at_model_rate = load_audio(speech_clip, sample_rate=rate).samples
    original, original_rate = soundfile.read(speech_clip, dtype="float32")
    scores = tagger.scores([speech_clip, at_model_rate, Waveform(samples=original, sample_rate=original_rate)])
    assert np.max(np.abs(scores.probs[0] - scores.probs[1])) < 1e-5
    assert np.max(np.abs(scores.probs[0] - scores.probs[2])) < 1e-5


def test_batching_does_not_change_scores(speech_clip: Path) -> None:
    """Windows scored one at a time or eight at a time give the same clip scores."""
    one = Tagger.load("debug", device="cpu", batch_size=1).scores([speech_clip, speech_clip]).probs
    eight = Tagger.load("debug", device="cpu", batch_size=8).scores([speech_clip, speech_clip]).probs
    assert np.max(np.abs(one - eight)) < 1e-5


def test_long_input_aggregates_windows(tagger: Tagger, speech_clip: Path) -> None:
    """A recording longer than one window: mean aggregation never exceeds max, and max equals the best window."""
    rate = get_spec("debug").frontend.sample_rate
    samples = load_audio(speech_clip, sample_rate=rate).samples
    long = np.concatenate([samples, samples[::-1], samples])  # 30 s, debug windows are 4 s
    peak = tagger.scores(long, aggregate="max").probs[0]
    mean = tagger.scores(long, aggregate="mean").probs[0]
    assert (mean <= peak + 1e-6).all() and (mean < peak - 1e-4).any()
    frames = tagger.frame_scores(long)
    assert np.allclose(frames.probs.max(axis=0), peak, atol=1e-6)


def test_frame_scores_cover_the_recording(tagger: Tagger, speech_clip: Path) -> None:
    """Frame scores span the clip's duration, one row per frame hop, and their max is the clip score."""
    frames = tagger.frame_scores(speech_clip)
    duration = soundfile.info(str(speech_clip)).duration
    spec = get_spec("debug")
    assert frames.frame_hop_s == pytest.approx(spec.frontend.hop_length / spec.frontend.sample_rate)
    assert abs(frames.probs.shape[0] * frames.frame_hop_s - duration) <= 2 * frames.frame_hop_s
    assert np.allclose(frames.probs.max(axis=0), tagger.scores(speech_clip).probs[0], atol=1e-6)


def test_frame_scores_need_a_frame_level_model(speech_clip: Path) -> None:
    """A clip-only model refuses frame_scores with ModelNotFoundError."""
    clip_only = dataclasses.replace(get_spec("debug"), frame_level=False)
    tagger = Tagger(clip_only, debug.load(None), device=torch.device("cpu"))
    with pytest.raises(ModelNotFoundError, match="clip scores only"):
        tagger.frame_scores(speech_clip)


def test_default_threshold_tags_and_warns_once(speech_clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without a thresholds file, tags are the classes above 0.5, sorted, and the warning is logged once."""
    tagger = Tagger.load("debug", device="cpu")
    with caplog.at_level(logging.WARNING, logger="calitag.pipeline.tagger"):
        (tags,) = tagger.tag(speech_clip)
        tagger.tag(speech_clip)
    probs = tagger.scores(speech_clip).probs[0]
    expected = {name for name, p in zip(tagger.class_names, probs) if p > DEFAULT_THRESHOLD}
    assert {label for label, _ in tags.labels} == expected
    assert [s for _, s in tags.labels] == sorted((s for _, s in tags.labels), reverse=True)
    assert caplog.text.count("no thresholds file given") == 1


def test_without_a_thresholds_file_the_decision_is_the_uniform_default(speech_clip: Path) -> None:
    """With no thresholds given, ``thresholds`` stays None and the decision the tags come from is DEFAULT_THRESHOLD
    for every class; thresholds set later decide instead."""
    tagger = Tagger.load("debug", device="cpu")
    assert tagger.thresholds is None and tagger.decision.model == "debug"
    assert tagger.decision.class_names == tagger.class_names
    assert np.array_equal(tagger.decision.values, np.full(len(tagger.class_names), DEFAULT_THRESHOLD))
    probs = tagger.scores(speech_clip).probs
    assert tagger.tag(speech_clip)[0].labels == tagger.decision.labels(probs)[0]
    tagger.thresholds = Thresholds(values=np.zeros(5), class_names=tagger.class_names, model="debug")
    (tags,) = tagger.tag(speech_clip)
    assert len(tags.labels) == 5 and tagger.decide(tagger.scores(speech_clip)).all()


def test_config_builds_the_same_tagger_again(speech_clip: Path) -> None:
    """``Tagger.config`` records how a Tagger was loaded (paths as str); from_config builds one that scores the same."""
    import pickle

    from calitag.pipeline.tagger import TaggerConfig

    tagger = Tagger.load("debug", device="cpu", seed=5, batch_size=3, cache_dir=Path("/nonexistent/cache"))
    assert tagger.config == TaggerConfig(model="debug", cache_dir="/nonexistent/cache", device="cpu", batch_size=3,
                                         seed=5)
    again = Tagger.from_config(pickle.loads(pickle.dumps(tagger.config)))
    assert again.config == tagger.config and again.batch_size == 3
    assert np.array_equal(again.scores(speech_clip).probs, tagger.scores(speech_clip).probs)
    assert not np.array_equal(Tagger.from_config(TaggerConfig(model="debug", device="cpu")).scores(speech_clip).probs,
                              tagger.scores(speech_clip).probs)  # seed 0: other weights


def test_top_k_keeps_the_highest_scores(speech_clip: Path) -> None:
    """top_k=1 keeps only the best of the tags that pass their thresholds."""
    tagger = Tagger.load("debug", device="cpu", thresholds=Thresholds(values=np.zeros(5), class_names=get_spec("debug").class_names, model="debug"))
    (all_tags,) = tagger.tag(speech_clip)
    (top,) = tagger.tag(speech_clip, top_k=1)
    assert len(all_tags.labels) == 5 and top.labels == all_tags.labels[:1]


def test_thresholds_file_sets_each_class(tmp_path: Path, speech_clip: Path) -> None:
    """Per-class thresholds from a file decide each class: set just below / above each score."""
    names = get_spec("debug").class_names
    probs = Tagger.load("debug", device="cpu").scores(speech_clip).probs[0]
    wanted = np.arange(len(names)) % 2 == 0
    values = np.where(wanted, probs - 1e-3, np.minimum(probs + 1e-3, 1.0))
    path = Thresholds(values=values, class_names=names, model="debug").save(tmp_path / "th.json")
    (tags,) = Tagger.load("debug", device="cpu", thresholds=path).tag(speech_clip)
    assert {label for label, _ in tags.labels} == {n for n, w in zip(names, wanted) if w}


def test_thresholds_for_another_model_are_refused(tmp_path: Path) -> None:
    """A thresholds file fitted for another model raises ThresholdsMismatchError at load."""
    names = get_spec("debug").class_names
    path = Thresholds(values=np.full(len(names), 0.3), class_names=names, model="yamnet").save(tmp_path / "th.json")
    with pytest.raises(ThresholdsMismatchError, match="fitted for model 'yamnet'"):
        Tagger.load("debug", device="cpu", thresholds=path)


def test_a_bad_file_raises_audio_load_error(tagger: Tagger, tmp_path: Path) -> None:
    """Scoring a text file renamed .wav raises AudioLoadError naming it."""
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio at all\n" * 10)
    with pytest.raises(AudioLoadError, match="fake.wav: not audio"):
        tagger.scores(fake)


def test_crnn_puts_speech_first_on_the_speech_clip(shared: Path, audioset_clip: Path) -> None:
    """The DCASE2019 CRNN with its published weights scores Speech first, near 0.99, on the speech clip."""
    tagger = Tagger.load("crnn-dcase2019", device="cpu",
                         checkpoint=shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5")
    scores = tagger.scores(audioset_clip)
    best = int(np.argmax(scores.probs[0]))
    assert scores.class_names[best] == "Speech" and scores.probs[0, best] > 0.98
    frames = tagger.frame_scores(audioset_clip)
    assert frames.probs.shape[1] == 10 and abs(frames.probs.shape[0] * frames.frame_hop_s - 7.0) < 0.1


def test_score_windows_matches_scores_of_one_window(tagger: Tagger, speech_clip: Path) -> None:
    """score_windows on a batch of exactly window-long inputs equals scores on each input."""
    spec = get_spec("debug")
    rate = spec.frontend.sample_rate
    samples = load_audio(speech_clip, sample_rate=rate).samples
    n = int(spec.window_s * rate)
    batch = np.stack([samples[:n], samples[-n:]])
    assert np.max(np.abs(tagger.score_windows(batch) - tagger.scores(list(batch)).probs)) < 1e-5


def test_optimized_tagger_traces_once_and_keeps_the_scores() -> None:
    """optimize=True scores a traceable model with a graph traced once: the eager scores, and never again the
    module's Python forward, at any batch size."""
    from calitag.models import cnn_transformer

    spec = get_spec("cnn-transformer")
    model = cnn_transformer.load(None, seed=0)
    eager = Tagger(spec, model, device=torch.device("cpu"))
    fast = Tagger(spec, model, device=torch.device("cpu"), optimize=True)
    rng = np.random.default_rng(0)
    batch = (0.1 * rng.standard_normal((3, 2 * spec.frontend.sample_rate))).astype(np.float32)
    np.testing.assert_allclose(fast.score_windows(batch), eager.score_windows(batch), atol=1e-5)

    def eager_forward(*_: object) -> None:
        raise AssertionError("the eager forward ran")

    model.forward = eager_forward  # a trace (or an eager run) from now on would call it
    assert fast.score_windows(batch[:1]).shape == (1, len(spec.class_names))  # other batch sizes reuse the graph
    with pytest.raises(AssertionError, match="the eager forward ran"):
        eager.score_windows(batch[:1])


def test_thresholds_fitted_on_other_weights_are_refused(yamnet_cached):
    """A thresholds file whose model_sha256 differs from the verified weights in use raises ThresholdsMismatchError."""
    from calitag.models.checkpoints import known_sha256
    from calitag.models.registry import get_spec

    names = get_spec("yamnet").class_names
    other = Thresholds(values=np.full(len(names), 0.5), class_names=names, model="yamnet", model_sha256="0" * 64)
    with pytest.raises(ThresholdsMismatchError, match="sha256 000000000000"):
        Tagger.load("yamnet", thresholds=other)
    same = Tagger.load("yamnet")
    running = known_sha256(same.checkpoint)
    assert running is not None
    matching = Thresholds(values=np.full(len(names), 0.5), class_names=names, model="yamnet", model_sha256=running)
    assert Tagger.load("yamnet", thresholds=matching).thresholds is matching
