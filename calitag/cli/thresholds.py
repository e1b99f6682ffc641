"""`calitag thresholds fit|evaluate|report`: score files in, a thresholds file, metrics or a report out."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from calitag.cli._common import (
    CLI_OBJECTIVES,
    FORCE_OPTION,
    JSON_OPTION,
    METHODS,
    SGL_ENGINES,
    check_out,
    echo_warnings,
    is_thresholds_file,
    option_group,
    reported,
)

_SCORES_ARGUMENT = click.argument("scores_path", metavar="SCORES", type=click.Path(dir_okay=False, path_type=Path))
_LABELS_OPTION = click.option(
    "--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="0/1 label matrix (.npy/.csv) for a .npy/.csv SCORES file (a .npz carries its own).")
_LOGITS_OPTION = click.option("--logits", is_flag=True, help="SCORES holds logits: apply a sigmoid first.")
TARGET_OPTION = click.option(
    "--target", default=None, metavar="METRIC=VALUE|CSV",
    help="Certify an operating point instead of the F1 optimum: precision=0.9 or recall=0.8 for every class, "
         "or a class,metric,value CSV file. Classes that cannot be certified are marked certified: false.")
CONFIDENCE_OPTION = click.option(
    "--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
    help="Confidence of --target: the target holds on new clips with this probability.")
PROBABILITIES_OPTION = click.option(
    "--probabilities", type=click.Choice(["none", "auto", "platt", "isotonic"]), default="none", show_default=True,
    help="Also fit per-class maps from scores to calibrated probabilities (auto: chosen per class by "
         "cross-validated log-loss).")

@click.group("thresholds")
def thresholds_group() -> None:
    """Fit per-class decision thresholds on score files and evaluate them."""


@contextmanager
def _library_call() -> Iterator[None]:
    """Library warnings as `warning:` lines (also before an error), library errors as the command's error line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with reported():
                yield
        finally:
            echo_warnings(caught)


def _given(**options: Any) -> dict[str, Any]:
    """The solver options given on the command line (the others keep the solver's defaults)."""
    return {key: value for key, value in options.items() if value is not None}


def _read_score_set(scores_path: Path, labels_path: Path | None, logits: bool, folder: Path | None = None) -> Any:
    """A score file, or the score cache `calitag calibrate` leaves (with the clip label file as --labels)."""
    from calitag.pipeline.calibrate import ScoreCache
    from calitag.thresholds.scorefiles import read_scores

    if scores_path.suffix.lower() == ".npz" and ScoreCache.is_cache(scores_path):
        from calitag.pipeline.report import read_cache_score_set

        if labels_path is None:
            raise click.UsageError(f"{scores_path} is a calibrate score cache: give the clip label file with --labels "
                                   "(and the audio folder with --folder, default: the label file's folder)")
        return read_cache_score_set(scores_path, labels_path, folder=folder)
    return read_scores(scores_path, labels=labels_path, logits=logits)


@thresholds_group.command("fit")
@_SCORES_ARGUMENT
@_LABELS_OPTION
@click.option("--method", type=click.Choice(METHODS), default="sgl",
              show_default=True, help="Solver: SGL-Thresh, one global threshold, dichoThresh, numThresh, exact search.")
@click.option("--objective", type=click.Choice(CLI_OBJECTIVES), default="micro-f1", show_default=True)
@click.option("--beta", type=float, default=None, help="Recall weight of the *-fbeta objectives (default 1).")
@option_group(
    "solver_options", _given,
    click.option("--init", type=click.FloatRange(0, 1), default=None,
                 help="Start threshold (the threshold itself for --method default; 0.5 there). Without it the "
                      "solvers start each class at its label-rate threshold (0.3 reproduces the paper's DCASE2017 "
                      "run)."),
    click.option("--lr", type=float, default=None, help="Adam step size (sgl, numeric; default 0.01)."),
    click.option("--epochs", type=int, default=None, help="Full-batch epochs (sgl; default 100)."),
    click.option("--slope", type=float, default=None, help="Surrogate sigmoid slope a (sgl; default 50)."),
    click.option("--engine", type=click.Choice(SGL_ENGINES), default=None,
                 help="sgl engine: sorted-score kernel tables (fast) or plain autograd over the matrix."),
    click.option("--seed", type=int, default=None, help="Random seed (sgl, heuristic; default 0)."),
    click.option("--max-seconds", type=float, default=None, help="Time bound of the numeric solver."),
)
@click.option("--guard-folds", type=click.IntRange(min=2), default=None,
              help="Fall back to a class's label-rate threshold when it beats the fit under K-fold CV inside "
                   "the clips (default: no guard).")
@TARGET_OPTION
@CONFIDENCE_OPTION
@PROBABILITIES_OPTION
@click.option("--model", "model_name", default=None, help="Model the scores came from (recorded in the file).")
@_LOGITS_OPTION
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For a calibrate score cache: the folder of the labelled audio files (default: the --labels "
                   "file's folder).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Thresholds file to write (JSON). Without it nothing is written.")
@FORCE_OPTION
@JSON_OPTION
def thresholds_fit(scores_path: Path, labels_path: Path | None, method: str, objective: str, beta: float | None,
                   solver_options: dict[str, Any], guard_folds: int | None, target: str | None, confidence: float,
                   probabilities: str, model_name: str | None, logits: bool, folder: Path | None,
                   out_path: Path | None, force: bool, as_json: bool) -> None:
    """Fit one threshold per class on the validation split of SCORES.

    SCORES is an .npz with val_scores, val_labels and optionally eval_scores, eval_labels and
    classes, or a .npy/.csv score matrix with --labels. The eval split, when present, is scored too.
    SCORES may also be the score cache `calitag calibrate` leaves (TH.MODEL.scores.npz) with the clip
    label file as --labels: the labelled classes are fitted on every labelled clip.
    """
    from calitag.thresholds import evaluate, fit

    if out_path is not None:
        check_out(out_path, inputs=(scores_path, labels_path), kind="thresholds file", is_kind=is_thresholds_file,
                  force=force)
    with _library_call():
        data = _read_score_set(scores_path, labels_path, logits, folder)
        if data.val_labels is None:
            raise click.UsageError(f"{scores_path} holds scores only: give their 0/1 labels with --labels")
        start = time.perf_counter()
        thresholds = fit(data.val_scores, data.val_labels, method=method, objective=objective, beta=beta,
                         class_names=data.names(), model=model_name, guard_folds=guard_folds, target=target,
                         confidence=confidence, probabilities=probabilities, **solver_options)
        seconds = time.perf_counter() - start
        evaluated = evaluate(data.eval_scores, data.eval_labels, thresholds) if data.eval_scores is not None else None
        if out_path is not None:
            thresholds.save(out_path)
    _echo_fit(method, thresholds, evaluated, seconds=seconds, out_path=out_path, as_json=as_json)


def _echo_fit(method: str, thresholds: Any, evaluated: Any, *, seconds: float, out_path: Path | None,
              as_json: bool) -> None:
    """The summary of `thresholds fit`: text lines, or one JSON object."""
    summary = {
        "method": method,
        "objective": thresholds.objective,
        "n_classes": thresholds.n_classes,
        "n_val_clips": thresholds.validation["n_clips"],
        "val_micro_f1": thresholds.validation["micro_f1"],
        "val_macro_f1": thresholds.validation["macro_f1"],
        "eval_micro_f1": evaluated.micro_f1 if evaluated else None,
        "eval_macro_f1": evaluated.macro_f1 if evaluated else None,
        "seconds": seconds,
        "out": str(out_path) if out_path is not None else None,
        "thresholds": dict(zip(thresholds.class_names, map(float, thresholds.values))),
        **_targets_summary(thresholds),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{method} ({thresholds.objective}) on {summary['n_val_clips']} clips x {summary['n_classes']} "
               f"classes in {seconds:.3f} s")
    click.echo(f"val  micro-F1 {100 * summary['val_micro_f1']:.1f}  macro-F1 {100 * summary['val_macro_f1']:.1f}")
    if evaluated:
        click.echo(f"eval micro-F1 {100 * evaluated.micro_f1:.1f}  macro-F1 {100 * evaluated.macro_f1:.1f}")
    if "certified" in summary:
        _echo_targets(thresholds)
    if thresholds.probability_maps is not None:
        kinds = [m.kind for m in thresholds.probability_maps.maps]
        click.echo(f"probability maps ({thresholds.probability_maps.method}): "
                   + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds))))
    click.echo(f"wrote {out_path}" if out_path is not None else "no --out given: nothing written")


def _targets_summary(thresholds: Any) -> dict[str, Any]:
    """The certification of each class with a target (nothing without targets)."""
    per_class = thresholds.per_class or {}
    if "certified" not in per_class:
        return {}
    names = thresholds.class_names
    return {"target": dict(zip(names, per_class["target"])), "certified": dict(zip(names, per_class["certified"])),
            "best_level": dict(zip(names, per_class["best_level"]))}


def _echo_targets(thresholds: Any) -> None:
    """One line per class with a target: its threshold, certified or not, the best certifiable level."""
    per_class = thresholds.per_class
    confidence = thresholds.options.get("confidence")
    width = max(12, *(len(n) for n in thresholds.class_names))
    click.echo(f"{'class':<{width}} {'target':>16} {'thr':>6} {'certified':>9} {'best level':>10}  "
               f"(confidence {confidence:g})")
    for i, name in enumerate(thresholds.class_names):
        if per_class["target"][i] is None:
            continue
        mark = "yes" if per_class["certified"][i] else "NO"
        click.echo(f"{name:<{width}} {per_class['target'][i]:>16} {thresholds.values[i]:>6.3f} {mark:>9} "
                   f"{per_class['best_level'][i]:>10.3f}")
    n_no = sum(c is False for c in per_class["certified"])
    if n_no:
        click.echo(f"{n_no} class(es) not certified: they keep their F1 threshold; the best level shown is the "
                   "most these clips certify")


@thresholds_group.command("evaluate")
@_SCORES_ARGUMENT
@click.option("--thresholds", "thresholds_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Thresholds file from `calitag thresholds fit` (or `calitag calibrate`).")
@_LABELS_OPTION
@click.option("--split", type=click.Choice(["auto", "eval", "val"]), default="auto", show_default=True,
              help="auto: the eval split when SCORES has one, else val.")
@_LOGITS_OPTION
@JSON_OPTION
def thresholds_evaluate(scores_path: Path, thresholds_path: Path, labels_path: Path | None, split: str,
                        logits: bool, as_json: bool) -> None:
    """Per-class and micro/macro precision, recall and F1 of a thresholds file on SCORES."""
    from calitag.errors import ThresholdsMismatchError
    from calitag.thresholds import Thresholds, evaluate

    with _library_call():
        data = _read_score_set(scores_path, labels_path, logits)
        use, scores, labels = data.split(split)
        if labels is None:
            raise click.UsageError(f"{scores_path} holds scores only: give their 0/1 labels with --labels")
        thresholds = Thresholds.load(thresholds_path, expected_classes=data.class_names)
        if thresholds.n_classes != scores.shape[1]:
            raise ThresholdsMismatchError(
                f"{thresholds_path} holds {thresholds.n_classes} classes, {scores_path} has {scores.shape[1]}: "
                "the file was made for another class list")
        report = evaluate(scores, labels, thresholds, source=str(scores_path))
    if as_json:
        document = {"split": use, "method": thresholds.method, f"{use}_micro_f1": report.micro_f1,
                    f"{use}_macro_f1": report.macro_f1, **report.to_dict()}
        click.echo(json.dumps(document))
        return
    width = max(12, *(len(n) for n in report.class_names))
    click.echo(f"{use} split of {scores_path}: {report.n_clips} clips, thresholds {thresholds_path} "
               f"({thresholds.method}, {thresholds.objective})")
    click.echo(f"{'class':<{width}} {'thr':>6} {'n':>6} {'pred':>6} {'P':>6} {'R':>6} {'F1':>6}")
    for i, name in enumerate(report.class_names):
        click.echo(f"{name:<{width}} {report.thresholds[i]:>6.3f} {report.support[i]:>6d} {report.predicted[i]:>6d} "
                   f"{100 * report.precision[i]:>6.1f} {100 * report.recall[i]:>6.1f} {100 * report.f1[i]:>6.1f}")
    for label, p, r, f in (("micro", report.micro_precision, report.micro_recall, report.micro_f1),
                           ("macro", report.macro_precision, report.macro_recall, report.macro_f1)):
        click.echo(f"{label:<{width}} {'':>6} {'':>6} {'':>6} {100 * p:>6.1f} {100 * r:>6.1f} {100 * f:>6.1f}")


@thresholds_group.command("report")
@click.argument("thresholds_path", metavar="TH.json", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("scores_path", metavar="SCORES", type=click.Path(path_type=Path))  # a Parquet output is a folder
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels of SCORES: a 0/1 matrix (.npy/.csv) for a score matrix, or the clip label file "
                   "(filename,labels) for a score cache or batch output (default: the one the thresholds file records).")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the label file's names are relative to (default: the one the thresholds file records).")
@click.option("--split", type=click.Choice(["auto", "eval", "val"]), default="auto", show_default=True,
              help="Part of an .npz score file: auto takes eval when it has one.")
@click.option("--default", "default_threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The default threshold the calibration is compared with.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write.")
@click.option("--force", is_flag=True, help="Replace --out even when it is not an earlier calitag report.")
def thresholds_report(thresholds_path: Path, scores_path: Path, labels_path: Path | None, folder: Path | None,
                      split: str, default_threshold: float, out_path: Path, force: bool) -> None:
    """Write an HTML report of TH.json on the clips of SCORES: summary, sortable table, figures per class.

    SCORES: a score file as `thresholds fit` reads it, the score cache `calibrate` keeps beside its
    thresholds file (*.scores.npz, with --folder), or `calitag batch --all-scores` output (JSONL, CSV or a
    Parquet folder).
    """
    from calitag.pipeline.report import report_from_files
    from calitag.thresholds.html_report import check_report_target, write_report

    with reported():
        check_report_target(out_path, force=force)
        text = report_from_files(thresholds_path, scores_path, labels=labels_path, folder=folder, split=split,
                                 default=default_threshold)
        write_report(out_path, text, force=force)
    click.echo(f"wrote {out_path}")

