"""Log-Mel frontends in torch: torch.stft + librosa's mel filters, batched, device-agnostic."""

from __future__ import annotations

import librosa
import numpy as np
import torch
from torch import nn

from calitag.models.registry import FrontendConfig


class LogMel(nn.Module):
    """Waveforms (batch, n_samples) -> log-Mel features (batch, n_mels, n_frames).

    The parameters come from the model's FrontendConfig; the window and mel filters are buffers,
    so ``.to(device)`` moves them with the model.
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        win_length = config.win_length or config.n_fft
        # Periodic Hann, as librosa.filters.get_window("hann", n, fftbins=True).
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window.float(), persistent=False)
        if config.mel_style == "tf":
            mel = tf_mel_matrix(
                sample_rate=config.sample_rate,
                n_fft=config.n_fft,
                n_mels=config.n_mels,
                f_min=config.f_min,
                f_max=config.f_max or config.sample_rate / 2,
            )
        else:
            mel = librosa.filters.mel(
                sr=config.sample_rate,
                n_fft=config.n_fft,
                n_mels=config.n_mels,
                fmin=config.f_min,
                fmax=config.f_max,
                htk=config.mel_htk,
                norm=config.mel_norm,
            )
        self.register_buffer("mel_basis", torch.from_numpy(mel.astype(np.float32)), persistent=False)

    @property
    def frame_rate_hz(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        win_length = cfg.win_length or cfg.n_fft
        if cfg.window_at_frame_start and win_length < cfg.n_fft:
            # tf.signal.stft puts the window at the start of each n_fft frame, torch.stft centres it:
            # pad by the centring offset on both sides so the frames start where TF's do.
            left = (cfg.n_fft - win_length) // 2
            waveforms = torch.nn.functional.pad(waveforms, (left, cfg.n_fft - win_length - left))
        spec = torch.stft(
            waveforms,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=win_length,
            window=self.window,
            center=cfg.center,
            pad_mode=cfg.pad_mode,
            return_complex=True,
        ).abs()
        if cfg.power != 1.0:
            spec = spec.pow(cfg.power)
        mel = torch.matmul(self.mel_basis, spec)  # (batch, n_mels, n_frames)
        if cfg.scale == "log10_amin":
            return 10.0 * torch.log10(mel.clamp(min=cfg.amin))
        if cfg.scale == "log_offset":
            return torch.log(mel + cfg.offset)
        # librosa.power_to_db(S, ref=np.max, amin, top_db), the reference taken per clip.
        db = 10.0 * torch.log10(mel.clamp(min=cfg.amin))
        ref = mel.amax(dim=(-2, -1), keepdim=True).clamp(min=cfg.amin)
        db = db - 10.0 * torch.log10(ref)
        if cfg.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - cfg.top_db)
        return db


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
