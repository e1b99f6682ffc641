"""bf16 precision of the torch taggers (pipeline/precision.py, models/mixed_precision.py, Tagger)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # bf16 is for the torch taggers: the torch extra
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import PrecisionError
from calitag.models import cnn14, debug
from calitag.models.registry import get_spec
from calitag.pipeline import precision as precision_module
from calitag.pipeline.precision import bf16_support, cpu_bf16_flags, resolve_precision
from calitag.pipeline.tagger import Tagger

NATIVE, REASON = bf16_support(torch.device("cpu"))
needs_bf16 = pytest.mark.skipif(not NATIVE, reason=f"no native bfloat16 on this CPU: {REASON}")
H5_NAME = "crnn_dcase2019_pellegrini_irit_task4_1.h5"
# The measured bound (benchmarks/precision.py, README): bf16 - fp32 clip scores of the CRNN with
# its published weights on audio_samples/ and the soundscapes stayed below 0.006.
CRNN_MAX_DELTA = 0.006


@pytest.fixture(scope="module")
def crnn_h5(shared) -> Path:
    return shared / "models" / H5_NAME


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    """The native-bf16 flags are read from the first flags line of a cpuinfo file."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 avx512_bf16\nflags : nothing\n")
    assert cpu_bf16_flags(info) == ("avx512_bf16", "amx_bf16")
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(info) == ()
    assert cpu_bf16_flags(tmp_path / "absent") == ()


def test_bf16_refused_without_native_support(monkeypatch):
    """bf16 on a CPU without native bfloat16 is refused with the reason; auto falls back to fp32."""
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    spec = get_spec("debug")
    model = debug.load(None)
    with pytest.raises(PrecisionError, match="avx512_bf16"):
        resolve_precision("bf16", device=torch.device("cpu"), spec=spec, model=model)
    assert resolve_precision("auto", device=torch.device("cpu"), spec=spec, model=model) == "fp32"
    assert resolve_precision("fp32", device=torch.device("cpu"), spec=spec, model=model) == "fp32"


def test_unknown_precision_and_model_without_bf16_path():
    """An unknown precision, and bf16 for a model without a bfloat16 path, raise PrecisionError."""
    spec = get_spec("debug")
    with pytest.raises(PrecisionError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", device=torch.device("cpu"), spec=spec, model=debug.load(None))
    with pytest.raises(PrecisionError, match="no bf16 path"):
        resolve_precision("bf16", device=torch.device("cpu"), spec=spec, model=object())
    assert resolve_precision("auto", device=torch.device("cpu"), spec=spec, model=object()) == "fp32"


@needs_bf16
def test_cnn14_bf16_body_float32_head(audio_samples):
    """Cnn14 in bf16 casts its conv blocks only, returns float32 and stays near fp32 on real audio."""
    spec = get_spec("cnn14")
    fp32 = Tagger(spec, cnn14.load(None, seed=0), device=torch.device("cpu"))
    bf16 = Tagger(spec, cnn14.load(None, seed=0), device=torch.device("cpu"), precision="bf16")
    assert bf16.model.conv_block3.conv1.weight.dtype == torch.bfloat16
    assert bf16.model.fc_audioset.weight.dtype == torch.float32
    clip = audio_samples / "speech_music_01.wav"
    a, b = fp32.scores(clip).probs, bf16.scores(clip).probs
    assert b.dtype == np.float32
    # Random weights: an indication only (benchmarks/precision.py measured 2.8e-4 on 45 clips).
    assert 0 < np.abs(a - b).max() < 2e-3


@needs_bf16
def test_crnn_bf16_within_measured_bound(crnn_h5, audio_samples):
    """The CRNN with its published weights in bf16 stays within the measured bound of fp32, with the same tags."""
    clips = [audio_samples / name for name in ("speech_alarm_clock_01.wav", "telephone_ring_03.wav", "music_03.wav")]
    clips.append(audio_samples / "soundscapes" / "heldout_00.flac")
    fp32 = Tagger.load("crnn-dcase2019", checkpoint=crnn_h5, device="cpu")
    bf16 = Tagger.load("crnn-dcase2019", checkpoint=crnn_h5, device="cpu", precision="bf16")
    a, b = fp32.scores(clips).probs, bf16.scores(clips).probs
    assert 0 < np.abs(a - b).max() <= CRNN_MAX_DELTA
    thresholds = json.loads(crnn_h5.with_suffix(".thresholds.json").read_text())["audio_tagging_thresholds"]
    assert np.array_equal(a > np.asarray(thresholds), b > np.asarray(thresholds))
    frames_a = fp32.frame_scores(clips[-1]).probs
    frames_b = bf16.frame_scores(clips[-1]).probs
    assert frames_a.shape == frames_b.shape
    assert np.abs(frames_a - frames_b).max() <= 3 * CRNN_MAX_DELTA


@needs_bf16
def test_traced_bf16_equals_eager_bf16(audio_samples):
    """The optimized path (--jit: the inference copy) runs bf16 and gives the eager bf16 scores."""
    spec = get_spec("cnn-transformer")
    model = spec.resolve_builder()
    eager = Tagger(spec, model(None, seed=0), device=torch.device("cpu"), precision="bf16")
    traced = Tagger(spec, model(None, seed=0), device=torch.device("cpu"), precision="bf16", optimize=True)
    clip = audio_samples / "telephone_ring_01.wav"
    a, b = eager.scores(clip).probs, traced.scores(clip).probs
    np.testing.assert_allclose(a, b, atol=2e-3)

    def eager_forward(*_: object) -> None:
        raise AssertionError("the eager forward ran")

    traced.model.forward = eager_forward  # the traced graph runs from now on, not the module's Python code
    assert np.array_equal(traced.scores(clip).probs, b)


def test_cli_precision_option(audio_samples):
    """`calitag tag --precision` runs fp32 and bf16 (where native) on the debug model; fp16 is not a choice."""
    runner = CliRunner()
    clip = str(audio_samples / "speech_01.wav")
    result = runner.invoke(main, ["tag", clip, "--model", "debug", "--precision", "fp32", "--format", "json"])
    assert result.exit_code == 0, result.output
    if NATIVE:
        result = runner.invoke(main, ["tag", clip, "--model", "debug", "--precision", "bf16", "--format", "json"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["tag", clip, "--model", "debug", "--precision", "fp16"])
    assert result.exit_code == 2 and "fp16" in result.output


def test_cli_yamnet_refuses_bf16(yamnet_cached, audio_samples):
    """`calitag tag --model yamnet --precision bf16` stops with a message naming the torch taggers."""
    result = CliRunner().invoke(main, ["tag", str(audio_samples / "speech_01.wav"), "--precision", "bf16"])
    assert result.exit_code == 1
    assert "yamnet has no bf16 path" in result.output


def test_bf16_inference_copy_within_the_bf16_bound(audio_samples):
    """Cnn14's bf16 inference copy (folded in float64, then cast) stays as close to fp32 as the eager bf16
    body on real audio, with a float32 output (runs emulated where bfloat16 is not native: slower, same numbers)."""
    from calitag.models.torch_frontend import LogMel
    from calitag.pipeline.audio import load_audio

    spec = get_spec("cnn14")
    rate = spec.frontend.sample_rate
    clip = load_audio(audio_samples / "speech_music_01.wav", sample_rate=rate).samples[:rate]
    model = cnn14.load(None, seed=0)
    fast = model.inference_copy(dtype=torch.bfloat16)
    assert fast.conv_block4.conv2.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        features = LogMel(spec.frontend)(torch.from_numpy(clip)[None])
        fp32 = model(features)
        model.set_body_dtype(torch.bfloat16)
        eager, fused = model(features), fast(features)
    assert fused.dtype == torch.float32
    eager_error, fused_error = float((eager - fp32).abs().max()), float((fused - fp32).abs().max())
    # Random weights: an indication (benchmarks/precision.py: 2.8e-4 on 45 clips; the copy 2.6e-4 on 20 clips).
    assert 0 < fused_error < 2e-3
    assert fused_error <= 2 * eager_error
