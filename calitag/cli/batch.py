"""`calitag batch`: options -> one call of :func:`calitag.pipeline.batch.run_batch` -> stderr lines and exit code."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from calitag.cli._common import (
    MERGE_GAP_OPTION,
    MERGE_OPTION,
    RECORD_FORMATTERS,
    REVIEW_FORMATS,
    SEGMENT_OPTION,
    TOP_N_OPTION,
    ModelChoice,
    Progress,
    echo_ignored,
    echo_skip,
    merge_gap,
    model_options,
    option_group,
    reported,
)

if TYPE_CHECKING:
    from calitag.pipeline.batch import BatchPlan, BatchProgress, FileResult
    from calitag.pipeline.ray_engine import RayOptions
    from calitag.pipeline.records import RecordOptions


def _records(fmt: str | None, top_k: int | None, top_scores: int, all_scores: bool,
             rows_per_part: int | None, top_n: int | None, merge: bool, merge_gap_s: float) -> RecordOptions:
    from calitag.pipeline.records import ROWS_PER_PART, RecordOptions

    return RecordOptions(fmt=fmt, top_k=top_k, top_scores=top_scores, all_scores=all_scores,
                         rows_per_part=rows_per_part or ROWS_PER_PART, top_n=top_n,
                         merge_gap_s=merge_gap(merge, merge_gap_s))


def _ray(address: str | None, actors: int, gpus_per_actor: float, cpus_per_actor: float) -> RayOptions:
    from calitag.pipeline.ray_engine import RayOptions

    return RayOptions(address=address, actors=actors, gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor)


@click.command("batch")
@click.argument("folder", metavar="SOURCE")
@click.option("--out", "out_path", required=True,
              help="Results: a file (jsonl, csv) appended as files finish, or a folder of Parquet part files.")
@option_group(
    "records", _records,
    click.option("--format", "fmt", type=click.Choice([*RECORD_FORMATTERS, "parquet", *REVIEW_FORMATS]),
                 default=None,
                 help="Default: parquet with --engine ray, else the format of the file being resumed, else from "
                      "the --out extension (.csv -> csv, else jsonl). raven, audacity (with --segment-s): --out "
                      "is a folder of one review file per audio file."),
    click.option("--top-k", type=click.IntRange(min=1), default=None,
                 help="Keep at most N tags per file (as in `calitag tag`); default: every tag."),
    click.option("--top-scores", type=click.IntRange(min=0), default=5, show_default=True,
                 help="Class scores kept per file besides those of its tags."),
    click.option("--all-scores", is_flag=True, help="Keep every class score."),
    click.option("--rows-per-part", type=click.IntRange(min=1), default=None,
                 help="Parquet: records per part file (default 1000; a kill redoes at most this many files)."),
    TOP_N_OPTION, MERGE_OPTION, MERGE_GAP_OPTION,
)
@model_options()
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-class thresholds fitted for this model; default: 0.5 for all.")
@click.option("--recursive", is_flag=True, help="Also process sub-folders.")
@click.option("--glob", "pattern", default=None, help="Only files whose name matches, e.g. '*.flac'.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes (0: all in the main process). yamnet, yamnet-int8 on the CPU: each worker "
                   "decodes and runs its own copy of the model on CPUs/workers threads; default one per CPU this "
                   "process may use. Other models: workers decode while the model runs here; default 1.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Windows per forward pass in the main process (YAMNet workers score one window at a time).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip files already in --out.")
@click.option("--force", is_flag=True, help="Replace an existing --out file (never one of the inputs).")
@click.option("--jit/--no-jit", "optimize", default=True, show_default=True,
              help="Build an inference copy of cnn14/cnn-transformer on the CPU once (batch norms folded, channels-last; a few seconds), or trace and freeze crnn-dcase2019, for faster batches.")
@SEGMENT_OPTION
@click.option("--probabilities", is_flag=True,
              help="Also record calibrated probabilities (JSON lines; needs a --thresholds file fitted with "
                   "--probabilities).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine's processes; ray: Ray Data, on a local instance or a cluster (--address).")
@option_group(
    "ray", _ray,
    click.option("--address", default=None,
                 help="Ray cluster to join (e.g. 'auto', 'HOST:6379'); default: start one here."),
    click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True, help="Ray scoring actors."),
    click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="GPUs per Ray actor (the model then runs on CUDA)."),
    click.option("--cpus-per-actor", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                 help="CPUs reserved per Ray actor."),
)
def batch_command(folder: str, out_path: str, records: RecordOptions, model: ModelChoice,
                  thresholds_path: Path | None, recursive: bool, pattern: str | None, workers: int | None,
                  batch_size: int, resume: bool, force: bool, optimize: bool, segment_s: float | None,
                  probabilities: bool, engine: str, ray: RayOptions) -> None:
    """Tag every audio file in SOURCE, writing one record per file to --out.

    SOURCE is a folder or a text file listing paths; with --engine ray also a URI (file://,
    s3://, gs://, ...). Records are written as files finish, so an interrupted run loses nothing
    and `--resume` skips the files already done. A file that fails gets a record with an `error`
    field; the exit code is 1 if any file failed.
    """
    from calitag.pipeline.batch import BatchSummary, run_batch

    if out_path == "-":
        raise click.UsageError("--out - : batch appends records to a results file it can resume, not to stdout; give a "
                               "file name (for tags on stdout: calitag tag DIR --format json)")
    if resume and force:
        raise click.UsageError("--resume continues --out and --force replaces it: give one of them")
    if engine == "local" and "://" in folder:
        raise click.UsageError("a URI SOURCE needs --engine ray")
    if segment_s is not None and records.fmt not in (None, "jsonl", *REVIEW_FORMATS):
        raise click.UsageError("--segment-s writes a list of segments per record: use --format jsonl")
    if records.fmt in REVIEW_FORMATS and segment_s is None:
        raise click.UsageError(f"--format {records.fmt} writes each file's timeline: give --segment-s")
    # Ray actors load the model on their own devices (CUDA with --gpus-per-actor): here it only gives its options.
    if engine == "ray":
        model = dataclasses.replace(model, device="cpu")
    tagger = model.load(thresholds=thresholds_path, batch_size=batch_size, optimize=optimize)
    records = _operating_points(records, tagger.thresholds, probabilities=probabilities)
    lines = _Lines(folder, out_path, resume=resume)
    try:
        with reported():
            results = run_batch(tagger, folder, out=out_path, engine=engine, segment_s=segment_s, resume=resume,
                                force=force, recursive=recursive, pattern=pattern,
                                workers=workers if engine == "local" else None, ray=ray if engine == "ray" else None,
                                records=records,
                                on_start=lines.start, on_result=lines.result, on_progress=lines.progress)
    finally:
        lines.close()
    summary = BatchSummary.of(results)
    click.echo(f"{summary.tagged} file(s) tagged, {summary.failed} failed -> {out_path}", err=True)
    if summary.recovered:
        click.echo(f"{len(summary.recovered)} file(s) were read again after a decoder process died; "
                   "their records are complete, but check the machine (memory?)", err=True)
    if not summary.clean:
        raise SystemExit(1)


def _operating_points(records: RecordOptions, thresholds: Any, *, probabilities: bool) -> RecordOptions:
    """The record options with the thresholds' uncertified classes and, when asked, their probability maps."""
    if probabilities and (thresholds is None or thresholds.probability_maps is None):
        raise click.UsageError("--probabilities needs a --thresholds file fitted with --probabilities auto|platt|isotonic")
    if probabilities and records.fmt not in (None, "jsonl"):
        raise click.UsageError("--probabilities adds a field to each record: use --format jsonl")
    uncertified = thresholds.uncertified if thresholds is not None else ()
    return dataclasses.replace(records, probabilities=thresholds if probabilities else None, uncertified=uncertified)


class _Lines:
    """The stderr lines of a run: entries left out, resume, progress, and a skip or warning line per file."""

    def __init__(self, source: str, out_path: str, *, resume: bool) -> None:
        self.source, self.out_path, self.resume = source, out_path, resume
        self.bar: Progress | None = None

    def start(self, plan: BatchPlan) -> None:
        echo_ignored(plan.ignored, self.source)
        for note in plan.notes:
            click.echo(f"warning: {note}", err=True)
        if self.resume and len(plan.todo) < len(plan.files):
            click.echo(f"resuming: {len(plan.files) - len(plan.todo)} of {len(plan.files)} file(s) already in "
                       f"{self.out_path}", err=True)
        self.bar = Progress(len(plan.todo), "tagging", audio_total_s=plan.audio_total_s)

    def result(self, result: FileResult) -> None:
        for note in result.notes:
            click.echo(f"warning: {result.path}: {note}", err=True)
        if result.error is not None:
            echo_skip(result.path, result.error)

    def progress(self, progress: BatchProgress) -> None:
        if self.bar is not None:
            self.bar(progress)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
