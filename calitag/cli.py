"""The calitag command line: a thin click layer that formats results and errors.

This is the only module that prints. Library code raises TaggingError subclasses; each
command turns them into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import click

from calitag._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="calitag")
def main() -> None:
    """Tag audio recordings with calibrated per-class decisions."""
    _tolerate_undecodable_names()


def _tolerate_undecodable_names() -> None:
    """Print file names that are not valid UTF-8 (lone surrogates in Python) as escapes instead of crashing."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


# --- shared helpers and options -------------------------------------------------------------
# Heavy imports (torch, the models) happen inside the commands so `calitag --help` stays fast.

from pathlib import Path as _Path  # noqa: E402

# Choice lists come from the library (modules that import no numpy or torch).
from calitag.models.registry import available_models as _available_models  # noqa: E402
from calitag.pipeline.records import FORMATTERS as _RECORD_FORMATTERS  # noqa: E402
from calitag.thresholds.choices import METHODS, OBJECTIVES, SGL_ENGINES  # noqa: E402

_CLI_OBJECTIVES = [name.replace("_", "-") for name in OBJECTIVES]

_CACHE_DIR_OPTION = click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=_Path), default=None,
    help="Checkpoint cache (default: $CALITAG_CACHE, else $XDG_CACHE_HOME/calitag, else ~/.cache/calitag).",
)
_CHECKPOINT_OPTION = click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=_Path),
    help="Weights file to use instead of the cached published checkpoint.")
_SEGMENT_OPTION = click.option(
    "--segment-s", type=click.FloatRange(min=0, min_open=True, max=1e6), default=None,
    help="Also give tags per consecutive segment of this many seconds (a timeline of long files).")

_FORCE_OPTION = click.option(
    "--force", is_flag=True,
    help="Replace an existing --out file even if it is not this command's kind of output (never an input).")


def _is_thresholds_file(path: _Path) -> bool:
    from calitag.thresholds.io import is_thresholds_file

    return is_thresholds_file(path)


def _check_out(path: _Path, *, inputs, kind: str, is_kind=None, force: bool = False) -> None:
    """The overwrite rule of every writing command (calitag._fileio.check_output), as a CLI error."""
    from calitag._fileio import check_output
    from calitag.errors import TaggingError

    try:
        check_output(path, inputs=[p for p in inputs if p is not None], kind=kind, is_kind=is_kind, force=force)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err


_DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="auto: CUDA when available, else CPU.")
_PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="fp32", show_default=True,
    help="bf16: the torch taggers' convolutions in bfloat16 (CPUs with AVX512-BF16/AMX, or CUDA); "
         "auto: bf16 where native and faster, else fp32.")


def _download_progress(desc: str):  # -> (callback, close)
    """A tqdm bar on stderr driven by ``on_progress(done, total)`` callbacks (tqdm imported on the first one)."""
    import sys

    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            from tqdm import tqdm

            state["bar"] = tqdm(total=total or None, unit="B", unit_scale=True, desc=desc, file=sys.stderr)
        state["bar"].update(done - state["bar"].n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return update, close


def _expand_inputs(paths: tuple[_Path, ...]) -> list[_Path]:
    """Files as given; a folder becomes the audio files directly inside it, sorted.

    A folder with no audio file is kept as it is, so that it is reported as a failed input rather than
    skipped in silence; the other entries a folder holds are counted on stderr.
    """
    from calitag.pipeline.batch import scan_audio_files

    expanded: list[_Path] = []
    for path in paths:
        if path.is_dir():
            scan = scan_audio_files(path)
            expanded.extend(scan.files or [path])
            _echo_ignored(scan.ignored, path)
        else:
            expanded.append(path)
    return expanded


def _echo_ignored(ignored: list, folder: _Path) -> None:
    """One stderr line per reason for the entries of ``folder`` that were left out, with a count and an example."""
    from collections import Counter

    counts = Counter(reason for _, reason in ignored)
    for reason, count in sorted(counts.items()):
        example = next(p for p, r in ignored if r == reason)
        click.echo(f"ignored {count} entr{'y' if count == 1 else 'ies'} of {folder}: {reason}, e.g. {example.name}",
                   err=True)


def _load_tagger(model_name: str, *, device: str, checkpoint, thresholds=None, cache_dir=None, batch_size: int = 8,
                 optimize: bool = False, precision: str = "fp32"):
    from calitag.errors import TaggingError
    from calitag.pipeline.tagger import Tagger

    update, close = _download_progress(f"fetching {model_name}")
    try:
        return Tagger.load(model_name, device=device, checkpoint=checkpoint, thresholds=thresholds,
                           cache_dir=cache_dir, batch_size=batch_size, optimize=optimize, precision=precision,
                           on_progress=update)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    finally:
        close()


@main.command("tag")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=_Path))
@click.option("--model", "model_name", type=click.Choice(_available_models()), default="yamnet", show_default=True,
              help="Registered model to tag with.")
@_CHECKPOINT_OPTION
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False, path_type=_Path),
              help="Per-class thresholds fitted for this model (calitag calibrate); default: 0.5 for all.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Show at most N tags per file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@_DEVICE_OPTION
@click.option("--aggregate", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How window scores of long files become one clip score.")
@_SEGMENT_OPTION
@_CACHE_DIR_OPTION
@_PRECISION_OPTION
def tag_command(
    files: tuple[_Path, ...], model_name: str, checkpoint: _Path | None, thresholds_path: _Path | None,
    top_k: int | None, fmt: str, device: str, aggregate: str, segment_s: float | None, cache_dir: _Path | None,
    precision: str,
) -> None:
    """Tag audio FILES (or the audio files in a folder) and print their tags with scores.

    A file that cannot be read is reported as `skip PATH: REASON` on stderr and the others are
    still tagged; the exit code is 1 if any file failed. With --segment-s, each file gets one
    row of tags per segment (start and end in seconds): a timeline of a long recording.
    """
    import csv
    import json
    import sys

    from calitag.errors import TaggingError

    tagger = _load_tagger(model_name, device=device, checkpoint=checkpoint, thresholds=thresholds_path,
                          cache_dir=cache_dir, precision=precision)
    paths = _expand_inputs(files)
    if not paths:
        raise click.ClickException(f"no audio files in {', '.join(map(str, files))}")
    if segment_s is not None:
        _tag_segments(tagger, paths, segment_s=segment_s, top_k=top_k, fmt=fmt, aggregate=aggregate)
        return
    out = sys.stdout  # reconfigured by main() to escape undecodable names
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writerow(["path", "label", "score"])
    records = []
    failed = 0
    for path in paths:
        try:
            (tags,) = tagger.tag([path], top_k=top_k, aggregate=aggregate)
        except TaggingError as err:
            failed += 1
            reason = str(err).removeprefix(f"{path}: ")  # library messages start with the file
            click.echo(f"skip {path}: {reason}", err=True)
            records.append({"path": str(path), "error": reason})
            continue
        if fmt == "table":
            shown = ", ".join(f"{label} {score:.3f}" for label, score in tags.labels) or "(no tag above threshold)"
            click.echo(f"{path}: {shown}")
        elif writer:
            for label, score in tags.labels or (("", float("nan")),):
                writer.writerow([str(path), label, "" if label == "" else f"{score:.4f}"])
        records.append({"path": str(path), "model": tags.model,
                        "tags": [{"label": label, "score": round(score, 6)} for label, score in tags.labels]})
    if fmt == "json":
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
    if failed:
        click.echo(f"{failed} of {len(paths)} file(s) failed", err=True)
        raise SystemExit(1)


def _segment_tags(tagger, path: _Path, *, segment_s: float, top_k: int | None, aggregate: str) -> list[dict]:
    """One {start_s, end_s, tags} dict per segment of ``path`` (raises TaggingError)."""
    from calitag.pipeline.types import Scores

    timeline = tagger.segment_scores(path, segment_s=segment_s, aggregate=aggregate)
    scores = Scores(probs=timeline.probs, class_names=timeline.class_names, model=timeline.model,
                    sources=(timeline.source,) * len(timeline.probs))
    tags = tagger.tags_from_scores(scores, top_k=top_k)
    return [{"start_s": round(float(start), 3), "end_s": round(float(end), 3),
             "tags": [{"label": label, "score": round(score, 6)} for label, score in row.labels]}
            for start, end, row in zip(timeline.starts_s, timeline.ends_s, tags)]


def _tag_segments(tagger, paths: list[_Path], *, segment_s: float, top_k: int | None, fmt: str,
                  aggregate: str) -> None:
    """`calitag tag --segment-s`: one row of tags per segment of each file."""
    import csv
    import json
    import sys

    from calitag.errors import TaggingError

    writer = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writerow(["path", "start_s", "end_s", "label", "score"])
    records, failed = [], 0
    for path in paths:
        try:
            segments = _segment_tags(tagger, path, segment_s=segment_s, top_k=top_k, aggregate=aggregate)
        except TaggingError as err:
            failed += 1
            reason = str(err).removeprefix(f"{path}: ")
            click.echo(f"skip {path}: {reason}", err=True)
            records.append({"path": str(path), "error": reason})
            continue
        records.append({"path": str(path), "model": tagger.name, "segment_s": segment_s, "segments": segments})
        if fmt == "table":
            click.echo(f"{path}:")
            for seg in segments:
                shown = ", ".join(f"{t['label']} {t['score']:.3f}" for t in seg["tags"]) or "(no tag above threshold)"
                click.echo(f"  {seg['start_s']:8.2f}-{seg['end_s']:8.2f} s: {shown}")
        elif writer:
            for seg in segments:
                for t in seg["tags"] or ({"label": "", "score": None},):
                    writer.writerow([str(path), f"{seg['start_s']:.3f}", f"{seg['end_s']:.3f}", t["label"],
                                     "" if t["score"] is None else f"{t['score']:.4f}"])
    if fmt == "json":
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
    if failed:
        click.echo(f"{failed} of {len(paths)} file(s) failed", err=True)
        raise SystemExit(1)


# --- models ----------------------------------------------------------------------------


@main.group("models")
def models_group() -> None:
    """List the registered models; fetch or import their checkpoints."""


@models_group.command("list")
@_CACHE_DIR_OPTION
def models_list(cache_dir: _Path | None) -> None:
    """Show each model: classes, sample rate, and whether its weights are in the cache."""
    from calitag.models import checkpoints
    from calitag.models.registry import get_spec

    click.echo(f"cache: {checkpoints.cache_dir(cache_dir)}")
    rows = [("name", "classes", "rate", "weights", "description")]
    for name in _available_models():
        spec = get_spec(name)
        rows.append((name, str(len(spec.class_names)), f"{spec.frontend.sample_rate}",
                     checkpoints.status(name, cache_dir=cache_dir), spec.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])


@models_group.command("classes")
@click.argument("name", type=click.Choice(_available_models()))
@click.option("--grep", "pattern", default=None, help="Only class names containing this text (case-insensitive).")
def models_classes(name: str, pattern: str | None) -> None:
    """List NAME's class names, one per line with its output index (what labels and thresholds use)."""
    from calitag.models.registry import get_spec

    for index, label in enumerate(get_spec(name).class_names):
        if pattern is None or pattern.lower() in label.lower():
            click.echo(f"{index}\t{label}")


@models_group.command("fetch")
@click.argument("name", type=click.Choice(_available_models()))
@_CACHE_DIR_OPTION
def models_fetch(name: str, cache_dir: _Path | None) -> None:
    """Download NAME's published checkpoint into the cache and verify its sha256."""
    from calitag.errors import TaggingError
    from calitag.models.checkpoints import fetch

    update, close = _download_progress(f"fetching {name}")
    try:
        path = fetch(name, cache_dir=cache_dir, on_progress=update)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    finally:
        close()
    click.echo(f"{name}: {path}")


@models_group.command("import")
@click.argument("name", type=click.Choice(_available_models()))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=_Path))
@_CACHE_DIR_OPTION
def models_import(name: str, file: _Path, cache_dir: _Path | None) -> None:
    """Verify FILE as NAME's checkpoint and copy it into the cache (FILE is left as it is)."""
    from calitag.errors import TaggingError
    from calitag.models.checkpoints import import_checkpoint

    try:
        path = import_checkpoint(name, file, cache_dir=cache_dir)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{name}: {path}")


# --- thresholds ------------------------------------------------------------------------
# Score files in, thresholds file / metrics out. Bad input -> `error: MESSAGE` on stderr, exit 1.

_SCORES_ARGUMENT = click.argument("scores_path", metavar="SCORES", type=click.Path(dir_okay=False, path_type=_Path))
_LABELS_OPTION = click.option(
    "--labels", "labels_path", type=click.Path(dir_okay=False, path_type=_Path), default=None,
    help="0/1 label matrix (.npy/.csv) for a .npy/.csv SCORES file (a .npz carries its own).")
_LOGITS_OPTION = click.option("--logits", is_flag=True, help="SCORES holds logits: apply a sigmoid first.")
_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")


def _thresholds_fail(err: Exception) -> None:
    click.echo(f"error: {err}", err=True)
    raise SystemExit(1)


def _echo_warnings(caught: list) -> None:
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)


def _read_score_set(scores_path: _Path, labels_path: _Path | None, logits: bool):
    from calitag.thresholds.scorefiles import read_scores

    return read_scores(scores_path, labels=labels_path, logits=logits)


@main.group("thresholds")
def thresholds_group() -> None:
    """Fit per-class decision thresholds on score files and evaluate them."""


@thresholds_group.command("fit")
@_SCORES_ARGUMENT
@_LABELS_OPTION
@click.option("--method", type=click.Choice(METHODS), default="sgl",
              show_default=True, help="Solver: SGL-Thresh, one global threshold, dichoThresh, numThresh, exact search.")
@click.option("--objective", type=click.Choice(_CLI_OBJECTIVES), default="micro-f1", show_default=True)
@click.option("--beta", type=float, default=None, help="Recall weight of the *-fbeta objectives (default 1).")
@click.option("--init", type=click.FloatRange(0, 1), default=None,
              help="Start threshold (the threshold itself for --method default; 0.5 there). Without it the "
                   "solvers start each class at its label-rate threshold (0.3 reproduces the paper's DCASE2017 run).")
@click.option("--lr", type=float, default=None, help="Adam step size (sgl, numeric; default 0.01).")
@click.option("--epochs", type=int, default=None, help="Full-batch epochs (sgl; default 100).")
@click.option("--slope", type=float, default=None, help="Surrogate sigmoid slope a (sgl; default 50).")
@click.option("--engine", type=click.Choice(SGL_ENGINES), default=None,
              help="sgl engine: sorted-score kernel tables (fast) or plain autograd over the matrix.")
@click.option("--seed", type=int, default=None, help="Random seed (sgl, heuristic; default 0).")
@click.option("--max-seconds", type=float, default=None, help="Time bound of the numeric solver.")
@click.option("--guard-folds", type=click.IntRange(min=2), default=None,
              help="Keep a class's fit only when it beats 0.5 under K-fold CV inside the clips (default: no guard).")
@click.option("--model", "model_name", default=None, help="Model the scores came from (recorded in the file).")
@_LOGITS_OPTION
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=_Path), default=None,
              help="Thresholds file to write (JSON). Without it nothing is written.")
@_FORCE_OPTION
@_JSON_OPTION
def thresholds_fit(scores_path: _Path, labels_path: _Path | None, method: str, objective: str, beta: float | None,
                   init: float | None, lr: float | None, epochs: int | None, slope: float | None, engine: str | None,
                   seed: int | None, max_seconds: float | None, guard_folds: int | None, model_name: str | None,
                   logits: bool, out_path: _Path | None, force: bool, as_json: bool) -> None:
    """Fit one threshold per class on the validation split of SCORES.

    SCORES is an .npz with val_scores, val_labels and optionally eval_scores, eval_labels and
    classes, or a .npy/.csv score matrix with --labels. The eval split, when present, is scored too.
    """
    import json
    import time
    import warnings

    from calitag.errors import TaggingError
    from calitag.thresholds import evaluate, fit

    given = {"init": init, "lr": lr, "epochs": epochs, "slope": slope, "engine": engine, "seed": seed,
             "max_seconds": max_seconds}
    options = {key: value for key, value in given.items() if value is not None}
    if out_path is not None:
        try:
            _check_out(out_path, inputs=(scores_path, labels_path), kind="thresholds file",
                       is_kind=_is_thresholds_file, force=force)
        except click.ClickException as err:
            _thresholds_fail(err.message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = _read_score_set(scores_path, labels_path, logits)
            if data.val_labels is None:
                raise click.UsageError(f"{scores_path} holds scores only: give their 0/1 labels with --labels")
            start = time.perf_counter()
            thresholds = fit(data.val_scores, data.val_labels, method=method, objective=objective, beta=beta,
                             class_names=data.names(), model=model_name, guard_folds=guard_folds, **options)
            seconds = time.perf_counter() - start
            evaluated = (evaluate(data.eval_scores, data.eval_labels, thresholds)
                         if data.eval_scores is not None else None)
            if out_path is not None:
                thresholds.save(out_path)
        except TaggingError as err:
            _echo_warnings(caught)
            _thresholds_fail(err)
    _echo_warnings(caught)
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
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{method} ({thresholds.objective}) on {summary['n_val_clips']} clips x {summary['n_classes']} "
               f"classes in {seconds:.3f} s")
    click.echo(f"val  micro-F1 {100 * summary['val_micro_f1']:.1f}  macro-F1 {100 * summary['val_macro_f1']:.1f}")
    if evaluated:
        click.echo(f"eval micro-F1 {100 * evaluated.micro_f1:.1f}  macro-F1 {100 * evaluated.macro_f1:.1f}")
    click.echo(f"wrote {out_path}" if out_path is not None else "no --out given: nothing written")


@thresholds_group.command("evaluate")
@_SCORES_ARGUMENT
@click.option("--thresholds", "thresholds_path", required=True, type=click.Path(dir_okay=False, path_type=_Path),
              help="Thresholds file from `calitag thresholds fit` (or `calitag calibrate`).")
@_LABELS_OPTION
@click.option("--split", type=click.Choice(["auto", "eval", "val"]), default="auto", show_default=True,
              help="auto: the eval split when SCORES has one, else val.")
@_LOGITS_OPTION
@_JSON_OPTION
def thresholds_evaluate(scores_path: _Path, thresholds_path: _Path, labels_path: _Path | None, split: str,
                        logits: bool, as_json: bool) -> None:
    """Per-class and micro/macro precision, recall and F1 of a thresholds file on SCORES."""
    import json
    import warnings

    from calitag.errors import TaggingError
    from calitag.thresholds import Thresholds, evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = _read_score_set(scores_path, labels_path, logits)
            use, scores, labels = data.split(split)
            if labels is None:
                raise click.UsageError(f"{scores_path} holds scores only: give their 0/1 labels with --labels")
            thresholds = Thresholds.load(thresholds_path, expected_classes=data.class_names)
            if thresholds.n_classes != scores.shape[1]:
                from calitag.errors import ThresholdsMismatchError

                raise ThresholdsMismatchError(
                    f"{thresholds_path} holds {thresholds.n_classes} classes, {scores_path} has {scores.shape[1]}: "
                    "the file was made for another class list")
            report = evaluate(scores, labels, thresholds, source=str(scores_path))
        except TaggingError as err:
            _echo_warnings(caught)
            _thresholds_fail(err)
    _echo_warnings(caught)
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
@click.argument("thresholds_path", metavar="TH.json", type=click.Path(dir_okay=False, path_type=_Path))
@_SCORES_ARGUMENT
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=_Path), default=None,
              help="Labels of SCORES: a 0/1 matrix (.npy/.csv) for a score matrix, or the clip label file "
                   "(filename,labels) for a score cache or batch output (default: the one the thresholds file records).")
@click.option("--folder", type=click.Path(file_okay=False, path_type=_Path), default=None,
              help="Folder the label file's names are relative to (default: the one the thresholds file records).")
@click.option("--split", type=click.Choice(["auto", "eval", "val"]), default="auto", show_default=True,
              help="Part of an .npz score file: auto takes eval when it has one.")
@click.option("--default", "default_threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The default threshold the calibration is compared with.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=_Path),
              help="HTML file to write.")
@click.option("--force", is_flag=True, help="Replace --out even when it is not an earlier calitag report.")
def thresholds_report(thresholds_path: _Path, scores_path: _Path, labels_path: _Path | None, folder: _Path | None,
                      split: str, default_threshold: float, out_path: _Path, force: bool) -> None:
    """Write an HTML report of TH.json on the clips of SCORES: summary, sortable table, figures per class.

    SCORES: a score file as `thresholds fit` reads it, the score cache `calibrate` keeps beside its
    thresholds file (*.scores.npz, with --folder), or `calitag batch --all-scores` output (JSONL/CSV).
    """
    from calitag.errors import TaggingError
    from calitag.pipeline.report import report_from_files
    from calitag.thresholds.report import check_report_target, write_report

    try:
        check_report_target(out_path, force=force)
        text = report_from_files(thresholds_path, scores_path, labels=labels_path, folder=folder, split=split,
                                 default=default_threshold)
        write_report(out_path, text, force=force)
    except TaggingError as err:
        _thresholds_fail(err)
    click.echo(f"wrote {out_path}")


# --- calibrate -------------------------------------------------------------------------


class _Progress:
    """Batch progress on stderr: a tqdm bar on a terminal, a plain line every few seconds otherwise.

    With ``audio_total_s`` it counts seconds of audio, so long files move the bar as they are scored;
    otherwise files.
    """

    def __init__(self, total: int, desc: str, *, every_s: float = 10.0, audio_total_s: float | None = None) -> None:
        import sys

        self.total = total
        self.audio_total_s = audio_total_s if audio_total_s else None
        self.every_s = every_s
        self.last = 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            if self.audio_total_s is not None:
                self.bar = tqdm(total=round(self.audio_total_s, 1), desc=desc, unit="s", unit_scale=True,
                                file=sys.stderr)
            else:
                self.bar = tqdm(total=total, desc=desc, unit="file", file=sys.stderr)

    def __call__(self, progress) -> None:
        by_audio = self.audio_total_s is not None
        if self.bar is not None:
            self.bar.update(round(progress.audio_s if by_audio else progress.done, 1) - self.bar.n)
            self.bar.set_postfix(files=f"{progress.done}/{progress.total}", failed=progress.failed)
            return
        if progress.elapsed_s - self.last >= self.every_s or progress.done == progress.total:
            if progress.done == progress.total and self.last < 0:
                return  # the final line is printed once
            self.last = progress.elapsed_s if progress.done < progress.total else -1.0
            elapsed = max(progress.elapsed_s, 1e-9)
            if by_audio:
                rate = progress.audio_s / elapsed
                left = max(self.audio_total_s - progress.audio_s, 0.0)
                eta = left / rate if rate > 0 else float("nan")
                click.echo(f"{progress.audio_s:.0f}/{self.audio_total_s:.0f} s of audio ({rate:.1f}x real time), "
                           f"{progress.done}/{progress.total} files, ETA {eta:.0f} s, {progress.failed} failed",
                           err=True)
            else:
                rate = progress.done / elapsed
                eta = (progress.total - progress.done) / rate if rate > 0 else float("nan")
                click.echo(f"{progress.done}/{progress.total} files, {rate:.2f} files/s, ETA {eta:.0f} s, "
                           f"{progress.failed} failed", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@main.command("calibrate")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=_Path))
@click.option("--scores", "scores_path", default=None,
              help="Fit from a `calitag batch --all-scores` output (JSONL file or Parquet folder) instead of FOLDER.")
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=_Path),
              help="CSV/TSV `filename,labels` (labels separated by ';') or DCASE weak labels `filename<TAB>event_labels`.")
@click.option("--model", "model_name", type=click.Choice(_available_models()), default="yamnet", show_default=True)
@_CHECKPOINT_OPTION
@click.option("--method", type=click.Choice(METHODS), default="sgl", show_default=True, help="Threshold solver.")
@click.option("--objective", type=click.Choice([o for o in _CLI_OBJECTIVES if o.endswith("-f1")]), default="micro-f1",
              show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Share of the clips held out to measure the thresholds (stratified).")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="K-fold cross-validation for the held-out figures instead of one split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skip-missing", is_flag=True, help="Ignore listed files that are absent and labels the model lacks.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes that score the folder, as in `calitag batch` (yamnet: one per CPU this "
                   "process may use; other models: 1).")
@click.option("--guard/--no-guard", default=True, show_default=True,
              help="Keep a class's fit only when it beats 0.5 under 3-fold CV inside the fitting clips.")
@_DEVICE_OPTION
@_CACHE_DIR_OPTION
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=_Path),
              help="Thresholds file to write (its score cache goes beside it).")
@_PRECISION_OPTION
@_FORCE_OPTION
@_JSON_OPTION
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=_Path), default=None,
              help="Also write an HTML report (figures per class) of the held-out clips; replaces only an "
                   "earlier calitag report.")
def calibrate_command(folder: _Path | None, scores_path: str | None, labels_path: _Path, model_name: str,
                      checkpoint: _Path | None, method: str, objective: str, val_fraction: float, folds: int | None,
                      seed: int, skip_missing: bool, workers: int | None, guard: bool, device: str, cache_dir: _Path | None,
                      out_path: _Path, as_json: bool, report_path: _Path | None,
                      precision: str, force: bool) -> None:
    """Fit per-class thresholds for a model on the labeled audio files in FOLDER.

    Every file is scored once (cached beside --out), the clips are split into a fitting part and a
    held-out part, and the thresholds fitted on the first are measured on the second against the
    default threshold 0.5, with bootstrap 95% intervals and the paired gain. A class keeps its
    fitted threshold only when it beats 0.5 under 3-fold cross-validation inside the fitting
    clips. Classes absent from the labels keep 0.5.
    With --scores, the clip scores come from a batch output of the same model instead.
    """
    from calitag.errors import TaggingError
    from calitag.pipeline.batch import find_audio_files
    from calitag.pipeline.calibrate import ScoredFiles, cache_path_for, calibrate
    from calitag.pipeline.labels import read_clip_labels
    from calitag.thresholds.report import check_report_target

    if (folder is None) == (scores_path is None):
        raise click.UsageError("give either FOLDER or --scores")
    # Before any scoring: the thresholds file and its score cache beside it may replace neither an input
    # nor a file of another kind.
    inputs = [labels_path, checkpoint, *(find_audio_files(folder, recursive=True) if folder is not None else ()),
              *((_Path(scores_path),) if scores_path is not None else ())]
    _check_out(out_path, inputs=inputs, kind="thresholds file", is_kind=_is_thresholds_file, force=force)
    if scores_path is None:
        _check_out(cache_path_for(out_path, model_name), inputs=inputs, kind="score cache (.npz)",
                   is_kind=lambda p: p.read_bytes()[:4] == b"PK\x03\x04", force=force)
    if report_path is not None:
        try:
            check_report_target(report_path)  # before the work, not after it
        except TaggingError as err:
            raise click.ClickException(str(err)) from err
    tagger = _load_tagger(model_name, device=device, checkpoint=checkpoint, cache_dir=cache_dir, precision=precision)
    progress = scored = None
    try:
        if scores_path is not None:
            from calitag.pipeline.records import read_all_scores

            paths, matrix, errors = read_all_scores(scores_path, model=model_name, class_names=tagger.class_names)
            scored = ScoredFiles(paths=tuple(paths), scores=matrix, errors=errors, source=scores_path)
            folder = _Path(scores_path)
        labels = read_clip_labels(labels_path, class_names=tagger.class_names)
        progress = _Progress(len(labels.labels), "scoring")
        result = calibrate(tagger, folder, labels, out=out_path, method=method, objective=objective.replace("-", "_"),
                           val_fraction=val_fraction, folds=folds, seed=seed, skip_missing=skip_missing,
                           workers=workers, guard=guard, on_progress=progress, scored=scored)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    finally:
        if progress is not None:
            progress.close()
    for failure in result.failed:
        click.echo(f"skip {failure.path}: {failure.error}", err=True)
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
    if report_path is not None:
        from calitag.pipeline.report import calibration_report
        from calitag.thresholds.report import write_report

        try:
            write_report(report_path, calibration_report(result, meta={"labels": str(labels_path)}))
        except TaggingError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"wrote {report_path}", err=True)
    if as_json:
        import json

        click.echo(json.dumps({**result.to_dict(), "out": str(out_path)}))
        return
    held = f"{result.folds}-fold cross-validation" if result.folds else f"held-out {result.n_held_out} clips"
    click.echo(f"{model_name}: {len(result.classes)} labeled classes, fitted on {result.n_fit} clips, {held}")
    header = f"{'class':<32} {'n':>4} | {'thr':>5} {'P':>5} {'R':>5} {'F1':>5} | {'thr':>5} {'P':>5} {'R':>5} {'F1':>5}"
    click.echo(f"{'':<37} | {'default':^23} | {'calibrated':^23}")
    click.echo(header)
    values = dict(zip(result.thresholds.class_names, result.thresholds.values))
    kept = dict(zip(result.thresholds.class_names, (result.thresholds.per_class or {}).get("kept", ())))
    for i, name in enumerate(result.classes):
        d, c = result.default, result.calibrated
        mark = "*" if kept.get(name) == "default" else " "
        click.echo(f"{name[:32]:<32} {int(d.support[i]):>4} | {0.5:>5.2f} {d.precision[i]:>5.2f} {d.recall[i]:>5.2f} "
                   f"{d.f1[i]:>5.2f} | {values[name]:>5.3f}{mark}{c.precision[i]:>5.2f} {c.recall[i]:>5.2f} "
                   f"{c.f1[i]:>5.2f}")
    if any(kept.get(name) == "default" for name in result.classes):
        click.echo("* the default 0.5 was kept: the fit did not beat it under cross-validation")
    for average in ("micro", "macro"):
        gain = result.gains[f"{average}_f1"]
        d, c = gain.default, gain.calibrated
        click.echo(f"{average}-F1  default {d.value:.3f} [{d.low:.3f}, {d.high:.3f}]   "
                   f"calibrated {c.value:.3f} [{c.low:.3f}, {c.high:.3f}]   (bootstrap 95%)")
    for average in ("micro", "macro"):
        click.echo(f"gain: {result.gains[f'{average}_f1'].verdict()} (paired bootstrap 95%)")
    click.echo(f"wrote {out_path}")


# --- batch -----------------------------------------------------------------------------


@main.command("batch")
@click.argument("folder", metavar="SOURCE")
@click.option("--out", "out_path", required=True,
              help="Results: a file (jsonl, csv) appended as files finish, or a folder of Parquet part files.")
@click.option("--format", "fmt", type=click.Choice([*_RECORD_FORMATTERS, "parquet"]), default=None,
              help="Default: parquet with --engine ray, else the format of the file being resumed, else from "
                   "the --out extension (.csv -> csv, else jsonl).")
@click.option("--model", "model_name", type=click.Choice(_available_models()), default="yamnet", show_default=True)
@_CHECKPOINT_OPTION
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False, path_type=_Path),
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
@_SEGMENT_OPTION
@_DEVICE_OPTION
@_CACHE_DIR_OPTION
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
@_PRECISION_OPTION
def batch_command(folder: str, out_path: str, fmt: str | None, model_name: str, checkpoint: _Path | None,
                  thresholds_path: _Path | None, recursive: bool, pattern: str | None, workers: int | None,
                  batch_size: int, top_k: int | None, top_scores: int, all_scores: bool, resume: bool, force: bool,
                  optimize: bool, segment_s: float | None, device: str, cache_dir: _Path | None, engine: str,
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
            scan = scan_audio_files(_Path(folder), recursive=recursive, pattern=pattern)
            files = scan.files
            _echo_ignored(scan.ignored, folder)
        else:
            from calitag.pipeline.ray_engine import import_ray, list_sources

            import_ray()
            files = list_sources(folder, recursive=recursive, pattern=pattern)
        inputs = [*files, *(p for p in (thresholds_path, checkpoint) if p is not None)]
        if engine == "local":
            tagger = _load_tagger(model_name, device=device, checkpoint=checkpoint, thresholds=thresholds_path,
                                  cache_dir=cache_dir, batch_size=batch_size, optimize=optimize, precision=precision)
        elif thresholds_path is not None:
            from calitag.thresholds import Thresholds

            thresholds = Thresholds.load(thresholds_path, expected_model=model_name, expected_classes=class_names)
        if fmt == "parquet":
            writer = ParquetWriter(out_path, class_names=class_names, model=model_name, all_scores=all_scores,
                                   resume=resume, rows_per_part=rows_per_part or ROWS_PER_PART)
        else:
            writer = RecordWriter(_Path(out_path), fmt, resume=resume, force=force,
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
            click.echo(f"skip {result.path}: {result.error.removeprefix(result.path + ': ')}", err=True)
        writer.write(batch_record(result, class_names=class_names, model=model_name, thresholds_id=thresholds_id,
                                  top_k=top_k, top_scores=None if all_scores else top_scores,
                                  segments=timelines.pop(result.path, None) if segment_s is not None else None))

    timelines: dict[str, list[dict]] = {}
    progress = _Progress(len(todo), "tagging", audio_total_s=audio_seconds(todo) if engine == "local" else None)
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


# --- detect, calibrate-events ----------------------------------------------------------
# Sound event detection: frame scores -> per-class post-processing -> DCASE event TSV.


def _frame_level_models() -> list[str]:
    from calitag.models.registry import MODELS

    return sorted(name for name, spec in MODELS.items() if spec.frame_level)


_SED_MODEL_OPTION = click.option(
    "--model", "model_name", type=click.Choice(_frame_level_models()), default="crnn-dcase2019", show_default=True,
    help="A frame-level model.")


@main.command("detect")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=_Path))
@_SED_MODEL_OPTION
@_CHECKPOINT_OPTION
@click.option("--postprocess", "postprocess_path", type=click.Path(exists=True, dir_okay=False, path_type=_Path),
              help="Thresholds file with an events section (calitag calibrate-events), or the DCASE2019 CRNN "
                   "authors' parameters file; default: threshold 0.5, no smoothing.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=_Path),
              help="Events TSV to write (DCASE layout: filename, onset, offset, event_label). An existing file "
                   "is replaced only with --force.")
@_FORCE_OPTION
@_DEVICE_OPTION
@_CACHE_DIR_OPTION
@_PRECISION_OPTION
def detect_command(files: tuple[_Path, ...], model_name: str, checkpoint: _Path | None,
                   postprocess_path: _Path | None, out_path: _Path, force: bool, device: str,
                   cache_dir: _Path | None, precision: str) -> None:
    """Detect sound events in FILES (or the audio files in a folder) and write them as a DCASE TSV.

    A file that cannot be read is reported as `skip PATH: REASON` on stderr and the others are
    still processed; the exit code is 1 if any file failed.
    """
    from calitag.errors import TaggingError
    from calitag.pipeline.jobs import detect, resolve_postprocess, table_names
    from calitag.thresholds.events import write_events_tsv

    paths = _expand_inputs(files)
    # An events table cannot be told from a reference annotation in the same layout: replace one only with --force.
    _check_out(out_path, inputs=[*paths, postprocess_path, checkpoint], kind="events table", force=force)
    tagger = _load_tagger(model_name, device=device, checkpoint=checkpoint, cache_dir=cache_dir, precision=precision)
    if postprocess_path is None:
        click.echo("no --postprocess: threshold 0.5 and no smoothing for every class "
                   "(tune one with calitag calibrate-events)", err=True)
    try:
        postprocess = resolve_postprocess(tagger, postprocess_path)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    if not paths:
        raise click.ClickException(f"no audio files in {', '.join(map(str, files))}")
    events, done, failed = [], [], 0
    names = table_names(paths)
    for path, name in zip(paths, names):
        try:
            found = detect(tagger, [path], postprocess, names=[name])
        except TaggingError as err:
            failed += 1
            click.echo(f"skip {path}: {err}", err=True)
            continue
        events.extend(found)
        done.append(name)
        click.echo(f"{path}: {len(found)} event(s)")
    try:
        write_events_tsv(out_path, events, files=done)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {len(events)} event(s) from {len(done)} file(s) to {out_path}")
    if failed:
        click.echo(f"{failed} of {len(paths)} file(s) failed", err=True)
        raise SystemExit(1)


@main.command("calibrate-events")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=_Path))
@click.option("--events", "events_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=_Path),
              help="Strong labels of the files in FOLDER (DCASE TSV: filename, onset, offset, event_label).")
@_SED_MODEL_OPTION
@_CHECKPOINT_OPTION
@click.option("--metric", type=click.Choice(["event", "segment"]), default="event", show_default=True,
              help="Macro F1 to maximise: event-based (200 ms onset collar) or 1-s segment-based.")
@click.option("--solver", type=click.Choice(["sgl", "exact"]), default="sgl", show_default=True,
              help="Threshold solver of the frame-level surrogate step.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=_Path),
              help="Thresholds file to write; when it exists (same model) only its events section is replaced.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=_Path), default=None,
              help="Also write an HTML report: per class event-F1 at 0.5 and tuned, and the tuned stack.")
@_FORCE_OPTION
@_DEVICE_OPTION
@_CACHE_DIR_OPTION
def calibrate_events_command(folder: _Path, events_path: _Path, model_name: str, checkpoint: _Path | None,
                             metric: str, solver: str, seed: int, out_path: _Path, force: bool, device: str,
                             cache_dir: _Path | None, report_path: _Path | None) -> None:
    """Tune per-class smoothing, thresholds/hysteresis, minimum gap and duration on FOLDER's strong labels."""
    import math

    from calitag.errors import TaggingError
    from calitag.pipeline.jobs import calibrate_events, existing_thresholds, read_event_table

    from calitag.pipeline.batch import find_audio_files

    _check_out(out_path, inputs=[events_path, checkpoint, *find_audio_files(folder)], kind="thresholds file",
               is_kind=_is_thresholds_file, force=force)
    try:  # a bad table, --out or --report file is reported before the model loads
        if report_path is not None:
            from calitag.thresholds.report import check_report_target

            check_report_target(report_path)
        table = read_event_table(events_path)
        existing_thresholds(out_path, model=model_name)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    tagger = _load_tagger(model_name, device=device, checkpoint=checkpoint, cache_dir=cache_dir)
    try:
        calibration = calibrate_events(tagger, folder, table, out=out_path, metric=metric, solver=solver, seed=seed)
    except TaggingError as err:
        raise click.ClickException(str(err)) from err
    if calibration.unlabeled_files:
        click.echo(f"ignoring {len(calibration.unlabeled_files)} audio file(s) of {folder} not listed in "
                   f"{events_path}", err=True)
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
    if report_path is not None:
        from calitag.thresholds.report import report, write_report

        meta = {"model": model_name, "data": str(folder), "labels": str(events_path), "n_clips": calibration.n_files,
                "method": f"event post-processing tuned with {solver}", "objective": f"{metric}-based macro-F1",
                "title": f"Event detection calibration: {model_name}"}
        section = {**result.postprocess.to_dict(), "class_scores": result.class_scores,
                   "baseline_class_scores": result.baseline_class_scores}
        try:
            write_report(report_path, report(None, None, calibration.thresholds, meta=meta, events=section))
        except TaggingError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"wrote {report_path}")


if __name__ == "__main__":
    main()
