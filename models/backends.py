"""Model backends: one interface over the runtimes that run a registered model.

A backend holds a loaded network on its device with the frontend it was trained with, and maps
waveforms to scores in two steps::

    features = backend.features(waveforms)        # (B, n_samples) -> (B, n_mels, n_frames), prepared
    clip = backend.forward(features)              # -> (B, n_classes) float32 numpy
    clip, frames = backend.forward_frames(features)   # frame-level models: and (B, T_out, n_classes)

- :class:`TorchBackend` (``ModelSpec.runtime == "torch"``): the torch ``LogMel`` frontend and an
  ``nn.Module`` on a torch device, in float32 or bfloat16, optionally traced and frozen.
- :class:`NumpyBackend` (``runtime == "numpy"``): the registry's numpy frontend and a model that takes
  and gives numpy arrays (YAMNet's onnxruntime session); torch is never imported.

The Tagger holds one and never asks which it is. This module imports torch only inside the
torch backend's methods, so the numpy path runs where torch is not installed.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calitag.errors import DeviceError, ModelNotFoundError
from calitag._extras import EXTRA_OF_MODULE, import_torch, missing_dependency
from calitag.models.registry import ModelSpec

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a torch device, checking that it is available.

    Parameters
    ----------
    device : str or torch.device
        "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:N" or "mps".

    Returns
    -------
    torch.device

    Raises
    ------
    DeviceError
        For an unknown device or one this machine does not have.
    MissingDependencyError
        torch is not installed.
    """
    torch = import_torch("choosing a torch device")
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} requested but CUDA is not available (torch {torch.__version__}); "
                "use --device cpu or auto"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device {device!r} requested but MPS is not available here; use cpu or auto")
    elif resolved.type != "cpu":
        raise DeviceError(f"unsupported device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    return resolved


def resolve_numpy_device(device: Any = "auto") -> str:
    """The device of a numpy/onnxruntime model: "cpu", or "cuda[:N]" when asked for (the model checks it).

    "auto" is the CPU: numpy models run there unless CUDA is requested explicitly.

    Raises
    ------
    DeviceError
        For a name other than auto, cpu, cuda or cuda:N.
    """
    name = str(device).strip().lower()
    if name in ("auto", "cpu"):
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise DeviceError(f"unknown device {device!r} for a numpy model; expected auto, cpu, cuda or cuda:N")


def build_model(spec: ModelSpec, checkpoint: Path | None, *, seed: int = 0) -> Any:
    """The registry's network of ``spec`` with the weights of ``checkpoint`` (None: random from ``seed``).

    Raises
    ------
    MissingDependencyError
        The architecture's module needs a package of an extra that is not installed.
    ModelNotFoundError
        The architecture cannot be found.
    ChecksumError, CheckpointError
        As the architecture's loader.
    """
    try:
        builder = spec.resolve_builder()
    except ModuleNotFoundError as err:
        module = (err.name or "").partition(".")[0]
        if module in EXTRA_OF_MODULE:
            raise missing_dependency(module, extra=EXTRA_OF_MODULE[module], what=f"model {spec.name!r}") from err
        raise ModelNotFoundError(f"the {spec.name} architecture ({spec.builder}) is not available: {err}") from err
    except (ImportError, AttributeError) as err:
        raise ModelNotFoundError(f"the {spec.name} architecture ({spec.builder}) is not available: {err}") from err
    return builder(checkpoint, seed=seed)


class Backend(ABC):
    """A network on its device with its frontend: waveforms -> features -> clip (and frame) scores.

    Attributes
    ----------
    spec : ModelSpec
        The registry entry.
    model : object
        The network (an ``nn.Module``, or a model that takes and gives numpy arrays).
    device : torch.device or str
        Where it runs.
    frontend : callable
        Waveforms (B, n_samples) -> log-Mel features (B, n_mels, n_frames), before ``prepare``.
    prepare_features : callable or None
        What the model applies to the frontend's features first (the CRNN's padding to 431 frames).
    window_frontend : callable or None
        A picklable numpy frontend that batch decoder processes can run on each window, so the main
        process only runs the network (:meth:`forward` of ``prepare``d features); None where the
        frontend runs on the model's device (torch).
    """

    window_frontend: Callable[[np.ndarray], np.ndarray] | None = None

    def __init__(self, spec: ModelSpec, model: Any) -> None:
        self.spec = spec
        self.model = model
        self.prepare_features: Callable[[Any], Any] | None = (
            getattr(model, "prepare_features", None) or spec.resolve_prepare_features()
        )

    @classmethod
    @abstractmethod
    def device_for(cls, spec: ModelSpec, device: Any = "auto") -> Any:
        """The device this backend runs ``spec`` on for a request ("auto", "cpu", "cuda", ...).

        Raises
        ------
        DeviceError
            A device this machine does not have, or one the runtime does not know.
        MissingDependencyError
            The runtime is not installed.
        """

    def prepare(self, features: Any) -> Any:
        """``prepare_features`` applied to frontend features (the identity for most models)."""
        return features if self.prepare_features is None else self.prepare_features(features)

    @abstractmethod
    def features(self, waveforms: np.ndarray) -> Any:
        """Prepared features (B, n_mels, n_frames) of float32 waveforms (B, n_samples) at the model's rate."""

    @abstractmethod
    def forward(self, features: Any) -> np.ndarray:
        """Clip probabilities, float32 numpy (B, n_classes), of :meth:`features`."""

    @abstractmethod
    def forward_frames(self, features: Any) -> tuple[np.ndarray, np.ndarray]:
        """Clip probabilities (B, n_classes) and frame probabilities (B, T_out, n_classes), float32 numpy,
        of a model with a frame output (``model.forward_frames``)."""


class NumpyBackend(Backend):
    """The numpy runtime: the registry's array frontend and a model on numpy arrays (YAMNet's onnxruntime).

    Parameters
    ----------
    spec : ModelSpec
        With ``runtime == "numpy"`` and an ``array_frontend``.
    model : object
        Callable on features, with ``eval()`` and ``to(device)`` (see ``calitag.models.yamnet.YamnetOnnx``).
    device : str
        "auto", "cpu", "cuda" or "cuda:N".
    precision, optimize
        Unused: the model runs as its runtime built it, in float32 (``resolve_precision`` refuses bf16
        for a model without a bfloat16 path).
    frontend : callable or None
        Overrides the registry's frontend.
    """

    def __init__(self, spec: ModelSpec, model: Any, *, device: Any = "cpu", precision: str = "fp32",
                 optimize: bool = False, frontend: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        del precision, optimize
        super().__init__(spec, model)
        self.device = resolve_numpy_device(device)
        self.model = model.eval().to(self.device)
        self.frontend = frontend if frontend is not None else spec.resolve_array_frontend()(spec.frontend)
        self.window_frontend = self.frontend

    @classmethod
    def device_for(cls, spec: ModelSpec, device: Any = "auto") -> str:
        return resolve_numpy_device(device)

    def features(self, waveforms: np.ndarray) -> np.ndarray:
        return self.prepare(self.frontend(waveforms))

    def forward(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(features), np.float32)

    def forward_frames(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        clip, frames = self.model.forward_frames(features)
        return np.asarray(clip, np.float32), np.asarray(frames, np.float32)


class TorchBackend(Backend):
    """The torch runtime: ``LogMel`` and the network on one torch device, in inference mode.

    Parameters
    ----------
    spec : ModelSpec
        With ``runtime == "torch"``.
    model : nn.Module
        The network; bf16 needs its ``set_body_dtype`` method.
    device : str or torch.device
        As :func:`resolve_device`.
    precision : {"fp32", "bf16"}
        Already resolved (``calitag.pipeline.precision.resolve_precision``). bf16 casts the network's
        body on the CPU; on CUDA ``torch.autocast`` does it per op and the weights stay float32.
    optimize : bool
        CPU, ``spec.traceable`` models: run the network's inference copy where it has one
        (``inference_copy``), else trace and freeze it on its first clip batch.
    frontend : nn.Module or None
        Overrides ``LogMel(spec.frontend)``.
    """

    def __init__(self, spec: ModelSpec, model: Any, *, device: Any = "auto", precision: str = "fp32",
                 optimize: bool = False, frontend: Any = None) -> None:
        torch = import_torch(f"model {spec.name!r} (a torch model)")
        from calitag.models.torch_frontend import LogMel

        super().__init__(spec, model)
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.frontend = frontend if frontend is not None else LogMel(spec.frontend).to(self.device)
        self._autocast = precision == "bf16" and self.device.type == "cuda"
        self._optimize = optimize and spec.traceable and self.device.type == "cpu"
        # A model with an inference copy (BN folded, channels-last: cnn14, cnn-transformer) runs that copy
        # instead of a trace; it is made from the float32 weights, before the cast below.
        self._inference: Any = None
        if self._optimize and callable(getattr(self.model, "inference_copy", None)):
            self._inference = self.model.inference_copy(dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        if precision == "bf16" and not self._autocast:
            self.model.set_body_dtype(torch.bfloat16)
        # Frame outputs stay eager: only the clip output is traced (see ModelSpec.traceable).
        self._traced: Any = None

    @classmethod
    def device_for(cls, spec: ModelSpec, device: Any = "auto") -> torch.device:
        import_torch(f"model {spec.name!r} (a torch model)")  # named before anything else is asked of torch
        return resolve_device(device)

    def features(self, waveforms: np.ndarray) -> torch.Tensor:
        import torch

        # The frontend stays float32: autocast covers the network only.
        with torch.inference_mode():
            return self.prepare(self.frontend(torch.from_numpy(waveforms).to(self.device)))

    def _autocast_context(self) -> Any:
        import torch

        if not self._autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def forward(self, features: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._autocast_context():
            return self.network(features)(features).float().cpu().numpy()

    def forward_frames(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model = self.model if self._inference is None else self._inference
        with torch.inference_mode(), self._autocast_context():
            clip, frames = model.forward_frames(features)
            return clip.float().cpu().numpy(), frames.float().cpu().numpy()

    def network(self, features: torch.Tensor) -> Any:
        """The module that computes clip scores: the eager network, or (``optimize``) its inference copy
        (``model.inference_copy``: folded, channels-last; about 1.4x the eager speed and 1.3x the traced
        graph's for Cnn14 in float32 on an AVX2 CPU), or else its traced and frozen graph, built on the first
        call from ``features``."""
        if self._inference is not None:
            return self._inference
        if not self._optimize:
            return self.model
        if self._traced is None:
            import torch

            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                # The shape checks in forward() are fixed by the trace; inputs here always pass them.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                traced = torch.jit.trace(self.model, features[:1].clone())
                self._traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return self._traced


#: The backend of each ``ModelSpec.runtime``.
BACKENDS: dict[str, type[Backend]] = {"torch": TorchBackend, "numpy": NumpyBackend}


def backend_for(spec: ModelSpec) -> type[Backend]:
    """The backend class of ``spec``'s runtime.

    Raises
    ------
    ModelNotFoundError
        For a runtime without a backend.
    """
    if spec.runtime not in BACKENDS:
        raise ModelNotFoundError(f"{spec.name}: unknown runtime {spec.runtime!r}; expected one of {', '.join(BACKENDS)}")
    return BACKENDS[spec.runtime]


def make_backend(spec: ModelSpec, model: Any, *, device: Any = "auto", precision: str = "fp32",
                 optimize: bool = False, frontend: Any = None) -> Backend:
    """The backend of ``spec``'s runtime around ``model`` (see :class:`TorchBackend`, :class:`NumpyBackend`).

    Raises
    ------
    ModelNotFoundError
        For a runtime without a backend.
    DeviceError, MissingDependencyError
        As :meth:`Backend.device_for`.
    """
    return backend_for(spec)(spec, model, device=device, precision=precision, optimize=optimize, frontend=frontend)
