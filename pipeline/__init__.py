"""Audio I/O, features, the Tagger, the batch runner and the jobs over many files (names load on first use).

Decoder processes import only calitag.pipeline.audio, so they start in a fraction of a second.
"""

from calitag._lazy import attach

_AUDIO = "calitag.pipeline.audio"
_TAGGER = "calitag.pipeline.tagger"
_EXPORTS = {
    **dict.fromkeys(("AudioInfo", "RunningAggregate", "Window", "aggregate", "load_audio", "probe_audio", "resample",
                     "stream_audio", "stream_windows", "windows"), _AUDIO),
    **dict.fromkeys(("Features", "FrameScores", "Scores", "Tags", "Waveform"), "calitag.pipeline.types"),
    **dict.fromkeys(("DEFAULT_THRESHOLD", "Tagger", "load_tagger", "resolve_device"), _TAGGER),
}
__all__ = sorted(_EXPORTS)
attach(__name__, _EXPORTS)
