"""Review files (Raven selection tables, Audacity label tracks), --merge and --top-n on the bundled soundscapes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import LabelsError
from calitag.pipeline.review_formats import RAVEN_COLUMNS, read_audacity, read_raven, review_path, write_review
from calitag.thresholds.events.segments import ScoredEvent, segment_events, top_labels

SCAPES = Path(__file__).resolve().parent.parent / "audio_samples" / "soundscapes"
EVENTS = [ScoredEvent("a.wav", 0.0, 1.5, "Speech", 0.91234), ScoredEvent("a.wav", 1.0, 3.25, "Dog, bark", 0.5),
          ScoredEvent("a.wav", 4.0, 4.5, "Bell (church)", None)]


def test_raven_table_reads_back_with_ravens_column_names(tmp_path):
    """A Raven table has Raven's documented header, one numbered selection per event, and reads back as written."""
    path = write_review(tmp_path, "a.wav", EVENTS, fmt="raven", high_freq_hz=8000.0)
    assert path == tmp_path / "a.wav.selections.txt"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == list(RAVEN_COLUMNS)
    assert list(RAVEN_COLUMNS[:7]) == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
                                       "Low Freq (Hz)", "High Freq (Hz)"]
    assert [r["Selection"] for r in rows] == ["1", "2", "3"]
    assert {r["View"] for r in rows} == {"Spectrogram 1"} and {r["High Freq (Hz)"] for r in rows} == {"8000.0"}
    assert [float(r["End Time (s)"]) for r in rows] == [1.5, 3.25, 4.5]
    back = read_raven(path)
    assert [(e.file, e.onset_s, e.offset_s, e.label) for e in back] == [
        ("a.wav", e.onset_s, e.offset_s, e.label) for e in EVENTS]
    assert [e.score for e in back] == [0.9123, 0.5, None]


def test_audacity_labels_round_trip(tmp_path):
    """An Audacity label file is start<TAB>end<TAB>label lines and reads back to the same events and scores."""
    path = write_review(tmp_path, "a.wav", EVENTS, fmt="audacity", high_freq_hz=8000.0)
    lines = path.read_text().splitlines()
    assert lines[0] == "0.000000\t1.500000\tSpeech (0.9123)"
    assert all(len(line.split("\t")) == 3 for line in lines)
    back = read_audacity(path)
    assert [(e.onset_s, e.offset_s, e.label) for e in back] == [(e.onset_s, e.offset_s, e.label) for e in EVENTS]
    assert [e.score for e in back] == [0.9123, 0.5, None]


def test_audacity_reader_skips_spectral_lines_and_names_bad_times(tmp_path):
    """Audacity's spectral-selection lines are skipped; a time that is not a number names the file and line."""
    path = tmp_path / "x.labels.txt"
    path.write_text("1.0\t2.0\tDog\n\\\t100.0\t2000.0\n")
    assert [(e.label, e.onset_s) for e in read_audacity(path)] == [("Dog", 1.0)]
    path.write_text("one\t2.0\tDog\n")
    with pytest.raises(LabelsError, match=r"x.labels.txt:1: start 'one' is not a number"):
        read_audacity(path)


def test_segments_merge_into_events_with_their_max_score():
    """--merge joins touching segments of a tag (max score); --merge-gap also bridges a gap up to its length."""
    starts, ends = [0, 1, 2, 4], [1, 2, 3, 5]
    tags = [(("Speech", 0.6),), (("Speech", 0.9), ("Music", 0.7)), (("Speech", 0.7),), (("Speech", 0.8),)]
    apart = segment_events(starts, ends, tags, file="f")
    assert len(apart) == 5
    merged = segment_events(starts, ends, tags, file="f", merge_gap_s=0.0)
    assert [(e.onset_s, e.offset_s, e.label, e.score) for e in merged] == [
        (0.0, 3.0, "Speech", 0.9), (1.0, 2.0, "Music", 0.7), (4.0, 5.0, "Speech", 0.8)]
    bridged = segment_events(starts, ends, tags, file="f", merge_gap_s=1.0)
    assert [(e.onset_s, e.offset_s) for e in bridged if e.label == "Speech"] == [(0.0, 5.0)]


def test_top_labels_ignore_thresholds():
    """top_labels keeps the N best classes of each row by decreasing score, ties in class order."""
    rows = top_labels(np.array([[0.1, 0.3, 0.2], [0.05, 0.05, 0.01]]), ["a", "b", "c"], 2)
    assert rows == [(("b", 0.3), ("c", 0.2)), (("a", 0.05), ("b", 0.05))]


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_tag_top_n_and_merge_on_a_soundscape(tmp_path):
    """`tag --segment-s 1 --top-n 2` lists two classes per second; --merge joins them into fewer, longer events."""
    clip = str(SCAPES / "tune_00.flac")
    _run(["tag", clip, "--segment-s", "1", "--format", "raven", "--top-n", "2", "--out", str(tmp_path / "top")])
    per_segment = read_raven(review_path(tmp_path / "top", "tune_00.flac", "raven"))
    assert len(per_segment) == 20  # 10 segments x 2 classes
    assert all(e.offset_s - e.onset_s == pytest.approx(1.0) for e in per_segment)
    _run(["tag", clip, "--segment-s", "1", "--format", "audacity", "--top-n", "2", "--merge",
          "--out", str(tmp_path / "merged")])
    merged = read_audacity(review_path(tmp_path / "merged", "tune_00.flac", "audacity"))
    assert len(merged) < len(per_segment)
    assert max(e.offset_s - e.onset_s for e in merged) > 1.0
    # The speech of the soundscape (1.8-3.4 s and 4.6-6.2 s) is one merged event with the best segment score.
    speech = [e for e in merged if e.label == "Speech"]
    assert any(e.onset_s <= 2.0 and e.offset_s >= 6.0 for e in speech)
    assert max(e.score for e in speech) == pytest.approx(max(e.score for e in per_segment if e.label == "Speech"),
                                                         abs=1e-4)


def test_batch_writes_one_review_file_per_soundscape_and_resumes(tmp_path):
    """`batch --format raven --segment-s` writes a table per audio file; a second run needs --resume or --force."""
    out = tmp_path / "tables"
    args = ["batch", str(SCAPES), "--out", str(out), "--format", "raven", "--segment-s", "2", "--merge",
            "--workers", "0"]
    _run(args)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{p.name}.selections.txt" for p in SCAPES.glob("*.flac"))
    events = read_raven(out / "heldout_00.flac.selections.txt")
    assert any(e.label == "Speech" for e in events)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--resume" in again.output
    assert "0 file(s) tagged" in CliRunner().invoke(main, [*args, "--resume"]).output


def test_detect_writes_audacity_labels_with_yamnet(tmp_path):
    """`detect --format audacity` writes a label track per file whose events carry their highest frame score."""
    _run(["detect", str(SCAPES / "tune_01.flac"), "--model", "yamnet", "--format", "audacity",
          "--out", str(tmp_path)])
    events = read_audacity(tmp_path / "tune_01.flac.labels.txt")
    assert events and all(e.score is not None and e.score > 0.5 for e in events)
    assert any(e.label == "Speech" for e in events)


def test_review_options_need_a_review_format(tmp_path):
    """--top-n or --merge without --format raven/audacity is a usage error, as is a review format without segments."""
    clip = str(SCAPES / "tune_00.flac")
    result = CliRunner().invoke(main, ["tag", clip, "--top-n", "2"])
    assert result.exit_code == 2 and "--format raven or audacity" in result.output
    result = CliRunner().invoke(main, ["batch", str(SCAPES), "--out", str(tmp_path / "x"), "--format", "raven"])
    assert result.exit_code == 2 and "--segment-s" in result.output


def test_files_with_one_base_name_get_a_review_file_each(tmp_path):
    """Two recordings named alike in two folders keep apart (paths below their common folder) in batch and tag."""
    import shutil

    for site, clip in (("site_a", "tune_00.flac"), ("site_b", "heldout_00.flac")):
        (tmp_path / "in" / site).mkdir(parents=True)
        shutil.copy(SCAPES / clip, tmp_path / "in" / site / "0800.flac")
    out = tmp_path / "tables"
    args = ["batch", str(tmp_path / "in"), "--recursive", "--out", str(out), "--format", "raven", "--segment-s", "2",
            "--merge", "--workers", "0"]
    _run(args)
    a, b = (read_raven(out / site / "0800.flac.selections.txt") for site in ("site_a", "site_b"))
    assert any(e.label == "Speech" for e in b) and a != b
    assert "0 file(s) tagged" in _run([*args, "--resume"])
    paths = [str(tmp_path / "in" / site / "0800.flac") for site in ("site_a", "site_b")]
    _run(["tag", *paths, "--segment-s", "2", "--format", "audacity", "--out", str(tmp_path / "tracks")])
    assert sorted(p.relative_to(tmp_path / "tracks").as_posix() for p in (tmp_path / "tracks").rglob("*.txt")) == \
        ["site_a/0800.flac.labels.txt", "site_b/0800.flac.labels.txt"]
