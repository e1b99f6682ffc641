"""The sound event jobs: detect events in files, tune the post-processing stack on strong labels.

The CLI (``calitag detect``, ``calibrate-events``) and the public API (``Tagger.detect``,
``Tagger.calibrate_events``) both call these, so a command only formats what they return. The other
jobs have modules of their own: :mod:`calitag.pipeline.batch`, :mod:`calitag.pipeline.calibrate`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from calitag.errors import LabelsError
from calitag.pipeline.batch import find_audio_files
from calitag.pipeline.review_formats import table_names

if TYPE_CHECKING:
    from calitag.pipeline.tagger import Tagger
    from calitag.pipeline.types import FrameScores
    from calitag.thresholds.events import Event, EventsTuning, EventTable, Postprocess
    from calitag.thresholds.events.psds import SedEvaluation
    from calitag.thresholds.events.segments import ScoredEvent
    from calitag.thresholds.io import Thresholds


# --- sound event detection -----------------------------------------------------------------------


def resolve_postprocess(tagger: Tagger, postprocess: Postprocess | Thresholds | str | Path | None) -> Postprocess:
    """The post-processing stack for ``tagger``'s frame scores.

    ``postprocess`` is a :class:`Postprocess`, a Thresholds with an events section, a file
    (:func:`calitag.thresholds.events.load_postprocess`), an events section as a dict, or None:
    threshold 0.5, no smoothing.

    Raises
    ------
    ArgumentTypeError
        Anything else.
    ThresholdsError, ThresholdsMismatchError
        A file without events section, or parameters for other classes or another model.
    """
    from calitag.errors import ArgumentTypeError, ThresholdsError
    from calitag.thresholds.events import Postprocess, load_postprocess
    from calitag.thresholds.io import Thresholds

    if postprocess is None:
        return Postprocess.uniform(tagger.class_names)
    if isinstance(postprocess, (str, os.PathLike)):
        return load_postprocess(postprocess, class_names=tagger.class_names, expected_model=tagger.name)
    if isinstance(postprocess, Mapping):
        # An events section as a dict (the JSON form of Postprocess.to_dict).
        return Postprocess.from_dict(postprocess, class_names=tagger.class_names, source="the postprocess mapping")
    if not isinstance(postprocess, (Postprocess, Thresholds)):
        text = repr(postprocess)
        raise ArgumentTypeError(
            "postprocess must be a Postprocess, a Thresholds object with an events section, a file (str or Path), "
            f"an events section (dict) or None, got {type(postprocess).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
        )
    if isinstance(postprocess, Thresholds):
        postprocess.check_compatible(expected_model=tagger.name, expected_classes=tagger.class_names)
        if postprocess.events is None:
            raise ThresholdsError("these thresholds have no events section; fix: run calitag calibrate-events")
        postprocess = postprocess.events
    return postprocess.for_classes(tagger.class_names)


@dataclass(frozen=True)
class EventsCalibration:
    """What :func:`calibrate_events` produced.

    tuning: the tuner's result (stack, scores of the tuned and of the 0.5 baseline, seconds).
    thresholds: the thresholds object holding the stack as its ``events`` (written when ``out`` was given).
    unlabeled_files: audio files of the folder that the events table does not list (not used).
    n_files: recordings tuned on.
    evaluation: PSDS1/2, AP and F1 on the tuning files, raw and with the tuned stack (None without
      sed_scores_eval, the events extra).
    """

    tuning: EventsTuning
    thresholds: Thresholds
    unlabeled_files: tuple[str, ...]
    n_files: int
    evaluation: SedEvaluation | None = None


def read_event_table(events: str | Path | EventTable) -> EventTable:
    """An events table from a DCASE TSV path (or the table itself)."""
    from calitag.thresholds.events import read_events_tsv

    return events if not isinstance(events, (str, Path)) else read_events_tsv(events)


def existing_thresholds(out: str | Path | None, *, model: str) -> Thresholds | None:
    """The thresholds file at ``out`` when one exists (checked to be for ``model``), else None."""
    from calitag.thresholds.io import Thresholds, is_thresholds_file

    # Anything else at ``out`` is not merged into: the overwrite rule (``--force``) decides whether it is replaced.
    if out is None or not Path(out).exists() or not is_thresholds_file(out):
        return None
    return Thresholds.load(out, expected_model=model)


def calibrate_events(
    tagger: Tagger,
    folder: str | Path,
    events: str | Path | EventTable,
    *,
    out: str | Path | None = None,
    metric: str = "event",
    solver: str = "sgl",
    seed: int = 0,
) -> EventsCalibration:
    """Tune the per-class post-processing stack on the strongly labeled recordings of ``folder``.

    Parameters
    ----------
    tagger : Tagger
        A frame-level model.
    folder : path
        The recordings named in ``events``; other audio files there are ignored.
    events : path or EventTable
        Strong labels (DCASE TSV: filename, onset, offset, event_label).
    out : path, optional
        Thresholds file to write. When it already exists (same model and classes), only its
        ``events`` section is replaced; otherwise every class keeps the default 0.5 for tagging.
    metric : {"event", "segment"}
        Macro F1 to maximise.
    solver : {"sgl", "exact"}
        Threshold solver of the frame-level surrogate step.
    seed : int

    Raises
    ------
    LabelsError
        The table names files that are not in ``folder``, or labels the model does not output.
    ThresholdsMismatchError
        ``out`` exists and was made for another model or class list.
    """
    from calitag.thresholds.events import tune_events
    from calitag.thresholds.events.psds import evaluate_sed
    from calitag.thresholds.io import DEFAULT_THRESHOLD, Thresholds

    folder = Path(folder)
    table = read_event_table(events)
    existing = existing_thresholds(out, model=tagger.name)
    missing = [f for f in table.files if not (folder / f).is_file()]
    if missing:
        raise LabelsError(f"{table.source} names {len(missing)} file(s) not in {folder}, e.g. {missing[:3]}")
    unlabeled = tuple(sorted({p.name for p in find_audio_files(folder)} - set(table.files)))
    if existing is not None:
        existing.check_compatible(expected_classes=tagger.class_names, source=str(out))
    scores: list[FrameScores] = [tagger.frame_scores(folder / name) for name in table.files]
    tuning = tune_events(scores, table, metric=metric, solver=solver, seed=seed)
    if existing is not None:
        thresholds = dataclasses.replace(existing, events=tuning.postprocess)
    else:
        uniform = Thresholds.uniform(tagger.class_names, model=tagger.name)
        thresholds = dataclasses.replace(uniform, options={"threshold": DEFAULT_THRESHOLD}, events=tuning.postprocess)
    if out is not None:
        thresholds.save(out)
    evaluation = None
    if importlib.util.find_spec("sed_scores_eval") is not None:
        evaluation = evaluate_sed(scores, table.events, files=table.files, postprocess=tuning.postprocess,
                                  durations_s=_durations(folder, table.files))
    return EventsCalibration(tuning=tuning, thresholds=thresholds, unlabeled_files=unlabeled, n_files=len(scores),
                             evaluation=evaluation)


def _durations(folder: Path, files: Sequence[str]) -> dict[str, float]:
    """Each recording's length from its header (eFPR per hour), for those whose header can be read."""
    from calitag.errors import TaggingError
    from calitag.pipeline.audio import probe_audio

    durations = {}
    for name in files:
        try:
            durations[name] = probe_audio(folder / name).duration_s
        except TaggingError:
            continue  # the frames' span stands in for it
    return durations


def evaluate_events(
    tagger: Tagger, folder: str | Path, events: str | Path | EventTable, *,
    postprocess: Postprocess | Thresholds | str | Path | None = None, scores_dir: str | Path | None = None,
) -> SedEvaluation:
    """PSDS1, PSDS2, per-class AP and collar F1 of ``tagger`` on the strongly labeled recordings of ``folder``.

    Parameters
    ----------
    tagger : Tagger
        A frame-level model.
    folder : path
        The recordings named in ``events``.
    events : path or EventTable
        Strong labels (DCASE TSV).
    postprocess : Postprocess, Thresholds, path or None
        The stack of the post-processed figures (:func:`resolve_postprocess`); None: 0.5, no smoothing.
    scores_dir : path, optional
        Also write the raw frame scores there in sed_scores_eval's per-file format (``<id>.tsv``).

    Raises
    ------
    LabelsError
        The table names files that are not in ``folder``, or no class the model outputs.
    MissingDependencyError
        sed_scores_eval is not installed (the events extra).
    """
    from calitag.thresholds.events.psds import evaluate_sed, write_frame_scores

    folder = Path(folder)
    table = read_event_table(events)
    missing = [f for f in table.files if not (folder / f).is_file()]
    if missing:
        raise LabelsError(f"{table.source} names {len(missing)} file(s) not in {folder}, e.g. {missing[:3]}")
    stack = resolve_postprocess(tagger, postprocess)
    scores = [tagger.frame_scores(folder / name) for name in table.files]
    if scores_dir is not None:
        write_frame_scores(scores_dir, scores, table.files)
    return evaluate_sed(scores, table.events, files=table.files, postprocess=stack,
                        durations_s=_durations(folder, table.files))


def detect(
    tagger: Tagger, paths: Iterable[str | Path], postprocess: Postprocess, *, names: Sequence[str] | None = None,
    scored: bool = False,
) -> list[Event] | list[ScoredEvent]:
    """Events of each recording, in input order; ``Event.file`` is ``names`` or :func:`table_names`.

    With ``scored``, :class:`~calitag.thresholds.events.segments.ScoredEvent` objects: each event with the
    highest raw frame score of its class over its span (what the review formats show).
    """
    from calitag.thresholds.events import detect_events
    from calitag.thresholds.events.segments import score_events

    paths = list(paths)
    names = table_names(paths) if names is None else list(names)
    found: list = []
    for path, name in zip(paths, names):
        frame_scores = tagger.frame_scores(path)
        events = detect_events(frame_scores, postprocess, file=name)
        found.extend(score_events(events, frame_scores) if scored else events)
    return found
