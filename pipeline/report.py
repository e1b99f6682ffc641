"""Gather what the HTML calibration report needs: from a calibration result, or from files.

The report itself is :func:`calitag.thresholds.html_report.report`; this module finds its inputs in
what calitag writes: a `calibrate` result, a score file as `calitag thresholds fit` reads it, the
score cache `calitag calibrate` keeps beside its thresholds file (``*.scores.npz``, keyed by file
content, so it needs the labelled folder), or `calitag batch` output with all scores (JSONL, CSV or
Parquet, read by :func:`calitag.pipeline.records.read_all_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calitag.errors import LabelsError, ScoresError
from calitag.models.checkpoints import file_digests
from calitag.pipeline.calibrate import ScoreCache
from calitag.pipeline.labels import ClipLabels, match_recorded, read_clip_labels
from calitag.pipeline.records import read_all_scores
from calitag.thresholds.io import DEFAULT_THRESHOLD, Thresholds
from calitag.thresholds.html_report import report
from calitag.thresholds.scorefiles import ScoreSet, read_scores

#: How to resolve a label-file name that matches several records of a batch output.
AMBIGUOUS_FOLDER_FIX = "pass --folder to say which folder the label file's names are relative to"


@dataclass(frozen=True)
class ReportInputs:
    """Clip scores and labels for a report, matched to a thresholds file.

    scores, targets: (n_clips, len(class_names)); class_names: the columns shown; description:
    which clips these are (shown in the report header).
    """

    scores: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]
    description: str


def guard_of(thresholds: Thresholds) -> dict[str, Any] | None:
    """The per-class guard records of a thresholds file (fit kept or default restored), if it has any.

    Reads the file's ``per_class`` record (positives seen by the fit, "fit" or "default" kept, why);
    a class that kept the default is marked "default", the file's own word.
    """
    per_class = thresholds.per_class
    if not per_class or "kept" not in per_class:
        return None
    positives = per_class.get("positives", [None] * thresholds.n_classes)
    reasons = per_class.get("reason", [""] * thresholds.n_classes)
    return {
        name: {"kept": kept, "positives": n, "reason": reason}
        for name, kept, n, reason in zip(thresholds.class_names, per_class["kept"], positives, reasons)
    }


def calibration_report(result: Any, *, meta: Mapping[str, Any] | None = None, default: float = DEFAULT_THRESHOLD) -> str:
    """The HTML report of a :class:`calitag.pipeline.calibrate.CalibrationResult`.

    The table and figures describe the held-out clips (with ``folds``, every clip, decided by the
    fold that did not see it). ``meta`` adds or overrides header fields.

    Raises
    ------
    ScoresError
        The result carries no held-out scores (made by an older calitag).
    """
    if result.held_out_scores is None or result.held_out_targets is None:
        raise ScoresError("this calibration result carries no held-out scores to report on")
    thresholds = result.thresholds
    split = (f"{result.folds}-fold cross-validation; thresholds written are fitted on all clips" if result.folds
             else f"{result.n_fit} clips fitted, {result.n_held_out} held out")
    evaluated = (f"all {result.n_held_out} clips, each decided by the fold fitted without it" if result.folds
                 else f"the {result.n_held_out} held-out clips")
    header = {
        "model": thresholds.model,
        "data": thresholds.validation.get("source"),
        "labels": thresholds.validation.get("labels"),
        "n_clips": result.n_fit if result.folds else result.n_fit + result.n_held_out,
        "split": split,
        "evaluated_on": evaluated,
        "method": thresholds.method,
        "objective": thresholds.objective,
        "intervals": "bootstrap 95% (percentile) over resamples of the held-out clips",
        **dict(meta or {}),
    }
    gains = getattr(result, "gains", None) or getattr(result, "paired_gain", None)
    return report(result.held_out_scores, result.held_out_targets, thresholds, class_names=result.classes,
                  default=default, decided=result.held_out_decided, meta=header, intervals=result.intervals,
                  gains=gains, guard=guard_of(thresholds), events=thresholds.events,
                  probabilities=getattr(result, "held_out_probs", None),
                  learning_curve=getattr(result, "learning_curve", None))


# --- reading scores from files ------------------------------------------------------------------


def read_report_inputs(
    thresholds: Thresholds,
    scores_path: str | Path,
    *,
    labels: str | Path | None = None,
    folder: str | Path | None = None,
    split: str = "auto",
) -> ReportInputs:
    """Clip scores and labels for a report on ``thresholds``, from any score file calitag writes.

    Parameters
    ----------
    thresholds : Thresholds
        The fitted thresholds the report is about.
    scores_path : path-like
        A score file as `calitag thresholds fit` reads it (``.npz`` with val/eval arrays, ``.npy``
        or ``.csv`` with ``labels``); a calibrate score cache (``*.scores.npz``); or `calitag batch`
        output with all scores (``.jsonl``, ``.csv`` with a ``scores`` column, or a Parquet folder),
        read by :func:`calitag.pipeline.records.read_all_scores`.
    labels : path-like, optional
        For a ``.npy``/``.csv`` score matrix: its 0/1 label matrix. For a score cache or batch
        output: the clip label file (``filename,labels``); default: the one recorded in the
        thresholds file.
    folder : path-like, optional
        The folder the label file's names are relative to (a score cache needs it to hash the
        files); default: the one recorded in the thresholds file.
    split : {"auto", "eval", "val"}
        Which part of an ``.npz`` score file: auto takes eval when it has one.

    Returns
    -------
    ReportInputs

    Raises
    ------
    ScoresError, OutputError, LabelsError
        Unreadable files, missing labels, class lists that differ from the thresholds file, batch
        output of another model.
    """
    path = Path(scores_path)
    suffix = path.suffix.lower()
    is_cache = suffix == ".npz" and ScoreCache.is_cache(path)
    is_batch = suffix in (".jsonl", ".json", ".parquet") or path.is_dir() or (suffix == ".csv" and _is_batch_csv(path))
    if is_cache or is_batch:
        return _read_clip_scores(thresholds, path, labels=labels, folder=folder, is_cache=is_cache)
    data = read_scores(path, labels=labels)
    use = ("eval" if data.eval_scores is not None else "val") if split == "auto" else split
    if use == "eval" and data.eval_scores is None:
        raise ScoresError(f"{path} has no eval split (eval_scores/eval_labels): use --split val")
    scores, targets = (data.eval_scores, data.eval_labels) if use == "eval" else (data.val_scores, data.val_labels)
    if targets is None:
        raise ScoresError(f"{path} holds scores only: give their 0/1 labels with --labels")
    names = data.class_names or thresholds.class_names
    if len(names) != scores.shape[1]:
        raise ScoresError(f"{path} has {scores.shape[1]} score columns, the thresholds file {thresholds.n_classes} "
                          "classes: the file was made for another class list")
    part = "eval" if use == "eval" else "validation"
    return ReportInputs(scores, targets, tuple(names), f"the {part} split of {path.name} ({len(scores)} clips)")


def _is_batch_csv(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.strip().startswith("path,") and "scores" in first.split(",")


def _read_clip_scores(thresholds: Thresholds, path: Path, *, labels: str | Path | None, folder: str | Path | None,
                      is_cache: bool) -> ReportInputs:
    """Scores of labelled clips from a score cache or batch output, matched through the label file."""
    recorded_labels, recorded_folder = thresholds.validation.get("labels"), thresholds.validation.get("source")
    labels = labels or recorded_labels
    if labels is None:
        raise LabelsError(f"{path} holds scores of audio files: give their labels with --labels (filename,labels)")
    folder_path = Path(folder or recorded_folder) if (folder or recorded_folder) else None
    clip_labels: ClipLabels = read_clip_labels(labels, class_names=thresholds.class_names)
    names = list(clip_labels.labels)
    if is_cache:
        if folder_path is None or not folder_path.is_dir():
            raise LabelsError(f"{path} is a score cache keyed by file content: pass --folder with the labelled audio "
                              f"files (the thresholds file records {recorded_folder!r})")
        used, rows = _cache_rows(path, names, folder_path, thresholds.class_names)
    else:
        used, rows = _batch_rows(path, names, folder_path, thresholds)
    if len(used) < 1:
        raise LabelsError(f"none of the {len(names)} clips of {labels} has scores in {path}")
    return _labelled_inputs(thresholds, clip_labels, used, rows, n_listed=len(names), path=path)


def _cache_rows(path: Path, names: list[str], folder: Path, class_names: tuple[str, ...]) -> tuple[list[str], list[np.ndarray]]:
    """(names, score rows) of the listed files of ``folder`` that a calibrate score cache holds (by file content)."""
    by_file = ScoreCache.read(path, class_names).by_file()
    used, rows = [], []
    for name in names:
        file = folder / name
        if file.is_file():
            row = by_file.get(file_digests(file)[0])
            if row is not None:
                rows.append(row)
                used.append(name)
    return used, rows


def read_cache_score_set(path: str | Path, labels: str | Path, *, folder: str | Path | None = None) -> ScoreSet:
    """The labelled clips of a calibrate score cache as a score set for `calitag thresholds fit`.

    Parameters
    ----------
    path : path-like
        The score cache ``calitag calibrate`` leaves beside its thresholds file (``TH.MODEL.scores.npz``).
    labels : path-like
        The clip label file (``filename,labels``) of the scored folder.
    folder : path-like, optional
        The folder the label file's names are relative to (default: the label file's folder); the cache is
        keyed by file content, so the files are hashed to find their rows.

    Returns
    -------
    ScoreSet
        Validation scores and 0/1 labels (clips, labelled classes): only the classes that occur in the
        labels are columns, so classes without a positive clip are not fitted.

    Raises
    ------
    ScoresError, LabelsError
        An unreadable cache or label file, a folder that is not there, or no listed clip in the cache.
    """
    path = Path(path)
    folder_path = Path(folder) if folder is not None else Path(labels).parent
    if not folder_path.is_dir():
        raise LabelsError(f"{path} is a score cache keyed by file content: --folder must be the folder of the "
                          f"labelled audio files, got {folder_path}")
    cache_classes = ScoreCache.read(path).class_names
    clip_labels = read_clip_labels(labels, class_names=cache_classes)
    names = list(clip_labels.labels)
    used, rows = _cache_rows(path, names, folder_path, cache_classes)
    if not used:
        raise LabelsError(f"none of the {len(names)} clips of {labels} (in {folder_path}) has scores in {path}")
    classes = tuple(c for c in cache_classes if any(c in clip_labels.labels[n] for n in used))
    columns = [cache_classes.index(c) for c in classes]
    kept = ClipLabels({n: tuple(lab for lab in clip_labels.labels[n] if lab in classes) for n in used}, clip_labels.source)
    targets = kept.targets(used, classes).astype(bool)
    scores = np.clip(np.stack(rows)[:, columns].astype(np.float64), 0.0, 1.0)
    return ScoreSet(scores, targets, None, None, classes, str(path))


def _batch_rows(path: Path, names: list[str], folder: Path | None, thresholds: Thresholds) -> tuple[list[str], list[np.ndarray]]:
    """(names, score rows) of the listed files that a `calitag batch --all-scores` output scored."""
    if not path.exists():  # else the reader takes it for a Parquet folder and may ask for pyarrow
        raise ScoresError(f"cannot read batch output {path}: no such file or folder")
    paths, matrix, _ = read_all_scores(path, model=thresholds.model, class_names=thresholds.class_names)
    matched = match_recorded(names, paths, source=str(path), folder=folder, fix=AMBIGUOUS_FOLDER_FIX)
    used = [name for name in names if name in matched]
    return used, [matrix[matched[name]] for name in used]


def _labelled_inputs(thresholds: Thresholds, clip_labels: ClipLabels, used: list[str], rows: list[np.ndarray], *,
                     n_listed: int, path: Path) -> ReportInputs:
    """The report's columns: the classes labelled among ``used`` clips or calibrated, with their scores and targets."""
    known = set(thresholds.class_names)
    labelled = {lab for name in used for lab in clip_labels.labels[name] if lab in known}
    calibrated = thresholds.options.get("calibrated_classes") or []
    classes = tuple(c for c in thresholds.class_names if c in labelled or c in calibrated)
    columns = [thresholds.class_names.index(c) for c in classes]
    scores = np.clip(np.stack(rows)[:, columns].astype(np.float64), 0.0, 1.0)
    kept = ClipLabels({n: tuple(l for l in clip_labels.labels[n] if l in classes) for n in used}, clip_labels.source)
    targets = kept.targets(used, classes).astype(bool)
    missing = n_listed - len(used)
    note = f"; {missing} listed clip(s) without scores left out" if missing else ""
    return ReportInputs(scores, targets, classes,
                        f"all {len(used)} labelled clips with scores in {path.name} (fitting clips included){note}")


def report_from_files(
    thresholds_path: str | Path,
    scores_path: str | Path,
    *,
    labels: str | Path | None = None,
    folder: str | Path | None = None,
    split: str = "auto",
    default: float = DEFAULT_THRESHOLD,
) -> str:
    """The HTML report of a thresholds file on the clips of a score file (see :func:`read_report_inputs`).

    Raises
    ------
    ThresholdsError, ScoresError, LabelsError
        Unreadable or mismatched inputs.
    """
    thresholds = Thresholds.load(thresholds_path)
    inputs = read_report_inputs(thresholds, scores_path, labels=labels, folder=folder, split=split)
    validation = thresholds.validation
    meta = {
        "model": thresholds.model,
        "data": validation.get("source") or str(scores_path),
        "labels": str(labels) if labels else validation.get("labels"),
        "n_clips": len(inputs.scores),
        "split": _split_text(validation),
        "evaluated_on": inputs.description,
        "method": thresholds.method,
        "objective": thresholds.objective,
        "thresholds_file": f"{Path(thresholds_path).name} (made {thresholds.created or 'at an unknown date'})",
        "title": f"Calibration report: {thresholds.model or Path(thresholds_path).name}",
    }
    return report(inputs.scores, inputs.targets, thresholds, class_names=inputs.class_names, default=default,
                  meta=meta, guard=guard_of(thresholds), events=thresholds.events)


def _split_text(validation: Mapping[str, Any]) -> str | None:
    held = validation.get("held_out")
    if isinstance(held, Mapping):
        if held.get("folds"):
            return f"{held['folds']}-fold cross-validation at calibration"
        return f"{validation.get('n_clips', '?')} clips fitted, {held.get('n_clips', '?')} held out at calibration"
    if validation.get("n_clips") is not None:
        return f"fitted on {validation['n_clips']} clips"
    return None
