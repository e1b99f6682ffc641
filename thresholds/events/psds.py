"""Threshold-independent SED metrics with sed_scores_eval: PSDS1, PSDS2, per-class AP and collar-based F1.

sed_scores_eval (Ebbers, Serizel & Haeb-Umbach, ICASSP 2022) is the reference implementation the DCASE
task 4 baselines report since 2022; it computes the PSD-ROC exactly from the frame scores instead of from
a few dozen thresholds. calitag only converts its objects into that library's inputs:

- scores: one DataFrame per recording (``onset``, ``offset``, one column per class), frame ``t`` spanning
  ``[t * hop, (t + 1) * hop)`` as in :func:`calitag.thresholds.events.detect_events`; recordings are
  known by their file name less the extension, as sed_scores_eval reads DCASE tables;
- the post-processed scores: each class column smoothed with its stack's kernel
  (:func:`calitag.thresholds.events.smooth`); PSDS and AP are threshold-independent, so the stack's
  thresholds do not enter them;
- collar-based F1 (200 ms onset collar, offset collar max(200 ms, 20 % of the event)) of the events the
  stack detects (:func:`~calitag.thresholds.events.detect_events`: thresholds or hysteresis, gap filling,
  minimum length), as a 0/1 score curve evaluated at 0.5;
- per-class AP: segment-based average precision over 1-s segments (the DCASE 2024 task 4 setting).

The scenarios are those of DCASE 2021-2024 task 4 (:data:`PSDS_SCENARIOS`). The classes evaluated are
those of the reference that the model outputs (a PSD-ROC needs reference events for each class).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calitag.errors import LabelsError, ScoresError
from calitag.thresholds.events.postprocess import Event, FrameScoresLike, Postprocess, detect_events, smooth

#: DCASE 2021-2024 task 4 settings: PSDS1 (tight localisation, no cross-trigger penalty) and PSDS2
#: (loose localisation, cross triggers penalised); eFPR per hour up to 100.
PSDS_SCENARIOS: dict[str, dict[str, Any]] = {
    "psds1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0, "alpha_st": 1.0,
              "max_efpr": 100.0},
    "psds2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0,
              "max_efpr": 100.0},
}
#: Collar-based F1 of DCASE (sed_eval's event-based metric).
COLLARS = {"onset_collar": 0.2, "offset_collar": 0.2, "offset_collar_rate": 0.2}
#: Segment length of the per-class average precision.
AP_SEGMENT_S = 1.0


def _sed_scores_eval() -> Any:
    from calitag._extras import import_optional

    # sed_scores_eval imports dcase_util, which imports setuptools' deprecated pkg_resources: that warning
    # is about a dependency's dependency, not something a user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        return import_optional("sed_scores_eval", extra="events", what="PSDS (sed_scores_eval)")


def audio_id(name: str) -> str:
    """A recording's id in sed_scores_eval: its file name less the extension (``tune_00.flac`` -> ``tune_00``)."""
    return name.rsplit(".", 1)[0]


def score_frame(probs: np.ndarray, *, frame_hop_s: float, class_names: Sequence[str]) -> Any:
    """One recording's scores as sed_scores_eval's DataFrame (``onset``, ``offset``, a column per class)."""
    _sed_scores_eval()  # the one-line missing-extra error, and the import without its dependency's warning
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    timestamps = np.arange(len(probs) + 1) * frame_hop_s
    return create_score_dataframe(np.asarray(probs, dtype=np.float64), timestamps, list(class_names))


def write_frame_scores(folder: str | os.PathLike, frame_scores: Sequence[FrameScoresLike],
                       names: Sequence[str] | None = None) -> list[Path]:
    """Write frame scores in sed_scores_eval's per-file format: ``folder/<id>.tsv`` per recording.

    Parameters
    ----------
    folder : path
        Created when missing.
    frame_scores : sequence of FrameScoresLike
    names : sequence of str, optional
        The recordings' file names (default: the base names of the sources); the id is the name less its
        extension, as in :func:`audio_id`.

    Returns
    -------
    list of Path
        The files written, readable with ``sed_scores_eval.io.read_sed_scores(folder)``.
    """
    _sed_scores_eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [os.path.basename(fs.source) for fs in frame_scores] if names is None else list(names)
    paths = []
    for fs, name in zip(frame_scores, names):
        path = folder / f"{audio_id(name)}.tsv"
        score_frame(fs.probs, frame_hop_s=fs.frame_hop_s, class_names=fs.class_names).to_csv(
            path, sep="\t", index=False)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class SedMetrics:
    """Threshold-independent and collar-based metrics of one set of frame scores.

    psds1, psds2: PSDS of the DCASE scenarios (:data:`PSDS_SCENARIOS`), in [0, 1].
    class_ap: segment-based average precision per class (1-s segments); mean_ap: their mean.
    class_f1: collar-based F1 per class of the detected events; f1: their macro average.
    """

    psds1: float
    psds2: float
    class_ap: dict[str, float]
    mean_ap: float
    class_f1: dict[str, float]
    f1: float

    def to_dict(self) -> dict[str, Any]:
        return {"psds1": self.psds1, "psds2": self.psds2, "mean_ap": self.mean_ap, "class_ap": self.class_ap,
                "f1": self.f1, "class_f1": self.class_f1}


@dataclass(frozen=True)
class SedEvaluation:
    """PSDS, AP and F1 on the raw frame scores and on the post-processed ones.

    raw: scores as the model gives them, events at threshold 0.5 without smoothing.
    postprocessed: each class smoothed with its stack, events of the whole stack.
    classes: the classes evaluated; ignored_classes: reference classes the model does not output.
    n_files: recordings evaluated.
    """

    raw: SedMetrics
    postprocessed: SedMetrics
    classes: tuple[str, ...]
    ignored_classes: tuple[str, ...] = ()
    n_files: int = 0
    settings: dict[str, Any] = field(default_factory=lambda: {**PSDS_SCENARIOS, "collars": COLLARS,
                                                              "ap_segment_s": AP_SEGMENT_S})

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw.to_dict(), "postprocessed": self.postprocessed.to_dict(),
                "classes": list(self.classes), "ignored_classes": list(self.ignored_classes),
                "n_files": self.n_files, "settings": self.settings}


def _setting(setting: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """A scenario for ``classes``: with one class there is no other class to cross-trigger, so the cross-trigger
    term (0 by definition) is left out (sed_scores_eval 0.0.4 fails on it)."""
    return {**setting, "cttc_threshold": None, "alpha_ct": 0.0} if len(classes) == 1 else setting


def _metrics(scores: dict[str, Any], detections: dict[str, Any], ground_truth: dict[str, list],
             durations: dict[str, float]) -> SedMetrics:
    """sed_scores_eval's PSDS1/2 and AP of ``scores`` and collar F1 of the 0/1 ``detections``."""
    sse = _sed_scores_eval()
    classes = [c for c in next(iter(scores.values())).columns if c not in ("onset", "offset")]
    psds = {name: float(sse.intersection_based.psds(scores=scores, ground_truth=ground_truth,
                                                    audio_durations=durations, **_setting(setting, classes))[0])
            for name, setting in PSDS_SCENARIOS.items()}
    ap, _ = sse.segment_based.average_precision(scores=scores, ground_truth=ground_truth, audio_durations=durations,
                                                segment_length=AP_SEGMENT_S)
    f1, *_ = sse.collar_based.fscore(scores=detections, ground_truth=ground_truth, threshold=0.5, **COLLARS)
    class_ap = {c: float(ap[c]) for c in classes}
    class_f1 = {c: float(f1[c]) for c in classes}
    return SedMetrics(psds1=psds["psds1"], psds2=psds["psds2"], class_ap=class_ap,
                      mean_ap=float(np.mean(list(class_ap.values()))), class_f1=class_f1,
                      f1=float(np.mean(list(class_f1.values()))))


def _activity(events: Sequence[Event], *, n_frames: int, frame_hop_s: float, classes: Sequence[str]) -> np.ndarray:
    """The 0/1 frame curve of detected events (their frames set to 1), shape (n_frames, n_classes)."""
    curve = np.zeros((n_frames, len(classes)))
    column = {c: i for i, c in enumerate(classes)}
    for event in events:
        if event.label in column:
            first = int(round(event.onset_s / frame_hop_s))
            curve[first:int(round(event.offset_s / frame_hop_s)), column[event.label]] = 1.0
    return curve


def _inputs(frame_scores: Sequence[FrameScoresLike], postprocess: Postprocess, classes: Sequence[str],
            names: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per recording: the post-processed score frame and the 0/1 frame of the stack's events."""
    scores, detections = {}, {}
    for fs, name in zip(frame_scores, names):
        index = [fs.class_names.index(c) for c in classes]
        probs = np.asarray(fs.probs, dtype=np.float64)
        smoothed = np.stack([smooth(probs[:, i], kind=postprocess[c].smoothing,
                                    kernel_frames=postprocess[c].kernel_frames) for i, c in zip(index, classes)],
                            axis=1)
        events = detect_events(fs, postprocess, file=name)
        key = audio_id(name)
        scores[key] = score_frame(smoothed, frame_hop_s=fs.frame_hop_s, class_names=classes)
        detections[key] = score_frame(_activity(events, n_frames=len(probs), frame_hop_s=fs.frame_hop_s,
                                                classes=classes), frame_hop_s=fs.frame_hop_s, class_names=classes)
    return scores, detections


def evaluate_sed(
    frame_scores: Sequence[FrameScoresLike], reference: Sequence[Event], *, files: Sequence[str] | None = None,
    postprocess: Postprocess | None = None, durations_s: Mapping[str, float] | None = None,
) -> SedEvaluation:
    """PSDS1, PSDS2, per-class AP and collar F1 of frame scores against strong labels, raw and post-processed.

    Parameters
    ----------
    frame_scores : sequence of FrameScoresLike
        One per recording, all of one model.
    reference : sequence of Event
        Strong labels of those recordings (``Event.file`` as in ``files``).
    files : sequence of str, optional
        The recordings' names in ``reference``, in the order of ``frame_scores`` (default: base names of
        the sources).
    postprocess : Postprocess, optional
        The stack of the post-processed metrics; default: threshold 0.5, no smoothing (then equal to raw).
    durations_s : mapping name -> seconds, optional
        Recording lengths (eFPR per hour); default: the frames' span.

    Returns
    -------
    SedEvaluation

    Raises
    ------
    LabelsError
        No reference event of a class the model outputs, or reference events of unscored recordings.
    ScoresError
        No scores, or scores of several models.
    MissingDependencyError
        sed_scores_eval is not installed (the events extra).
    """
    _sed_scores_eval()
    if not frame_scores:
        raise ScoresError("no frame scores to evaluate")
    if len({fs.model for fs in frame_scores}) > 1:
        raise ScoresError(f"frame scores of several models: {sorted({fs.model for fs in frame_scores})}")
    names = [os.path.basename(fs.source) for fs in frame_scores] if files is None else list(files)
    model_classes = tuple(frame_scores[0].class_names)
    unscored = sorted({e.file for e in reference} - set(names))
    if unscored:
        raise LabelsError(f"reference events of {len(unscored)} recording(s) that were not scored, e.g. {unscored[:3]}")
    labels = sorted({e.label for e in reference})
    classes = tuple(c for c in labels if c in model_classes)
    if not classes:
        raise LabelsError(f"no reference event of a class {frame_scores[0].model} outputs; the reference has "
                          f"{labels[:5]}")
    ground_truth: dict[str, list] = {audio_id(n): [] for n in names}
    for e in reference:
        if e.label in classes:
            ground_truth[audio_id(e.file)].append((e.onset_s, e.offset_s, e.label))
    durations = {audio_id(n): max(len(fs.probs) * fs.frame_hop_s, (durations_s or {}).get(n, 0.0))
                 for fs, n in zip(frame_scores, names)}
    stacks = {"raw": Postprocess.uniform(model_classes), "postprocessed": postprocess or Postprocess.uniform(model_classes)}
    metrics = {kind: _metrics(*_inputs(frame_scores, stack, classes, names), ground_truth, durations)
               for kind, stack in stacks.items()}
    return SedEvaluation(raw=metrics["raw"], postprocessed=metrics["postprocessed"], classes=classes,
                         ignored_classes=tuple(c for c in labels if c not in model_classes), n_files=len(names))
