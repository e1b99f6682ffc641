"""Batch processing (pipeline/batch.py and `calitag batch`): good files tagged, bad ones recorded, resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from calitag.cli import main
from calitag.pipeline.batch import find_audio_files, run_batch
from calitag.pipeline.tagger import Tagger

GOOD = ("speech_01.wav", "music_01.wav", "alarm_clock_01.wav", "speech_music_01.wav")


@pytest.fixture()
def mixed_folder(tmp_path, audio_samples) -> Path:
    """Four real clips, a truncated wav, an empty file and a text file named .wav."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(audio_samples / name, folder / name)
    data = (audio_samples / GOOD[0]).read_bytes()
    (folder / "corrupt.wav").write_bytes(data[:30])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is not audio\n")
    (folder / "readme.txt").write_text("ignored: not an audio extension\n")
    return folder


@pytest.fixture(scope="module")
def debug_tagger() -> Tagger:
    return Tagger.load("debug", device="cpu", batch_size=4)


def test_find_audio_files_skips_other_extensions(mixed_folder):
    """Folder expansion keeps audio extensions only, sorted."""
    names = [p.name for p in find_audio_files(mixed_folder)]
    assert names == sorted(names) and "readme.txt" not in names and len(names) == 7


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_scores_equal_tagger_scores(debug_tagger, mixed_folder, workers):
    """Scores from the batch runner (in-process or with decoder processes) equal Tagger.scores file by file."""
    good = [mixed_folder / n for n in GOOD]
    results = {r.path: r for r in run_batch(debug_tagger, good, workers=workers)}
    expected = debug_tagger.scores(good).probs
    for path, row in zip(good, expected):
        result = results[str(path)]
        assert result.error is None
        np.testing.assert_allclose(result.scores, row, atol=1e-5)
        assert result.duration_s == pytest.approx(len(sf.read(path)[0]) / 16_000, abs=0.01)


def test_batch_cli_records_every_file_and_exits_1(mixed_folder, tmp_path):
    """Every good file gets tags and scores, every bad one an error record naming the problem; exit code 1."""
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out),
                                       "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(GOOD) | {"corrupt.wav", "empty.wav", "notes.wav"}
    for name in GOOD:
        assert "error" not in records[name] and len(records[name]["scores"]) == 5
        assert records[name]["duration_s"] > 1.0
    assert "not audio" in records["notes.wav"]["error"]
    assert records["empty.wav"]["error"] and records["corrupt.wav"]["error"]
    assert "skip" in result.stderr and "3 failed" in result.stderr


def test_resume_after_a_kill_loses_and_duplicates_nothing(mixed_folder, tmp_path):
    """A run cut after two records and half a third is finished by --resume with each file exactly once."""
    out = tmp_path / "results.jsonl"
    args = ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--workers", "0", "--device", "cpu"]
    CliRunner().invoke(main, args)
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][: len(full[2]) // 2])  # as if killed mid-write
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists" in again.output  # no silent overwrite without --resume
    resumed = CliRunner().invoke(main, args + ["--resume"])
    assert "2 of 7 file(s) already" in resumed.stderr
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == sorted(json.loads(line)["path"] for line in full)


def test_batch_csv_output(mixed_folder, tmp_path):
    """--out *.csv writes one CSV row per file with the error column for bad ones."""
    out = tmp_path / "results.csv"
    CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--workers", "0"])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("path,duration_s,tags,scores") and len(lines) == 8
