"""Audio I/O, the Tagger, the batch runner and the jobs over many files (names load on first use).

Decoder processes import only calitag.pipeline.audio, so they start in a fraction of a second.
"""

from calitag._lazy import attach

_AUDIO = "calitag.pipeline.audio"
_TAGGER = "calitag.pipeline.tagger"
_EXPORTS = {
    **dict.fromkeys(("AudioInfo", "RunningAggregate", "Window", "aggregate", "load_audio", "probe_audio", "resample",
                     "stream_audio", "stream_windows", "windows"), _AUDIO),
    **dict.fromkeys(("FrameScores", "Scores", "SegmentScores", "Tags", "Waveform"), "calitag.pipeline.types"),
    **dict.fromkeys(("Tagger", "TaggerConfig", "load_tagger"), _TAGGER),
    "DEFAULT_THRESHOLD": "calitag.thresholds.io",  # defined once, with the Thresholds that use it
    "resolve_device": "calitag.models.backends",
}
__all__ = sorted(_EXPORTS)
attach(__name__, _EXPORTS)
