"""Exceptions raised by calitag. The CLI catches :class:`TaggingError` and prints its message."""

from __future__ import annotations


class TaggingError(Exception):
    """Base class of every error calitag raises on purpose."""


class ArgumentTypeError(TaggingError, TypeError):
    """A Python API argument of the wrong type; the message names the argument, what it takes and what it got."""


class AudioLoadError(TaggingError):
    """A file cannot be read as audio (missing, corrupt, empty, not audio, bad layout)."""


class AudioError(TaggingError):
    """A waveform or feature does not fit the stage it is given to (rate, shape, values)."""


class AudioTypeError(AudioError, TypeError):
    """An input that is not audio at all (None, a number, strings or objects instead of samples)."""


class ModelNotFoundError(TaggingError):
    """An unknown model name, or a model whose checkpoint is not available offline."""


class CheckpointError(TaggingError):
    """A checkpoint file cannot be read or does not fit the architecture."""


class ChecksumError(CheckpointError):
    """A file's sha256 differs from the expected one."""


class ThresholdsError(TaggingError):
    """A thresholds file is malformed or its values are unusable."""


class ThresholdsMismatchError(ThresholdsError):
    """A thresholds file was made for another model or class list."""


class ScoresError(TaggingError):
    """Score or label matrices that cannot be calibrated or evaluated (NaN, shape, range)."""


class LabelsError(TaggingError):
    """A label file is malformed or names unknown classes or files."""


class OutputError(TaggingError):
    """A results file cannot be written or resumed."""


class DeviceError(TaggingError):
    """A requested compute device (cuda, mps) is unknown or not available here."""


class CalibrationError(TaggingError):
    """A threshold solver or objective is unknown, or one of its options is out of range."""


class CacheError(CheckpointError):
    """The model cache folder cannot be used (not a folder, not writable)."""


class DownloadError(ModelNotFoundError):
    """A published file could not be downloaded (no network, HTTP error, no pip)."""


class EngineError(TaggingError):
    """A batch engine is not installed, or its cluster cannot be reached or fails."""


class MissingDependencyError(TaggingError):
    """A feature needs an optional dependency that is not installed (the message names the extra)."""


class PrecisionError(DeviceError):
    """A requested numeric precision (bf16) that this model or device cannot run natively."""
