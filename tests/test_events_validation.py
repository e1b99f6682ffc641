"""Strong labels and post-processing parameters that used to pass silently or crash: now clear errors or warnings."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import LabelsError, ThresholdsError
from calitag.thresholds.events import ClassPostprocess, read_events_tsv, smooth
from calitag.thresholds.events.event_metrics import event_based_scores
from calitag.pipeline.tagger import Tagger
from calitag.thresholds.events.tuning import tune_events

SOUNDSCAPES = "soundscapes"
TUNE = "strong_labels_tune.tsv"


def test_offset_of_1e300_is_a_labels_error(tmp_path):
    """An offset of 1e300 s raises LabelsError naming the line, not a numpy dimension error later."""
    tsv = tmp_path / "ev.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\na.wav\t1.0\t1e300\tSpeech\n")
    with pytest.raises(LabelsError, match=r"ev.tsv:2: expected 0 <= onset <= offset <= 1e\+06 s"):
        read_events_tsv(tsv)


def test_duplicate_rows_are_dropped_with_a_warning(audio_samples, tmp_path, caplog):
    """A table whose rows are all repeated reads as the original, with a warning naming the lines;
    its event F1 against the original table is then 1, not the 2/3 the duplicates gave."""
    original = audio_samples / SOUNDSCAPES / TUNE
    lines = original.read_text().splitlines()
    doubled = tmp_path / "doubled.tsv"
    doubled.write_text("\n".join(lines + lines[1:]) + "\n")
    with caplog.at_level("WARNING", logger="calitag.thresholds.events.tsv"):
        table = read_events_tsv(doubled)
    reference = read_events_tsv(original)
    assert table.events == reference.events
    assert f"{len(lines) - 1} duplicate event row(s) ignored (line {len(lines) + 1} repeats line 2" in caplog.text
    assert event_based_scores(table.events, reference.events).macro_f1 == pytest.approx(1.0)


@pytest.mark.torch
def test_huge_kernel_is_refused_before_allocating(audio_samples):
    """kernel_frames of 1e9 raises ThresholdsError (in the parameters and in smooth), not MemoryError."""
    with pytest.raises(ThresholdsError, match="kernel_frames must be between 1 and 10001, got 1000000000"):
        ClassPostprocess(smoothing="median", kernel_frames=10**9)
    frames = Tagger.load("debug", device="cpu").frame_scores(audio_samples / SOUNDSCAPES / "tune_00.flac")
    with pytest.raises(ThresholdsError, match="at most 10001"):
        smooth(frames.probs, kind="median", kernel_frames=10**9)


@pytest.fixture(scope="module")
def debug_frames(audio_samples):
    """Debug-model frame scores of two 10-s soundscapes."""
    tagger = Tagger.load("debug", device="cpu")
    return [tagger.frame_scores(audio_samples / SOUNDSCAPES / f"tune_0{i}.flac") for i in (0, 1)]


def _table(tmp_path, rows: str):
    tsv = tmp_path / "ref.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\ntune_00.flac\t1.0\t3.0\tSpeech\n"
                   "tune_01.flac\t2.0\t4.0\tSpeech\n" + rows)
    return read_events_tsv(tsv)


@pytest.mark.torch
def test_event_after_the_end_of_its_file_is_refused(debug_frames, tmp_path):
    """A reference event starting at 50 s in a 10-s file raises LabelsError naming file and times."""
    table = _table(tmp_path, "tune_00.flac\t50\t60\tSpeech\n")
    with pytest.raises(LabelsError, match=r"Speech at 50-60 s starts after the end of tune_00.flac \(10.0"):
        tune_events(debug_frames, table, kernels_s=(0.0,), min_gaps_s=(0.0,), min_durations_s=(0.0,),
                    solver="exact")


@pytest.mark.torch
def test_event_running_past_the_end_is_cut_with_a_warning(debug_frames, tmp_path, caplog):
    """A reference event from 8 s to 1e5 s in a 10-s file is cut at the end with a warning, and tuning runs."""
    table = _table(tmp_path, "tune_00.flac\t8\t100000\tSpeech\n")
    with caplog.at_level("WARNING", logger="calitag.thresholds.events.tuning"):
        result = tune_events(debug_frames, table, kernels_s=(0.0,), min_gaps_s=(0.0,), min_durations_s=(0.0,),
                             solver="exact")
    assert "1 reference event(s) end after the end of their file and were cut there" in caplog.text
    assert 0.0 <= result.score <= 1.0


@pytest.mark.torch
def test_detect_keeps_same_named_files_apart(audio_samples, tmp_path):
    """`detect A/x.flac B/x.flac` names them A/x.flac and B/x.flac in the TSV, not x.flac twice."""
    for folder, source in (("A", "tune_00.flac"), ("B", "tune_01.flac")):
        (tmp_path / folder).mkdir()
        shutil.copy(audio_samples / SOUNDSCAPES / source, tmp_path / folder / "x.flac")
    out = tmp_path / "events.tsv"
    result = CliRunner().invoke(main, ["detect", str(tmp_path / "A" / "x.flac"), str(tmp_path / "B" / "x.flac"),
                                       "--model", "debug", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {line.split("\t")[0] for line in out.read_text().splitlines()[1:]}
    assert names == {"A/x.flac", "B/x.flac"}


def test_negative_max_seconds_is_refused(audio_samples, tmp_path):
    """`thresholds fit --method numeric --max-seconds -1` fails with a message instead of running."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "s.npz"
    np.savez(path, val_scores=rng.random((20, 3)), val_labels=(rng.random((20, 3)) > 0.5).astype(int))
    result = CliRunner().invoke(main, ["thresholds", "fit", str(path), "--method", "numeric", "--max-seconds", "-1"])
    assert result.exit_code != 0
    assert "max_seconds" in result.output and "must be a finite number of seconds >= 0" in result.output
