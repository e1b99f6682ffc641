"""The decision stage for frame scores: sound event detection.

- :mod:`~calitag.thresholds.events.postprocess`: per-class smoothing, threshold/hysteresis, minimum gap
  and length (:class:`Postprocess`), frame scores -> :class:`Event` list (:func:`detect_events`);
- :mod:`~calitag.thresholds.events.tuning`: :func:`tune_events` fits that stack on strong labels;
- :mod:`~calitag.thresholds.events.event_metrics`: event- and segment-based F-scores (:class:`DetectionReport`);
- :mod:`~calitag.thresholds.events.tsv`: the DCASE event table (read and write).
- :func:`load_postprocess` (defined in :mod:`calitag.thresholds.io`, which reads thresholds files): the
  stack from a thresholds file, a bare events section or the CRNN authors' parameters.

    from calitag.thresholds.events import detect_events, read_events_tsv, tune_events
"""

from calitag._lazy import attach

_POSTPROCESS = "calitag.thresholds.events.postprocess"
_EXPORTS = {
    **dict.fromkeys(("ClassPostprocess", "Event", "FrameScoresLike", "Postprocess", "detect_events",
                     "postprocess_from_authors", "smooth", "binarize"), _POSTPROCESS),
    "load_postprocess": "calitag.thresholds.io",
    **dict.fromkeys(("EventTable", "TSV_HEADER", "read_events_tsv", "write_events_tsv"),
                    "calitag.thresholds.events.tsv"),
    **dict.fromkeys(("DetectionReport", "event_based_scores", "segment_based_scores"),
                    "calitag.thresholds.events.event_metrics"),
    **dict.fromkeys(("EventsTuning", "tune_events"), "calitag.thresholds.events.tuning"),
}
__all__ = sorted(_EXPORTS)
attach(__name__, _EXPORTS)
