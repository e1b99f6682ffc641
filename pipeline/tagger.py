"""The Tagger: the one orchestrator of audio -> windows -> log-Mel -> model -> scores -> tags.

It picks the device once (:func:`resolve_device`), moves tensors there, batches analysis windows
across recordings, and aggregates window scores into one clip score per class.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from calitag.errors import (
    AudioError, AudioTypeError, DeviceError, MissingDependencyError, ModelNotFoundError, ThresholdsMismatchError,
)
from calitag.models.checkpoints import resolve_checkpoint
from calitag.models.registry import MODELS, ModelSpec, get_spec
from calitag.pipeline.audio import (
    Aggregate, RunningAggregate, Window, _sizes, check_finite_scores, resample, split_segments, stream_audio,
    stream_windows, window_chunks, windows,
)
from calitag.pipeline.precision import resolve_precision
from calitag.pipeline.types import FrameScores, Scores, SegmentScores, Tags, Waveform

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Threshold used for every class when no thresholds file is given.
DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 8

#: A recording: a path, a Waveform (any rate: resampled), or an array at the model's rate: (n,), or
#: (n, channels) / (channels, n) averaged to mono; integer PCM is scaled (see ``as_samples``).
AudioInput = Union[str, Path, Waveform, np.ndarray]


def import_torch(what: str) -> Any:
    """``import torch``, or a one-line error naming the extra that installs it.

    Raises
    ------
    MissingDependencyError
        torch is not installed.
    """
    try:
        import torch
    except ImportError as err:
        raise MissingDependencyError(
            f"{what} needs PyTorch, which is not installed: pip install \"calitag[torch]\" "
            "(CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu first)"
        ) from err
    return torch


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


@dataclass(frozen=True)
class _Item:
    index: int
    source: str
    windows: Iterator[Window]


class Tagger:
    """A loaded model with its frontend, device and decision thresholds.

    Build it with :meth:`Tagger.load`. ``scores`` gives clip scores, ``frame_scores`` frame
    scores (frame-level models), ``tag`` the labels whose scores pass their thresholds.
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        *,
        device: torch.device | str,
        checkpoint: Path | None = None,
        thresholds: Any = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        optimize: bool = False,
        frontend: Callable[[np.ndarray], np.ndarray] | None = None,
        precision: str = "fp32",
    ) -> None:
        if batch_size < 1:
            raise AudioError(f"batch_size must be at least 1, got {batch_size}")
        self.spec = spec
        self.device = device
        self.checkpoint = checkpoint
        self.thresholds = thresholds
        #: The thresholds file these thresholds were read from (None: given as an object, or none).
        self.thresholds_path: Path | None = None
        self.batch_size = batch_size
        self.class_names: tuple[str, ...] = spec.class_names
        self.model = model.eval().to(device)
        # numpy models (spec.runtime "numpy") get an array frontend and never touch torch.
        self._numpy = spec.runtime == "numpy"
        if frontend is not None:
            self.frontend = frontend
        elif self._numpy:
            self.frontend = spec.resolve_array_frontend()(spec.frontend)
        else:
            from calitag.pipeline.features import LogMel

            self.frontend = LogMel(spec.frontend).to(device)
        self._prepare = getattr(model, "prepare_features", None) or spec.resolve_prepare_features()
        #: "fp32" or "bf16": what runs (see calitag.pipeline.precision).
        self.precision = resolve_precision(precision, device=device, spec=spec, model=model)
        # bf16 on the CPU casts the network's body; on CUDA autocast does it per op, weights stay float32.
        self._autocast = self.precision == "bf16" and device.type == "cuda"
        if self.precision == "bf16" and not self._autocast:
            import torch

            model.set_body_dtype(torch.bfloat16)
        # A picklable numpy frontend that batch decoders run on each window, so that the main process
        # only runs the network (:meth:`score_features`); None for the torch models.
        self.window_frontend = self.frontend if self._numpy else None
        self._warned_default = False
        # Traced on the first batch: see ModelSpec.traceable. Frame outputs stay eager.
        self._optimize = optimize and spec.traceable and not self._numpy and getattr(device, "type", device) == "cpu"
        self._traced: Any = None

    @property
    def name(self) -> str:
        """The registry name of the model."""
        return self.spec.name

    @property
    def prepare_features(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """What the model applies to the frontend's features first (padding, ...), or None."""
        return self._prepare

    @property
    def thresholds_id(self) -> str | None:
        """``file name:first 12 hex digits of its sha256`` of the thresholds file, so results stay traceable."""
        if self.thresholds_path is None:
            return None
        from calitag.models.checkpoints import file_digests

        return f"{self.thresholds_path.name}:{file_digests(self.thresholds_path)[0][:12]}"

    @classmethod
    def load(
        cls,
        name: str = "yamnet",
        *,
        device: str | torch.device = "auto",
        checkpoint: str | Path | None = None,
        thresholds: str | Path | Any | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        optimize: bool = False,
        precision: str = "fp32",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> "Tagger":
        """Load a registered model, its weights and (optionally) a thresholds file.

        Parameters
        ----------
        name : str
            A registered model (``calitag.models.registry.available_models()``).
        device : str or torch.device
            "auto" (CUDA when available), "cpu", "cuda" or "mps".
        checkpoint : str or Path or None
            Weights to use instead of the cached published ones.
        thresholds : str or Path or Thresholds or None
            A thresholds file fitted for this model (checked against its name and classes).
        cache_dir : str or Path or None
            Overrides the checkpoint cache folder.
        seed : int
            Seed of random weights, for models without published weights.
        batch_size : int
            Analysis windows per forward pass.
        optimize : bool
            Trace and freeze the network on its first batch (CPU, ``spec.traceable`` models):
            the same scores (to float rounding), faster per batch, a few seconds to build.
        precision : {"fp32", "bf16", "auto"}
            "bf16" runs the network's convolutional body in bfloat16 (frontend, last layers and
            sigmoid stay float32): on CPUs with native bfloat16 (AVX512-BF16, AMX), or with
            autocast on CUDA. "auto": bf16 where native and faster, else fp32. The scores differ
            from fp32 by the bound the README gives.
        on_progress : callable or None
            ``on_progress(bytes_done, bytes_total)`` while a missing checkpoint downloads.

        Returns
        -------
        Tagger

        Raises
        ------
        ModelNotFoundError
            Unknown model, or weights neither cached nor downloadable (the message says how).
        ChecksumError, CheckpointError
            Weights that are corrupt or do not fit the architecture.
        DeviceError
            A device this machine does not have.
        PrecisionError
            "bf16" on a model without a bfloat16 path (yamnet) or a device without native bfloat16.
        ThresholdsMismatchError, ThresholdsError
            A thresholds file for another model or class list, or a malformed one.
        """
        spec = get_spec(name)
        if spec.runtime != "numpy":
            import_torch(f"model {spec.name!r} (a torch model)")  # say so before anything else is asked of torch
        resolved_device = resolve_numpy_device(device) if spec.runtime == "numpy" else resolve_device(device)
        path = resolve_checkpoint(spec.name, checkpoint, cache_dir, on_progress=on_progress)
        if path is None:
            logger.warning(
                "%s: no published weights and none imported: using random weights (seed %d); "
                "its scores carry no meaning", spec.name, seed,
            )
        try:
            builder = spec.resolve_builder()
        except (ImportError, AttributeError) as err:
            raise ModelNotFoundError(f"the {spec.name} architecture ({spec.builder}) is not available: {err}") from err
        model = builder(path, seed=seed)
        thresholds_path = None
        if isinstance(thresholds, (str, Path)):
            from calitag.thresholds.io import Thresholds

            thresholds_path = Path(thresholds)
            thresholds = Thresholds.load(thresholds, expected_model=spec.name, expected_classes=spec.class_names)
        elif thresholds is not None:
            thresholds.check_compatible(expected_model=spec.name, expected_classes=spec.class_names)
        if thresholds is not None and thresholds.model_sha256 is not None and path is not None:
            # Compared only where the weights' hash is already known (a verified checkpoint).
            from calitag.models.checkpoints import known_sha256

            running = known_sha256(path)
            if running is not None and running != thresholds.model_sha256:
                raise ThresholdsMismatchError(
                    f"the thresholds were fitted on {spec.name} weights with sha256 {thresholds.model_sha256[:12]}..., "
                    f"this tagger runs {path} (sha256 {running[:12]}...): re-run `calitag calibrate` for these weights"
                )
        tagger = cls(spec, model, device=resolved_device, checkpoint=path, thresholds=thresholds,
                     batch_size=batch_size, optimize=optimize, precision=precision)
        tagger.thresholds_path = thresholds_path
        return tagger

    # --- inputs -> windows ---------------------------------------------------------------------

    def _item(
        self, index: int, item: AudioInput, *, window_s: float | None = None, hop_s: float | None = None,
        min_window_s: float | None = None,
    ) -> _Item:
        spec = self.spec
        rate = spec.frontend.sample_rate
        window_s = window_s or spec.window_s
        hop_s = hop_s or spec.hop_s
        min_window_s = min_window_s or spec.min_window_s
        if isinstance(item, (str, Path)):
            stream = stream_windows(
                item, sample_rate=rate, window_s=window_s, hop_s=hop_s, min_window_s=min_window_s
            )
            return _Item(index, str(item), stream)
        if isinstance(item, np.ndarray):
            item = Waveform(samples=item, sample_rate=rate, source=f"<array {index}>")
        if not isinstance(item, Waveform):
            text = repr(item)
            raise AudioTypeError(
                f"input {index}: expected a path, a Waveform or a numpy array of samples, got "
                f"{type(item).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
            )
        wave = resample(item, sample_rate=rate)
        cut = windows(wave, window_s=window_s, hop_s=hop_s, min_window_s=min_window_s)
        return _Item(index, wave.source, iter(cut))

    @staticmethod
    def _as_list(items: AudioInput | Sequence[AudioInput]) -> list[AudioInput]:
        # An array is always one recording (a 2-D one has channels); several go in a list.
        if isinstance(items, (str, Path, Waveform, np.ndarray)):
            return [items]
        if isinstance(items, Iterable) and not isinstance(items, (bytes, dict)):
            return list(items)
        text = repr(items)
        raise AudioTypeError(
            "expected a path, a Waveform, a numpy array of samples, or a list of them; got "
            f"{type(items).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
        )

    def _forward(self, batch: np.ndarray, *, frames: bool = False) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Waveforms (B, n) -> clip probs (B, C), frame probs (B, T_out, C) or None, feature frames."""
        if self._numpy:
            features = self.frontend(batch)
            if self._prepare is not None:
                features = self._prepare(features)
            n_feature_frames = int(features.shape[-1])
            if frames:
                clip, frame_probs = self.model.forward_frames(features)
                return np.asarray(clip, np.float32), np.asarray(frame_probs, np.float32), n_feature_frames
            return np.asarray(self.model(features), np.float32), None, n_feature_frames
        import torch

        with torch.inference_mode():
            waves = torch.from_numpy(batch).to(self.device)
            features = self.frontend(waves)
            if self._prepare is not None:
                features = self._prepare(features)
            n_feature_frames = int(features.shape[-1])
            # The frontend above stays float32: autocast covers the network only.
            autocast = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if self._autocast
                        else contextlib.nullcontext())
            with autocast:
                if frames:
                    clip, frame_probs = self.model.forward_frames(features)
                    return clip.float().cpu().numpy(), frame_probs.float().cpu().numpy(), n_feature_frames
                probs = self._clip_model(features)(features)
            return probs.float().cpu().numpy(), None, n_feature_frames

    def _clip_model(self, features: torch.Tensor) -> Any:
        """The model for clip scores: eager, or traced and frozen on the first batch when optimizing."""
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

    def _batches(self, items: Iterable[_Item]) -> Iterator[tuple[list[tuple[int, Window]], np.ndarray]]:
        """Group windows of consecutive recordings into batches of equal-length windows."""
        pending: list[tuple[int, Window]] = []
        for item in items:
            for window in item.windows:
                if pending and (len(pending) == self.batch_size or len(pending[0][1].samples) != len(window.samples)):
                    yield pending, np.stack([w.samples for _, w in pending])
                    pending = []
                pending.append((item.index, window))
        if pending:
            yield pending, np.stack([w.samples for _, w in pending])

    # --- public API ------------------------------------------------------------------------------

    def score_windows(self, batch: np.ndarray) -> np.ndarray:
        """Clip probabilities (B, n_classes) of equally long windows (B, n_samples) at the model's rate."""
        return self._forward(batch)[0]

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Clip probabilities (B, n_classes) of ``window_frontend`` features of equally long windows."""
        if self.window_frontend is None:
            raise AudioError(f"{self.name} computes its features on the torch side: use score_windows")
        if self._prepare is not None:
            features = self._prepare(features)
        return np.asarray(self.model(features), np.float32)

    def scores(self, items: AudioInput | Sequence[AudioInput], *, aggregate: Aggregate = "max") -> Scores:
        """Clip-level scores of one or more recordings.

        Long recordings are scored window by window (``spec.window_s`` every ``spec.hop_s``) in
        bounded memory, and the window scores combined by ``aggregate``.

        Parameters
        ----------
        items : path, Waveform, array, or a list of them
            Arrays are taken to be at the model's sample rate; Waveforms are resampled.
        aggregate : {"max", "mean"}
            How window scores become the clip score.

        Returns
        -------
        Scores
            ``probs`` float32 of shape (n_items, n_classes).

        Raises
        ------
        AudioLoadError
            If a file cannot be read (the first failing file stops the call).
        AudioError
            For an input that is not audio of the expected shape, or an unknown ``aggregate``.
        """
        RunningAggregate(aggregate)  # checks the name before any file is read
        entries = self._as_list(items)
        sources = [""] * len(entries)
        # Folded as windows arrive, so a long file holds one row per class, not one per window.
        folded = [RunningAggregate(aggregate) for _ in entries]

        def prepared() -> Iterator[_Item]:
            for index, entry in enumerate(entries):
                item = self._item(index, entry)
                sources[index] = item.source
                yield item

        for members, batch in self._batches(prepared()):
            probs, _, _ = self._forward(batch)
            for (index, window), row in zip(members, probs):
                check_finite_scores(row, window.samples, sources[index])
                folded[index].add(row)
        rows = [acc.result() for acc in folded if acc.count]
        clip = np.asarray(rows, dtype=np.float32).reshape(len(entries), len(self.class_names))
        return Scores(probs=clip, class_names=self.class_names, model=self.name, sources=tuple(sources))

    def segment_scores(self, item: AudioInput, *, segment_s: float, aggregate: Aggregate = "max") -> SegmentScores:
        """Clip scores of consecutive ``segment_s``-long segments of one recording (a timeline).

        Each segment is scored as a recording of its own (windowed as :meth:`scores` does); the
        last segment is shorter when the recording does not divide evenly. The file is read in
        blocks: one segment is held in memory at a time.

        Parameters
        ----------
        item : path, Waveform or array
            One recording, as :meth:`scores`.
        segment_s : float
            Segment length in seconds, positive and finite.
        aggregate : {"max", "mean"}
            How window scores become a segment's score.

        Returns
        -------
        SegmentScores
            ``probs`` float32 of shape (n_segments, n_classes), with each segment's start and end.

        Raises
        ------
        AudioError
            For a ``segment_s`` that is not a positive finite number, or a bad input.
        AudioLoadError
            If the file cannot be read.
        """
        if not isinstance(segment_s, (int, float)) or not math.isfinite(segment_s) or segment_s <= 0:
            raise AudioError(f"segment_s must be a positive number of seconds, got {segment_s!r}")
        if aggregate not in ("max", "mean"):
            raise AudioError(f"unknown aggregation {aggregate!r}; expected 'max' or 'mean'")
        spec = self.spec
        rate = spec.frontend.sample_rate
        segment = max(1, int(round(segment_s * rate)))
        if isinstance(item, (str, Path)):
            source, chunks = str(item), stream_audio(item, sample_rate=rate)
        else:
            if isinstance(item, np.ndarray):
                item = Waveform(samples=item, sample_rate=rate, source="<array 0>")
            if not isinstance(item, Waveform):
                raise AudioTypeError(f"expected a path, a Waveform or a numpy array of samples, got {type(item).__name__}")
            wave = resample(item, sample_rate=rate)
            source, chunks = wave.source, iter([wave.samples])
        window, hop, min_length = _sizes(rate, spec.window_s, spec.hop_s, spec.min_window_s)
        bounds: list[tuple[int, int]] = []

        def items() -> Iterator[_Item]:
            for index, (start, samples) in enumerate(split_segments(chunks, segment_samples=segment)):
                bounds.append((start, start + len(samples)))
                cut = window_chunks([samples], window=window, hop=hop, min_length=min_length, source=source)
                yield _Item(index, source, cut)

        rows = self._fold(items(), aggregate=aggregate, source=source)
        return SegmentScores(
            probs=np.asarray(rows, dtype=np.float32).reshape(len(bounds), len(self.class_names)),
            starts_s=np.array([b[0] / rate for b in bounds]), ends_s=np.array([b[1] / rate for b in bounds]),
            class_names=self.class_names, model=self.name, source=source,
        )

    def _fold(self, items: Iterable[_Item], *, aggregate: Aggregate, source: str) -> list[np.ndarray]:
        """Window scores of each item folded into one row per item, in item order."""
        folded: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        for members, batch in self._batches(items):
            probs, _, _ = self._forward(batch)
            for (index, window), row in zip(members, probs):
                check_finite_scores(row, window.samples, source)
                row = row.astype(np.float64)
                if index not in folded:
                    folded[index], counts[index] = row, 1
                    continue
                folded[index] = np.maximum(folded[index], row) if aggregate == "max" else folded[index] + row
                counts[index] += 1
        return [folded[i] / counts[i] if aggregate == "mean" else folded[i] for i in sorted(folded)]

    def frame_scores(self, item: AudioInput) -> FrameScores:
        """Frame-level scores of one recording, for models with frame outputs.

        Overlapping windows are stitched by taking the maximum where they overlap; frames of
        padding beyond the end of the recording are dropped.

        Returns
        -------
        FrameScores
            ``probs`` float32 of shape (n_frames, n_classes), one row every ``frame_hop_s``.

        Raises
        ------
        ModelNotFoundError
            If the model has no frame-level output.
        AudioLoadError
            If the file cannot be read.
        """
        sliding = "frame_window_s" in self.spec.extra and not hasattr(self.model, "forward_frames")
        if not self.spec.frame_level or not (sliding or hasattr(self.model, "forward_frames")):
            frame_level = sorted(name for name, spec in MODELS.items() if spec.frame_level)
            raise ModelNotFoundError(
                f"{self.name} gives clip scores only; frame-level models: {', '.join(frame_level)}"
            )
        if sliding:
            return self._sliding_frame_scores(item)
        rate = self.spec.frontend.sample_rate
        feature_hop_s = self.spec.frontend.hop_length / rate
        entry = self._item(0, item)
        pieces: list[tuple[int, np.ndarray]] = []
        hop_s = feature_hop_s
        for members, batch in self._batches([entry]):
            _, frames, n_feature_frames = self._forward(batch, frames=True)
            hop_s = feature_hop_s * n_feature_frames / frames.shape[1]  # type: ignore[union-attr]
            for (_, window), rows in zip(members, frames):
                check_finite_scores(rows, window.samples, entry.source)
                # Drop output frames that only saw padding (of the audio, or of the features).
                real = self._feature_frames(window.n_valid) * len(rows) / n_feature_frames
                n_valid = min(len(rows), max(1, math.ceil(real - 1e-6)))
                pieces.append((int(round(window.start / rate / hop_s)), rows[:n_valid]))
        n_frames = max(offset + len(rows) for offset, rows in pieces)
        out = np.zeros((n_frames, len(self.class_names)), dtype=np.float32)
        for offset, rows in pieces:
            np.maximum(out[offset : offset + len(rows)], rows, out=out[offset : offset + len(rows)])
        return FrameScores(probs=out, frame_hop_s=hop_s, class_names=self.class_names, model=self.name,
                           source=entry.source)

    def _sliding_frame_scores(self, item: AudioInput) -> FrameScores:
        """Frame scores of a clip model: the clip scores of short windows, one every ``frame_hop_s``."""
        rate = self.spec.frontend.sample_rate
        window_s, hop_s = float(self.spec.extra["frame_window_s"]), float(self.spec.extra["frame_hop_s"])
        entry = self._item(0, item, window_s=window_s, hop_s=hop_s, min_window_s=window_s)
        n_frames = 0
        rows: dict[int, np.ndarray] = {}
        for members, batch in self._batches([entry]):
            probs, _, _ = self._forward(batch)
            for (_, window), row in zip(members, probs):
                check_finite_scores(row, window.samples, entry.source)
                # The last window is aligned to the end of the recording: it goes to the nearest frame.
                offset = int(round(window.start / (hop_s * rate)))
                rows[offset] = np.maximum(rows[offset], row) if offset in rows else row
                n_frames = max(n_frames, offset + 1)
        out = np.zeros((n_frames, len(self.class_names)), dtype=np.float32)
        for offset, row in rows.items():
            out[offset] = row
        return FrameScores(probs=out, frame_hop_s=hop_s, class_names=self.class_names, model=self.name,
                           source=entry.source)

    def _feature_frames(self, n_samples: int) -> int:
        """How many log-Mel frames the frontend makes of ``n_samples`` samples."""
        cfg = self.spec.frontend
        if cfg.center:
            return 1 + n_samples // cfg.hop_length
        return max(0, 1 + (n_samples - (cfg.win_length or cfg.n_fft)) // cfg.hop_length)

    def decide(self, scores: Scores) -> np.ndarray:
        """Binary decisions (n_clips, n_classes) from the thresholds file, else the default 0.5."""
        if self.thresholds is not None:
            return np.asarray(self.thresholds.apply(scores.probs), dtype=bool)
        if not self._warned_default:
            logger.warning(
                "no thresholds file given: using %.2f for every %s class; fit per-class thresholds "
                "with `calitag calibrate` and pass them with --thresholds", DEFAULT_THRESHOLD, self.name,
            )
            self._warned_default = True
        return scores.probs > DEFAULT_THRESHOLD

    def tag(
        self, items: AudioInput | Sequence[AudioInput], *, top_k: int | None = None, aggregate: Aggregate = "max"
    ) -> list[Tags]:
        """Labels of each recording whose clip score passes its threshold.

        Parameters
        ----------
        items : path, Waveform, array, or a list of them
            As :meth:`scores`.
        top_k : int or None
            Keep at most this many labels per recording (the highest scores).
        aggregate : {"max", "mean"}
            As :meth:`scores`.

        Returns
        -------
        list of Tags
            One per input, labels sorted by decreasing score.
        """
        if top_k is not None and top_k < 1:
            raise AudioError(f"top_k must be at least 1, got {top_k}")
        scores = self.scores(items, aggregate=aggregate)
        return self.tags_from_scores(scores, top_k=top_k)

    def tags_from_scores(self, scores: Scores, *, top_k: int | None = None) -> list[Tags]:
        """Turn clip scores into tag sets with this Tagger's thresholds (see :meth:`tag`)."""
        decisions = self.decide(scores)
        tags = []
        for row, passed, source in zip(scores.probs, decisions, scores.sources or ("",) * len(scores.probs)):
            chosen = [(scores.class_names[c], float(row[c])) for c in np.flatnonzero(passed)]
            chosen.sort(key=lambda pair: -pair[1])
            tags.append(Tags(source=source, labels=tuple(chosen[:top_k]), model=scores.model))
        return tags

    # --- the user's jobs (see calitag.pipeline.jobs) -----------------------------------------------

    def detect(self, items: AudioInput | Sequence[AudioInput], postprocess: Any = None) -> list[Any]:
        """Sound events of one or more recordings (frame-level models).

        Parameters
        ----------
        items : path or sequence of paths
        postprocess : Postprocess, Thresholds, path or None
            The per-class stack (a thresholds file from ``calitag calibrate-events``, the DCASE2019
            CRNN authors' file, ...); None: threshold 0.5 and no smoothing.

        Returns
        -------
        list of calitag.thresholds.events.Event
            Per recording sorted by onset; ``Event.file`` is the base name (the path below the common
            folder where two base names are equal).

        Raises
        ------
        ModelNotFoundError
            A model without frame-level output.
        ThresholdsMismatchError
            Parameters made for other classes or another frame rate.
        """
        from calitag.pipeline import jobs

        stack = jobs.resolve_postprocess(self, postprocess)
        return jobs.detect(self, self._as_list(items), stack)

    def calibrate(self, folder: str | Path, labels: Any, out: str | Path | None = None, **options: Any) -> Any:
        """Fit per-class thresholds on a labeled folder and measure them on held-out clips.

        Parameters
        ----------
        folder : path
            The audio files.
        labels : path or mapping
            A label file (CSV/TSV ``filename,labels``) or ``{file name: [class, ...]}``.
        out : path, optional
            Thresholds file to write (its score cache goes beside it); None writes nothing.
        **options
            As :func:`calitag.pipeline.calibrate.calibrate` (method, objective, val_fraction, folds, seed, ...).

        Returns
        -------
        CalibrationResult
            ``.thresholds`` can be given to :meth:`load` or saved with ``.thresholds.save(path)``.
        """
        from calitag.pipeline.calibrate import calibrate
        from calitag.pipeline.jobs import as_clip_labels

        return calibrate(self, folder, as_clip_labels(labels, class_names=self.class_names), out=out, **options)

    def calibrate_events(self, folder: str | Path, events: Any, out: str | Path | None = None, **options: Any) -> Any:
        """Tune the event post-processing stack on strong labels; see :func:`calitag.pipeline.jobs.calibrate_events`."""
        from calitag.pipeline.jobs import calibrate_events

        return calibrate_events(self, folder, events, out=out, **options)


def load_tagger(
    name: str = "yamnet",
    *,
    device: str = "auto",
    thresholds: str | Path | Any | None = None,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    **options: Any,
) -> Tagger:
    """Load a registered model ready to tag; see :meth:`Tagger.load` for every option.

    Raises
    ------
    ModelNotFoundError, CheckpointError, DeviceError, ThresholdsError
        As :meth:`Tagger.load`.
    """
    return Tagger.load(name, device=device, thresholds=thresholds, checkpoint=checkpoint, cache_dir=cache_dir,
                       **options)
