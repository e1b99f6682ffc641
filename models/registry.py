"""Models are data: one registry entry per model, with its frontend, labels and checkpoint."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Literal

from calitag.errors import ModelNotFoundError


@dataclass(frozen=True)
class FrontendConfig:
    """Log-Mel frontend parameters; they come with the checkpoint, never from CLI flags.

    scale: how the mel energies become features:
      "log10_amin"   10*log10(max(S, amin))                 (PANNs)
      "db_ref_max"   librosa.power_to_db(S, ref=max, amin, top_db) per clip  (DCASE2019 CRNN)
      "log_offset"   log(S + offset)                         (YAMNet)
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float
    f_max: float | None
    win_length: int | None = None  # None: n_fft
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 2.0  # 2: power spectrogram, 1: magnitude
    mel_htk: bool = False
    mel_norm: str | None = "slaney"
    scale: Literal["log10_amin", "db_ref_max", "log_offset"] = "log10_amin"
    amin: float = 1e-10
    top_db: float | None = None
    offset: float = 0.001


@dataclass(frozen=True)
class CheckpointSpec:
    """Where a model's weights come from and how to recognise them."""

    filename: str
    sha256: str | None  # None: no published file (random weights unless the user imports one)
    size_bytes: int | None = None
    url: str | None = None
    format: Literal["torch", "keras_h5", "onnx_in_wheel", "none"] = "torch"
    how_to_get: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    builder: "module:attr" of a callable returning the nn.Module (or runtime) for this model.
    window_s / hop_s: analysis window for long recordings and the step between windows.
    """

    name: str
    builder: str
    labels: str  # file name under calitag/models/labels/
    frontend: FrontendConfig
    checkpoint: CheckpointSpec
    window_s: float = 10.0
    hop_s: float = 5.0
    description: str = ""
    frame_level: bool = False
    extra: dict = field(default_factory=dict)

    def resolve_builder(self) -> Callable:
        module_name, attr = self.builder.split(":")
        return getattr(importlib.import_module(module_name), attr)


# Filled in below; see each architecture module for the facts it reproduces.
MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def available_models() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry of ``name``.

    Raises
    ------
    ModelNotFoundError
        If no such model is registered; the message lists the available ones.
    """
    if name not in MODELS:
        raise ModelNotFoundError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    return MODELS[name]
