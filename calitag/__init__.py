"""calitag: audio tagging with calibrated per-class thresholds.

Waveform -> Features -> Scores -> Thresholds -> Tags. Each stage lives in its own subpackage:
``calitag.pipeline`` (audio, features, tagger, batch), ``calitag.models`` (registry, architectures,
checkpoints) and ``calitag.thresholds`` (surrogate step, solvers, thresholds file).
"""

from calitag._version import __version__
from calitag.errors import (
    AudioError,
    AudioLoadError,
    CheckpointError,
    ChecksumError,
    LabelsError,
    ModelNotFoundError,
    ScoresError,
    TaggingError,
    ThresholdsError,
    ThresholdsMismatchError,
)

__all__ = [
    "__version__",
    "AudioError",
    "AudioLoadError",
    "CheckpointError",
    "ChecksumError",
    "LabelsError",
    "ModelNotFoundError",
    "ScoresError",
    "TaggingError",
    "ThresholdsError",
    "ThresholdsMismatchError",
    "report",
]


def __getattr__(name: str):
    # calitag.report (the HTML calibration report) is imported on first use.
    if name == "report":
        from calitag.thresholds.report import report

        return report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
