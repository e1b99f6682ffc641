"""A tiny random-weight tagger registered as ``debug``: instant to build, deterministic for a seed.

It exists so that the CLI and the Tagger can be tested offline, on real audio, without any
download. Its scores carry no meaning.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from calitag.errors import CheckpointError
from calitag.models.mixed_precision import cast_body, float32_head

N_MELS = 32
N_CLASSES = 5
HIDDEN = 16


class DebugTagger(nn.Module):
    """Per-frame linear layers on normalised log-Mel frames; the clip score is the max over frames."""

    def __init__(self, *, n_mels: int = N_MELS, n_classes: int = N_CLASSES, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)
        self.hidden = nn.Conv1d(n_mels, hidden, kernel_size=3, padding=1)
        self.out = nn.Conv1d(hidden, n_classes, kernel_size=1)

    def forward_frames(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-Mel (batch, n_mels, n_frames) -> clip (batch, n_classes), frames (batch, n_frames, n_classes)."""
        x = torch.relu(self.hidden(self.norm(features).to(self.hidden.weight.dtype)))
        with float32_head(x):
            frames = torch.sigmoid(self.out(x.float())).transpose(1, 2)
        return frames.amax(dim=1), frames

    def set_body_dtype(self, dtype: torch.dtype) -> None:
        """Run the hidden layer in ``dtype``; the output layer and sigmoid stay float32."""
        cast_body([self.hidden], dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log-Mel (batch, n_mels, n_frames) -> clip probabilities (batch, n_classes)."""
        return self.forward_frames(features)[0]


def load(checkpoint: Path | None, *, seed: int = 0) -> DebugTagger:
    """Build the debug tagger.

    Parameters
    ----------
    checkpoint : Path or None
        A ``state_dict`` saved with ``torch.save``; None gives random weights drawn from ``seed``.
    seed : int
        Seed of the random weights; the same seed gives the same model.

    Returns
    -------
    DebugTagger
        In eval mode, on the CPU.

    Raises
    ------
    CheckpointError
        If the checkpoint cannot be read or does not fit the architecture.
    """
    generator = torch.Generator().manual_seed(seed)
    model = DebugTagger()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        # Log-Mel values sit around -60..0 dB: centre them so the sigmoid does not saturate.
        model.norm.running_mean.fill_(-40.0)
        model.norm.running_var.fill_(400.0)
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state))
        except (OSError, RuntimeError, KeyError, AttributeError, EOFError, pickle.UnpicklingError) as err:
            raise CheckpointError(
                f"cannot load the debug model from {checkpoint}: {err}; "
                "expected a state_dict saved with torch.save(model.state_dict(), path)"
            ) from err
    return model.eval()
