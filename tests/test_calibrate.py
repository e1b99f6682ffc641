"""Calibration on a labeled folder (pipeline/calibrate.py and `calitag calibrate`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import calitag.pipeline.calibrate
from calitag.cli import main
from calitag.errors import LabelsError, OutputError, ScoresError
from calitag.pipeline.calibrate import (
    CalibrationJob,
    CalibrationOptions,
    ClipScores,
    LabeledClips,
    ScoreCache,
    ScoredFiles,
    bootstrap_f1,
    calibrate,
    compare_with_default,
    fit_clips,
    gather_clip_scores,
    provenance,
    run_calibration,
    select_classes,
    split_and_fit,
)
from calitag.pipeline.labels import ClipLabels, read_clip_labels
from calitag.pipeline.tagger import Tagger
from calitag.thresholds import Thresholds, evaluate
from calitag.thresholds.splits import kfold_splits, split_indices


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
    assert "3-fold cross-validation" in result.stdout and "micro-F1 %  default" in result.stdout
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


# --- the steps of calibrate, on synthetic scores (no model) ----------------------------------------

CLASSES = ("Speech", "Music", "Dog")


@dataclass(frozen=True)
class _StubTagger:
    """What calibrate uses of a tagger when the scores come from a batch output; also a TaggerSource."""

    name: str = "stub"
    class_names: tuple[str, ...] = CLASSES
    checkpoint: Path | None = None

    def load(self) -> _StubTagger:
        return self


def _labeled(n_clips: int = 40, seed: int = 0) -> LabeledClips:
    """Speech and Music clips (a third of each also has the other class) with separable noisy scores."""
    rng = np.random.default_rng(seed)
    targets = np.zeros((n_clips, 2), dtype=np.float32)
    targets[: n_clips // 2, 0] = 1
    targets[n_clips // 2:, 1] = 1
    targets[:: 3] = 1
    scores = np.clip(0.35 * targets + 0.6 * rng.random(targets.shape), 0, 1)
    return LabeledClips(tuple(f"{i:02d}.wav" for i in range(n_clips)), CLASSES[:2], np.array([0, 1]), scores, targets)


def _batch_output(tmp_path: Path, n_clips: int = 40) -> tuple[Path, Path]:
    """A JSONL all-scores output of the stub model (one failed file) and a label file naming its clips."""
    data = _labeled(n_clips)
    records = [{"path": f"/rec/clips/{name}", "model": "stub",
                "scores": {"Speech": float(s[0]), "Music": float(s[1]), "Dog": 0.25}}
               for name, s in zip(data.names, data.scores)]
    records.append({"path": "/rec/clips/bad.wav", "model": "stub", "error": "not audio"})
    records.append({"path": "/rec/clips/extra.wav", "model": "stub", "scores": {c: 0.5 for c in CLASSES}})
    out = tmp_path / "batch.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [f"{name},{';'.join(c for c, t in zip(CLASSES, row) if t)}" for name, row in zip(data.names, data.targets)]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(["filename,labels", *rows, "bad.wav,Speech"]) + "\n")
    return out, labels


def test_options_take_fields_and_pass_the_rest_to_the_solver():
    """Keywords that name options replace them; other keywords become solver options, seeded for sgl only."""
    options = CalibrationOptions().with_keywords(method="sgl", folds=3, epochs=30)
    assert (options.method, options.folds, dict(options.solver)) == ("sgl", 3, {"epochs": 30})
    assert options.fit_options() == {"seed": 0, "epochs": 30}
    assert options.with_keywords(method="exact", seed=4).fit_options() == {"epochs": 30}
    assert options.with_keywords(solver={"lr": 0.1}).solver == {"lr": 0.1}


def test_gather_takes_batch_scores_by_name_with_failures_and_unlabeled_files(tmp_path):
    """From a batch output: rows follow the labels, a failed record is a failure, an unlisted one unlabeled."""
    out, labels_path = _batch_output(tmp_path)
    scored = ScoredFiles.read(out, model="stub", class_names=CLASSES)
    labels = read_clip_labels(labels_path)
    clips = gather_clip_scores(_StubTagger(), out, labels, scored=scored, cache=ScoreCache(None, CLASSES),
                               checkpoint_sha256=None, options=CalibrationOptions())
    data = _labeled()
    assert clips.names == data.names and clips.missing == ()
    np.testing.assert_array_equal(clips.scores[:, :2], data.scores.astype(np.float32))
    assert [(f.path, f.error) for f in clips.failed] == [("/rec/clips/bad.wav", "not audio")]
    assert clips.unlabeled == ("/rec/clips/extra.wav",)
    labels_path.write_text(labels_path.read_text() + "ghost.wav,Dog\n")
    with pytest.raises(LabelsError, match="1 listed file.*ghost.wav; pass --skip-missing"):
        gather_clip_scores(_StubTagger(), out, read_clip_labels(labels_path), scored=scored,
                           cache=ScoreCache(None, CLASSES), checkpoint_sha256=None, options=CalibrationOptions())
    skipped = gather_clip_scores(_StubTagger(), out, read_clip_labels(labels_path), scored=scored,
                                 cache=ScoreCache(None, CLASSES), checkpoint_sha256=None,
                                 options=CalibrationOptions(skip_missing=True))
    assert skipped.missing == ("ghost.wav",) and skipped.names == clips.names


def test_select_classes_keeps_the_labeled_model_classes_in_model_order():
    """Columns are the labeled classes in the model's order; targets follow the clips; too little data raises."""
    labels = ClipLabels({"a.wav": ("Music",), "b.wav": ("Dog", "Music"), "c.wav": ()}, "l.csv")
    scores = np.arange(9, dtype=np.float32).reshape(3, 3) / 10
    clips = ClipScores(("a.wav", "b.wav", "c.wav"), scores, (), (), ())
    data = select_classes(clips, labels, class_names=CLASSES, model="stub")
    assert data.classes == ("Music", "Dog") and data.columns.tolist() == [1, 2]
    assert data.scores.dtype == np.float64 and data.scores.tolist() == scores[:, 1:].astype(np.float64).tolist()
    assert data.targets.tolist() == [[1, 0], [1, 1], [0, 0]]
    assert data.few_positives() == (("Music", 2), ("Dog", 1))
    with pytest.raises(LabelsError, match="none of the labeled clips has a stub class"):
        select_classes(ClipScores(("c.wav",), scores[:1], (), (), ()), labels, class_names=CLASSES, model="stub")
    with pytest.raises(LabelsError, match="1 usable clip"):
        select_classes(ClipScores(("a.wav",), scores[:1], (), (), ()), labels, class_names=CLASSES, model="stub")


def test_split_and_fit_holds_out_a_disjoint_stratified_part():
    """One split: the fit sees the fitting clips only, and one threshold vector decides every held-out clip."""
    data = _labeled()
    options = CalibrationOptions(method="exact", val_fraction=0.25)
    fitted = split_and_fit(data, model="stub", options=options)
    assert fitted.n_fit == 30 and len(fitted.held_out) == 10 and fitted.folds is None
    fit_idx = np.setdiff1d(np.arange(40), fitted.held_out)
    assert fitted.thresholds.values.tolist() == fit_clips(data, fit_idx, model="stub", options=options).values.tolist()
    assert (fitted.clip_values == fitted.thresholds.values).all() and fitted.clip_values.shape == (10, 2)


def test_split_and_fit_with_folds_decides_each_clip_by_the_fold_without_it():
    """K-fold: every clip is held out once, each by a fit that did not see it; the written fit saw every clip."""
    data = _labeled()
    options = CalibrationOptions(method="exact", folds=4, guard=False)
    fitted = split_and_fit(data, model="stub", options=options)
    assert fitted.held_out.tolist() == list(range(40)) and fitted.n_fit == 40 and fitted.folds == 4
    assert fitted.thresholds.values.tolist() == fit_clips(data, np.arange(40), model="stub", options=options).values.tolist()
    for _, fold_idx in kfold_splits(data.targets, n_folds=4, seed=0):
        rest = np.setdiff1d(np.arange(40), fold_idx)
        own = fit_clips(data, rest, model="stub", options=options).values
        assert (fitted.clip_values[fold_idx] == own).all()
    with pytest.raises(LabelsError, match=r"--folds must be between 2 and the number of clips \(40\), got 41"):
        split_and_fit(data, model="stub", options=CalibrationOptions(folds=41))


def test_compare_with_default_gives_the_exact_held_out_figures():
    """The default and calibrated reports equal evaluate() at 0.5 and at the fitted thresholds; gain = difference."""
    data = _labeled()
    fitted = split_and_fit(data, model="stub", options=CalibrationOptions(method="exact"))
    comparison = compare_with_default(data, fitted, seed=0)
    scores, targets = data.scores[fitted.held_out], data.targets[fitted.held_out]
    assert comparison.default.micro_f1 == pytest.approx(evaluate(scores, targets, np.full(2, 0.5)).micro_f1)
    assert comparison.calibrated.macro_f1 == pytest.approx(evaluate(scores, targets, fitted.thresholds.values).macro_f1)
    assert (comparison.decided == (scores > fitted.thresholds.values)).all()
    gain = comparison.gains["micro_f1"]
    assert gain.gain.value == pytest.approx(comparison.calibrated.micro_f1 - comparison.default.micro_f1)
    assert comparison.intervals["calibrated"]["macro_f1"] is comparison.gains["macro_f1"].calibrated


def test_provenance_covers_every_model_class_and_records_the_figures():
    """Unlabeled model classes keep 0.5 and say why; the held-out figures, source and labels are recorded."""
    data = _labeled()
    fitted = split_and_fit(data, model="stub", options=CalibrationOptions(method="exact", guard=False))
    comparison = compare_with_default(data, fitted, seed=0)
    labels = ClipLabels({}, "labels.csv")
    thresholds = provenance(data, fitted, comparison, tagger=_StubTagger(), model_sha256="ab" * 32,
                            source=Path("clips"), labels=labels)
    assert thresholds.values.tolist() == [*fitted.thresholds.values.tolist(), 0.5]
    assert thresholds.model == "stub" and thresholds.model_sha256 == "ab" * 32
    assert thresholds.options["calibrated_classes"] == ["Speech", "Music"]
    held = thresholds.validation["held_out"]
    assert held["n_clips"] == len(fitted.held_out) and held["calibrated_micro_f1"] == comparison.calibrated.micro_f1
    assert (thresholds.validation["source"], thresholds.validation["labels"]) == ("clips", "labels.csv")
    assert thresholds.per_class["kept"][2] == "default" and thresholds.per_class["reason"][2] == "not in the labels"


def test_run_calibration_from_batch_output_writes_the_thresholds_file_only(tmp_path):
    """`calibrate --scores` as one call: the thresholds file is written, no score cache, failures reported."""
    out, labels_path = _batch_output(tmp_path)
    job = CalibrationJob(labels=labels_path, out=tmp_path / "th.json", scores=out,
                         options=CalibrationOptions(method="exact"))
    before = set(tmp_path.iterdir())
    result = run_calibration(job, _StubTagger())
    assert set(tmp_path.iterdir()) - before == {tmp_path / "th.json"}
    saved = Thresholds.load(tmp_path / "th.json", expected_model="stub", expected_classes=CLASSES)
    assert saved.values.tolist() == result.thresholds.values.tolist() and saved.values[2] == 0.5
    assert saved.validation["source"] == str(out) and result.classes == ("Speech", "Music")
    assert [f.path for f in result.failed] == ["/rec/clips/bad.wav"]


def test_run_calibration_checks_the_outputs_before_loading_the_model(tmp_path):
    """An output that is an input, or a report path over another file, fails before the model is loaded."""
    out, labels_path = _batch_output(tmp_path)

    class NeverLoaded(_StubTagger):
        def load(self) -> _StubTagger:
            raise AssertionError("the model was loaded before the outputs were checked")

    with pytest.raises(OutputError, match="it is an input"):
        run_calibration(CalibrationJob(labels=labels_path, out=labels_path, scores=out), NeverLoaded())
    keep = tmp_path / "keep.html"
    keep.write_text("mine")
    with pytest.raises(OutputError, match="not a calitag report"):
        run_calibration(CalibrationJob(labels=labels_path, out=tmp_path / "th.json", scores=out, report=keep),
                        NeverLoaded())
    with pytest.raises(TypeError, match="either folder or scores"):
        CalibrationJob(labels=labels_path, out=tmp_path / "th.json")


def test_score_cache_round_trips_and_is_refused_for_other_classes(tmp_path, caplog):
    """A saved cache reads back by key and by file digest; other classes are refused by read, dropped by reuse."""
    path = tmp_path / "th.stub.scores.npz"
    cache = ScoreCache.reuse(path, CLASSES)
    assert cache.rows == {}
    cache.rows["stub:none:" + "0" * 64] = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    cache.save()
    assert ScoreCache.is_cache(path)
    again = ScoreCache.read(path, CLASSES)
    assert again.by_file()["0" * 64].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert list(ScoreCache.reuse(path, CLASSES).rows) == ["stub:none:" + "0" * 64]
    with pytest.raises(ScoresError, match="holds 3 classes that are not the thresholds file's 2"):
        ScoreCache.read(path, CLASSES[:2])
    assert ScoreCache.reuse(path, CLASSES[:2]).rows == {}
    path.write_bytes(b"PK\x03\x04 not a zip")
    with caplog.at_level("WARNING"):
        assert ScoreCache.reuse(path, CLASSES).rows == {}
    assert "ignoring unreadable score cache" in caplog.text and not ScoreCache.is_cache(path)
    with pytest.raises(ScoresError, match="cannot read score cache"):
        ScoreCache.read(path, CLASSES)


def test_tagger_calibrate_without_out_returns_the_result_and_writes_nothing(yamnet_cached, audio_samples, tmp_path,
                                                                          monkeypatch):
    """The documented `tagger.calibrate(folder, labels)` runs without `out` and writes no file anywhere near."""
    import calitag

    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in audio_samples.rglob("*")}
    result = calitag.load_tagger("yamnet").calibrate(audio_samples, audio_samples / "labels.csv", seed=0)
    assert "Speech" in result.classes and result.n_fit + result.n_held_out == 45
    assert result.thresholds.validation["held_out"]["n_clips"] == result.n_held_out
    assert {p: p.stat().st_mtime_ns for p in audio_samples.rglob("*")} == before
    assert list(tmp_path.iterdir()) == []


def test_calibrate_with_target_and_probabilities_reports_intervals_and_writes_maps(tmp_path):
    """A precision target and probability maps: the file records both, the result has held-out intervals and ECE."""
    out, labels_path = _batch_output(tmp_path, n_clips=80)
    options = CalibrationOptions(method="exact", target="precision=0.6", probabilities="platt")
    job = CalibrationJob(labels=labels_path, out=tmp_path / "th.json", scores=out, options=options)
    result = run_calibration(job, _StubTagger())
    saved = Thresholds.load(tmp_path / "th.json")
    assert saved.per_class["target"] == ["precision=0.6", "precision=0.6", None]
    assert saved.per_class["certified"][2] is None and isinstance(saved.per_class["certified"][0], bool)
    assert [m.kind for m in saved.probability_maps.maps] == ["platt", "platt", "identity"]
    document = result.to_dict()
    speech = document["classes"][0]
    low, high = speech["calibrated"]["precision_interval"]
    assert low <= speech["calibrated"]["precision"] <= high and speech["target"] == "precision=0.6"
    quality = document["probabilities"]
    assert quality["method"] == "platt" and quality["ece_raw"] > 0 and quality["brier_calibrated"] > 0
    plain = run_calibration(CalibrationJob(labels=labels_path, out=tmp_path / "plain.json", scores=out,
                                           options=CalibrationOptions(method="exact")), _StubTagger())
    assert "probabilities" not in plain.to_dict() and "target" not in plain.to_dict()["classes"][0]


def test_calibrate_cli_target_probabilities_then_tag_marks_uncertified(yamnet_cached, audio_samples, tmp_path):
    """calibrate --target --probabilities prints certification and ECE; tag --probabilities marks uncertified tags."""
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, ["calibrate", str(audio_samples), "--labels", str(audio_samples / "labels.csv"),
                                       "--target", "precision=0.6", "--probabilities", "auto", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "held-out precision and recall with exact 95% intervals" in result.stdout
    assert "ECE (15 bins)" in result.stdout
    saved = Thresholds.load(out)
    assert "Speech" not in saved.uncertified and "Ding" in saved.uncertified
    tagged = CliRunner().invoke(main, ["tag", str(audio_samples / "camera_01.wav"), "--thresholds", str(out),
                                       "--probabilities", "--format", "json"])
    assert tagged.exit_code == 0, tagged.output
    (record,) = json.loads(tagged.stdout)
    camera = [t for t in record["tags"] if t["label"] == "Camera"]
    assert record["probabilities"] is True and camera and camera[0]["certified"] is False
    refused = CliRunner().invoke(main, ["tag", str(audio_samples / "camera_01.wav"), "--probabilities"])
    assert refused.exit_code == 1 and "--probabilities needs a --thresholds file" in refused.output
    for name in ("camera.csv", "camera.jsonl"):  # a CSV cannot hold the field: refused, not silently dropped
        batch = CliRunner().invoke(main, ["batch", str(audio_samples / "camera_01.wav"), "--thresholds", str(out),
                                          "--probabilities", "--workers", "0", "--out", str(tmp_path / name)])
        if name.endswith(".csv"):
            assert batch.exit_code != 0 and "--probabilities adds a field" in batch.output
            assert not (tmp_path / name).exists()
        else:
            assert batch.exit_code == 0, batch.output
            (line,) = (tmp_path / name).read_text().splitlines()
            assert "Camera" in json.loads(line)["probabilities"] and "Camera" in json.loads(line)["uncertified"]


def test_report_of_a_calibration_with_maps_shows_ece_brier_and_reliability(tmp_path):
    """The HTML report gains a Probabilities section: ECE and Brier before/after per class and the diagrams."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    from calitag.pipeline.report import calibration_report
    from calitag.thresholds.probability import expected_calibration_error

    out, labels_path = _batch_output(tmp_path, n_clips=80)
    job = CalibrationJob(labels=labels_path, out=tmp_path / "th.json", scores=out,
                         options=CalibrationOptions(method="exact", probabilities="platt"))
    result = run_calibration(job, _StubTagger())
    text = calibration_report(result)
    assert "id='probabilities'" in text and "alt='reliability diagrams'" in text
    raw = expected_calibration_error(result.held_out_scores, result.held_out_targets).mean()
    assert f">{raw:.4f}<" in text
    plain = run_calibration(CalibrationJob(labels=labels_path, out=tmp_path / "plain.json", scores=out,
                                           options=CalibrationOptions(method="exact")), _StubTagger())
    assert "id='probabilities'" not in calibration_report(plain)
