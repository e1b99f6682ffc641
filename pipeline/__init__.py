"""Audio I/O, features, the Tagger and the batch runner."""

from calitag.pipeline.audio import (
    AudioInfo,
    Window,
    aggregate,
    load_audio,
    probe_audio,
    resample,
    stream_audio,
    stream_windows,
    windows,
)
from calitag.pipeline.tagger import DEFAULT_THRESHOLD, Tagger, resolve_device
from calitag.pipeline.types import Features, FrameScores, Scores, Tags, Waveform

__all__ = [
    "DEFAULT_THRESHOLD",
    "AudioInfo",
    "Features",
    "FrameScores",
    "Scores",
    "Tagger",
    "Tags",
    "Waveform",
    "Window",
    "aggregate",
    "load_audio",
    "probe_audio",
    "resample",
    "resolve_device",
    "stream_audio",
    "stream_windows",
    "windows",
]
