"""Calibrate a model on a labeled folder: score every file once, split, fit, report.

The scores are cached in an npz file keyed by model, checkpoint and file content, so running
the calibration again (another method, split or objective) decodes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from calitag._fileio import atomic_output
from calitag.errors import LabelsError, OutputError
from calitag.models.checkpoints import file_digests
from calitag.pipeline.batch import BatchProgress, FileResult, find_audio_files, run_batch
from calitag.pipeline.labels import ClipLabels, check_labels
from calitag.pipeline.tagger import DEFAULT_THRESHOLD, Tagger
from calitag.thresholds import ClassificationReport, Thresholds, fit
from calitag.thresholds.metrics import fbeta_np, report_from_counts

logger = logging.getLogger(__name__)

#: Bootstrap resamples of the held-out clips for the 95% intervals.
N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class CalibrationResult:
    """What `calibrate` produced.

    thresholds: one per model class; classes absent from the labels keep the default threshold.
    classes: the labeled classes that were calibrated and evaluated (a subset of the model's).
    default, calibrated: held-out reports over ``classes`` with the default and fitted thresholds.
    intervals: {"default"|"calibrated": {"micro_f1"|"macro_f1": Interval}}.
    """

    thresholds: Thresholds
    classes: tuple[str, ...]
    default: ClassificationReport
    calibrated: ClassificationReport
    intervals: dict[str, dict[str, Interval]]
    n_fit: int
    n_held_out: int
    failed: tuple[FileResult, ...] = ()
    unlabeled_files: tuple[str, ...] = ()
    missing_files: tuple[str, ...] = ()
    folds: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- the score cache ---------------------------------------------------------------------------


class ScoreCache:
    """Clip scores keyed by ``model:checkpoint:file sha256``, stored in an npz (no pickle)."""

    def __init__(self, path: Path, class_names: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.class_names = class_names
        self.rows: dict[str, np.ndarray] = {}
        if self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if tuple(data["class_names"]) == class_names:
                        self.rows = dict(zip(data["keys"].tolist(), data["scores"]))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("ignoring unreadable score cache %s: %s", self.path, err)

    def save(self) -> None:
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
    workers: int = 1,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> tuple[np.ndarray, list[int], list[FileResult]]:
    """Clip scores of ``paths`` (n_ok, n_classes), the indices of the files scored, and the failures.

    Cache keys are ``model:checkpoint sha256:file sha256``, so other weights never reuse scores.
    """
    prefix = f"{tagger.name}:{checkpoint_sha256 or 'none'}:"
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


def _checkpoint_sha256(tagger: Tagger) -> str | None:
    """sha256 of the weights file the tagger runs, None for random weights."""
    path = tagger.checkpoint
    return file_digests(path)[0] if path is not None and Path(path).is_file() else None


# --- splitting and the bootstrap ------------------------------------------------------------------


def _strata(targets: np.ndarray, n_splits: int) -> np.ndarray:
    """One stratum per clip: its rarest positive class, merged into "other" when too rare to split."""
    counts = targets.sum(axis=0)
    order = np.where(counts > 0, counts, np.inf)
    strata = np.array([int(np.argmin(np.where(row > 0, order, np.inf))) if row.any() else -1 for row in targets])
    values, sizes = np.unique(strata, return_counts=True)
    rare = set(values[sizes < n_splits].tolist())
    return np.array([-2 if s in rare else s for s in strata])


def split_indices(targets: np.ndarray, *, held_out_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, held-out) clip indices; each labeled class lands on both sides where it can."""
    if not 0.0 < held_out_fraction < 1.0:
        raise LabelsError(f"--val-fraction must be between 0 and 1, got {held_out_fraction}")
    indices = np.arange(len(targets))
    strata = _strata(targets, 2)
    try:
        fit_idx, held_idx = train_test_split(indices, test_size=held_out_fraction, random_state=seed, stratify=strata)
    except ValueError:
        fit_idx, held_idx = train_test_split(indices, test_size=held_out_fraction, random_state=seed)
    return np.sort(fit_idx), np.sort(held_idx)


def bootstrap_f1(
    decided: np.ndarray, targets: np.ndarray, *, seed: int, n_resamples: int = N_BOOTSTRAP
) -> dict[str, Interval]:
    """Micro and macro F1 of binary decisions (n_clips, n_classes), with percentile 95% intervals
    over ``n_resamples`` resamples of the clips."""
    decided = np.asarray(decided, dtype=bool)
    truth = targets > 0
    rng = np.random.default_rng(seed)
    n = len(decided)
    # Each resample as a count vector over the clips, so the counts are matrix products.
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)]).astype(np.float64)
    tp = weights @ (decided & truth)
    pp = weights @ decided
    pos = weights @ truth
    out = {}
    for average in ("micro", "macro"):
        point = float(fbeta_np((decided & truth).sum(0), decided.sum(0), truth.sum(0), average=average))
        samples = fbeta_np(tp, pp, pos, average=average)
        low, high = np.percentile(samples, [2.5, 97.5])
        out[f"{average}_f1"] = Interval(point, float(low), float(high))
    return out


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
    out: str | Path,
    method: str = "sgl",
    objective: str = "micro_f1",
    val_fraction: float = 0.5,
    folds: int | None = None,
    seed: int = 0,
    skip_missing: bool = False,
    workers: int = 1,
    on_progress: Callable[[BatchProgress], None] | None = None,
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
    out : str or Path
        The thresholds file to write (atomically); the score cache goes beside it.
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
        check_labels(labels, class_names, model=tagger.name)
    if unknown:
        notes.append(f"ignored {len(unknown)} label(s) that are not {tagger.name} classes: {', '.join(unknown[:8])}")
    missing = tuple(sorted(name for name in labels.labels if not (folder / name).is_file()))
    if missing and not skip_missing:
        raise LabelsError(
            f"{labels.source}: {len(missing)} listed file(s) are not in {folder}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "") + "; pass --skip-missing to calibrate without them"
        )
    listed = {(folder / name).resolve() for name in labels.labels}
    nested = any("/" in name for name in labels.labels)  # look in sub-folders only if the labels do
    unlabeled = tuple(str(p) for p in find_audio_files(folder, recursive=nested) if p.resolve() not in listed)
    names = [name for name in labels.labels if name not in missing]
    cache = ScoreCache(cache_path_for(out, tagger.name), class_names)
    checkpoint_sha256 = _checkpoint_sha256(tagger)
    scores, ok, failed = score_files(tagger, [folder / n for n in names], cache=cache,
                                     checkpoint_sha256=checkpoint_sha256, workers=workers, on_progress=on_progress)
    names = [names[i] for i in ok]
    classes = tuple(c for c in class_names if any(c in labels.labels[n] for n in names))
    if not classes:
        raise LabelsError(f"{labels.source}: none of the labeled clips has a {tagger.name} class")
    if len(names) < 2:
        raise LabelsError(f"{labels.source}: {len(names)} usable clip(s); calibration needs at least 2")
    columns = np.array([class_names.index(c) for c in classes])
    sub_scores = scores[:, columns].astype(np.float64)
    targets = ClipLabels({n: tuple(l for l in labels.labels[n] if l in classes) for n in names}, labels.source).matrix(names, classes)
    options = {"seed": seed, **options} if method in ("sgl", "heuristic") else dict(options)

    def fit_on(index: np.ndarray) -> Thresholds:
        return fit(sub_scores[index], targets[index], method=method, objective=objective, class_names=classes,
                   model=tagger.name, **options)

    if folds:
        if folds < 2 or folds > len(names):
            raise LabelsError(f"--folds must be between 2 and the number of clips ({len(names)}), got {folds}")
        # Every clip is held out once, and decided with the thresholds of the fold fitted without it.
        held_idx = np.arange(len(names))
        clip_values = np.empty_like(sub_scores)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for fit_idx, fold_idx in splitter.split(sub_scores, _strata(targets, folds)):
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
    intervals = {kind: bootstrap_f1(d, held_targets, seed=seed) for kind, d in decided.items()}
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
    )
    thresholds.save(out)
    return CalibrationResult(
        thresholds=thresholds, classes=classes, default=default_report, calibrated=calibrated_report,
        intervals=intervals, n_fit=n_fit, n_held_out=n_held, failed=tuple(failed), unlabeled_files=unlabeled,
        missing_files=missing, folds=folds, notes=tuple(notes),
    )
