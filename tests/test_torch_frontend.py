"""The log-Mel frontends against numpy/librosa references on real and synthetic signals."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="the torch models need the torch extra")  # noqa: E402

from calitag.models.registry import MODELS
from calitag.models.frontend import tf_mel_matrix
from calitag.models.torch_frontend import LogMel


def test_yamnet_frontend_matches_tf_framing_reference(wideband_16k):
    """YAMNet features equal TF's layout: 400-sample frames at the start of 512-pt FFTs, TF mel, log(x+0.001)."""
    speech_16k = wideband_16k
    cfg = MODELS["yamnet"].frontend
    ours = LogMel(cfg)(torch.from_numpy(speech_16k)[None])[0].numpy()
    n_frames = 1 + (len(speech_16k) - cfg.win_length) // cfg.hop_length
    frames = np.stack([speech_16k[i * cfg.hop_length : i * cfg.hop_length + cfg.win_length] for i in range(n_frames)])
    window = np.hanning(cfg.win_length + 1)[:-1]  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, n=cfg.n_fft))
    mel = tf_mel_matrix(sample_rate=16_000, n_fft=cfg.n_fft, n_mels=64, f_min=125.0, f_max=7_500.0)
    reference = np.log(magnitude @ mel.T + 0.001).T
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-4)


def test_panns_frontend_matches_librosa(wideband_32k):
    """The PANNs frontend equals librosa's centred, reflect-padded power mel spectrogram in dB (no top_db)."""
    samples, rate = wideband_32k, 32_000
    cfg = MODELS["cnn14"].frontend
    assert cfg.sample_rate == rate
    ours = LogMel(cfg)(torch.from_numpy(samples[: 3 * rate])[None])[0].numpy()
    mel = librosa.feature.melspectrogram(
        y=samples[: 3 * rate], sr=rate, n_fft=1024, hop_length=320, n_mels=64, fmin=50, fmax=14_000,
        center=True, pad_mode="reflect", power=2.0,
    )
    reference = 10 * np.log10(np.maximum(mel, 1e-10))
    assert reference.min() > -99.0  # every band of every frame above the 1e-10 floor, up to 14 kHz
    assert (reference - reference.max(axis=0)).min() > -85.0  # within float32's range in every frame
    np.testing.assert_allclose(ours, reference, atol=2e-3)


def test_tone_peaks_in_its_mel_band():
    """A 1 kHz tone puts the most energy in the mel band whose centre is nearest 1 kHz."""
    cfg = MODELS["cnn14"].frontend
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    feats = LogMel(cfg)(torch.from_numpy(tone)[None])[0].numpy()
    centres = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=cfg.f_min, fmax=cfg.f_max)[1:-1]
    assert abs(int(feats.mean(axis=1).argmax()) - int(np.abs(centres - 1000).argmin())) <= 1


def test_batch_items_are_independent():
    """Each item of a batch gets the same features as alone (the db_ref_max reference is per clip)."""
    cfg = MODELS["crnn-dcase2019"].frontend
    rng = np.random.default_rng(0)
    loud = torch.from_numpy(rng.normal(0, 0.5, 22_050).astype(np.float32))
    quiet = loud * 0.01
    frontend = LogMel(cfg)
    both = frontend(torch.stack([loud, quiet]))
    torch.testing.assert_close(both[1], frontend(quiet[None])[0], atol=1e-4, rtol=0)
