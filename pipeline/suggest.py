"""Which clips to label next, and whether more labels are worth it: the job behind ``calitag suggest``.

:func:`suggest` scores a folder (or reads a ``calitag batch --all-scores`` output), splits its clips
into those the label file lists and the others, ranks the others with
:func:`calitag.thresholds.active.rank_unlabeled` over the labeled classes, and estimates from the
learning curve of the labeled clips what ``n`` more labels would add. :func:`write_suggestions`
writes the list as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calitag._fileio import write_atomic
from calitag.errors import LabelsError
from calitag.pipeline.batch import BatchProgress, find_audio_files
from calitag.pipeline.calibrate import ScoreCache, ScoredFiles, TaggerSource, score_files
from calitag.pipeline.labels import check_label_names, read_clip_labels
from calitag.thresholds.active import rank_unlabeled
from calitag.thresholds.learning_curve import LabelGain, LearningCurve, expected_gain, learning_curve

if TYPE_CHECKING:
    from calitag.pipeline.tagger import Tagger

#: The header of the list :func:`write_suggestions` writes (and the mark of a file it may replace).
CSV_HEADER = ("filename", "class", "score", "threshold", "doubt")
#: Fewer labeled clips than this: no learning curve, no gain estimate.
MIN_CURVE_CLIPS = 8

__all__ = ["CSV_HEADER", "Pick", "SuggestResult", "is_suggestion_list", "run_suggest", "suggest", "write_suggestions"]


@dataclass(frozen=True)
class Pick:
    """One clip to label: its name, the class most in doubt, its score and the threshold fitted on the labeled clips."""

    filename: str
    class_name: str
    score: float
    threshold: float
    doubt: float


@dataclass(frozen=True)
class SuggestResult:
    """The clips to label next, most informative first, and what labeling them is expected to add.

    gain: the learning-curve estimate for ``len(picks)`` more labels (None with fewer than 8
    labeled clips); curve: the curve it came from. classes: the labeled classes the picks serve.
    """

    picks: tuple[Pick, ...]
    classes: tuple[str, ...]
    n_labeled: int
    n_unlabeled: int
    gain: LabelGain | None
    curve: LearningCurve | None
    failed: tuple[str, ...] = ()


def _folder_scores(tagger: Tagger, folder: Path, *, workers: int | None,
                   on_progress: Callable[[BatchProgress], None] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """(names relative to ``folder``, scores, failed names) of every audio file under ``folder``."""
    paths = find_audio_files(folder, recursive=True)
    scores, ok, failed = score_files(tagger, paths, cache=ScoreCache(None, tagger.class_names), workers=workers,
                                     on_progress=on_progress)
    names = [paths[i].relative_to(folder).as_posix() for i in ok]
    return names, scores, [f.path for f in failed]


def _clip_scores(tagger: Tagger, source: Path, listed: list[str], *, workers: int | None,
                 on_progress: Callable[[BatchProgress], None] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, scores, failed) of a folder of audio or of an all-scores batch output.

    A batch output's rows are named by their recorded paths, except those a label-file name in
    ``listed`` matches (:func:`calitag.pipeline.labels.match_recorded`), which take that name.
    """
    if source.is_dir() and find_audio_files(source, recursive=True):
        return _folder_scores(tagger, source, workers=workers, on_progress=on_progress)
    scored = ScoredFiles.read(source, model=tagger.name, class_names=tagger.class_names)
    by_path = {path: label for label, path in scored.match(listed).items()}
    return [by_path.get(path, path) for path in scored.paths], scored.scores, list(scored.errors)


def suggest(tagger: Tagger, source: str | Path, labels: str | Path, n: int, *, objective: str = "micro_f1",
            seed: int = 0, workers: int | None = None,
            on_progress: Callable[[BatchProgress], None] | None = None) -> SuggestResult:
    """The ``n`` clips of ``source`` to label next for ``tagger``'s thresholds, and the expected gain.

    Parameters
    ----------
    tagger : Tagger
        The model whose thresholds the labels calibrate.
    source : str or Path
        A folder of audio (scored here, sub-folders included) or a ``calitag batch --all-scores``
        output of the same model (JSONL/CSV file or Parquet folder).
    labels : str or Path
        The clips labeled so far, in the ``calitag calibrate`` label format; names relative to the
        folder (or as the batch output records them).
    n : int
        How many clips to suggest.
    objective, seed
        As :func:`calitag.suggest_labels`.
    workers, on_progress
        As :func:`calitag.pipeline.batch.run_batch` (folder sources only).

    Returns
    -------
    SuggestResult

    Raises
    ------
    LabelsError
        Unreadable labels; labels that are not model classes; no labeled clip in ``source``;
        ``n`` out of range (see :func:`calitag.suggest_labels`).
    OutputError
        ``source`` is neither a folder of audio nor a readable batch output.
    """
    source = Path(source)
    clip_labels = read_clip_labels(labels, class_names=tagger.class_names)
    check_label_names(clip_labels, tagger.class_names, model=tagger.name)
    names, scores, failed = _clip_scores(tagger, source, list(clip_labels.labels), workers=workers,
                                         on_progress=on_progress)
    recorded = {name: i for i, name in enumerate(names)}
    rows = {recorded[name]: name for name in clip_labels.labels if name in recorded}
    if not rows:
        raise LabelsError(f"none of the {len(clip_labels.labels)} clips listed in {labels} is in {source}")
    labeled = np.zeros(len(names), dtype=bool)
    labeled[list(rows)] = True
    classes = tuple(c for c in tagger.class_names if any(c in clip_labels.labels[name] for name in rows.values()))
    if not classes:
        raise LabelsError(f"{labels}: none of the labeled clips has a {tagger.name} class")
    columns = [tagger.class_names.index(c) for c in classes]
    targets = np.zeros((len(names), len(classes)), dtype=np.float32)
    targets[list(rows)] = clip_labels.targets(list(rows.values()), classes)
    matrix = np.asarray(scores, dtype=np.float64)[:, columns]
    ranked = rank_unlabeled(matrix, targets, labeled, n, objective=objective, seed=seed)
    picks = tuple(Pick(names[i], classes[c], float(matrix[i, c]), float(ranked.thresholds[c]), float(d))
                  for i, c, d in zip(ranked.indices, ranked.classes, ranked.doubt))
    curve = gain = None
    if labeled.sum() >= MIN_CURVE_CLIPS:
        curve = learning_curve(matrix[labeled], targets[labeled], objective=objective, seed=seed)
        gain = expected_gain(curve, n)
    return SuggestResult(picks=picks, classes=classes, n_labeled=int(labeled.sum()),
                         n_unlabeled=int((~labeled).sum()), gain=gain, curve=curve, failed=tuple(failed))


def write_suggestions(result: SuggestResult, path: str | Path) -> Path:
    """Write the picks as CSV (``filename,class,score,threshold,doubt``), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for pick in result.picks:
        threshold = "" if np.isnan(pick.threshold) else f"{pick.threshold:.4f}"
        writer.writerow([pick.filename, pick.class_name, f"{pick.score:.4f}", threshold, f"{pick.doubt:.3f}"])
    write_atomic(path, buffer.getvalue())
    return Path(path)


def is_suggestion_list(path: Path) -> bool:
    """Whether ``path`` is a list :func:`write_suggestions` wrote (which a later run may replace)."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return handle.readline().strip() == ",".join(CSV_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def run_suggest(model: TaggerSource, source: str | Path, labels: str | Path, n: int, *, out: str | Path,
                objective: str = "micro_f1", seed: int = 0, workers: int | None = None,
                on_progress: Callable[[BatchProgress], None] | None = None) -> SuggestResult:
    """``calitag suggest`` as one call: load the model, :func:`suggest`, write the list to ``out``.

    The caller checks ``out`` first (the CLI's overwrite rule), so a bad path fails before any scoring.
    """
    result = suggest(model.load(), source, labels, n, objective=objective, seed=seed, workers=workers,
                     on_progress=on_progress)
    write_suggestions(result, out)
    return result
