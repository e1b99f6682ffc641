"""Calibration on a labeled folder (pipeline/calibrate.py and `calitag calibrate`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import calitag.pipeline.calibrate
from calitag.cli import main
from calitag.errors import LabelsError
from calitag.pipeline.calibrate import bootstrap_f1, calibrate
from calitag.thresholds.splits import split_indices
from calitag.pipeline.labels import read_clip_labels
from calitag.pipeline.tagger import Tagger
from calitag.thresholds import Thresholds, evaluate


@pytest.fixture(scope="module")
def debug_tagger() -> Tagger:
    return Tagger.load("debug", device="cpu")


@pytest.fixture()
def speech_music(tmp_path, audio_samples) -> tuple[Path, Path]:
    """A folder of the bundled Speech and Music clips with a label file in the debug model's names."""
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["filename,labels"]
    for line in (audio_samples / "labels.csv").read_text().splitlines()[1:]:
        name, labels = line.split(",")[:2]
        kept = [label for label in labels.split(";") if label in ("Speech", "Music")]
        shutil.copy(audio_samples / name, folder / name)
        rows.append(f"{name},{';'.join(kept)}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return folder, labels


def test_split_is_stratified_and_disjoint():
    """Each class with enough clips lands on both sides of the split, and no clip on both."""
    targets = np.zeros((40, 3))
    targets[:20, 0] = 1
    targets[20:30, 1] = 1
    targets[30:, 2] = 1
    fit_idx, held_idx = split_indices(targets, held_out_fraction=0.5, seed=0)
    assert not set(fit_idx) & set(held_idx) and len(fit_idx) + len(held_idx) == 40
    assert (targets[fit_idx].sum(0) > 0).all() and (targets[held_idx].sum(0) > 0).all()


def test_bootstrap_point_estimate_matches_exact_metrics():
    """The bootstrap's point values equal the exact micro/macro F1, inside their own intervals."""
    rng = np.random.default_rng(0)
    scores = rng.random((60, 4))
    targets = (rng.random((60, 4)) < 0.4).astype(float)
    values = np.array([0.3, 0.5, 0.6, 0.4])
    boot = {average: bootstrap_f1(scores > values, targets, average=average, seed=0) for average in ("micro", "macro")}
    report = evaluate(scores, targets, values)
    assert boot["micro"].value == pytest.approx(report.micro_f1)
    assert boot["macro"].value == pytest.approx(report.macro_f1)
    for interval in boot.values():
        assert interval.low <= interval.value <= interval.high and interval.high - interval.low > 0.01


@pytest.mark.torch
def test_calibrate_writes_thresholds_and_reuses_the_score_cache(debug_tagger, speech_music, tmp_path, monkeypatch):
    """The thresholds file covers every model class; a second run reads every score from the cache."""
    folder, labels_path = speech_music
    labels = read_clip_labels(labels_path)
    out = tmp_path / "th.json"
    first = calibrate(debug_tagger, folder, labels, out=out, seed=0)
    saved = Thresholds.load(out, expected_model="debug", expected_classes=debug_tagger.class_names)
    assert first.classes == ("Speech", "Music")
    assert saved.values[2:].tolist() == [0.5, 0.5, 0.5]  # classes without labels keep the default
    assert first.n_fit + first.n_held_out == len(labels.labels)

    def no_decoding(*args, **kwargs):
        raise AssertionError("files were decoded again despite the cache")

    monkeypatch.setattr(calitag.pipeline.calibrate, "run_batch", no_decoding)
    second = calibrate(debug_tagger, folder, labels, out=out, seed=0, method="exact")
    assert second.classes == first.classes


@pytest.mark.torch
def test_missing_files_and_unknown_labels_are_errors_unless_skipped(debug_tagger, speech_music, tmp_path):
    """A listed file absent from disk, or a label the model lacks, fails; skip_missing drops them."""
    folder, labels_path = speech_music
    original = labels_path.read_text()
    labels_path.write_text(original + "ghost.wav,Speech\n")
    with pytest.raises(LabelsError, match="ghost.wav.*--skip-missing"):
        calibrate(debug_tagger, folder, read_clip_labels(labels_path), out=tmp_path / "th.json")
    labels_path.write_text(original + "speech_01.wav,Speach\n".replace("speech_01", "speech_02x"))
    with pytest.raises(LabelsError, match="'Speach'"):
        calibrate(debug_tagger, folder, read_clip_labels(labels_path), out=tmp_path / "th.json")
    labels_path.write_text(original + "ghost.wav,Speech;Speach\n")
    result = calibrate(debug_tagger, folder, read_clip_labels(labels_path), out=tmp_path / "th.json",
                       skip_missing=True)
    assert result.missing_files == ("ghost.wav",) and "Speach" in result.notes[0]


@pytest.mark.torch
def test_calibrate_cli_with_folds(speech_music, tmp_path):
    """`calitag calibrate --folds 3` prints the per-class table and both F1 intervals, and writes the file."""
    folder, labels_path = speech_music
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, ["calibrate", str(folder), "--labels", str(labels_path), "--model", "debug",
                                       "--folds", "3", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validation" in result.stdout and "micro-F1  default" in result.stdout
    assert json.loads(out.read_text())["model"] == "debug"


@pytest.mark.torch
def test_calibrate_audio_samples_with_yamnet_beats_default(yamnet_cached, audio_samples, tmp_path):
    """On the bundled samples, yamnet's calibrated held-out micro-F1 is at least the default threshold's."""
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, ["calibrate", str(audio_samples), "--labels",
                                       str(audio_samples / "labels.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    held = document["validation"]["held_out"]
    assert held["calibrated_micro_f1"] >= held["default_micro_f1"]
    assert held["calibrated_macro_f1"] >= held["default_macro_f1"]
    assert held["n_clips"] >= 20
    assert "gain: micro-F1" in result.stdout and "gain: macro-F1" in result.stdout
    # No calibrated threshold sits within 1e-6 of a score of the labeled clips (the fitting clips among them).
    cache = np.load(tmp_path / "th.yamnet.scores.npz")
    names = list(cache["class_names"])
    calibrated = document["options"]["calibrated_classes"]
    columns = [names.index(c) for c in calibrated]
    values = np.array([document["thresholds"][j] for j in columns])
    assert np.abs(cache["scores"][:, columns].astype(np.float64) - values).min() > 1e-6
    tagged = CliRunner().invoke(main, ["tag", str(audio_samples / "speech_01.wav"), "--thresholds", str(out)])
    assert tagged.exit_code == 0 and "Speech" in tagged.stdout
    refused = CliRunner().invoke(main, ["tag", str(audio_samples / "speech_01.wav"), "--model", "debug",
                                        "--thresholds", str(out)])
    assert refused.exit_code == 1 and "yamnet" in refused.output


@pytest.mark.torch
def test_calibrate_json_prints_every_number(debug_tagger, speech_music, tmp_path):
    """`calibrate --json` prints one object with per-class support, thresholds, P/R/F1, intervals and the gain."""
    folder, labels_path = speech_music
    result = CliRunner().invoke(main, ["calibrate", str(folder), "--labels", str(labels_path), "--model", "debug",
                                       "--out", str(tmp_path / "th.json"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [c["class"] for c in document["classes"]] == ["Speech", "Music"]
    first = document["classes"][0]
    assert {"support", "positives_fit", "kept", "default", "calibrated"} <= set(first)
    assert {"threshold", "precision", "recall", "f1"} == set(first["calibrated"])
    assert first["default"]["threshold"] == 0.5 and first["kept"] in ("fit", "default")
    for average in ("micro_f1", "macro_f1"):
        gain = document["gain"][average]
        assert gain["gain"]["value"] == pytest.approx(gain["calibrated"]["value"] - gain["default"]["value"])
        assert gain["verdict"].startswith(average.replace("_f1", "-F1"))
        assert document["calibrated"][average]["low"] <= document["calibrated"][average]["value"]
