"""Calibrate a model on a labeled folder: score every file once, split, fit, report.

The scores are cached in an npz file keyed by model, checkpoint and file content, so running
the calibration again (another method, split or objective) decodes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from calitag._fileio import atomic_output
from calitag.errors import LabelsError, OutputError
from calitag.models.checkpoints import file_digests
from calitag.pipeline.batch import BatchProgress, FileResult, find_audio_files, run_batch
from calitag.pipeline.labels import ClipLabels, check_label_names
from calitag.pipeline.tagger import DEFAULT_THRESHOLD, Tagger
from calitag.thresholds import ClassificationReport, Thresholds, fit
from calitag.thresholds.bootstrap import Interval, PairedGain, bootstrap_f1, paired_gain
from calitag.thresholds.metrics import report_from_counts
from calitag.thresholds.splits import kfold_splits, split_indices

logger = logging.getLogger(__name__)

#: Bootstrap resamples of the held-out clips for the 95% intervals.
N_BOOTSTRAP = 1000
#: Folds of the small-class guard inside the fitting clips.
GUARD_FOLDS = 3
#: Classes with fewer positives than this among the labeled clips are named in a warning.
FEW_POSITIVES = 5

__all__ = ["CalibrationResult", "Interval", "PairedGain", "bootstrap_f1", "calibrate", "paired_gain"]


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

    def to_dict(self) -> dict[str, object]:
        """Every number of the calibration as one JSON-ready object.

        Per labeled class: support (held-out positives), positives seen by the fit, the default
        and calibrated thresholds with held-out precision/recall/F1, whether the fit or the
        default was kept (and why); micro/macro F1 with intervals and the paired gain.
        """
        thresholds = dict(zip(self.thresholds.class_names, self.thresholds.values))
        per_class = self.thresholds.per_class or {}
        index = {name: i for i, name in enumerate(self.thresholds.class_names)}
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
        }


# --- the score cache ---------------------------------------------------------------------------


class ScoreCache:
    """Clip scores keyed by ``model:checkpoint:file sha256``, stored in an npz (no pickle); in memory only without a path."""

    def __init__(self, path: Path | None, class_names: tuple[str, ...]) -> None:
        self.path = Path(path) if path is not None else None
        self.class_names = class_names
        self.rows: dict[str, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if tuple(data["class_names"]) == class_names:
                        self.rows = dict(zip(data["keys"].tolist(), data["scores"]))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("ignoring unreadable score cache %s: %s", self.path, err)

    def save(self) -> None:
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
    A label-file name matches the one recorded path that equals it or ends with ``/`` + it.
    """

    paths: tuple[str, ...]
    scores: np.ndarray
    errors: dict[str, str]
    source: str

    @cached_property
    def _by_base(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for path in (*self.paths, *self.errors):
            index.setdefault(path.rsplit("/", 1)[-1], []).append(path)
        return index

    def find(self, name: str) -> str | None:
        """The recorded path of a label-file name, None if absent; several matches raise LabelsError."""
        found = [p for p in self._by_base.get(name.rsplit("/", 1)[-1], []) if p == name or p.endswith("/" + name)]
        if len(found) > 1:
            raise LabelsError(f"{self.source}: {name} matches {len(found)} recorded files ({', '.join(found[:3])}); "
                              "name files by a longer path in the labels")
        return found[0] if found else None


def _checkpoint_sha256(tagger: Tagger) -> str | None:
    """sha256 of the weights file the tagger runs, None for random weights."""
    path = tagger.checkpoint
    return file_digests(path)[0] if path is not None and Path(path).is_file() else None


# --- splitting and the bootstrap ------------------------------------------------------------------


def _report(decided: np.ndarray, targets: np.ndarray, thresholds: np.ndarray, classes: tuple[str, ...]) -> ClassificationReport:
    truth = targets > 0
    return report_from_counts((decided & truth).sum(0), decided.sum(0), truth.sum(0), thresholds=thresholds,
                              class_names=classes, n_clips=len(decided))


# --- the workflow -------------------------------------------------------------------------------


def calibrate(
    tagger: Tagger,
    folder: str | Path,
    labels: ClipLabels,
    *,
    out: str | Path | None = None,
    method: str = "sgl",
    objective: str = "micro_f1",
    val_fraction: float = 0.5,
    folds: int | None = None,
    seed: int = 0,
    skip_missing: bool = False,
    workers: int | None = None,
    guard: bool = True,
    on_progress: Callable[[BatchProgress], None] | None = None,
    scored: ScoredFiles | None = None,
    **options: object,
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
        The thresholds file to write (atomically); the score cache goes beside it. None writes nothing.
    method, objective, **options
        Passed to :func:`calitag.thresholds.fit`.
    val_fraction : float
        Share of the clips held out for evaluation (stratified split).
    folds : int or None
        Use K-fold cross-validation for the held-out figures instead of one split; the thresholds
        written are then fitted on all clips.
    seed : int
        Seeds the split, the solver and the bootstrap.
    skip_missing : bool
        Drop files listed but absent, and labels that are not model classes, instead of failing.
    scored : ScoredFiles or None
        Use these scores (from a batch output) instead of scoring the files in ``folder``, which
        then only names the source in the thresholds file.
    guard : bool
        Keep a class's fitted threshold only when it beats the default threshold under 3-fold
        cross-validation inside the fitting clips (see :func:`calitag.thresholds.fit`).

    Returns
    -------
    CalibrationResult

    Raises
    ------
    LabelsError
        Unknown class names or listed files that are missing (unless ``skip_missing``); fewer
        than two usable clips; no labeled class.
    """
    folder = Path(folder)
    out_folder = Path(out).parent if str(Path(out).parent) else Path(".")
    if not out_folder.is_dir():  # fail before scoring every file, not after
        raise OutputError(f"cannot write {out}: folder {out_folder} does not exist; create it first")
    class_names = tagger.class_names
    known = set(class_names)
    notes: list[str] = []
    unknown = sorted({lab for labs in labels.labels.values() for lab in labs if lab not in known})
    if unknown and not skip_missing:
        check_label_names(labels, class_names, model=tagger.name)
    if unknown:
        notes.append(f"ignored {len(unknown)} label(s) that are not {tagger.name} classes: {', '.join(unknown[:8])}")
    if scored is None:
        missing = tuple(sorted(name for name in labels.labels if not (folder / name).is_file()))
    else:
        missing = tuple(sorted(name for name in labels.labels if scored.find(name) is None))
    if missing and not skip_missing:
        raise LabelsError(
            f"{labels.source}: {len(missing)} listed file(s) are not in {folder}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "") + "; pass --skip-missing to calibrate without them"
        )
    listed = {(folder / name).resolve() for name in labels.labels}
    nested = any("/" in name for name in labels.labels)  # look in sub-folders only if the labels do
    names = [name for name in labels.labels if name not in missing]
    checkpoint_sha256 = _checkpoint_sha256(tagger)
    n_listed = len(names)
    if scored is None:
        unlabeled = tuple(str(p) for p in find_audio_files(folder, recursive=nested) if p.resolve() not in listed)
        cache = ScoreCache(cache_path_for(out, tagger.name) if out is not None else None, class_names)
        scores, ok, failed = score_files(tagger, [folder / n for n in names], cache=cache,
                                         checkpoint_sha256=checkpoint_sha256, workers=workers, on_progress=on_progress)
    else:
        recorded = [scored.find(n) for n in names]
        used = set(recorded)
        unlabeled = tuple(p for p in scored.paths if p not in used)
        failed = [FileResult(path=p, duration_s=None, scores=None, error=scored.errors[p]) for p in recorded
                  if p in scored.errors]
        ok = [i for i, p in enumerate(recorded) if p not in scored.errors]
        row = {p: i for i, p in enumerate(scored.paths)}
        scores = scored.scores[[row[recorded[i]] for i in ok]].reshape(len(ok), len(class_names))
    names = [names[i] for i in ok]
    if failed and len(names) < 2:
        # The files are the cause, not the labels: say so, with the first decoder message.
        raise LabelsError(
            f"{len(failed)} of the {n_listed} labeled clip(s) in {folder or labels.source} could not be read, leaving {len(names)}; "
            f"calibration needs at least 2; e.g. {failed[0].error}"
        )
    classes = tuple(c for c in class_names if any(c in labels.labels[n] for n in names))
    if not classes:
        raise LabelsError(f"{labels.source}: none of the labeled clips has a {tagger.name} class")
    if len(names) < 2:
        raise LabelsError(f"{labels.source}: {len(names)} usable clip(s); calibration needs at least 2")
    columns = np.array([class_names.index(c) for c in classes])
    sub_scores = scores[:, columns].astype(np.float64)
    targets = ClipLabels({n: tuple(l for l in labels.labels[n] if l in classes) for n in names}, labels.source).targets(names, classes)
    options = {"seed": seed, **options} if method in ("sgl", "heuristic") else dict(options)

    def fit_on(index: np.ndarray) -> Thresholds:
        # The guard needs positives in at least two folds; with fewer clips it cannot run.
        folds_in = GUARD_FOLDS if guard and method != "default" and len(index) >= 2 * GUARD_FOLDS else None
        return fit(sub_scores[index], targets[index], method=method, objective=objective, class_names=classes,
                   model=tagger.name, guard_folds=folds_in, default_threshold=DEFAULT_THRESHOLD, **options)

    if folds:
        if folds < 2 or folds > len(names):
            raise LabelsError(f"--folds must be between 2 and the number of clips ({len(names)}), got {folds}")
        # Every clip is held out once, and decided with the thresholds of the fold fitted without it.
        held_idx = np.arange(len(names))
        clip_values = np.empty_like(sub_scores)
        for fit_idx, fold_idx in kfold_splits(targets, n_folds=folds, seed=seed):
            clip_values[fold_idx] = fit_on(fit_idx).values
        fitted = fit_on(held_idx)
        n_fit = len(names)
    else:
        fit_idx, held_idx = split_indices(targets, held_out_fraction=val_fraction, seed=seed)
        fitted = fit_on(fit_idx)
        clip_values = np.broadcast_to(fitted.values, (len(held_idx), len(classes)))
        n_fit = len(fit_idx)
    held_scores, held_targets = sub_scores[held_idx], targets[held_idx]
    decided = {"default": held_scores > DEFAULT_THRESHOLD, "calibrated": held_scores > clip_values}
    default_report = _report(decided["default"], held_targets, np.full(len(classes), DEFAULT_THRESHOLD), classes)
    calibrated_report = _report(decided["calibrated"], held_targets, fitted.values, classes)
    gains = {f"{average}_f1": paired_gain(decided["default"], decided["calibrated"], held_targets, average=average,
                                          n_resamples=N_BOOTSTRAP, seed=seed)
             for average in ("micro", "macro")}
    intervals = {kind: {key: getattr(gain, kind) for key, gain in gains.items()} for kind in ("default", "calibrated")}
    positives = targets.sum(axis=0)
    few = tuple((name, int(n)) for name, n in zip(classes, positives) if n < FEW_POSITIVES)
    n_held = len(held_idx)
    values = np.full(len(class_names), DEFAULT_THRESHOLD)
    values[columns] = fitted.values
    thresholds = Thresholds(
        values=values,
        class_names=class_names,
        model=tagger.name,
        model_sha256=checkpoint_sha256,
        method=fitted.method,
        options={**fitted.options, "calibrated_classes": list(classes), "other_classes": DEFAULT_THRESHOLD},
        objective=fitted.objective,
        validation={
            **fitted.validation,
            "held_out": {
                "n_clips": n_held,
                "folds": folds,
                "default_micro_f1": default_report.micro_f1,
                "calibrated_micro_f1": calibrated_report.micro_f1,
                "default_macro_f1": default_report.macro_f1,
                "calibrated_macro_f1": calibrated_report.macro_f1,
            },
            "source": str(folder),
            "labels": labels.source,
        },
        per_class=_full_per_class(fitted, columns, len(class_names)),
    )
    if out is not None:
        thresholds.save(out)
    return CalibrationResult(
        thresholds=thresholds, classes=classes, default=default_report, calibrated=calibrated_report,
        intervals=intervals, gains=gains, n_fit=n_fit, n_held_out=n_held, failed=tuple(failed), unlabeled_files=unlabeled,
        missing_files=missing, folds=folds, notes=tuple(notes), few_positives=few, held_out_scores=held_scores,
        held_out_targets=held_targets, held_out_decided=decided["calibrated"],
    )


def _full_per_class(fitted: Thresholds, columns: np.ndarray, n_classes: int) -> dict[str, list[object]]:
    """The fit's per-class record spread over every model class (unlabeled ones keep the default)."""
    record: dict[str, list[object]] = {"positives": [0] * n_classes, "kept": ["default"] * n_classes,
                                       "reason": ["not in the labels"] * n_classes}
    for j, column in enumerate(columns):
        for key in record:
            record[key][int(column)] = (fitted.per_class or {}).get(key, [None] * len(columns))[j]
    return record
