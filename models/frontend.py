"""The fixed weights of a log-Mel frontend, computed from its FrontendConfig.

calitag.pipeline.features.LogMel runs them; checkpoint loaders (PANNs checkpoints store their
frontend) compare a file's stored frontend with them. One definition serves both.
"""

from __future__ import annotations

import librosa
import numpy as np

from calitag.models.registry import FrontendConfig


def analysis_window(config: FrontendConfig) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples (librosa's ``get_window("hann", fftbins=True)``), float64."""
    return librosa.filters.get_window("hann", config.win_length or config.n_fft, fftbins=True).astype(np.float64)


def mel_filters(config: FrontendConfig) -> np.ndarray:
    """Mel filter bank, float64, shape (n_mels, n_fft // 2 + 1): librosa's, or TensorFlow's for ``mel_style="tf"``."""
    if config.mel_style == "tf":
        return tf_mel_matrix(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max or config.sample_rate / 2,
        ).astype(np.float64)
    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        htk=config.mel_htk,
        norm=config.mel_norm,
        dtype=np.float64,
    )


def tf_mel_matrix(
    *, sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """Mel filters as TensorFlow's ``tf.signal.linear_to_mel_weight_matrix`` builds them.

    Unlike librosa's HTK filters (triangles linear in Hz between mel-spaced edges), these
    triangles are linear in *mel* (mel = 1127 ln(1 + f / 700)) evaluated at the FFT bin
    frequencies, and the DC bin gets zero weight. YAMNet was trained with them.

    Parameters
    ----------
    sample_rate : int
        Hz.
    n_fft : int
        FFT length; the matrix has ``n_fft // 2 + 1`` frequency columns.
    n_mels : int
        Number of bands.
    f_min, f_max : float
        Lower edge of the first and upper edge of the last band, Hz.

    Returns
    -------
    np.ndarray
        float32, shape (n_mels, n_fft // 2 + 1), laid out as ``librosa.filters.mel``.
    """
    n_freqs = n_fft // 2 + 1
    bin_mels = _hz_to_mel(np.linspace(0.0, sample_rate / 2.0, n_freqs)[1:])[None, :]
    edges = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    lower, center, upper = (edges[:-2, None], edges[1:-1, None], edges[2:, None])
    rising = (bin_mels - lower) / (center - lower)
    falling = (upper - bin_mels) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.hstack([np.zeros((n_mels, 1)), weights]).astype(np.float32)


def _hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)
