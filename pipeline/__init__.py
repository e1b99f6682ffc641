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


def __getattr__(name: str):
    # The Tagger imports torch: load it on first use, so that decoder processes, which import
    # only calitag.pipeline.audio, start in a fraction of a second.
    if name in ("DEFAULT_THRESHOLD", "Tagger", "resolve_device"):
        from calitag.pipeline import tagger

        return getattr(tagger, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
