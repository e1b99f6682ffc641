"""The Tagger: the one orchestrator of audio -> windows -> model backend -> scores -> tags.

It cuts recordings into analysis windows, batches windows across recordings, runs them through
its model backend (:mod:`calitag.models.backends`: frontend then network, torch or onnxruntime),
folds window scores into one clip score per class (:class:`~calitag.pipeline.audio.RunningAggregate`)
and turns scores into tags through its :class:`~calitag.thresholds.io.Thresholds`.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from calitag.errors import ArgumentTypeError, AudioError, AudioTypeError, ModelNotFoundError, ThresholdsMismatchError
from calitag.models.backends import Backend, backend_for, build_model, make_backend, resolve_device
from calitag.models.checkpoints import file_digests, known_sha256, resolve_checkpoint
from calitag.models.registry import MODELS, ModelSpec, get_spec
from calitag.pipeline.audio import (
    Aggregate, RunningAggregate, Window, check_finite_scores, resample, stream_audio, stream_windows, windows,
)
from calitag.pipeline.engine import Windowing, check_top_k
from calitag.pipeline.precision import resolve_precision
from calitag.pipeline.types import FrameScores, Scores, SegmentScores, Tags, Waveform
from calitag.thresholds.io import DEFAULT_THRESHOLD, Thresholds

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_THRESHOLD", "AudioInput", "Tagger", "TaggerConfig", "load_tagger", "resolve_device"]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8

#: A recording: a path, a Waveform (any rate: resampled), or an array at the model's rate: (n,), or
#: (n, channels) / (channels, n) averaged to mono; integer PCM is scaled (see ``as_samples``).
AudioInput = Union[str, Path, Waveform, np.ndarray]


@dataclass(frozen=True)
class TaggerConfig:
    """How to build a Tagger again, e.g. in a Ray actor or a worker process (:meth:`Tagger.from_config`).

    Paths are strings, so the object pickles and prints the same everywhere. The thresholds travel
    beside it (a file name or a Thresholds object): they are a decision, not a way to build the model.

    Attributes
    ----------
    model : str
        A registered model name.
    checkpoint : str or None
        Weights to use instead of the cached published ones.
    cache_dir : str or None
        Overrides the checkpoint cache folder.
    device : str
        "auto", "cpu", "cuda", "cuda:N" or "mps".
    batch_size : int
        Analysis windows per forward pass.
    optimize : bool
        Trace and freeze the network on its first batch (CPU, traceable torch models).
    precision : str
        "fp32", "bf16" or "auto" (see :mod:`calitag.pipeline.precision`).
    seed : int
        Seed of random weights, for models without published weights.
    """

    model: str = "yamnet"
    checkpoint: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    optimize: bool = False
    precision: str = "fp32"
    seed: int = 0


@dataclass(frozen=True)
class _Item:
    index: int
    source: str
    windows: Iterator[Window]


def _path_str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _shown(value: Any) -> str:
    """A value's type and (shortened) repr, for messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _check_whole(name: str, value: Any, *, minimum: int | None = None) -> None:
    """Raise ArgumentTypeError unless ``value`` is an integer, AudioError if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be a whole number, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise AudioError(f"{name} must be at least {minimum}, got {value}")


def _check_arguments(config: TaggerConfig, thresholds: Any) -> None:
    """Raise ArgumentTypeError (or AudioError for a batch size below 1) before any work, naming the argument."""
    if not isinstance(config.model, str):
        raise ArgumentTypeError(f"name must be a model name (str) such as 'yamnet', got {_shown(config.model)}; "
                                "load one model per call")
    _check_whole("seed", config.seed)
    _check_whole("batch_size", config.batch_size, minimum=1)
    if thresholds is not None and not isinstance(thresholds, (str, os.PathLike, Thresholds)):
        raise ArgumentTypeError(f"thresholds must be a thresholds file (str or Path), a Thresholds object or None, "
                                f"got {_shown(thresholds)}")


def _read_thresholds(
    thresholds: str | Path | Thresholds | None, spec: ModelSpec, checkpoint: Path | None
) -> tuple[Thresholds | None, Path | None]:
    """The thresholds for ``spec`` (read from a file, or checked) and the file they came from.

    Raises
    ------
    ThresholdsMismatchError
        Thresholds for another model or class list, or fitted on other weights than ``checkpoint``.
    ThresholdsError
        A malformed file.
    """
    path = None
    if isinstance(thresholds, (str, os.PathLike)):
        path = Path(thresholds)
        thresholds = Thresholds.load(path, expected_model=spec.name, expected_classes=spec.class_names)
    elif thresholds is not None:
        thresholds.check_compatible(expected_model=spec.name, expected_classes=spec.class_names)
    if thresholds is not None and thresholds.model_sha256 is not None and checkpoint is not None:
        # Compared only where the weights' hash is already known (a verified checkpoint).
        running = known_sha256(checkpoint)
        if running is not None and running != thresholds.model_sha256:
            raise ThresholdsMismatchError(
                f"the thresholds were fitted on {spec.name} weights with sha256 {thresholds.model_sha256[:12]}..., "
                f"this tagger runs {checkpoint} (sha256 {running[:12]}...): re-run `calitag calibrate` for these weights"
            )
    return thresholds, path


class Tagger:
    """A loaded model behind its backend, with its windowing, batching and decision thresholds.

    Build it with :meth:`Tagger.load` (or :meth:`Tagger.from_config`). ``scores`` gives clip scores,
    ``frame_scores`` frame scores (frame-level models), ``tag`` the labels whose scores pass their
    thresholds.

    Attributes
    ----------
    backend : Backend
        The frontend and network on their device (:mod:`calitag.models.backends`).
    thresholds : Thresholds or None
        The thresholds given (a file or an object); None when none was given.
    decision : Thresholds
        What turns scores into tags: ``thresholds``, else ``DEFAULT_THRESHOLD`` for every class.
    thresholds_path : Path or None
        The thresholds file ``thresholds`` were read from (None: given as an object, or none).
    precision : str
        "fp32" or "bf16": what runs (see :mod:`calitag.pipeline.precision`).
    """

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        *,
        device: torch.device | str,
        checkpoint: Path | None = None,
        thresholds: Thresholds | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        optimize: bool = False,
        frontend: Callable[[np.ndarray], np.ndarray] | None = None,
        precision: str = "fp32",
    ) -> None:
        _check_whole("batch_size", batch_size, minimum=1)
        self.spec = spec
        self.checkpoint = checkpoint
        self.batch_size = batch_size
        self.class_names: tuple[str, ...] = spec.class_names
        self.thresholds = thresholds
        self.thresholds_path: Path | None = None
        self._default_decision = Thresholds.uniform(self.class_names, model=spec.name)
        resolved = backend_for(spec).device_for(spec, device)
        self.precision = resolve_precision(precision, device=resolved, spec=spec, model=model)
        self.backend: Backend = make_backend(spec, model, device=resolved, precision=self.precision,
                                             optimize=optimize, frontend=frontend)
        self._config = TaggerConfig(model=spec.name, checkpoint=_path_str(checkpoint), device=str(resolved),
                                    batch_size=batch_size, optimize=optimize, precision=precision)
        self._warned_default = False

    @property
    def name(self) -> str:
        """The registry name of the model."""
        return self.spec.name

    @property
    def decision(self) -> Thresholds:
        """What turns scores into tags: :attr:`thresholds`, else ``DEFAULT_THRESHOLD`` for every class.

        The first use of the default logs a warning (once per Tagger): every path that tags goes through here.
        """
        if self.thresholds is not None:
            return self.thresholds
        if not self._warned_default:
            logger.warning(
                "no thresholds file given: using %.2f for every %s class; fit per-class thresholds "
                "with `calitag calibrate` and pass them with --thresholds", DEFAULT_THRESHOLD, self.name,
            )
            self._warned_default = True
        return self._default_decision

    @property
    def model(self) -> Any:
        """The network (an nn.Module, or the onnxruntime model of YAMNet)."""
        return self.backend.model

    @property
    def device(self) -> Any:
        """Where the network runs: a torch.device, or "cpu"/"cuda[:N]" for numpy models."""
        return self.backend.device

    @property
    def frontend(self) -> Callable[[Any], Any]:
        """Waveforms (B, n_samples) -> log-Mel features (B, n_mels, n_frames), on the model's device."""
        return self.backend.frontend

    @property
    def window_frontend(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """A picklable numpy frontend that batch decoders run on each window, so that the main process
        only runs the network (:meth:`score_features`); None for the torch models."""
        return self.backend.window_frontend

    @property
    def prepare_features(self) -> Callable[[Any], Any] | None:
        """What the model applies to the frontend's features first (padding, ...), or None."""
        return self.backend.prepare_features

    @property
    def config(self) -> TaggerConfig:
        """How to build this Tagger again (:meth:`from_config`), its thresholds aside."""
        return self._config

    @property
    def thresholds_id(self) -> str | None:
        """``file name:first 12 hex digits of its sha256`` of the thresholds file, so results stay traceable."""
        if self.thresholds_path is None:
            return None
        return f"{self.thresholds_path.name}:{file_digests(self.thresholds_path)[0][:12]}"

    @classmethod
    def load(
        cls,
        name: str = "yamnet",
        *,
        device: str | torch.device = "auto",
        checkpoint: str | Path | None = None,
        thresholds: str | Path | Thresholds | None = None,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        optimize: bool = False,
        precision: str = "fp32",
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Tagger:
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
        MissingDependencyError
            A torch model where torch (or another package of the torch extra) is not installed.
        ChecksumError, CheckpointError
            Weights that are corrupt or do not fit the architecture.
        DeviceError
            A device this machine does not have.
        PrecisionError
            "bf16" on a model without a bfloat16 path (yamnet) or a device without native bfloat16.
        ThresholdsMismatchError, ThresholdsError
            A thresholds file for another model or class list, or a malformed one.
        """
        config = TaggerConfig(model=name, checkpoint=_path_str(checkpoint), cache_dir=_path_str(cache_dir),
                              device=str(device), batch_size=batch_size, optimize=optimize, precision=precision,
                              seed=seed)
        return cls.from_config(config, thresholds=thresholds, on_progress=on_progress)

    @classmethod
    def from_config(
        cls,
        config: TaggerConfig,
        *,
        thresholds: str | Path | Thresholds | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Tagger:
        """Build the Tagger that ``config`` describes (see :meth:`load` for the options and errors).

        Parameters
        ----------
        config : TaggerConfig
            The model, its weights, device, batch size, optimization and precision.
        thresholds : str or Path or Thresholds or None
            A thresholds file (or object) fitted for this model.
        on_progress : callable or None
            ``on_progress(bytes_done, bytes_total)`` while a missing checkpoint downloads.

        Returns
        -------
        Tagger
            Its :attr:`config` is ``config``.
        """
        _check_arguments(config, thresholds)
        spec = get_spec(config.model)
        device = backend_for(spec).device_for(spec, config.device)  # a missing runtime is named before any download
        path = resolve_checkpoint(spec.name, config.checkpoint, config.cache_dir, on_progress=on_progress)
        if path is None:
            logger.warning(
                "%s: no published weights and none imported: using random weights (seed %d); "
                "its scores carry no meaning", spec.name, config.seed,
            )
        model = build_model(spec, path, seed=config.seed)
        thresholds, thresholds_path = _read_thresholds(thresholds, spec, path)
        tagger = cls(spec, model, device=device, checkpoint=path, thresholds=thresholds,
                     batch_size=config.batch_size, optimize=config.optimize, precision=config.precision)
        tagger.thresholds_path = thresholds_path
        tagger._config = config
        return tagger

    # --- inputs -> windows ---------------------------------------------------------------------

    def _waveform(self, index: int, item: AudioInput) -> Waveform:
        """An in-memory input at the model's rate: arrays are taken to be at it, Waveforms are resampled."""
        rate = self.spec.frontend.sample_rate
        if isinstance(item, np.ndarray):
            # np.asarray: an ndarray subclass (np.matrix stays 2-D when indexed) becomes a plain array.
            item = Waveform(samples=np.asarray(item), sample_rate=rate, source=f"<array {index}>")
        if not isinstance(item, Waveform):
            text = repr(item)
            raise AudioTypeError(
                f"input {index}: expected a path, a Waveform or a numpy array of samples, got "
                f"{type(item).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
            )
        return resample(item, sample_rate=rate)

    def _item(
        self, index: int, item: AudioInput, *, window_s: float | None = None, hop_s: float | None = None,
        min_window_s: float | None = None,
    ) -> _Item:
        spec = self.spec
        window_s = window_s or spec.window_s
        hop_s = hop_s or spec.hop_s
        min_window_s = min_window_s or spec.min_window_s
        if isinstance(item, (str, Path)):
            stream = stream_windows(
                item, sample_rate=spec.frontend.sample_rate, window_s=window_s, hop_s=hop_s, min_window_s=min_window_s
            )
            return _Item(index, str(item), stream)
        wave = self._waveform(index, item)
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

    def _batches(self, items: Iterable[_Item]) -> Iterator[tuple[list[tuple[_Item, Window]], np.ndarray]]:
        """Group windows of consecutive recordings into batches of equal-length windows."""
        pending: list[tuple[_Item, Window]] = []
        for item in items:
            for window in item.windows:
                if pending and (len(pending) == self.batch_size or len(pending[0][1].samples) != len(window.samples)):
                    yield pending, np.stack([w.samples for _, w in pending])
                    pending = []
                pending.append((item, window))
        if pending:
            yield pending, np.stack([w.samples for _, w in pending])

    def _fold(self, items: Iterable[_Item], *, aggregate: Aggregate) -> list[np.ndarray]:
        """Window scores of each item folded into one float64 row per item (see RunningAggregate), in item order."""
        folded: dict[int, RunningAggregate] = {}
        for members, batch in self._batches(items):
            for (item, window), row in zip(members, self.score_windows(batch)):
                check_finite_scores(row, window.samples, item.source)
                folded.setdefault(item.index, RunningAggregate(aggregate)).add(row)
        return [folded[index].result() for index in sorted(folded)]

    # --- public API ------------------------------------------------------------------------------

    def score_windows(self, batch: np.ndarray) -> np.ndarray:
        """Clip probabilities (B, n_classes) of equally long windows (B, n_samples) at the model's rate."""
        return self.backend.forward(self.backend.features(batch))

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Clip probabilities (B, n_classes) of ``window_frontend`` features of equally long windows."""
        if self.window_frontend is None:
            raise AudioError(f"{self.name} computes its features on the torch side: use score_windows")
        return self.backend.forward(self.backend.prepare(features))

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

        def prepared() -> Iterator[_Item]:
            for index, entry in enumerate(entries):
                item = self._item(index, entry)
                sources[index] = item.source
                yield item

        # Folded as windows arrive, so a long file holds one row per class, not one per window.
        rows = self._fold(prepared(), aggregate=aggregate)
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
        windowing = Windowing.of(self.spec, segment_s=segment_s)  # the engines' windowing: the same segments
        RunningAggregate(aggregate)  # checks the name before the file is read
        if isinstance(item, (str, Path)):
            source, chunks = str(item), stream_audio(item, sample_rate=windowing.sample_rate)
        else:
            wave = self._waveform(0, item)
            source, chunks = wave.source, iter([wave.samples])
        n_samples = 0

        def items() -> Iterator[_Item]:
            def segment(pairs: Iterator[tuple[int, Window]]) -> Iterator[Window]:
                nonlocal n_samples
                for _, window in pairs:
                    n_samples = max(n_samples, window.start + window.n_valid)
                    yield window

            for index, pairs in itertools.groupby(windowing.cut(chunks, source=source), key=operator.itemgetter(0)):
                yield _Item(index, source, segment(pairs))

        rows = self._fold(items(), aggregate=aggregate)
        starts_s, ends_s = windowing.bounds_s(n_samples)
        return SegmentScores(
            probs=np.asarray(rows, dtype=np.float32).reshape(len(starts_s), len(self.class_names)),
            starts_s=starts_s, ends_s=ends_s, class_names=self.class_names, model=self.name, source=source,
        )

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
            features = self.backend.features(batch)
            n_feature_frames = int(features.shape[-1])
            _, frames = self.backend.forward_frames(features)
            hop_s = feature_hop_s * n_feature_frames / frames.shape[1]
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
            for (_, window), row in zip(members, self.score_windows(batch)):
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
        """Binary decisions (n_clips, n_classes) of :attr:`decision`: the thresholds file, else the default 0.5.

        Raises
        ------
        ScoresError
            Scores with another number of classes, or NaN/inf.
        """
        return self.decision.apply(scores.probs)

    def tag(
        self, items: AudioInput | Sequence[AudioInput], *, top_k: int | None = None, aggregate: Aggregate = "max",
        probabilities: bool = False,
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
        probabilities : bool
            Pair each label with its calibrated probability (the thresholds file's maps) instead of
            its score; the decision is the same.

        Returns
        -------
        list of Tags
            One per input, labels sorted by decreasing score.
        """
        check_top_k(top_k)
        scores = self.scores(items, aggregate=aggregate)
        return self.tags_from_scores(scores, top_k=top_k, probabilities=probabilities)

    def tags_from_scores(self, scores: Scores, *, top_k: int | None = None, probabilities: bool = False) -> list[Tags]:
        """Turn clip scores into tag sets with this Tagger's :attr:`decision` (see :meth:`tag`).

        Raises
        ------
        ScoresError
            Scores with another number of classes, or NaN/inf.
        ThresholdsError
            ``probabilities`` with thresholds that hold no probability maps.
        """
        labels = self.decision.labels(scores.probs, top_k=top_k, probabilities=probabilities)
        sources = scores.sources or ("",) * len(labels)
        return [Tags(source=source, labels=pairs, model=scores.model) for source, pairs in zip(sources, labels)]

    # --- the user's jobs (calitag.pipeline.detect, calitag.pipeline.calibrate) ----------------------------

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
        from calitag.pipeline.detect import detect, resolve_postprocess

        stack = resolve_postprocess(self, postprocess)
        return detect(self, self._as_list(items), stack)

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
        from calitag.pipeline.labels import as_clip_labels

        return calibrate(self, folder, as_clip_labels(labels, class_names=self.class_names), out=out, **options)

    def calibrate_events(self, folder: str | Path, events: Any, out: str | Path | None = None, **options: Any) -> Any:
        """Tune the event post-processing stack on strong labels; see :func:`calitag.pipeline.detect.calibrate_events`."""
        from calitag.pipeline.detect import calibrate_events

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
    ModelNotFoundError, MissingDependencyError, CheckpointError, DeviceError, ThresholdsError
        As :meth:`Tagger.load`.
    """
    return Tagger.load(name, device=device, thresholds=thresholds, checkpoint=checkpoint, cache_dir=cache_dir,
                       **options)
