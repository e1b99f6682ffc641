"""Log-Mel frontends in numpy, and the fixed weights (window, mel filters) every frontend uses.

calitag.models.torch_frontend.LogMel (torch) runs the same weights; checkpoint loaders (PANNs
checkpoints store their frontend) compare a file's stored frontend with them. One definition
serves all. The periodic Hann window and the HTK / TensorFlow mel matrices are written here in
numpy, so the YAMNet path imports neither librosa nor scipy; only the Slaney-style filters of
the PANNs and DCASE models come from librosa (imported when asked for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calitag.errors import AudioError
from calitag.models.extras import import_optional
from calitag.models.registry import FrontendConfig


def hann_periodic(length: int) -> np.ndarray:
    """Periodic ("DFT-even") Hann window of ``length`` samples, float64.

    The same values as ``scipy.signal.get_window("hann", length, fftbins=True)`` and
    ``torch.hann_window(length, periodic=True)``: ``0.5 - 0.5 cos(2 pi n / length)``.
    """
    if length < 1:
        raise AudioError(f"window length must be at least 1, got {length}")
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def analysis_window(config: FrontendConfig) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples (``get_window("hann", fftbins=True)``), float64."""
    return hann_periodic(config.win_length or config.n_fft)


def mel_filters(config: FrontendConfig) -> np.ndarray:
    """Mel filter bank, float64, shape (n_mels, n_fft // 2 + 1).

    TensorFlow's for ``mel_style="tf"``, HTK triangles without normalisation for
    ``mel_htk=True, mel_norm=None`` (both in numpy), librosa's otherwise.
    """
    f_max = config.f_max or config.sample_rate / 2
    if config.mel_style == "tf":
        return tf_mel_matrix(
            sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, f_min=config.f_min, f_max=f_max
        ).astype(np.float64)
    if config.mel_htk and config.mel_norm is None:
        return htk_mel_matrix(
            sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, f_min=config.f_min, f_max=f_max
        )
    # Slaney-style filters (PANNs, DCASE2019 CRNN): librosa comes with the torch models' extra.
    librosa = import_optional("librosa", extra="torch", what="the Slaney mel filters of the torch models")
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


def htk_mel_matrix(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """HTK mel filters without normalisation, as ``librosa.filters.mel(htk=True, norm=None)``.

    Triangles linear in Hz between band edges equally spaced on the HTK mel scale
    (mel = 2595 log10(1 + f / 700)), evaluated at the FFT bin frequencies.

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
        float64, shape (n_mels, n_fft // 2 + 1).
    """
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_mel = np.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    widths = np.diff(edges_hz)
    distance = edges_hz[:, None] - bin_hz[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


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


def _hz_to_mel_htk(freq_hz: float) -> float:
    return 2595.0 * float(np.log10(1.0 + freq_hz / 700.0))


_BLAS_CONTROLLER: Any = None
#: Frames per FFT block of :class:`NumpyLogMel` (64 frames of 512 points: ~0.8 MB of arrays, in a core's L2 cache).
FRAMES_PER_BLOCK = 64


def _one_blas_thread() -> Any:
    """A context in which numpy's BLAS runs on one thread (threadpoolctl; inspected once per process)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


class NumpyLogMel:
    """Waveforms (batch, n_samples) -> log-Mel features (batch, n_mels, n_frames), in numpy.

    The numpy twin of ``calitag.models.torch_frontend.LogMel`` for frontends framed without
    centring (``center=False``) and scaled by ``log(S + offset)``: YAMNet's. The spectrum is
    computed in float64 (as fast as float32 here, and closer to the exact result than the
    float32 torch frontend, which is off by up to about 2e-3 on quiet bins); the result is float32.

    Parameters
    ----------
    config : FrontendConfig
        With ``center=False`` and ``scale="log_offset"``.

    Raises
    ------
    AudioError
        For a config this frontend does not implement.
    """

    def __init__(self, config: FrontendConfig) -> None:
        if config.center or config.scale != "log_offset":
            raise AudioError(
                f"the numpy log-Mel frontend implements center=False, scale='log_offset' (YAMNet's); "
                f"got center={config.center}, scale={config.scale!r}"
            )
        self.config = config
        win_length = config.win_length or config.n_fft
        window = np.zeros(config.n_fft, dtype=np.float64)
        # tf.signal.stft puts the window at the start of each n_fft frame; torch.stft centres it.
        start = 0 if config.window_at_frame_start else (config.n_fft - win_length) // 2
        window[start : start + win_length] = analysis_window(config)
        self.frame_length = config.n_fft if not config.window_at_frame_start else win_length
        self.window = window[start : start + self.frame_length] if config.window_at_frame_start else window
        mel_basis_t = mel_filters(config).T.astype(np.float64)  # (n_freqs, n_mels)
        # Only the FFT bins some band weighs (125-7500 Hz for YAMNet: 235 of 257) enter the product.
        used = np.flatnonzero(mel_basis_t.any(axis=1))
        self.bins = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)
        self.mel_basis_t = np.ascontiguousarray(mel_basis_t[self.bins])

    def n_frames(self, n_samples: int) -> int:
        """How many frames ``n_samples`` samples give (0 when shorter than one frame)."""
        return max(0, 1 + (n_samples - self.frame_length) // self.config.hop_length)

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """Log-Mel features, float32, shape (batch, n_mels, n_frames).

        Raises
        ------
        AudioError
            If ``waveforms`` is not 2-D or is shorter than one frame.
        """
        cfg = self.config
        waves = np.asarray(waveforms, dtype=np.float64)
        if waves.ndim != 2:
            raise AudioError(f"expected waveforms of shape (batch, n_samples), got {waves.shape}")
        if self.n_frames(waves.shape[1]) == 0:
            raise AudioError(
                f"{waves.shape[1]} samples are shorter than one frame of {self.frame_length}; pad them first"
            )
        frames = np.lib.stride_tricks.sliding_window_view(waves, self.frame_length, axis=1)[:, :: cfg.hop_length]
        batch, n_frames = frames.shape[:2]
        mel = np.empty((batch, n_frames, self.mel_basis_t.shape[1]))
        # Frames go through in blocks that stay in the CPU's cache (a 10-s clip at once: ~10 MB of float64
        # and complex arrays); each value is computed as on the whole array, so the result is the same.
        block = min(FRAMES_PER_BLOCK, n_frames)
        padded = np.zeros((block, cfg.n_fft))  # the zero tail is rfft's padding to n_fft
        magnitude = np.empty((block, self.mel_basis_t.shape[0]))
        # One 2-D product (block, bins) @ (bins, n_mels) per block: a single BLAS call. On one BLAS thread:
        # OpenBLAS's own threads (which spin after each call) would compete with the model's onnxruntime
        # threads and with the batch workers, and cost more CPU than they save on a product this small.
        with _one_blas_thread():
            for item in range(batch):
                for start in range(0, n_frames, block):
                    n = min(block, n_frames - start)
                    np.multiply(frames[item, start : start + n], self.window, out=padded[:n, : self.frame_length])
                    spectrum = np.fft.rfft(padded[:n], axis=-1)[:, self.bins]
                    np.abs(spectrum, out=magnitude[:n])
                    if cfg.power != 1.0:
                        magnitude[:n] **= cfg.power
                    np.matmul(magnitude[:n], self.mel_basis_t, out=mel[item, start : start + n])
        mel += cfg.offset
        return np.log(mel).astype(np.float32).transpose(0, 2, 1)
