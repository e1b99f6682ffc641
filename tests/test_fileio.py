"""The one output rule (calitag._fileio.check_output) and every writing command that applies it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calitag._fileio import check_output, write_atomic
from calitag.cli import main
from calitag.errors import OutputError


def _is_json(path: Path) -> bool:
    return path.read_bytes().startswith(b"{")


@pytest.fixture()
def clips(tmp_path, audio_samples) -> tuple[Path, Path]:
    """Six bundled clips in a folder, with a debug-model label file beside it."""
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["filename,labels"]
    for name, label in [("speech_01.wav", "Speech"), ("speech_02.wav", "Speech"), ("speech_03.wav", "Speech"),
                        ("music_01.wav", "Music"), ("music_02.wav", "Music"), ("music_03.wav", "Music")]:
        shutil.copy(audio_samples / name, folder / name)
        rows.append(f"{name},{label}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return folder, labels


def test_check_output_refuses_an_input_even_with_force(tmp_path):
    """An output that is one of the inputs (any spelling, or a hard link) is refused, --force or not."""
    source = tmp_path / "labels.csv"
    source.write_text("filename,labels\n")
    os.link(source, tmp_path / "hard.csv")
    for spelling in (source, tmp_path / "." / "labels.csv", tmp_path / "hard.csv"):
        with pytest.raises(OutputError, match="it is an input"):
            check_output(spelling, inputs=[source], kind="thresholds file", is_kind=_is_json, force=True)


def test_check_output_refuses_other_kinds_unless_forced(tmp_path):
    """An existing file of another kind needs --force; one of the command's own kind does not."""
    foreign = tmp_path / "notes.txt"
    foreign.write_text("keep me\n")
    with pytest.raises(OutputError, match="--force"):
        check_output(foreign, kind="thresholds file", is_kind=_is_json)
    assert check_output(foreign, kind="thresholds file", is_kind=_is_json, force=True) == foreign
    own = tmp_path / "th.json"
    own.write_text("{}")
    assert check_output(own, kind="thresholds file", is_kind=_is_json) == own
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "th.json", kind="thresholds file")
    with pytest.raises(OutputError, match="folder"):
        check_output(tmp_path, kind="thresholds file", force=True)


def test_atomic_writes_get_the_umask_permissions(tmp_path):
    """Files written atomically come out with 0o666 minus the umask, not a temporary file's 0o600."""
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.tsv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.tsv").stat().st_mode) == 0o644


def test_calibrate_never_overwrites_its_labels_or_a_clip(clips, tmp_path):
    """calibrate --out naming the labels file or an audio file is refused before scoring, even with --force."""
    folder, labels = clips
    before = {p: p.read_bytes() for p in [labels, *folder.iterdir()]}
    for out in (labels, folder / "music_01.wav"):
        for extra in ([], ["--force"]):
            result = CliRunner().invoke(main, ["calibrate", str(folder), "--labels", str(labels), "--model", "debug",
                                               "--device", "cpu", "--out", str(out), *extra])
            assert result.exit_code == 1 and "it is an input" in result.output, result.output
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.glob("*.scores.npz")) and not list(folder.glob("*.scores.npz"))


@pytest.mark.torch
def test_calibrate_out_rules_and_permissions(clips, tmp_path):
    """A foreign --out needs --force; a missing folder fails before scoring; the result is 0o644 under umask 022."""
    folder, labels = clips
    args = ["calibrate", str(folder), "--labels", str(labels), "--model", "debug", "--device", "cpu"]
    missing = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "no" / "th.json")])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "fitted" not in missing.output
    foreign = tmp_path / "report.txt"
    foreign.write_text("my notes\n")
    refused = CliRunner().invoke(main, [*args, "--out", str(foreign)])
    assert refused.exit_code == 1 and "--force" in refused.output and foreign.read_text() == "my notes\n"
    old = os.umask(0o022)
    try:
        forced = CliRunner().invoke(main, [*args, "--out", str(foreign), "--force"])
        out = tmp_path / "th.json"
        first = CliRunner().invoke(main, [*args, "--out", str(out)])
        again = CliRunner().invoke(main, [*args, "--out", str(out)])  # its own kind: replaced without --force
    finally:
        os.umask(old)
    assert forced.exit_code == 0 and json.loads(foreign.read_text())["model"] == "debug", forced.output
    assert first.exit_code == 0 and again.exit_code == 0, again.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "th.debug.scores.npz").stat().st_mode) == 0o644


def test_thresholds_fit_never_overwrites_its_scores(tagger_like_scores, tmp_path):
    """thresholds fit --out onto its own scores file is refused even with --force; a foreign file needs --force."""
    scores = tmp_path / "scores.npz"
    values, targets, _ = tagger_like_scores
    np.savez(scores, val_scores=values, val_labels=targets)
    data = scores.read_bytes()
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(main, ["thresholds", "fit", str(scores), "--out", str(scores), *extra])
        assert result.exit_code == 1 and "it is an input" in result.output, result.output
    assert scores.read_bytes() == data
    foreign = tmp_path / "keep.csv"
    foreign.write_text("a,b\n")
    refused = CliRunner().invoke(main, ["thresholds", "fit", str(scores), "--out", str(foreign)])
    assert refused.exit_code == 1 and foreign.read_text() == "a,b\n"
    forced = CliRunner().invoke(main, ["thresholds", "fit", str(scores), "--out", str(foreign), "--force"])
    assert forced.exit_code == 0 and "thresholds" in json.loads(foreign.read_text()), forced.output


@pytest.mark.torch
def test_detect_refuses_an_input_and_an_existing_table(audio_samples, tmp_path):
    """detect --out onto an input clip is refused; an existing table (maybe a reference) only goes with --force."""
    clip = tmp_path / "speech_01.wav"
    shutil.copy(audio_samples / "speech_01.wav", clip)
    args = ["detect", str(clip), "--model", "cnn-transformer", "--device", "cpu"]
    onto_input = CliRunner().invoke(main, [*args, "--out", str(clip), "--force"])
    assert onto_input.exit_code == 1 and "it is an input" in onto_input.output
    reference = tmp_path / "reference.tsv"
    reference.write_text("filename\tonset\toffset\tevent_label\nspeech_01.wav\t0.000\t1.000\tSpeech\n")
    kept = reference.read_text()
    refused = CliRunner().invoke(main, [*args, "--out", str(reference)])
    assert refused.exit_code == 1 and "--force" in refused.output and reference.read_text() == kept
    forced = CliRunner().invoke(main, [*args, "--out", str(reference), "--force"])
    assert forced.exit_code == 0, forced.output
    assert reference.read_text().startswith("filename\tonset") and reference.read_text() != kept
