"""Calibrate a model on a labeled folder: score every file once, split, fit, compare, save.

:func:`calibrate` is a sequence of named steps: :func:`gather_clip_scores` (score the folder
through its score cache, or take the scores from a batch output) -> :func:`select_classes` ->
:func:`split_and_fit` (one held-out split or K-fold) -> :func:`compare_with_default` (reports,
bootstrap intervals, paired gain) -> :func:`provenance` (the thresholds file's record) -> save.
:func:`run_calibration` is the job as ``calitag calibrate`` asks for it: the output checks, the
label file and the batch output read, then :func:`calibrate`.

The scores are cached in an npz file keyed by model, checkpoint and file content, so running
the calibration again (another method, split or objective) decodes nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from calitag._fileio import atomic_output, check_output, check_writable, load_arrays
from calitag.errors import LabelsError, OutputError, ScoresError
from calitag.models.checkpoints import file_digests
from calitag.pipeline.batch import BatchProgress, FileResult, find_audio_files, run_batch
from calitag.pipeline.labels import ClipLabels, check_label_names, match_recorded, read_clip_labels
from calitag.pipeline.records import read_all_scores
from calitag.thresholds import ClassificationReport, Thresholds, fit
from calitag.thresholds.bootstrap import Interval, PairedGain, bootstrap_f1, paired_gain
from calitag.thresholds.io import DEFAULT_THRESHOLD, is_thresholds_file
from calitag.thresholds.learning_curve import LearningCurve, learning_curve
from calitag.thresholds.metrics import report_from_counts
from calitag.thresholds.probability import ProbabilityMap, ProbabilityMaps, brier_score, expected_calibration_error
from calitag.thresholds.targets import achieved
from calitag.thresholds.html_report import check_report_target
from calitag.thresholds.splits import kfold_splits, split_indices

if TYPE_CHECKING:
    from calitag.pipeline.tagger import Tagger

logger = logging.getLogger(__name__)

#: Bootstrap resamples of the held-out clips for the 95% intervals.
N_BOOTSTRAP = 1000
#: Folds of the small-class guard inside the fitting clips.
GUARD_FOLDS = 3
#: Classes with fewer positives than this among the labeled clips are named in a warning.
FEW_POSITIVES = 5

__all__ = [
    "CalibrationJob",
    "CalibrationOptions",
    "CalibrationResult",
    "Interval",
    "PairedGain",
    "ScoreCache",
    "ScoredFiles",
    "bootstrap_f1",
    "calibrate",
    "paired_gain",
    "run_calibration",
]


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` produced.

    thresholds: one per model class; classes absent from the labels keep the default threshold.
    classes: the labeled classes that were calibrated and evaluated (a subset of the model's).
    default, calibrated: held-out reports over ``classes`` with the default and fitted thresholds.
    intervals: {"default"|"calibrated": {"micro_f1"|"macro_f1": Interval}}.
    gains: {"micro_f1"|"macro_f1": PairedGain}, the paired bootstrap of calibrated - default.
    few_positives: (class, positives) for the labeled classes with fewer than 5 positive clips.
    """

    thresholds: Thresholds
    classes: tuple[str, ...]
    default: ClassificationReport
    calibrated: ClassificationReport
    intervals: dict[str, dict[str, Interval]]
    gains: dict[str, PairedGain]
    n_fit: int
    n_held_out: int
    failed: tuple[FileResult, ...] = ()
    unlabeled_files: tuple[str, ...] = ()
    missing_files: tuple[str, ...] = ()
    folds: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    few_positives: tuple[tuple[str, int], ...] = ()
    #: The held-out clips behind ``default``/``calibrated`` (for the HTML report): scores and 0/1
    #: targets (n_held_out, len(classes)), and the calibrated decisions (per fold with ``folds``).
    held_out_scores: np.ndarray | None = None
    held_out_targets: np.ndarray | None = None
    held_out_decided: np.ndarray | None = None
    #: Calibrated probabilities of the held-out clips (by maps that did not see them), or None.
    held_out_probs: np.ndarray | None = None
    #: Held-out F against the number of fitting clips (None below 8 labeled clips).
    learning_curve: LearningCurve | None = None

    def achieved(self) -> dict[str, list[object]] | None:
        """With targets: per labeled class, held-out precision and recall with exact 95% intervals
        (:func:`calitag.thresholds.targets.achieved`); None without targets."""
        if "target" not in (self.thresholds.per_class or {}) or self.held_out_decided is None:
            return None
        return achieved(self.held_out_decided, self.held_out_targets > 0)

    def probability_quality(self) -> dict[str, object] | None:
        """With probability maps: class-wise ECE (15 equal bins) and Brier score of the held-out clips,
        raw scores against calibrated probabilities; None without maps."""
        if self.held_out_probs is None:
            return None
        raw, calibrated, truth = self.held_out_scores, self.held_out_probs, self.held_out_targets
        return {"method": self.thresholds.probability_maps.method,
                "ece_raw": float(expected_calibration_error(raw, truth).mean()),
                "ece_calibrated": float(expected_calibration_error(calibrated, truth).mean()),
                "brier_raw": float(brier_score(raw, truth).mean()),
                "brier_calibrated": float(brier_score(calibrated, truth).mean())}

    def to_dict(self) -> dict[str, object]:
        """Every number of the calibration as one JSON-ready object.

        Per labeled class: support (held-out positives), positives seen by the fit, the default
        and calibrated thresholds with held-out precision/recall/F1, whether the fit or the
        default was kept (and why); micro/macro F1 with intervals and the paired gain.
        """
        thresholds = dict(zip(self.thresholds.class_names, self.thresholds.values))
        per_class = self.thresholds.per_class or {}
        index = {name: i for i, name in enumerate(self.thresholds.class_names)}
        reached = self.achieved()
        classes = []
        for i, name in enumerate(self.classes):
            d, c, j = self.default, self.calibrated, index[name]
            classes.append({
                "class": name,
                "support": int(d.support[i]),
                "positives_fit": per_class["positives"][j] if per_class else None,
                "kept": per_class["kept"][j] if per_class else "fit",
                "reason": per_class["reason"][j] if per_class else None,
                "default": {"threshold": float(d.thresholds[i]), "precision": float(d.precision[i]),
                            "recall": float(d.recall[i]), "f1": float(d.f1[i])},
                "calibrated": {"threshold": float(thresholds[name]), "precision": float(c.precision[i]),
                               "recall": float(c.recall[i]), "f1": float(c.f1[i])},
            })
            if reached is not None:
                classes[-1].update({key: per_class[key][j] for key in ("target", "certified", "best_level")})
                classes[-1]["calibrated"].update(precision_interval=reached["precision_interval"][i],
                                                 recall_interval=reached["recall_interval"][i])
        return {
            "model": self.thresholds.model,
            "method": self.thresholds.method,
            "objective": self.thresholds.objective,
            "n_fit": self.n_fit,
            "n_held_out": self.n_held_out,
            "folds": self.folds,
            "classes": classes,
            "default": {"micro_f1": self.intervals["default"]["micro_f1"].to_dict(),
                        "macro_f1": self.intervals["default"]["macro_f1"].to_dict()},
            "calibrated": {"micro_f1": self.intervals["calibrated"]["micro_f1"].to_dict(),
                           "macro_f1": self.intervals["calibrated"]["macro_f1"].to_dict()},
            "gain": {key: gain.to_dict() for key, gain in self.gains.items()},
            "few_positives": [{"class": name, "positives": n} for name, n in self.few_positives],
            "failed": [{"path": f.path, "error": str(f.error)} for f in self.failed],
            "missing_files": list(self.missing_files),
            "unlabeled_files": list(self.unlabeled_files),
            "notes": list(self.notes),
            **({"confidence": self.thresholds.options.get("confidence")} if reached is not None else {}),
            **({"probabilities": quality} if (quality := self.probability_quality()) is not None else {}),
            "learning_curve": self.learning_curve.to_dict() if self.learning_curve is not None else None,
        }



@dataclass(frozen=True)
class CalibrationOptions:
    """How to calibrate: every choice of :func:`calibrate` but its inputs and outputs.

    method, objective: the solver and what it maximises (:func:`calitag.thresholds.fit`).
    val_fraction: share of the clips held out for evaluation (stratified split).
    folds: K-fold cross-validation for the held-out figures instead of one split; the thresholds
    written are then fitted on all clips.
    seed: seeds the split, the solver and the bootstrap.
    skip_missing: drop files listed but absent, and labels that are not model classes, instead of failing.
    workers: worker processes that score the folder (:func:`calitag.pipeline.batch.run_batch`).
    guard: fall back to a class's label-rate threshold when it beats the fitted one under 3-fold
    cross-validation inside the fitting clips.
    solver: further options of the solver (``lr``, ``epochs``, ...).
    target, confidence: certify ``"precision=0.9"`` (or a mapping, or a ``class,metric,value`` CSV
    file) at this confidence instead of the objective's optimum (:mod:`calitag.thresholds.targets`).
    probabilities: also fit per-class probability maps ("none", "auto", "platt", "isotonic").
    """

    method: str = "sgl"
    objective: str = "micro_f1"
    val_fraction: float = 0.5
    folds: int | None = None
    seed: int = 0
    skip_missing: bool = False
    workers: int | None = None
    guard: bool = True
    solver: Mapping[str, object] = field(default_factory=dict)
    target: object = None
    confidence: float = 0.95
    probabilities: str = "none"

    def with_keywords(self, **keywords: object) -> CalibrationOptions:
        """These options with ``keywords`` applied: a field's name replaces it, any other name is a solver option."""
        names = {option.name for option in fields(self)}
        given = {key: value for key, value in keywords.items() if key in names}
        extra = {key: value for key, value in keywords.items() if key not in names}
        return replace(self, **{**given, "solver": {**given.get("solver", self.solver), **extra}})

    def fit_options(self) -> dict[str, object]:
        """The solver options :func:`calitag.thresholds.fit` receives (the seed for the seeded solvers)."""
        return {"seed": self.seed, **self.solver} if self.method in ("sgl", "heuristic") else dict(self.solver)


# --- the score cache ---------------------------------------------------------------------------


def _read_cache_arrays(path: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """(keys, scores, class_names) of a score cache; ScoresError when it cannot be read."""
    data = load_arrays(path, what="score cache", error=ScoresError)
    try:
        return data["keys"].tolist(), data["scores"], tuple(data["class_names"].tolist())
    except KeyError as err:
        raise ScoresError(f"cannot read score cache {path}: it has no array {err}") from err


class ScoreCache:
    """Clip scores keyed by ``model:checkpoint:file sha256``, stored in an npz (no pickle); in memory only without a path.

    The one reader and writer of the cache ``calitag calibrate`` keeps beside its thresholds file:
    :meth:`reuse` opens it for scoring, :meth:`read` for a report of the thresholds file.
    """

    def __init__(self, path: Path | None, class_names: tuple[str, ...],
                 rows: Mapping[str, np.ndarray] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.class_names = class_names
        self.rows: dict[str, np.ndarray] = dict(rows or {})

    @classmethod
    def reuse(cls, path: Path | None, class_names: tuple[str, ...]) -> ScoreCache:
        """The cache to score into: its rows where the file exists, is readable and holds these classes, else empty."""
        if path is None or not Path(path).exists():
            return cls(path, class_names)
        try:
            keys, scores, names = _read_cache_arrays(Path(path))
        except ScoresError as err:
            logger.warning("ignoring unreadable score cache %s: %s", path, err.__cause__)
            return cls(path, class_names)
        return cls(path, class_names, dict(zip(keys, scores)) if names == class_names else None)

    @classmethod
    def read(cls, path: Path, class_names: tuple[str, ...] | None = None) -> ScoreCache:
        """The cache at ``path``, which must hold the scores of ``class_names`` (a thresholds file's classes; None: any).

        Raises
        ------
        ScoresError
            The file cannot be read, or holds other classes.
        """
        keys, scores, names = _read_cache_arrays(path)
        if class_names is not None and names != class_names:
            raise ScoresError(f"score cache {path} holds {len(names)} classes that are not the thresholds file's "
                              f"{len(class_names)}: it was made for another model")
        return cls(path, names, dict(zip(keys, scores)))

    @staticmethod
    def is_cache(path: Path) -> bool:
        """Whether ``path`` is an npz with the arrays of a score cache."""
        try:
            data = load_arrays(path, what="score cache", error=ScoresError)
        except ScoresError:
            return False
        return "keys" in data and "scores" in data

    def by_file(self) -> dict[str, np.ndarray]:
        """File sha256 -> score row, whatever model and checkpoint made it."""
        return {key.rsplit(":", 1)[-1]: row for key, row in self.rows.items()}

    def save(self) -> None:
        """Write the cache atomically (nothing without a path)."""
        if self.path is None:
            return
        keys = sorted(self.rows)
        scores = np.stack([self.rows[k] for k in keys]) if keys else np.zeros((0, len(self.class_names)), np.float32)
        with atomic_output(self.path) as handle:
            np.savez(handle, keys=np.array(keys, dtype=str), scores=scores.astype(np.float32),
                     class_names=np.array(self.class_names, dtype=str))


def cache_path_for(out: str | Path, model: str) -> Path:
    """Where the score cache of a thresholds file lives: beside it, named after it and the model."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{model}.scores.npz")


def score_files(
    tagger: Tagger,
    paths: Sequence[Path],
    *,
    cache: ScoreCache,
    checkpoint_sha256: str | None = None,
    workers: int | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> tuple[np.ndarray, list[int], list[FileResult]]:
    """Clip scores of ``paths`` (n_ok, n_classes), the indices of the files scored, and the failures.

    Cache keys are ``model:checkpoint sha256:file sha256``, so other weights never reuse scores.
    """
    # bf16 scores differ from fp32 ones: they get their own keys (fp32 keys keep their old form).
    precision = getattr(tagger, "precision", "fp32")
    name = tagger.name if precision == "fp32" else f"{tagger.name}@{precision}"
    prefix = f"{name}:{checkpoint_sha256 or 'none'}:"
    keys = [prefix + file_digests(p)[0] for p in paths]
    todo = [i for i, key in enumerate(keys) if key not in cache.rows]
    failures: dict[int, FileResult] = {}
    if todo:
        by_path = {str(paths[i]): i for i in todo}
        for result in run_batch(tagger, [paths[i] for i in todo], workers=workers, with_tags=False,
                                on_progress=on_progress):
            index = by_path[result.path]
            if result.error is not None:
                failures[index] = result
            else:
                cache.rows[keys[index]] = result.scores
        cache.save()
    ok = [i for i in range(len(paths)) if i not in failures]
    return np.stack([cache.rows[keys[i]] for i in ok]) if ok else np.zeros((0, len(tagger.class_names))), ok, list(failures.values())


@dataclass(frozen=True)
class ScoredFiles:
    """Clip scores made elsewhere (a ``calitag batch --all-scores`` output), looked up by file name.

    paths: the recorded path of each row of ``scores`` (n_files, n_classes); errors: {path: error}.
    """

    paths: tuple[str, ...]
    scores: np.ndarray
    errors: dict[str, str]
    source: str

    @classmethod
    def read(cls, location: str | Path, *, model: str, class_names: tuple[str, ...]) -> ScoredFiles:
        """The all-scores batch output at ``location`` (see :func:`calitag.pipeline.records.read_all_scores`).

        Raises
        ------
        OutputError
            As :func:`~calitag.pipeline.records.read_all_scores`, and for a binary file (an .npz score file).
        """
        if "://" not in str(location) and Path(location).is_file():
            _check_text_output(Path(location))
        paths, matrix, errors = read_all_scores(location, model=model, class_names=class_names)
        return cls(paths=tuple(paths), scores=matrix, errors=errors, source=str(location))

    def match(self, names: Sequence[str]) -> dict[str, str]:
        """Label-file name -> its recorded path (scored or failed), for the names recorded (:func:`match_recorded`)."""
        recorded = (*self.paths, *self.errors)
        return {name: recorded[i] for name, i in match_recorded(names, recorded, source=self.source).items()}


def _check_text_output(path: Path) -> None:
    """Raise OutputError if ``path`` is a binary file (an .npz/.npy score file, anything else), not a results file."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith((b"PK\x03\x04", b"\x93NUMPY")):
        raise OutputError(f"{path} is a numpy array file (.npz/.npy), not a `calitag batch --all-scores` output: "
                          "fit thresholds on score arrays with `calitag thresholds fit`")
    try:
        head.decode("utf-8")
        text = b"\0" not in head
    except UnicodeDecodeError as err:
        text = err.start >= len(head) - 3  # only a character cut at the end of the 4 KiB read
    if not text:
        raise OutputError(f"{path} is a binary file, not a `calitag batch --all-scores` output (JSON lines or CSV)")


def _checkpoint_sha256(tagger: Tagger) -> str | None:
    """sha256 of the weights file the tagger runs, None for random weights."""
    path = tagger.checkpoint
    return file_digests(path)[0] if path is not None and Path(path).is_file() else None


# --- the steps ---------------------------------------------------------------------------------


def check_labels(labels: ClipLabels, class_names: tuple[str, ...], *, model: str, skip_missing: bool) -> list[str]:
    """Notes on the labels that are not model classes; without ``skip_missing`` they raise LabelsError."""
    known = set(class_names)
    unknown = sorted({lab for labs in labels.labels.values() for lab in labs if lab not in known})
    if unknown and not skip_missing:
        check_label_names(labels, class_names, model=model)
    return [f"ignored {len(unknown)} label(s) that are not {model} classes: {', '.join(unknown[:8])}"] if unknown else []


@dataclass(frozen=True)
class ClipScores:
    """The labeled clips that have scores, and those left out.

    names: label-file names of the clips scored, in label-file order; scores: (len(names), n_model_classes).
    failed: files that could not be scored; missing: listed files that are absent; unlabeled: files
    present (in the folder or the batch output) that the labels do not list.
    """

    names: tuple[str, ...]
    scores: np.ndarray
    failed: tuple[FileResult, ...]
    missing: tuple[str, ...]
    unlabeled: tuple[str, ...]


def gather_clip_scores(
    tagger: Tagger,
    folder: Path,
    labels: ClipLabels,
    *,
    scored: ScoredFiles | None,
    cache: ScoreCache,
    checkpoint_sha256: str | None,
    options: CalibrationOptions,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> ClipScores:
    """The clip scores of the labeled files: scored in ``folder`` through ``cache``, or taken from ``scored``.

    Raises
    ------
    LabelsError
        Listed files that are absent (unless ``options.skip_missing``); fewer than two clips left
        because files could not be read.
    """
    found = scored.match(list(labels.labels)) if scored is not None else {}
    if scored is None:
        _check_inside(folder, labels)
        missing = tuple(sorted(name for name in labels.labels if not (folder / name).is_file()))
    else:
        missing = tuple(sorted(name for name in labels.labels if name not in found))
    if missing and not options.skip_missing:
        raise LabelsError(
            f"{labels.source}: {len(missing)} listed file(s) are not in {folder}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "") + "; pass --skip-missing to calibrate without them"
        )
    absent = set(missing)  # a set: a label file may list a million absent files
    names = [name for name in labels.labels if name not in absent]
    if scored is None:
        listed = {(folder / name).resolve() for name in names}  # the files present: resolving absent ones costs
        nested = any("/" in name for name in labels.labels)  # look in sub-folders only if the labels do
        unlabeled = tuple(str(p) for p in find_audio_files(folder, recursive=nested) if p.resolve() not in listed)
        scores, ok, failed = score_files(tagger, [folder / n for n in names], cache=cache,
                                         checkpoint_sha256=checkpoint_sha256, workers=options.workers,
                                         on_progress=on_progress)
    else:
        unlabeled, scores, ok, failed = _take_scores(scored, [found[n] for n in names])
    if failed and len(ok) < 2:
        # The files are the cause, not the labels: say so, with the first decoder message.
        raise LabelsError(
            f"{len(failed)} of the {len(names)} labeled clip(s) in {folder} could not be read, leaving {len(ok)}; "
            f"calibration needs at least 2; e.g. {failed[0].error}"
        )
    return ClipScores(tuple(names[i] for i in ok), scores, tuple(failed), missing, unlabeled)


def _check_inside(folder: Path, labels: ClipLabels) -> None:
    """Raise LabelsError for a label-file name that leads out of ``folder`` (an absolute path elsewhere, ``../``)."""
    root = os.path.abspath(folder)
    for name in labels.labels:
        path = os.path.normpath(os.path.join(root, name))
        if os.path.commonpath([root, path]) != root:
            raise LabelsError(f"{labels.source}: {name} is not in {folder}: names in a label file are relative to "
                              "the folder calibrated; list only files inside it")


def _take_scores(scored: ScoredFiles, recorded: list[str]) -> tuple[tuple[str, ...], np.ndarray, list[int], list[FileResult]]:
    """(unlabeled paths, scores, indices of the scored names, failures) of ``recorded`` paths of a batch output."""
    used = set(recorded)
    unlabeled = tuple(p for p in scored.paths if p not in used)
    failed = [FileResult(path=p, duration_s=None, scores=None, error=scored.errors[p]) for p in recorded
              if p in scored.errors]
    ok = [i for i, p in enumerate(recorded) if p not in scored.errors]
    row = {p: i for i, p in enumerate(scored.paths)}
    scores = scored.scores[[row[recorded[i]] for i in ok]].reshape(len(ok), scored.scores.shape[1])
    return unlabeled, scores, ok, failed


@dataclass(frozen=True)
class LabeledClips:
    """What the solvers see: the clips, the labeled model classes and their scores and targets.

    classes: the model classes some clip is labeled with, in model order; columns: their model
    indices; scores, targets: (len(names), len(classes)), float64 scores and 0/1 targets.
    """

    names: tuple[str, ...]
    classes: tuple[str, ...]
    columns: np.ndarray
    scores: np.ndarray
    targets: np.ndarray

    def few_positives(self) -> tuple[tuple[str, int], ...]:
        """(class, positives) of the classes with fewer than FEW_POSITIVES positive clips."""
        return tuple((name, int(n)) for name, n in zip(self.classes, self.targets.sum(axis=0)) if n < FEW_POSITIVES)


def select_classes(clips: ClipScores, labels: ClipLabels, *, class_names: tuple[str, ...], model: str) -> LabeledClips:
    """Keep the model classes the scored clips are labeled with.

    Raises
    ------
    LabelsError
        No scored clip has a model class; fewer than two clips.
    """
    names = list(clips.names)
    classes = tuple(c for c in class_names if any(c in labels.labels[n] for n in names))
    if not classes:
        raise LabelsError(f"{labels.source}: none of the labeled clips has a {model} class")
    if len(names) < 2:
        raise LabelsError(f"{labels.source}: {len(names)} usable clip(s); calibration needs at least 2")
    columns = np.array([class_names.index(c) for c in classes])
    kept = ClipLabels({n: tuple(l for l in labels.labels[n] if l in classes) for n in names}, labels.source)
    return LabeledClips(clips.names, classes, columns, clips.scores[:, columns].astype(np.float64),
                        kept.targets(names, classes))


@dataclass(frozen=True)
class HeldOutFit:
    """Thresholds fitted for the labeled classes, and those that decide each held-out clip.

    thresholds: fitted on the fitting clips (on all clips with ``folds``); held_out: indices of the
    held-out clips (every clip with ``folds``); clip_values: (len(held_out), n_classes), the
    thresholds of the fit that did not see each clip; n_fit: clips the written thresholds saw.
    """

    thresholds: Thresholds
    held_out: np.ndarray
    clip_values: np.ndarray
    n_fit: int
    folds: int | None
    #: (len(held_out), n_classes) calibrated probabilities of the held-out clips by the maps that
    #: did not see them; None without probability maps.
    clip_probs: np.ndarray | None = None


def fit_clips(data: LabeledClips, index: np.ndarray, *, model: str, options: CalibrationOptions) -> Thresholds:
    """Thresholds of ``data.classes`` fitted on the clips ``index``, with the small-class guard where it can run."""
    # The guard needs positives in at least two folds; with fewer clips it cannot run.
    guard = options.guard and options.method != "default" and len(index) >= 2 * GUARD_FOLDS
    return fit(data.scores[index], data.targets[index], method=options.method, objective=options.objective,
               class_names=data.classes, model=model, guard_folds=GUARD_FOLDS if guard else None,
               default_threshold=DEFAULT_THRESHOLD, target=options.target, confidence=options.confidence,
               probabilities=options.probabilities, **options.fit_options())


def split_and_fit(data: LabeledClips, *, model: str, options: CalibrationOptions) -> HeldOutFit:
    """Split the clips (one stratified held-out split, or K folds) and fit.

    Raises
    ------
    LabelsError
        ``folds`` below 2 or above the number of clips.
    """
    n_clips, folds = len(data.names), options.folds
    if not folds:
        fit_idx, held_idx = split_indices(data.targets, held_out_fraction=options.val_fraction, seed=options.seed)
        fitted = fit_clips(data, fit_idx, model=model, options=options)
        clip_values = np.broadcast_to(fitted.values, (len(held_idx), len(data.classes)))
        probs = fitted.probabilities(data.scores[held_idx]) if fitted.probability_maps is not None else None
        return HeldOutFit(fitted, held_idx, clip_values, len(fit_idx), folds, probs)
    if folds < 2 or folds > n_clips:
        raise LabelsError(f"--folds must be between 2 and the number of clips ({n_clips}), got {folds}")
    # Every clip is held out once, and decided with the thresholds of the fold fitted without it.
    clip_values = np.empty_like(data.scores)
    probs = None if options.probabilities == "none" else np.empty_like(data.scores)
    for fit_idx, fold_idx in kfold_splits(data.targets, n_folds=folds, seed=options.seed):
        fold_fit = fit_clips(data, fit_idx, model=model, options=options)
        clip_values[fold_idx] = fold_fit.values
        if probs is not None:
            probs[fold_idx] = fold_fit.probabilities(data.scores[fold_idx])
    everything = np.arange(n_clips)
    return HeldOutFit(fit_clips(data, everything, model=model, options=options), everything, clip_values, n_clips,
                      folds, probs)


def _report(decided: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, classes: tuple[str, ...]) -> ClassificationReport:
    truth = targets > 0
    return report_from_counts((decided & truth).sum(0), decided.sum(0), truth.sum(0), thresholds=thresholds,
                              class_names=classes, n_clips=len(decided))


@dataclass(frozen=True)
class Comparison:
    """The held-out clips decided by the default threshold and by the fitted ones.

    scores, targets: (n_held_out, n_classes); decided: the calibrated decisions, same shape;
    intervals: {"default"|"calibrated": {"micro_f1"|"macro_f1": Interval}}; gains: {"micro_f1"|"macro_f1": PairedGain}.
    """

    default: ClassificationReport
    calibrated: ClassificationReport
    intervals: dict[str, dict[str, Interval]]
    gains: dict[str, PairedGain]
    scores: np.ndarray
    targets: np.ndarray
    decided: np.ndarray


def compare_with_default(data: LabeledClips, fitted: HeldOutFit, *, seed: int) -> Comparison:
    """Held-out reports of the default and the fitted thresholds, bootstrap intervals and the paired gain."""
    scores, targets = data.scores[fitted.held_out], data.targets[fitted.held_out]
    default, calibrated = scores > DEFAULT_THRESHOLD, scores > fitted.clip_values
    gains = {f"{average}_f1": paired_gain(default, calibrated, targets, average=average, n_resamples=N_BOOTSTRAP,
                                          seed=seed)
             for average in ("micro", "macro")}
    intervals = {kind: {key: getattr(gain, kind) for key, gain in gains.items()} for kind in ("default", "calibrated")}
    return Comparison(
        default=_report(default, targets, np.full(len(data.classes), DEFAULT_THRESHOLD), data.classes),
        calibrated=_report(calibrated, targets, fitted.thresholds.values, data.classes),
        intervals=intervals, gains=gains, scores=scores, targets=targets, decided=calibrated,
    )


def provenance(data: LabeledClips, fitted: HeldOutFit, comparison: Comparison, *, tagger: Tagger,
               model_sha256: str | None, source: Path, labels: ClipLabels) -> Thresholds:
    """The thresholds file's content: one threshold per model class (the default outside the labels),
    with the fit's options, the held-out figures, the data it came from and the per-class record."""
    class_names, fitted_thresholds = tagger.class_names, fitted.thresholds
    values = np.full(len(class_names), DEFAULT_THRESHOLD)
    values[data.columns] = fitted_thresholds.values
    held_out = {
        "n_clips": len(fitted.held_out),
        "folds": fitted.folds,
        "default_micro_f1": comparison.default.micro_f1,
        "calibrated_micro_f1": comparison.calibrated.micro_f1,
        "default_macro_f1": comparison.default.macro_f1,
        "calibrated_macro_f1": comparison.calibrated.macro_f1,
    }
    return Thresholds(
        values=values,
        class_names=class_names,
        model=tagger.name,
        model_sha256=model_sha256,
        method=fitted_thresholds.method,
        options={**fitted_thresholds.options, "calibrated_classes": list(data.classes),
                 "other_classes": DEFAULT_THRESHOLD},
        objective=fitted_thresholds.objective,
        validation={**fitted_thresholds.validation, "held_out": held_out, "source": str(source),
                    "labels": labels.source},
        per_class=_full_per_class(fitted_thresholds, data.columns, len(class_names)),
        probability_maps=_full_maps(fitted_thresholds.probability_maps, data.columns, len(class_names)),
    )


def _full_maps(maps: ProbabilityMaps | None, columns: np.ndarray, n_classes: int) -> ProbabilityMaps | None:
    """The fit's probability maps spread over every model class (unlabeled ones keep their scores)."""
    if maps is None:
        return None
    full = [ProbabilityMap("identity")] * n_classes
    for j, column in enumerate(columns):
        full[int(column)] = maps.maps[j]
    return ProbabilityMaps(tuple(full), method=maps.method)


def _full_per_class(fitted: Thresholds, columns: np.ndarray, n_classes: int) -> dict[str, list[object]]:
    """The fit's per-class record spread over every model class (unlabeled ones keep the default)."""
    record: dict[str, list[object]] = {"positives": [0] * n_classes, "kept": ["default"] * n_classes,
                                       "reason": ["not in the labels"] * n_classes}
    if "target" in (fitted.per_class or {}):
        record.update(target=[None] * n_classes, certified=[None] * n_classes, best_level=[None] * n_classes)
    for j, column in enumerate(columns):
        for key in record:
            record[key][int(column)] = (fitted.per_class or {}).get(key, [None] * len(columns))[j]
    return record


# --- the workflow -------------------------------------------------------------------------------


def calibrate(
    tagger: Tagger,
    folder: str | Path,
    labels: ClipLabels,
    *,
    out: str | Path | None = None,
    options: CalibrationOptions | None = None,
    scored: ScoredFiles | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    **keywords: object,
) -> CalibrationResult:
    """Fit per-class thresholds for ``tagger`` on a labeled folder and measure them on held-out clips.

    Parameters
    ----------
    tagger : Tagger
        The model to calibrate.
    folder : str or Path
        The audio files; names in ``labels`` are relative to it.
    labels : ClipLabels
        From :func:`calitag.pipeline.labels.read_clip_labels`.
    out : str or Path, optional
        The thresholds file to write (atomically); the score cache goes beside it. None writes
        nothing (the scores are then kept in memory only).
    options : CalibrationOptions, optional
        Solver, split, seed, guard, workers, skip_missing (see :class:`CalibrationOptions`).
    scored : ScoredFiles or None
        Use these scores (from a batch output) instead of scoring the files in ``folder``, which
        then only names the source in the thresholds file.
    on_progress : callable, optional
        Called with a :class:`~calitag.pipeline.batch.BatchProgress` as files are scored.
    **keywords
        Applied to ``options``: the fields of :class:`CalibrationOptions` (``method="exact"``,
        ``folds=3``, ``seed=0``, ...); other names are solver options (``epochs=30``).

    Returns
    -------
    CalibrationResult

    Raises
    ------
    OutputError
        The folder of ``out`` does not exist (checked before any scoring).
    LabelsError
        Unknown class names or listed files that are missing (unless ``skip_missing``); fewer
        than two usable clips; no labeled class; ``folds`` out of range.
    """
    options = (options or CalibrationOptions()).with_keywords(**keywords)
    folder = Path(folder)
    if out is not None:
        _check_out_folder(Path(out))
    notes = check_labels(labels, tagger.class_names, model=tagger.name, skip_missing=options.skip_missing)
    model_sha256 = _checkpoint_sha256(tagger)
    cache = ScoreCache.reuse(cache_path_for(out, tagger.name) if out is not None and scored is None else None,
                             tagger.class_names)
    clips = gather_clip_scores(tagger, folder, labels, scored=scored, cache=cache, checkpoint_sha256=model_sha256,
                               options=options, on_progress=on_progress)
    data = select_classes(clips, labels, class_names=tagger.class_names, model=tagger.name)
    fitted = split_and_fit(data, model=tagger.name, options=options)
    comparison = compare_with_default(data, fitted, seed=options.seed)
    thresholds = provenance(data, fitted, comparison, tagger=tagger, model_sha256=model_sha256, source=folder,
                            labels=labels)
    if out is not None:
        thresholds.save(out)
    return CalibrationResult(
        thresholds=thresholds, classes=data.classes, default=comparison.default, calibrated=comparison.calibrated,
        intervals=comparison.intervals, gains=comparison.gains, n_fit=fitted.n_fit,
        n_held_out=len(fitted.held_out), failed=clips.failed, unlabeled_files=clips.unlabeled,
        missing_files=clips.missing, folds=options.folds, notes=tuple(notes), few_positives=data.few_positives(),
        held_out_scores=comparison.scores, held_out_targets=comparison.targets, held_out_decided=comparison.decided,
        held_out_probs=fitted.clip_probs,
        learning_curve=curve_of(data, options),
    )


def curve_of(data: LabeledClips, options: CalibrationOptions) -> LearningCurve | None:
    """The learning curve of the labeled clips with the calibration's solver (None below 8 clips, and for the
    slow search methods, which 20 more fits would make many times slower)."""
    if len(data.names) < 8 or options.method not in ("sgl", "exact", "default"):
        return None
    return learning_curve(data.scores, data.targets, objective=options.objective, method=options.method,
                          repeats=5, seed=options.seed, fit_options=options.fit_options())


def _check_out_folder(out: Path) -> None:
    """Fail before scoring every file, not after, when the thresholds file cannot be written."""
    out_folder = out.parent if str(out.parent) else Path(".")
    if not out_folder.is_dir():
        raise OutputError(f"cannot write {out}: folder {out_folder} does not exist; create it first")
    check_writable(out_folder, what=str(out))  # the thresholds file and its score cache


# --- the job as the CLI asks for it -------------------------------------------------------------


class TaggerSource(Protocol):
    """A model to load once the outputs are checked (the CLI's model options are one): its name, its weights file."""

    name: str
    checkpoint: Path | None

    def load(self) -> Tagger:
        """The Tagger."""


@dataclass(frozen=True)
class CalibrationJob:
    """What ``calitag calibrate`` is asked for: the inputs, the files to write and the options.

    labels: the clip label file. folder: the audio files, or scores: a ``calitag batch --all-scores``
    output (a JSONL file or a Parquet folder); exactly one of the two. out: the thresholds file (its
    score cache goes beside it when a folder is scored). report: an HTML report the caller writes
    from the result, checked with the other outputs. force: replace an output of another kind.
    """

    labels: Path
    out: Path
    folder: Path | None = None
    scores: str | Path | None = None
    report: Path | None = None
    force: bool = False
    options: CalibrationOptions = field(default_factory=CalibrationOptions)

    def __post_init__(self) -> None:
        if (self.folder is None) == (self.scores is None):
            raise TypeError("CalibrationJob takes either folder or scores")

    @property
    def source(self) -> Path:
        """The folder, or the batch output, as the messages and the thresholds file name it."""
        return Path(self.folder if self.folder is not None else self.scores)


def check_outputs(job: CalibrationJob, model: TaggerSource) -> None:
    """Check, before any scoring, the files ``job`` writes.

    The thresholds file and its score cache may replace neither an input nor a file of another kind
    (unless ``force``); the report may replace only an earlier report.

    Raises
    ------
    OutputError
        An output that is an input, in a missing folder, or an existing file of another kind.
    """
    inputs = [job.labels, model.checkpoint,
              *(find_audio_files(job.folder, recursive=True) if job.folder is not None else ()),
              *((Path(job.scores),) if job.scores is not None else ())]
    inputs = [path for path in inputs if path is not None]
    check_output(job.out, inputs=inputs, kind="thresholds file", is_kind=is_thresholds_file, force=job.force)
    if job.scores is None:
        check_output(cache_path_for(job.out, model.name), inputs=inputs, kind="score cache (.npz)", is_kind=_is_npz,
                     force=job.force)
    if job.report is not None:
        check_report_target(job.report)


def _is_npz(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def run_calibration(
    job: CalibrationJob, model: TaggerSource, *, on_progress: Callable[[BatchProgress], None] | None = None
) -> CalibrationResult:
    """``calitag calibrate`` as one call: check the outputs, load the model, read the inputs, calibrate.

    Parameters
    ----------
    job : CalibrationJob
        The inputs, the outputs and the options.
    model : TaggerSource
        The model, loaded only after the outputs are checked (a bad ``out`` fails before a download).
    on_progress : callable, optional
        Called with a :class:`~calitag.pipeline.batch.BatchProgress` as files are scored.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    OutputError, LabelsError
        As :func:`check_outputs`, :func:`calitag.pipeline.records.read_all_scores`,
        :func:`calitag.pipeline.labels.read_clip_labels` and :func:`calibrate`.
    """
    check_outputs(job, model)
    tagger = model.load()
    scored = None
    if job.scores is not None:
        scored = ScoredFiles.read(job.scores, model=model.name, class_names=tagger.class_names)
    labels = read_clip_labels(job.labels, class_names=tagger.class_names)
    return calibrate(tagger, job.source, labels, out=job.out, options=job.options, scored=scored,
                     on_progress=on_progress)
