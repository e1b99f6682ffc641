"""`calitag tag`: tags of a few files (or the audio files of a folder), printed as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click

from calitag.cli._common import (
    MERGE_GAP_OPTION,
    MERGE_OPTION,
    REVIEW_FORMATS,
    REVIEW_OUT_OPTION,
    SEGMENT_OPTION,
    TOP_N_OPTION,
    CommandError,
    ModelChoice,
    check_review_folder,
    exit_if_failed,
    expand_inputs,
    for_each_file,
    merge_gap,
    model_options,
    option_group,
)

NO_TAG = "(no tag above threshold)"


def _review(out_path: Path | None, top_n: int | None, merge: bool, merge_gap_s: float) -> dict[str, Any]:
    return {"out_path": out_path, "top_n": top_n, "merge_gap_s": merge_gap(merge, merge_gap_s),
            "used": out_path is not None or top_n is not None or merge}


@click.command("tag")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options(model_help="Registered model to tag with.")
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Per-class thresholds fitted for this model (calitag calibrate); default: 0.5 for all.")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Show at most N tags per file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", *REVIEW_FORMATS]), default="table",
              show_default=True, help="raven, audacity (with --segment-s and --out): one review file per audio file.")
@click.option("--aggregate", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How window scores of long files become one clip score.")
@SEGMENT_OPTION
@option_group("review", _review, REVIEW_OUT_OPTION, TOP_N_OPTION, MERGE_OPTION, MERGE_GAP_OPTION)
@click.option("--recursive", is_flag=True, help="Also tag the audio files in the sub-folders of a folder argument.")
@click.option("--probabilities", is_flag=True,
              help="Show calibrated probabilities instead of scores (needs a --thresholds file fitted with "
                   "--probabilities); the tags are the same.")
def tag_command(files: tuple[Path, ...], model: ModelChoice, thresholds_path: Path | None, top_k: int | None,
                fmt: str, aggregate: str, segment_s: float | None, review: dict[str, Any], recursive: bool,
                probabilities: bool) -> None:
    """Tag audio FILES (or the audio files in a folder) and print their tags with scores.

    A file that cannot be read is reported as `skip PATH: REASON` on stderr and the others are
    still tagged; the exit code is 1 if any file failed. With --segment-s, each file gets one
    row of tags per segment (start and end in seconds): a timeline of a long recording.
    """
    if fmt in REVIEW_FORMATS or review["used"]:
        _tag_for_review(files, model, thresholds_path, fmt=fmt, aggregate=aggregate, segment_s=segment_s, **review)
        return
    tagger = model.load(thresholds=thresholds_path)
    paths = expand_inputs(files, recursive=recursive)
    if not paths:
        raise CommandError(f"no audio files in {', '.join(map(str, files))}")
    if probabilities and (tagger.thresholds is None or tagger.thresholds.probability_maps is None):
        raise CommandError("--probabilities needs a --thresholds file fitted with --probabilities auto|platt|isotonic")
    writer = _Writer(fmt, segments=segment_s is not None, uncertified=tagger.thresholds.uncertified if tagger.thresholds is not None else ())
    if segment_s is None:
        def work(path: Path) -> dict[str, Any]:
            (tags,) = tagger.tag([path], top_k=top_k, aggregate=aggregate, probabilities=probabilities)
            # Scores stay unrounded for the table and CSV; the JSON document rounds them (finish).
            return {"path": str(path), "model": tags.model, **({"probabilities": True} if probabilities else {}),
                    "tags": [{"label": label, "score": score} for label, score in tags.labels]}
    else:
        def work(path: Path) -> dict[str, Any]:
            return {"path": str(path), "model": tagger.name, "segment_s": segment_s,
                    "segments": _segment_tags(tagger, path, segment_s=segment_s, top_k=top_k, aggregate=aggregate,
                                              probabilities=probabilities)}
    done = for_each_file(paths, lambda path: writer.row(work(path)), on_skip=writer.skipped)
    writer.finish()
    exit_if_failed(len(done), len(paths))


def _tag_for_review(files: tuple[Path, ...], model: ModelChoice, thresholds_path: Path | None, *, fmt: str,
                    aggregate: str, segment_s: float | None, out_path: Path | None, top_n: int | None,
                    merge_gap_s: float | None, used: bool) -> None:
    """--format raven/audacity: one review file per audio file in --out, a line per file on stdout."""
    from calitag.pipeline.review_formats import table_names, tag_for_review, write_review

    if fmt not in REVIEW_FORMATS or segment_s is None or out_path is None:
        raise click.UsageError("--out, --top-n and --merge write review files: give --format raven or audacity, "
                               "--segment-s and --out FOLDER")
    tagger = model.load(thresholds=thresholds_path)
    paths = expand_inputs(files)
    if not paths:
        raise CommandError(f"no audio files in {', '.join(map(str, files))}")
    check_review_folder(out_path)
    names = dict(zip(paths, table_names(paths)))

    def work(path: Path) -> None:
        events = tag_for_review(tagger, path, segment_s=segment_s, aggregate=aggregate, top_n=top_n,
                                merge_gap_s=merge_gap_s)
        written = write_review(out_path, names[path], events, fmt=fmt,
                               high_freq_hz=tagger.spec.frontend.sample_rate / 2)
        click.echo(f"{path}: {len(events)} event(s) -> {written}")

    done = for_each_file(paths, work)
    exit_if_failed(len(done), len(paths))


def _tag_list(labels: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
    return [{"label": label, "score": round(score, 6)} for label, score in labels]


def _segment_tags(tagger: Any, path: Path, *, segment_s: float, top_k: int | None, aggregate: str,
                  probabilities: bool = False) -> list[dict]:
    """One {start_s, end_s, tags} dict per segment of ``path`` (raises TaggingError)."""
    from calitag.pipeline.types import Scores

    timeline = tagger.segment_scores(path, segment_s=segment_s, aggregate=aggregate)
    scores = Scores(probs=timeline.probs, class_names=timeline.class_names, model=timeline.model,
                    sources=(timeline.source,) * len(timeline.probs))
    tags = tagger.tags_from_scores(scores, top_k=top_k, probabilities=probabilities)
    return [{"start_s": round(float(start), 3), "end_s": round(float(end), 3), "tags": _tag_list(row.labels)}
            for start, end, row in zip(timeline.starts_s, timeline.ends_s, tags)]


class _Writer:
    """Prints each file's record as it comes (table, CSV) or all of them at the end (JSON)."""

    def __init__(self, fmt: str, *, segments: bool, uncertified: tuple[str, ...] = ()) -> None:
        self.fmt = fmt
        self.uncertified = frozenset(uncertified)
        self.records: list[dict[str, Any]] = []
        self.csv = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None  # stdout escapes bad names
        if self.csv:
            self.csv.writerow(["path", "start_s", "end_s", "label", "score"] if segments else ["path", "label", "score"])

    def skipped(self, path: Path, reason: str) -> None:
        self.records.append({"path": str(path), "error": reason})

    def row(self, record: dict[str, Any]) -> None:
        for tags in [record.get("tags", ()), *(seg["tags"] for seg in record.get("segments", ()))]:
            for t in tags:
                if t["label"] in self.uncertified:
                    t["certified"] = False  # the class's target could not be certified
        self.records.append(record)
        if self.fmt == "table":
            self._table(record)
        elif self.csv:
            self._csv(record)

    def _table(self, record: dict[str, Any]) -> None:
        def shown(tags: list[dict]) -> str:
            return ", ".join(f"{t['label']} {t['score']:.3f}" + (" (uncertified)" if "certified" in t else "")
                             for t in tags) or NO_TAG

        if "segments" not in record:
            click.echo(f"{record['path']}: {shown(record['tags'])}")
            return
        click.echo(f"{record['path']}:")
        for seg in record["segments"]:
            click.echo(f"  {seg['start_s']:8.2f}-{seg['end_s']:8.2f} s: {shown(seg['tags'])}")

    def _csv(self, record: dict[str, Any]) -> None:
        empty = ({"label": "", "score": None},)
        if "segments" not in record:
            for t in record["tags"] or empty:
                self.csv.writerow([record["path"], t["label"], "" if t["score"] is None else f"{t['score']:.4f}"])
            return
        for seg in record["segments"]:
            for t in seg["tags"] or empty:
                self.csv.writerow([record["path"], f"{seg['start_s']:.3f}", f"{seg['end_s']:.3f}", t["label"],
                                   "" if t["score"] is None else f"{t['score']:.4f}"])

    def finish(self) -> None:
        if self.fmt == "json":
            for record in self.records:
                for t in record.get("tags", ()):
                    t["score"] = round(t["score"], 6)
            click.echo(json.dumps(self.records, indent=2, ensure_ascii=False))
