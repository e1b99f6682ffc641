"""The log-Mel frontend of the torch models: torch.stft + the mel filters of calitag.models.frontend.

Batched and device-agnostic; the torch backend (calitag.models.backends.TorchBackend) runs it on the
model's device. The numpy twin, for YAMNet, is calitag.models.frontend.NumpyLogMel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from calitag.models.frontend import analysis_window, mel_filters
from calitag.models.registry import FrontendConfig

__all__ = ["LogMel"]


class LogMel(nn.Module):
    """Waveforms (batch, n_samples) -> log-Mel features (batch, n_mels, n_frames).

    The parameters come from the model's FrontendConfig; the window and mel filters are buffers,
    so ``.to(device)`` moves them with the model.
    """

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        window = torch.from_numpy(analysis_window(config))
        self.register_buffer("window", window.float(), persistent=False)
        mel = mel_filters(config)
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
