"""calitag: audio tagging with calibrated per-class decisions.

Waveform -> Features -> Scores -> Thresholds -> Tags::

    import calitag
    tagger = calitag.load_tagger("yamnet", thresholds="th.json")       # or thresholds=None: 0.5 for all
    tagger.tag(["audio_samples/telephone_ring_01.wav"])                # [Tags(source, labels, model)]
    result = tagger.calibrate("audio_samples", "audio_samples/labels.csv", out="th.json")
    calitag.run_batch(tagger, "audio_samples", out="results.jsonl")    # one record per file
    events = calitag.load_tagger("crnn-dcase2019").detect(paths, postprocess="sed.json")

The subpackages are the stages: ``calitag.pipeline`` (audio, features, Tagger, batch and the jobs),
``calitag.models`` (registry, architectures, checkpoints) and ``calitag.thresholds`` (the decision
stage: thresholds, solvers and, in ``calitag.thresholds.events``, sound event post-processing).
Names are imported on first use, so ``import calitag`` loads neither numpy nor torch.
"""

from calitag._lazy import attach
from calitag._version import __version__
from calitag.errors import (
    ArgumentTypeError,
    AudioError,
    AudioLoadError,
    AudioTypeError,
    CacheError,
    CalibrationError,
    CheckpointError,
    ChecksumError,
    DeviceError,
    DownloadError,
    EngineError,
    LabelsError,
    MissingDependencyError,
    ModelNotFoundError,
    OutputError,
    PrecisionError,
    ScoresError,
    TaggingError,
    ThresholdsError,
    ThresholdsMismatchError,
)

_EXPORTS = {
    "load_tagger": "calitag.pipeline.tagger",
    "Tagger": "calitag.pipeline.tagger",
    "available_models": "calitag.models.registry",
    "run_batch": "calitag.pipeline.batch",
    "load_audio": "calitag.pipeline.audio",
    "Waveform": "calitag.pipeline.types",
    "Scores": "calitag.pipeline.types",
    "FrameScores": "calitag.pipeline.types",
    "Tags": "calitag.pipeline.types",
    "CalibrationResult": "calitag.pipeline.calibrate",
    "Thresholds": "calitag.thresholds.io",
    "fit_thresholds": "calitag.thresholds.solvers:fit",
    "ThresholdTuner": "calitag.thresholds.estimator",
    "evaluate_thresholds": "calitag.thresholds.metrics:evaluate",
    "METHODS": "calitag.thresholds.choices",
    "OBJECTIVES": "calitag.thresholds.objectives",
    "Event": "calitag.thresholds.events.postprocess",
    "Postprocess": "calitag.thresholds.events.postprocess",
    "report": "calitag.thresholds.html_report",
    "suggest_labels": "calitag.thresholds.active",
}

__all__ = [
    "__version__",
    *sorted(_EXPORTS),
    "ArgumentTypeError",
    "AudioError",
    "AudioLoadError",
    "AudioTypeError",
    "CacheError",
    "CalibrationError",
    "CheckpointError",
    "ChecksumError",
    "DeviceError",
    "DownloadError",
    "EngineError",
    "LabelsError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "OutputError",
    "PrecisionError",
    "ScoresError",
    "TaggingError",
    "ThresholdsError",
    "ThresholdsMismatchError",
]

attach(__name__, _EXPORTS)
