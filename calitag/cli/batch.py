"""`calitag batch`: tag every audio file of a source, one record per file, on this machine or with Ray."""

from __future__ import annotations

from pathlib import Path

import click

from calitag.cli._common import (
    CACHE_DIR_OPTION,
    CHECKPOINT_OPTION,
    DEVICE_OPTION,
    PRECISION_OPTION,
    RECORD_FORMATTERS,
    SEGMENT_OPTION,
    ModelChoice,
    Progress,
    available_models,
    echo_ignored,
    echo_skip,
)


@click.command("batch")
@click.argument("folder", metavar="SOURCE")
@click.option("--out", "out_path", required=True,
              help="Results: a file (jsonl, csv) appended as files finish, or a folder of Parquet part files.")
@click.option("--format", "fmt", type=click.Choice([*RECORD_FORMATTERS, "parquet"]), default=None,
              help="Default: parquet with --engine ray, else the format of the file being resumed, else from "
                   "the --out extension (.csv -> csv, else jsonl).")
@click.option("--model", "model_name", type=click.Choice(available_models()), default="yamnet", show_default=True)
@CHECKPOINT_OPTION
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
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Keep at most N tags per file (as in `calitag tag`); default: every tag.")
@click.option("--top-scores", type=click.IntRange(min=0), default=5, show_default=True,
              help="Class scores kept per file besides those of its tags.")
@click.option("--all-scores", is_flag=True, help="Keep every class score.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run: skip files already in --out.")
@click.option("--force", is_flag=True, help="Replace an existing --out file (never one of the inputs).")
@click.option("--jit/--no-jit", "optimize", default=True, show_default=True,
              help="Trace and freeze cnn14/cnn-transformer on the CPU once (a few seconds) for faster batches.")
@SEGMENT_OPTION
@DEVICE_OPTION
@CACHE_DIR_OPTION
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine's processes; ray: Ray Data, on a local instance or a cluster (--address).")
@click.option("--address", default=None, help="Ray cluster to join (e.g. 'auto', 'HOST:6379'); default: start one here.")
@click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True, help="Ray scoring actors.")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs per Ray actor (the model then runs on CUDA).")
@click.option("--cpus-per-actor", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="CPUs reserved per Ray actor.")
@click.option("--rows-per-part", type=click.IntRange(min=1), default=None,
              help="Parquet: records per part file (default 1000; a kill redoes at most this many files).")
@PRECISION_OPTION
def batch_command(folder: str, out_path: str, fmt: str | None, model_name: str, checkpoint: Path | None,
                  thresholds_path: Path | None, recursive: bool, pattern: str | None, workers: int | None,
                  batch_size: int, top_k: int | None, top_scores: int, all_scores: bool, resume: bool, force: bool,
                  optimize: bool, segment_s: float | None, device: str, cache_dir: Path | None, engine: str,
                  address: str | None, actors: int, gpus_per_actor: float, cpus_per_actor: float,
                  rows_per_part: int | None, precision: str) -> None:
    """Tag every audio file in SOURCE, writing one record per file to --out.

    SOURCE is a folder; with --engine ray also a text file listing paths, or a URI
    (file://, s3://, gs://, ...). Records are written as files finish, so an interrupted run
    loses nothing and `--resume` skips the files already done. A file that fails gets a record
    with an `error` field; the exit code is 1 if any file failed.
    """
    from calitag.errors import TaggingError
    from calitag.pipeline.batch import audio_seconds, run_batch, scan_audio_files
    from calitag.pipeline.jobs import batch_record
    from calitag.pipeline.records import ROWS_PER_PART, ParquetWriter, RecordWriter
    from calitag.models.checkpoints import file_digests
    from calitag.models.registry import get_spec

    if resume and force:
        raise click.UsageError("--resume continues --out and --force replaces it: give one of them")
    if fmt is None and engine == "ray":
        fmt = "parquet"
    if engine == "local" and "://" in folder:
        raise click.UsageError("a URI SOURCE needs --engine ray")
    class_names = get_spec(model_name).class_names
    if segment_s is not None and (fmt not in (None, "jsonl") or engine != "local"):
        raise click.UsageError("--segment-s writes a list of segments per record: use --format jsonl and --engine local")
    # Records name the thresholds file and the start of its sha256, so results stay traceable.
    thresholds_id = (f"{thresholds_path.name}:{file_digests(thresholds_path)[0][:12]}"
                     if thresholds_path is not None else None)
    tagger = thresholds = None
    try:
        if engine == "local":
            scan = scan_audio_files(Path(folder), recursive=recursive, pattern=pattern)
            files = scan.files
            echo_ignored(scan.ignored, folder)
        else:
            from calitag.pipeline.ray_engine import import_ray, list_sources

            import_ray()
            files = list_sources(folder, recursive=recursive, pattern=pattern)
        inputs = [*files, *(p for p in (thresholds_path, checkpoint) if p is not None)]
        if engine == "local":
            tagger = ModelChoice(model_name, checkpoint=checkpoint, device=device, cache_dir=cache_dir,
                                 precision=precision).load(thresholds=thresholds_path, batch_size=batch_size,
                                                           optimize=optimize)
        elif thresholds_path is not None:
            from calitag.thresholds import Thresholds

            thresholds = Thresholds.load(thresholds_path, expected_model=model_name, expected_classes=class_names)
        if fmt == "parquet":
            writer = ParquetWriter(out_path, class_names=class_names, model=model_name, all_scores=all_scores,
                                   resume=resume, rows_per_part=rows_per_part or ROWS_PER_PART)
        else:
            writer = RecordWriter(Path(out_path), fmt, resume=resume, force=force,
                                  inputs=[p for p in inputs if "://" not in str(p)])
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    if segment_s is not None and writer.format != "jsonl":
        writer.close()
        raise click.UsageError("--segment-s writes a list of segments per record: use a JSON lines --out")
    todo = [p for p in files if not writer.is_done(p)]
    if resume and len(todo) < len(files):
        click.echo(f"resuming: {len(files) - len(todo)} of {len(files)} file(s) already in {out_path}", err=True)
    if not files:
        writer.close()
        raise click.ClickException(f"no audio files in {folder}" + (f" matching {pattern}" if pattern else ""))
    recovered: list[str] = []

    def record(result) -> None:
        for note in result.notes:
            recovered.append(f"{result.path}: {note}")
            click.echo(f"warning: {result.path}: {note}", err=True)
        if result.error is not None:
            echo_skip(result.path, result.error)
        writer.write(batch_record(result, class_names=class_names, model=model_name, thresholds_id=thresholds_id,
                                  top_k=top_k, top_scores=None if all_scores else top_scores,
                                  segments=timelines.pop(result.path, None) if segment_s is not None else None))

    timelines: dict[str, list[dict]] = {}
    progress = Progress(len(todo), "tagging", audio_total_s=audio_seconds(todo) if engine == "local" else None)
    try:
        if engine == "ray":
            from calitag.pipeline.ray_engine import RayOptions, run_ray_batch

            options = RayOptions(address=address, actors=actors, gpus_per_actor=gpus_per_actor,
                                 cpus_per_actor=cpus_per_actor)
            results = run_ray_batch(model_name, [str(p) for p in todo], options=options, checkpoint=checkpoint,
                                    cache_dir=cache_dir, thresholds=thresholds, batch_size=batch_size,
                                    optimize=optimize, precision=precision, on_result=record, on_progress=progress)
        elif segment_s is None:
            results = run_batch(tagger, todo, workers=workers, on_result=record, on_progress=progress,
                                audio_total_s=progress.audio_total_s)
        else:
            results = _batch_segments(tagger, todo, segment_s=segment_s, top_k=top_scores, timelines=timelines,
                                      on_result=record, on_progress=progress)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    finally:
        progress.close()
        writer.close()
    failed = sum(r.error is not None for r in results)
    click.echo(f"{len(results) - failed} file(s) tagged, {failed} failed -> {out_path}", err=True)
    if recovered:
        click.echo(f"{len(recovered)} file(s) were read again after a decoder process died; "
                   "their records are complete, but check the machine (memory?)", err=True)
    if failed or recovered:
        raise SystemExit(1)


def _batch_segments(tagger, paths, *, segment_s: float, top_k: int, timelines: dict, on_result, on_progress) -> list:
    """`batch --segment-s`: files one after another through Tagger.segment_scores; the file's scores
    are the maximum over its segments; each file's segments are left in ``timelines`` for its record."""
    import time

    import numpy as np

    from calitag.errors import TaggingError
    from calitag.pipeline.batch import BatchProgress, FileResult
    from calitag.pipeline.types import Scores

    results, failed, start = [], 0, time.perf_counter()
    for path in map(str, paths):
        try:
            timeline = tagger.segment_scores(path, segment_s=segment_s)
        except TaggingError as err:
            result = FileResult(path=path, duration_s=None, scores=None, error=str(err))
            failed += 1
        else:
            rows = Scores(probs=timeline.probs, class_names=timeline.class_names, model=timeline.model,
                          sources=(path,) * len(timeline.probs))
            segment_tags = tagger.tags_from_scores(rows)
            timelines[path] = [
                {"start_s": round(float(s), 3), "end_s": round(float(e), 3),
                 "tags": [label for label, _ in t.labels],
                 "scores": {tagger.class_names[i]: round(float(row[i]), 6) for i in np.argsort(-row)[:top_k]}}
                for s, e, t, row in zip(timeline.starts_s, timeline.ends_s, segment_tags, timeline.probs)
            ]
            clip = timeline.probs.max(axis=0)
            tags = tagger.tags_from_scores(Scores(probs=clip[None], class_names=timeline.class_names,
                                                  model=timeline.model, sources=(path,)))[0].labels
            result = FileResult(path=path, duration_s=float(timeline.ends_s[-1]), scores=clip, tags=tags)
        results.append(result)
        on_result(result)
        on_progress(BatchProgress(done=len(results), total=len(paths), failed=failed,
                                  elapsed_s=time.perf_counter() - start))
    return results

