"""`calitag calibrate`: fit per-class thresholds on a labeled folder (or batch output) and measure them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calitag.cli._common import (
    CLI_OBJECTIVES,
    FORCE_OPTION,
    JSON_OPTION,
    METHODS,
    ModelChoice,
    Progress,
    echo_skip,
    model_options,
    option_group,
    reported,
)

from calitag.cli.thresholds import CONFIDENCE_OPTION, PROBABILITIES_OPTION, TARGET_OPTION

if TYPE_CHECKING:
    from calitag.pipeline.calibrate import CalibrationOptions


def _options(method: str, objective: str, val_fraction: float, folds: int | None, seed: int, skip_missing: bool,
             workers: int | None, guard: bool, target: str | None, confidence: float,
             probabilities: str) -> CalibrationOptions:
    from calitag.pipeline.calibrate import CalibrationOptions

    return CalibrationOptions(method=method, objective=objective.replace("-", "_"), val_fraction=val_fraction,
                              folds=folds, seed=seed, skip_missing=skip_missing, workers=workers, guard=guard,
                              target=target, confidence=confidence, probabilities=probabilities)


@click.command("calibrate")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--scores", "scores_path", default=None,
              help="Fit from a `calitag batch --all-scores` output (JSONL file or Parquet folder) instead of FOLDER.")
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV/TSV `filename,labels` (labels separated by ';') or DCASE weak labels `filename<TAB>event_labels`.")
@model_options()
@option_group(
    "options", _options,
    click.option("--method", type=click.Choice(METHODS), default="sgl", show_default=True, help="Threshold solver."),
    click.option("--objective", type=click.Choice([o for o in CLI_OBJECTIVES if o.endswith("-f1")]),
                 default="micro-f1", show_default=True),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
                 show_default=True, help="Share of the clips held out to measure the thresholds (stratified)."),
    click.option("--folds", type=click.IntRange(min=2), default=None,
                 help="K-fold cross-validation for the held-out figures instead of one split."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--skip-missing", is_flag=True,
                 help="Ignore listed files that are absent and labels the model lacks."),
    click.option("--workers", type=click.IntRange(min=0), default=None,
                 help="Worker processes that score the folder, as in `calitag batch` (yamnet: one per CPU this "
                      "process may use; other models: 1)."),
    click.option("--guard/--no-guard", default=True, show_default=True,
                 help="Fall back to a class's label-rate threshold when it beats the fit under 3-fold CV inside "
                      "the fitting clips."),
    TARGET_OPTION,
    CONFIDENCE_OPTION,
    PROBABILITIES_OPTION,
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Thresholds file to write (its score cache goes beside it).")
@FORCE_OPTION
@JSON_OPTION
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write an HTML report (figures per class) of the held-out clips; replaces only an "
                   "earlier calitag report.")
def calibrate_command(folder: Path | None, scores_path: str | None, labels_path: Path, model: ModelChoice,
                      options: CalibrationOptions, out_path: Path, as_json: bool, report_path: Path | None,
                      force: bool) -> None:
    """Fit per-class thresholds for a model on the labeled audio files in FOLDER.

    Every file is scored once (cached beside --out), the clips are split into a fitting part and a
    held-out part, and the thresholds fitted on the first are measured on the second against the
    default threshold 0.5, with bootstrap 95% intervals and the paired gain. A class falls back to
    its label-rate threshold when that beats its fit under 3-fold cross-validation inside the
    fitting clips. Classes absent from the labels keep 0.5.
    With --scores, the clip scores come from a batch output of the same model instead.
    """
    from calitag.pipeline.calibrate import CalibrationJob, run_calibration

    if (folder is None) == (scores_path is None):
        raise click.UsageError("give either FOLDER or --scores")
    job = CalibrationJob(labels=labels_path, out=out_path, folder=folder, scores=scores_path, report=report_path,
                         force=force, options=options)
    progress = _LazyProgress("scoring")
    try:
        with reported():
            result = run_calibration(job, model, on_progress=progress)
    finally:
        progress.close()
    _echo_notes(result, folder=job.source, labels_path=labels_path)
    if report_path is not None:
        from calitag.pipeline.report import calibration_report
        from calitag.thresholds.html_report import write_report

        with reported():
            write_report(report_path, calibration_report(result, meta={"labels": str(labels_path)}))
        click.echo(f"wrote {report_path}", err=True)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "out": str(out_path)}))
        return
    _echo_table(result, model=model.name)
    click.echo(f"wrote {out_path}")


class _LazyProgress:
    """The scoring progress, started by the first file scored (a run that scores nothing shows none)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.progress: Progress | None = None

    def __call__(self, update: Any) -> None:
        if self.progress is None:
            self.progress = Progress(update.total, self.desc)
        self.progress(update)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def _echo_notes(result: Any, *, folder: Path, labels_path: Path) -> None:
    """What the calibration left out or warns of, on stderr."""
    for failure in result.failed:
        echo_skip(failure.path, failure.error)
    for name in result.missing_files:
        click.echo(f"missing {name}: listed in {labels_path} but not in {folder}", err=True)
    if result.unlabeled_files:
        click.echo(f"{len(result.unlabeled_files)} audio file(s) in {folder} are not in {labels_path} "
                   f"(not used), e.g. {result.unlabeled_files[0]}", err=True)
    for note in result.notes:
        click.echo(note, err=True)
    if result.few_positives:
        listed = ", ".join(f"{name} ({n})" for name, n in result.few_positives)
        click.echo(f"warning: {len(result.few_positives)} class(es) have fewer than 5 positive clips, their "
                   f"thresholds are unreliable: {listed}", err=True)


def _echo_table(result: Any, *, model: str) -> None:
    """Per class: default and calibrated threshold, P, R, F1 on the held-out clips; then the averages."""
    held = f"{result.folds}-fold cross-validation" if result.folds else f"held-out {result.n_held_out} clips"
    click.echo(f"{model}: {len(result.classes)} labeled classes, fitted on {result.n_fit} clips, {held}")
    header = f"{'class':<32} {'n':>4} | {'thr':>5} {'P':>5} {'R':>5} {'F1':>5} | {'thr':>5}  {'P':>5} {'R':>5} {'F1':>5}"
    click.echo(f"{'':<37} | {'default':^23} | {'calibrated':^24}")
    click.echo(header)
    values = dict(zip(result.thresholds.class_names, result.thresholds.values))
    kept = dict(zip(result.thresholds.class_names, (result.thresholds.per_class or {}).get("kept", ())))
    for i, name in enumerate(result.classes):
        d, c = result.default, result.calibrated
        mark = "*" if kept.get(name) in ("default", "fallback") else " "
        # P, R and F1 in percent with one decimal, as every command prints them.
        click.echo(f"{name[:32]:<32} {int(d.support[i]):>4} | {d.thresholds[i]:>5.2f} {100 * d.precision[i]:>5.1f} "
                   f"{100 * d.recall[i]:>5.1f} {100 * d.f1[i]:>5.1f} | {values[name]:>5.3f}{mark} "
                   f"{100 * c.precision[i]:>5.1f} {100 * c.recall[i]:>5.1f} {100 * c.f1[i]:>5.1f}")
    if any(kept.get(name) == "default" for name in result.classes):
        click.echo("* the default 0.5 was kept: the fit did not beat it under cross-validation")
    if any(kept.get(name) == "fallback" for name in result.classes):
        click.echo("* the label-rate threshold was kept: it beat the fit under cross-validation")
    for average in ("micro", "macro"):
        gain = result.gains[f"{average}_f1"]
        d, c = gain.default, gain.calibrated
        click.echo(f"{average}-F1 %  default {100 * d.value:.1f} [{100 * d.low:.1f}, {100 * d.high:.1f}]   "
                   f"calibrated {100 * c.value:.1f} [{100 * c.low:.1f}, {100 * c.high:.1f}]   (bootstrap 95%)")
    for average in ("micro", "macro"):
        click.echo(f"gain: {result.gains[f'{average}_f1'].verdict()} (paired bootstrap 95%)")
    _echo_operating_points(result)
    _echo_learning_curve(result.learning_curve)


def _echo_operating_points(result: Any) -> None:
    """With targets: held-out precision and recall with intervals per class; with maps: ECE and Brier."""
    reached, per_class = result.achieved(), result.thresholds.per_class or {}
    if reached is not None:
        index = {name: i for i, name in enumerate(result.thresholds.class_names)}
        click.echo(f"targets at confidence {result.thresholds.options.get('confidence'):g}; held-out precision and "
                   "recall with exact 95% intervals:")
        click.echo(f"{'class':<32} {'target':>15} {'cert':>4} {'best':>5} | {'P':>5} {'[low, high]':>13} | "
                   f"{'R':>5} {'[low, high]':>13}")
        for i, name in enumerate(result.classes):
            j = index[name]
            if per_class["target"][j] is None:
                continue

            def shown(metric: str) -> str:
                value, (low, high) = reached[metric][i], reached[f"{metric}_interval"][i]
                # In percent with one decimal, as every command prints P, R and F1.
                return f"{'-' if value is None else f'{100 * value:.1f}':>5} {f'[{100 * low:.1f}, {100 * high:.1f}]':>13}"

            click.echo(f"{name[:32]:<32} {per_class['target'][j]:>15} {'yes' if per_class['certified'][j] else 'NO':>4} "
                       f"{100 * per_class['best_level'][j]:>5.1f} | {shown('precision')} | {shown('recall')}")
    quality = result.probability_quality()
    if quality is not None:
        click.echo(f"probabilities ({quality['method']}) on the held-out clips: ECE (15 bins) "
                   f"{quality['ece_raw']:.4f} -> {quality['ece_calibrated']:.4f}, Brier {quality['brier_raw']:.4f} -> "
                   f"{quality['brier_calibrated']:.4f}")


def _echo_learning_curve(curve: Any) -> None:
    """One line: held-out F per number of fitting clips (in %; a still rising curve says more labels help)."""
    if curve is not None:
        points = "  ".join(f"{size}: {100 * value:.1f}" for size, value in zip(curve.sizes, curve.mean))
        click.echo(f"learning curve ({curve.objective.replace('_f', '-F')} on {curve.n_held_out} held-out clips, "
                   f"mean of {len(curve.values)}): {points}")
