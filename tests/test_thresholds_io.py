"""The thresholds file and score-file readers (calitag.thresholds.io)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from calitag.errors import ScoresError, ThresholdsError, ThresholdsMismatchError
from calitag.thresholds import FORMAT_VERSION, Thresholds, fit
from calitag.thresholds.events import ClassPostprocess, Postprocess

NAMES = ("Speech", "Dog", "Cat")


@pytest.fixture()
def fitted(tagger_like_scores) -> Thresholds:
    """Thresholds fitted with sgl on three classes of seeded tagger-like scores."""
    scores, labels = tagger_like_scores[0][:, 1:4], tagger_like_scores[1][:, 1:4]
    return fit(scores, labels, method="sgl", init=0.5, class_names=NAMES, model="crnn-dcase2019",
               model_sha256="ab" * 32)


def test_round_trip_keeps_everything(fitted, tmp_path):
    """save then load gives equal values, names, provenance, options and the same events stack."""
    events = Postprocess(("Speech",), (ClassPostprocess(smoothing="median", kernel_frames=7, threshold=0.6, low=0.3),))
    with_events = dataclasses.replace(fitted, events=events)
    path = with_events.save(tmp_path / "th.json")
    loaded = Thresholds.load(path, expected_model="crnn-dcase2019", expected_classes=NAMES)
    np.testing.assert_array_equal(loaded.values, fitted.values)
    assert loaded.class_names == NAMES
    assert (loaded.model, loaded.model_sha256, loaded.method) == ("crnn-dcase2019", "ab" * 32, "sgl")
    assert loaded.options == fitted.options and loaded.objective == "micro_f1"
    assert loaded.validation["micro_f1"] == pytest.approx(fitted.validation["micro_f1"])
    assert loaded.events == events
    assert loaded.created == fitted.created and loaded.calitag_version == fitted.calitag_version
    document = json.loads(path.read_text())
    assert document["format_version"] == FORMAT_VERSION and document["thresholds"] == list(fitted.values)


def test_apply_is_strict_and_shaped(fitted):
    """apply returns bools of the input shape, with score == threshold deciding no."""
    probs = np.tile(fitted.values, (2, 1))
    probs[1] += 1e-6
    decisions = fitted.apply(probs)
    assert decisions.dtype == bool and decisions.shape == (2, 3)
    assert not decisions[0].any() and decisions[1].all()
    with pytest.raises(ScoresError, match="3 classes"):
        fitted.apply(np.zeros((2, 4)))
    with pytest.raises(ScoresError, match="finite"):
        fitted.apply(np.array([np.nan, 0.1, 0.2]))


def test_save_is_atomic_and_replaces(fitted, tmp_path):
    """Saving over an existing file replaces it and leaves no temporary file behind."""
    path = tmp_path / "th.json"
    path.write_text("old")
    fitted.save(path)
    assert Thresholds.load(path).class_names == NAMES
    assert os.listdir(tmp_path) == ["th.json"]
    with pytest.raises(ThresholdsError, match="does not exist"):
        fitted.save(tmp_path / "missing" / "th.json")


def test_mismatch_is_refused(fitted, tmp_path):
    """Loading for another model or class list raises ThresholdsMismatchError."""
    path = fitted.save(tmp_path / "th.json")
    with pytest.raises(ThresholdsMismatchError, match="fitted for model 'crnn-dcase2019', not 'yamnet'"):
        Thresholds.load(path, expected_model="yamnet")
    with pytest.raises(ThresholdsMismatchError, match="holds 3 classes, the scores have 2"):
        Thresholds.load(path, expected_classes=("Speech", "Dog"))
    with pytest.raises(ThresholdsMismatchError, match="class 1 is 'Dog'"):
        Thresholds.load(path, expected_classes=("Speech", "Cat", "Dog"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("format_version"), "no format_version"),
        (lambda d: d.update(format_version=99), "upgrade calitag"),
        (lambda d: d.pop("class_names"), "lacks the field 'class_names'"),
        (lambda d: d.update(thresholds=[0.1, 0.2]), "2 thresholds for 3 class names"),
        (lambda d: d.update(thresholds=[0.1, 1.2, 0.3]), r"expected a finite value in \[0, 1\]"),
        (lambda d: d.update(thresholds=[0.1, "x", 0.3]), "must all be numbers"),
        (lambda d: d.update(class_names=["a", "a", "b"]), "unique"),
        (lambda d: d.update(events=[1, 2]), "'events' must be dict"),
        (lambda d: d.update(model_sha256="xyz"), "64 lower-case hex"),
    ],
)
def test_invalid_contents_raise(fitted, tmp_path, edit, message):
    """Each malformed field gives a ThresholdsError naming the file and the problem."""
    document = fitted.to_dict()
    edit(document)
    path = tmp_path / "th.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ThresholdsError, match=message) as info:
        Thresholds.load(path)
    assert str(path) in str(info.value)


def test_unreadable_files_raise(tmp_path):
    """Missing, empty, non-JSON and NaN-valued files raise ThresholdsError."""
    with pytest.raises(ThresholdsError, match="not found"):
        Thresholds.load(tmp_path / "nope.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ThresholdsError, match="empty"):
        Thresholds.load(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ThresholdsError, match="not valid JSON"):
        Thresholds.load(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text(
        '{"format_version": 1, "class_names": ["a"], "thresholds": [NaN], "method": "sgl", "objective": "micro_f1"}')
    with pytest.raises(ThresholdsError, match="finite"):
        Thresholds.load(tmp_path / "nan.json")


def test_per_class_record_round_trips_and_version_1_files_still_load(fitted, tmp_path):
    """per_class (positives, kept, reason) survives save/load; a format-1 file without it loads with None."""
    path = fitted.save(tmp_path / "th.json")
    loaded = Thresholds.load(path)
    assert loaded.per_class == fitted.per_class and loaded.per_class["kept"] == ["fit"] * 3
    document = json.loads(path.read_text())
    document["format_version"] = 1
    del document["per_class"]
    (tmp_path / "v1.json").write_text(json.dumps(document))
    old = Thresholds.load(tmp_path / "v1.json")
    assert old.per_class is None and np.array_equal(old.values, fitted.values)
    document["per_class"] = {"positives": [1, 2], "kept": ["fit", "fit"], "reason": [None, None]}
    document["format_version"] = FORMAT_VERSION
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(ThresholdsError, match="one entry per class"):
        Thresholds.load(tmp_path / "bad.json")


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    """A thresholds file nesting JSON 100,000 deep raises ThresholdsError, not RecursionError."""
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ThresholdsError, match="nests JSON too deeply"):
        Thresholds.load(tmp_path / "deep.json")
