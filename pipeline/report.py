"""Gather what the HTML calibration report needs: from a calibration result, or from files.

The report itself is :func:`calitag.thresholds.html_report.report`; this module finds its inputs in
what calitag writes: a `calibrate` result, a score file as `calitag thresholds fit` reads it, the
score cache `calitag calibrate` keeps beside its thresholds file (``*.scores.npz``, keyed by file
content, so it needs the labelled folder), or `calitag batch` output with all scores (JSONL or CSV).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calitag.errors import LabelsError, ScoresError
from calitag.models.checkpoints import file_digests
from calitag.pipeline.labels import ClipLabels, read_clip_labels
from calitag.thresholds.io import Thresholds
from calitag.thresholds.scorefiles import read_scores
from calitag.thresholds.html_report import report


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
    a class that kept the default is marked "fallback".
    """
    per_class = thresholds.per_class
    if not per_class or "kept" not in per_class:
        return None
    positives = per_class.get("positives", [None] * thresholds.n_classes)
    reasons = per_class.get("reason", [""] * thresholds.n_classes)
    return {
        name: {"kept": "fallback" if kept == "default" else kept, "positives": n, "reason": reason}
        for name, kept, n, reason in zip(thresholds.class_names, per_class["kept"], positives, reasons)
    }


def calibration_report(result: Any, *, meta: Mapping[str, Any] | None = None, default: float = 0.5) -> str:
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
                  gains=gains, guard=guard_of(thresholds), events=thresholds.events)


# --- reading scores from files ------------------------------------------------------------------


def _match_files(label_names: Sequence[str], paths: Sequence[str], folder: Path | None, source: str) -> dict[str, int]:
    """Label-file name -> index into ``paths`` (batch record paths), by folder or by path suffix."""
    by_resolved = {}
    if folder is not None:
        by_resolved = {str(Path(p).resolve()): i for i, p in enumerate(paths)}
    by_suffix: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        parts = Path(p).as_posix().split("/")
        for k in range(1, len(parts) + 1):
            by_suffix.setdefault("/".join(parts[-k:]), []).append(i)
    matched = {}
    for name in label_names:
        if folder is not None and str((folder / name).resolve()) in by_resolved:
            matched[name] = by_resolved[str((folder / name).resolve())]
            continue
        hits = by_suffix.get(Path(name).as_posix(), [])
        if len(hits) > 1:
            raise LabelsError(f"{name} matches {len(hits)} records of {source}: pass --folder to say which folder "
                              "the label file's names are relative to")
        if hits:
            matched[name] = hits[0]
    return matched


def _read_batch(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    """(paths, all-score dicts) of the successful records of a `calitag batch` JSONL or CSV file."""
    paths, scores = [], []
    try:
        # newline="": a CR inside a quoted CSV file name stays part of the name.
        with open(path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ScoresError(f"cannot read batch output {path}: {err}") from err
    if path.suffix.lower() == ".csv":
        for row in csv.DictReader(io.StringIO(text, newline="")):
            if row.get("error") or not row.get("scores"):
                continue
            pairs = (item.rsplit("=", 1) for item in row["scores"].split(";") if item)
            paths.append(row["path"])
            scores.append({label: float(value) for label, value in pairs})
    else:
        # Records end in "\n" only; splitlines() would also split at U+2028 or U+0085 in a name.
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ScoresError(f"{path} line {number} is not JSON: {err}") from err
            if "error" in record or not isinstance(record.get("scores"), dict):
                continue
            paths.append(record["path"])
            scores.append({str(k): float(v) for k, v in record["scores"].items()})
    if not paths:
        raise ScoresError(f"{path} holds no record with scores: expected `calitag batch --all-scores` output")
    return paths, scores


def _cache_scores(path: Path, class_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """File sha256 -> score row from a calibrate score cache (any model and checkpoint prefix)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, rows, names = data["keys"].tolist(), data["scores"], tuple(data["class_names"].tolist())
    except (OSError, ValueError, KeyError) as err:
        raise ScoresError(f"cannot read score cache {path}: {err}") from err
    if names != class_names:
        raise ScoresError(f"score cache {path} holds {len(names)} classes that are not the thresholds file's "
                          f"{len(class_names)}: it was made for another model")
    return {key.rsplit(":", 1)[-1]: row for key, row in zip(keys, rows)}


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
        output with all scores (``.jsonl``/``.csv`` with a ``scores`` column).
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
    ScoresError, LabelsError
        Unreadable files, missing labels, class lists that differ from the thresholds file.
    """
    path = Path(scores_path)
    is_cache = path.suffix.lower() == ".npz" and _is_cache(path)
    if path.suffix.lower() in (".jsonl", ".json") or is_cache or (path.suffix.lower() == ".csv" and _is_batch_csv(path)):
        return _read_clip_scores(thresholds, path, labels=labels, folder=folder, is_cache=is_cache)
    if path.suffix.lower() == ".parquet":
        raise ScoresError(f"{path}: reading Parquet batch output is not supported here; write JSONL "
                          "(`calitag batch --all-scores --out results.jsonl`)")
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


def _is_cache(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as data:
            return "keys" in data.files and "scores" in data.files
    except (OSError, ValueError):
        return False


def _is_batch_csv(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return first.strip().startswith("path,") and "scores" in first.split(",")


def _read_clip_scores(thresholds: Thresholds, path: Path, *, labels, folder, is_cache: bool) -> ReportInputs:
    """Scores of labelled clips from a score cache or batch output, matched through the label file."""
    recorded_labels, recorded_folder = thresholds.validation.get("labels"), thresholds.validation.get("source")
    labels = labels or recorded_labels
    if labels is None:
        raise LabelsError(f"{path} holds scores of audio files: give their labels with --labels (filename,labels)")
    folder_path = Path(folder or recorded_folder) if (folder or recorded_folder) else None
    clip_labels: ClipLabels = read_clip_labels(labels, class_names=thresholds.class_names)
    names = list(clip_labels.labels)
    rows: list[np.ndarray] = []
    used: list[str] = []
    if is_cache:
        if folder_path is None or not folder_path.is_dir():
            raise LabelsError(f"{path} is a score cache keyed by file content: pass --folder with the labelled audio "
                              f"files (the thresholds file records {recorded_folder!r})")
        by_digest = _cache_scores(path, thresholds.class_names)
        for name in names:
            file = folder_path / name
            if file.is_file():
                row = by_digest.get(file_digests(file)[0])
                if row is not None:
                    rows.append(row)
                    used.append(name)
    else:
        record_paths, record_scores = _read_batch(path)
        matched = _match_files(names, record_paths, folder_path, str(path))
        for name in names:
            if name not in matched:
                continue
            scores = record_scores[matched[name]]
            absent = [c for c in thresholds.class_names if c not in scores]
            if absent:
                raise ScoresError(f"{path}: the record of {name} lacks the scores of {len(absent)} classes "
                                  f"(e.g. {absent[0]!r}): run `calitag batch` with --all-scores")
            rows.append(np.array([scores[c] for c in thresholds.class_names]))
            used.append(name)
    if len(used) < 1:
        raise LabelsError(f"none of the {len(names)} clips of {labels} has scores in {path}")
    known = set(thresholds.class_names)
    labelled = {lab for name in used for lab in clip_labels.labels[name] if lab in known}
    calibrated = thresholds.options.get("calibrated_classes") or []
    classes = tuple(c for c in thresholds.class_names if c in labelled or c in calibrated)
    columns = [thresholds.class_names.index(c) for c in classes]
    scores = np.clip(np.stack(rows)[:, columns].astype(np.float64), 0.0, 1.0)
    kept = ClipLabels({n: tuple(l for l in clip_labels.labels[n] if l in classes) for n in used}, clip_labels.source)
    targets = kept.targets(used, classes).astype(bool)
    missing = len(names) - len(used)
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
    default: float = 0.5,
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
