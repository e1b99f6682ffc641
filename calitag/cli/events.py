"""`calitag detect` and `calitag calibrate-events`: sound events from frame scores, and their tuning."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from calitag.cli._common import (
    FORCE_OPTION,
    JSON_OPTION,
    REVIEW_FORMATS,
    CommandError,
    ModelChoice,
    check_out,
    check_review_folder,
    exit_if_failed,
    expand_inputs,
    for_each_file,
    is_thresholds_file,
    model_options,
    reported,
)


def _frame_level_models() -> list[str]:
    from calitag.models.registry import MODELS

    return sorted(name for name, spec in MODELS.items() if spec.frame_level)


def _sed_model_options(*, precision: bool) -> Any:
    return model_options(choices=_frame_level_models(), default="crnn-dcase2019", model_help="A frame-level model.",
                         precision=precision)


@click.command("detect")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_sed_model_options(precision=True)
@click.option("--postprocess", "postprocess_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Thresholds file with an events section (calitag calibrate-events), or the DCASE2019 CRNN "
                   "authors' parameters file; default: threshold 0.5, no smoothing.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="Events TSV to write (DCASE layout: filename, onset, offset, event_label). An existing file "
                   "is replaced only with --force. With --format raven or audacity: a folder of review files.")
@click.option("--format", "fmt", type=click.Choice(["tsv", *REVIEW_FORMATS]), default="tsv", show_default=True,
              help="raven, audacity: one review file per audio file in the --out folder, each event with the "
                   "highest frame score of its class.")
@FORCE_OPTION
@click.option("--recursive", is_flag=True, help="Also take the audio files in the sub-folders of a folder argument.")
def detect_command(files: tuple[Path, ...], model: ModelChoice, postprocess_path: Path | None, out_path: Path,
                   fmt: str, force: bool, recursive: bool) -> None:
    """Detect sound events in FILES (or the audio files in a folder) and write them as a DCASE TSV.

    A file that cannot be read is reported as `skip PATH: REASON` on stderr and the others are
    still processed; the exit code is 1 if any file failed.
    """
    from calitag.pipeline.detect import detect, resolve_postprocess, table_names
    from calitag.pipeline.review_formats import write_reviews
    from calitag.thresholds.events import write_events_tsv

    paths = expand_inputs(files, recursive=recursive)
    if fmt in REVIEW_FORMATS:
        check_review_folder(out_path)
    else:
        # An events table cannot be told from a reference annotation in the same layout: replace one only with --force.
        check_out(out_path, inputs=[*paths, postprocess_path, model.checkpoint], kind="events table", force=force)
    tagger = model.load()
    if postprocess_path is None:
        click.echo("no --postprocess: threshold 0.5 and no smoothing for every class "
                   "(tune one with calitag calibrate-events)", err=True)
    with reported():
        postprocess = resolve_postprocess(tagger, postprocess_path)
    if not paths:
        raise CommandError(f"no audio files in {', '.join(map(str, files))}")
    names = dict(zip(paths, table_names(paths)))

    def work(path: Path) -> list[Any]:
        found = detect(tagger, [path], postprocess, names=[names[path]], scored=fmt in REVIEW_FORMATS)
        click.echo(f"{path}: {len(found)} event(s)")
        return found

    done = for_each_file(paths, work)
    events = [event for _, found in done for event in found]
    with reported():
        if fmt in REVIEW_FORMATS:
            write_reviews(out_path, events, [names[path] for path, _ in done], fmt=fmt,
                          high_freq_hz=tagger.spec.frontend.sample_rate / 2)
        else:
            write_events_tsv(out_path, events, files=[names[path] for path, _ in done])
    click.echo(f"wrote {len(events)} event(s) from {len(done)} file(s) to {out_path}")
    exit_if_failed(len(done), len(paths))


@click.command("calibrate-events")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Strong labels of the files in FOLDER (DCASE TSV: filename, onset, offset, event_label).")
@_sed_model_options(precision=False)
@click.option("--metric", type=click.Choice(["event", "segment"]), default="event", show_default=True,
              help="Macro F1 to maximise: event-based (200 ms onset collar) or 1-s segment-based.")
@click.option("--solver", type=click.Choice(["sgl", "exact"]), default="sgl", show_default=True,
              help="Threshold solver of the frame-level surrogate step.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Thresholds file to write; when it exists (same model) only its events section is replaced.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write an HTML report: per class event-F1 at 0.5 and tuned, and the tuned stack.")
@FORCE_OPTION
def calibrate_events_command(folder: Path, events_path: Path, model: ModelChoice, metric: str, solver: str, seed: int,
                             out_path: Path, force: bool, report_path: Path | None) -> None:
    """Tune per-class smoothing, thresholds/hysteresis, minimum gap and duration on FOLDER's strong labels."""
    from calitag.pipeline.batch import find_audio_files
    from calitag.pipeline.detect import calibrate_events, existing_thresholds, read_event_table
    from calitag.thresholds.html_report import check_report_target

    check_out(out_path, inputs=[events_path, model.checkpoint, *find_audio_files(folder)], kind="thresholds file",
              is_kind=is_thresholds_file, force=force)
    with reported():  # a bad table, --out or --report file is reported before the model loads
        if report_path is not None:
            check_report_target(report_path)
        table = read_event_table(events_path)
        existing_thresholds(out_path, model=model.name)
    tagger = model.load()
    with reported():
        calibration = calibrate_events(tagger, folder, table, out=out_path, metric=metric, solver=solver, seed=seed)
    if calibration.unlabeled_files:
        click.echo(f"ignoring {len(calibration.unlabeled_files)} audio file(s) of {folder} not listed in "
                   f"{events_path}", err=True)
    _echo_tuning(calibration, metric=metric, out_path=out_path)
    if calibration.evaluation is not None:
        click.echo(f"on the {calibration.n_files} tuning file(s):")
        _echo_evaluation(calibration.evaluation)
    else:
        click.echo("PSDS needs sed_scores_eval (the events extra): pip install -e \".[events]\"", err=True)
    if report_path is not None:
        _write_events_report(calibration, report_path, model=model.name, folder=folder, events_path=events_path,
                             metric=metric, solver=solver)
        click.echo(f"wrote {report_path}")


def _echo_tuning(calibration: Any, *, metric: str, out_path: Path) -> None:
    """Per class: tuned and 0.5 F1 and the tuned stack; then the macro figures."""
    result = calibration.tuning
    click.echo(f"{'class':<28} {'F1 tuned':>9} {'F1 0.5':>7}  parameters")
    baseline = result.baseline_class_scores
    for label in result.postprocess.class_names:
        f1 = result.class_scores[label]
        if math.isnan(f1):
            continue
        p = result.postprocess[label]
        binar = (f"> {p.threshold:.3f}" if p.binarize == "threshold" else f"hyst {p.threshold:.3f}/{p.low:.3f}")
        click.echo(f"{label:<28} {100 * f1:>9.1f} {100 * baseline[label]:>7.1f}  {p.smoothing} {p.kernel_frames} "
                   f"frames, {binar}, min gap {p.min_gap_s:.2f} s, min length {p.min_duration_s:.2f} s")
    click.echo(f"{metric}-based macro-F1 on {calibration.n_files} file(s): {100 * result.score:.1f} "
               f"(threshold 0.5: {100 * result.baseline_score:.1f}); fit {result.seconds:.2f} s -> {out_path}")


def _write_events_report(calibration: Any, report_path: Path, *, model: str, folder: Path, events_path: Path,
                         metric: str, solver: str) -> None:
    from calitag.thresholds.html_report import report, write_report

    result = calibration.tuning
    meta = {"model": model, "data": str(folder), "labels": str(events_path), "n_clips": calibration.n_files,
            "method": f"event post-processing tuned with {solver}", "objective": f"{metric}-based macro-F1",
            "title": f"Event detection calibration: {model}"}
    section = {**result.postprocess.to_dict(), "class_scores": result.class_scores,
               "baseline_class_scores": result.baseline_class_scores}
    with reported():
        write_report(report_path, report(None, None, calibration.thresholds, meta=meta, events=section))


@click.group("events")
def events_group() -> None:
    """Sound event detection metrics: PSDS1, PSDS2, per-class AP and collar-based F1 (sed_scores_eval)."""


@events_group.command("evaluate")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Strong labels of the files in FOLDER (DCASE TSV: filename, onset, offset, event_label).")
@_sed_model_options(precision=True)
@click.option("--postprocess", "postprocess_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Thresholds file with an events section (calitag calibrate-events) for the post-processed "
                   "figures; default: threshold 0.5, no smoothing.")
@click.option("--scores-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the frame scores there in sed_scores_eval's per-file format (<id>.tsv).")
@JSON_OPTION
def evaluate_command(folder: Path, events_path: Path, model: ModelChoice, postprocess_path: Path | None,
                     scores_dir: Path | None, as_json: bool) -> None:
    """PSDS1 and PSDS2 (DCASE 2021-2024 settings), per-class AP and collar-based F1 of a model on FOLDER's
    strong labels, on raw and on post-processed frame scores."""
    import json

    from calitag.pipeline.detect import evaluate_events

    tagger = model.load()
    with reported():
        evaluation = evaluate_events(tagger, folder, events_path, postprocess=postprocess_path, scores_dir=scores_dir)
    if as_json:
        click.echo(json.dumps(evaluation.to_dict(), indent=2))
        return
    if evaluation.ignored_classes:
        click.echo(f"not evaluated: {', '.join(evaluation.ignored_classes)} (not {model.name} classes)", err=True)
    click.echo(f"{model.name} on {evaluation.n_files} file(s) of {folder}:")
    _echo_evaluation(evaluation)
    if scores_dir is not None:
        click.echo(f"wrote frame scores to {scores_dir}")


def _echo_evaluation(evaluation: Any) -> None:
    """PSDS1, PSDS2, mean AP and F1 for raw and post-processed scores, then the per-class AP and F1."""
    rows = (("raw", evaluation.raw), ("postprocessed", evaluation.postprocessed))
    # PSDS and AP on their usual 0-1 scale; F1 in percent with one decimal, as every command prints it.
    click.echo(f"{'scores':<14} {'PSDS1':>6} {'PSDS2':>6} {'mAP':>6} {'F1 %':>6}")
    for name, m in rows:
        click.echo(f"{name:<14} {m.psds1:>6.3f} {m.psds2:>6.3f} {m.mean_ap:>6.3f} {100 * m.f1:>6.1f}")
    click.echo(f"{'class':<28} {'AP raw':>7} {'AP pp':>7} {'F1 raw':>7} {'F1 pp':>7}")
    for label in evaluation.classes:
        click.echo(f"{label:<28} {evaluation.raw.class_ap[label]:>7.3f} {evaluation.postprocessed.class_ap[label]:>7.3f}"
                   f" {100 * evaluation.raw.class_f1[label]:>7.1f} {100 * evaluation.postprocessed.class_f1[label]:>7.1f}")
