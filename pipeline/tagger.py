"""The Tagger: the one orchestrator of audio -> windows -> log-Mel -> model -> scores -> tags.

It picks the device once (:func:`resolve_device`), moves tensors there, batches analysis windows
across recordings, and aggregates window scores into one clip score per class.
"""

from __future__ import annotations

import importlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from calitag.errors import AudioError, DeviceError, ModelNotFoundError
from calitag.models.checkpoints import resolve_checkpoint
from calitag.models.registry import MODELS, ModelSpec, get_spec
from calitag.pipeline.audio import Aggregate, Window, resample, stream_windows, windows
from calitag.pipeline.features import LogMel
from calitag.pipeline.types import FrameScores, Scores, Tags, Waveform

logger = logging.getLogger(__name__)

#: Threshold used for every class when no thresholds file is given.
DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH_SIZE = 8

#: A recording: a path, a Waveform (any rate: resampled), or a 1-D array at the model's rate.
AudioInput = Union[str, Path, Waveform, np.ndarray]


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
    """
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
        device: torch.device,
        checkpoint: Path | None = None,
        thresholds: Any = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        optimize: bool = False,
    ) -> None:
        if batch_size < 1:
            raise AudioError(f"batch_size must be at least 1, got {batch_size}")
        self.spec = spec
        self.device = device
        self.checkpoint = checkpoint
        self.thresholds = thresholds
        self.batch_size = batch_size
        self.class_names: tuple[str, ...] = spec.class_names
        self.model = model.eval().to(device)
        # Models that score waveforms themselves (YAMNet: numpy frontend + onnxruntime) need no torch frontend.
        self._scores_waveforms = getattr(model, "waveform_scores", None)
        self.frontend = None if self._scores_waveforms else LogMel(spec.frontend).to(device)
        # A picklable numpy frontend (YAMNet's) that batch decoders run on each window, so that the
        # main process only runs the network (:meth:`score_features`); None for the torch models.
        self.window_frontend = model.numpy_frontend() if hasattr(model, "numpy_frontend") else None
        self._prepare = getattr(model, "prepare_features", None) or getattr(
            importlib.import_module(spec.builder.split(":")[0]), "prepare_features", None
        )
        self._warned_default = False
        # Traced on the first batch: see ModelSpec.traceable. Frame outputs stay eager.
        self._optimize = optimize and spec.traceable and device.type == "cpu" and isinstance(model, torch.nn.Module)
        self._traced: Any = None

    @property
    def name(self) -> str:
        """The registry name of the model."""
        return self.spec.name

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
        ThresholdsMismatchError, ThresholdsError
            A thresholds file for another model or class list, or a malformed one.
        """
        spec = get_spec(name)
        resolved_device = resolve_device(device)
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
        if isinstance(thresholds, (str, Path)):
            from calitag.thresholds import Thresholds

            thresholds = Thresholds.load(thresholds, expected_model=spec.name, expected_classes=spec.class_names)
        elif thresholds is not None:
            thresholds.check_compatible(expected_model=spec.name, expected_classes=spec.class_names)
        return cls(spec, model, device=resolved_device, checkpoint=path, thresholds=thresholds, batch_size=batch_size,
                   optimize=optimize)

    # --- inputs -> windows ---------------------------------------------------------------------

    def _item(self, index: int, item: AudioInput) -> _Item:
        spec = self.spec
        rate = spec.frontend.sample_rate
        if isinstance(item, (str, Path)):
            stream = stream_windows(
                item, sample_rate=rate, window_s=spec.window_s, hop_s=spec.hop_s, min_window_s=spec.min_window_s
            )
            return _Item(index, str(item), stream)
        if isinstance(item, np.ndarray):
            item = Waveform(samples=item, sample_rate=rate, source=f"<array {index}>")
        if not isinstance(item, Waveform):
            raise AudioError(f"expected a path, a Waveform or a 1-D numpy array, got {type(item).__name__}")
        wave = resample(item, sample_rate=rate)
        cut = windows(wave, window_s=spec.window_s, hop_s=spec.hop_s, min_window_s=spec.min_window_s)
        return _Item(index, wave.source, iter(cut))

    @staticmethod
    def _as_list(items: AudioInput | Sequence[AudioInput]) -> list[AudioInput]:
        if isinstance(items, (str, Path, Waveform)):
            return [items]
        if isinstance(items, np.ndarray):
            return [items] if items.ndim == 1 else list(items)
        return list(items)

    def _forward(self, batch: np.ndarray, *, frames: bool = False) -> tuple[np.ndarray, np.ndarray | None, int]:
        """Waveforms (B, n) -> clip probs (B, C), frame probs (B, T_out, C) or None, feature frames."""
        if self._scores_waveforms is not None and not frames:
            return self._scores_waveforms(batch), None, 0
        with torch.inference_mode():
            waves = torch.from_numpy(batch).to(self.device)
            features = self.frontend(waves)
            if self._prepare is not None:
                features = self._prepare(features)
            n_feature_frames = int(features.shape[-1])
            if frames:
                clip, frame_probs = self.model.forward_frames(features)
                return clip.float().cpu().numpy(), frame_probs.float().cpu().numpy(), n_feature_frames
            return self._clip_model(features)(features).float().cpu().numpy(), None, n_feature_frames

    def _clip_model(self, features: torch.Tensor) -> Any:
        """The model for clip scores: eager, or traced and frozen on the first batch when optimizing."""
        if not self._optimize:
            return self.model
        if self._traced is None:
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
            raise AudioError(f"{self.name} computes its features itself: use score_windows")
        return self.model.feature_scores(features)

    def scores(self, items: AudioInput | Sequence[AudioInput], *, aggregate: Aggregate = "max") -> Scores:
        """Clip-level scores of one or more recordings.

        Long recordings are scored window by window (``spec.window_s`` every ``spec.hop_s``) in
        bounded memory, and the window scores combined by ``aggregate``.

        Parameters
        ----------
        items : path, Waveform, 1-D array, or a sequence of them
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
        if aggregate not in ("max", "mean"):
            raise AudioError(f"unknown aggregation {aggregate!r}; expected 'max' or 'mean'")
        entries = self._as_list(items)
        sources = [""] * len(entries)
        # Folded as windows arrive, so a long file holds one row per class, not one per window.
        folded: list[np.ndarray | None] = [None] * len(entries)
        counts = [0] * len(entries)

        def prepared() -> Iterator[_Item]:
            for index, entry in enumerate(entries):
                item = self._item(index, entry)
                sources[index] = item.source
                yield item

        for members, batch in self._batches(prepared()):
            probs, _, _ = self._forward(batch)
            for (index, _), row in zip(members, probs):
                row = row.astype(np.float64)
                previous = folded[index]
                if previous is None:
                    folded[index] = row
                elif aggregate == "max":
                    folded[index] = np.maximum(previous, row)
                else:
                    folded[index] = previous + row
                counts[index] += 1
        rows = [
            (acc / count if aggregate == "mean" else acc)
            for acc, count in zip(folded, counts)
            if acc is not None
        ]
        clip = np.asarray(rows, dtype=np.float32).reshape(len(entries), len(self.class_names))
        return Scores(probs=clip, class_names=self.class_names, model=self.name, sources=tuple(sources))

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
        if not self.spec.frame_level or not hasattr(self.model, "forward_frames"):
            frame_level = sorted(name for name, spec in MODELS.items() if spec.frame_level)
            raise ModelNotFoundError(
                f"{self.name} gives clip scores only; frame-level models: {', '.join(frame_level)}"
            )
        rate = self.spec.frontend.sample_rate
        feature_hop_s = self.spec.frontend.hop_length / rate
        entry = self._item(0, item)
        pieces: list[tuple[int, np.ndarray]] = []
        hop_s = feature_hop_s
        for members, batch in self._batches([entry]):
            _, frames, n_feature_frames = self._forward(batch, frames=True)
            hop_s = feature_hop_s * n_feature_frames / frames.shape[1]  # type: ignore[union-attr]
            for (_, window), rows in zip(members, frames):
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
        items : path, Waveform, 1-D array, or a sequence of them
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
