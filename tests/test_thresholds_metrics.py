"""Exact metrics and input checks (calitag.thresholds.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from calitag.errors import ScoresError
from calitag.thresholds import NoPositivesWarning, check_scores_labels, evaluate, fit


@pytest.fixture(scope="module")
def dcase2019(tagger_like_scores):
    """Seeded 10-class scores with their labels and the DCASE2019 class names."""
    return tagger_like_scores


def test_evaluate_matches_sklearn(dcase2019):
    """Per-class and micro/macro P/R/F1 equal scikit-learn's on tagger-like scores."""
    scores, labels, names = dcase2019
    values = np.linspace(0.2, 0.7, scores.shape[1])
    report = evaluate(scores, labels, values, class_names=names)
    pred = scores > values
    p, r, f, support = precision_recall_fscore_support(labels, pred, zero_division=0)
    np.testing.assert_allclose(report.precision, p)
    np.testing.assert_allclose(report.recall, r)
    np.testing.assert_allclose(report.f1, f)
    np.testing.assert_array_equal(report.support, support)
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(labels, pred, average=average, zero_division=0)
        assert getattr(report, f"{average}_precision") == pytest.approx(p)
        assert getattr(report, f"{average}_recall") == pytest.approx(r)
        assert getattr(report, f"{average}_f1") == pytest.approx(f)
    assert report.class_names == names
    assert report.to_dict()["per_class"][1]["class"] == "Speech"


def test_evaluate_accepts_thresholds_object_and_scalar(dcase2019):
    """A Thresholds object, a per-class array and a scalar give the same report for equal values."""
    scores, labels, names = dcase2019
    th = fit(scores, labels, method="default", init=0.5, class_names=names)
    by_object = evaluate(scores, labels, th)
    by_scalar = evaluate(scores, labels, 0.5)
    assert by_object.micro_f1 == by_scalar.micro_f1
    assert by_object.class_names == names


def test_threshold_is_strict():
    """A score equal to its threshold is not a positive decision."""
    scores = np.array([[0.5], [0.6]])
    labels = np.array([[1], [1]])
    report = evaluate(scores, labels, [0.5])
    assert report.predicted[0] == 1 and report.recall[0] == 0.5


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.array([[0.1, np.nan]]), np.array([[0, 1]]), "NaN/inf"),
        (np.array([[0.1, np.inf]]), np.array([[0, 1]]), "NaN/inf"),
        (np.array([[0.1, 1.5]]), np.array([[0, 1]]), r"\[0, 1\].*--logits"),
        (np.array([[0.1, -0.2]]), np.array([[0, 1]]), r"\[0, 1\]"),
        (np.array([0.1, 0.2]), np.array([0, 1]), "matrix"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
        (np.array([[0.1, 0.2]]), np.array([[0, 1], [1, 0]]), "shape"),
        (np.array([[0.1, 0.2]]), np.array([[0, 2]]), "binary"),
        (np.array([[0.1, 0.2]]), np.array([["a", "b"]]), "0/1"),
    ],
)
def test_bad_inputs_raise_scores_error(scores, labels, message):
    """NaN/inf, out-of-range, non-matrix, empty, mismatched or non-binary inputs raise ScoresError."""
    with pytest.raises(ScoresError, match=message):
        check_scores_labels(scores, labels, source="unit.npz")


def test_no_positive_class_warns():
    """A class without positives triggers NoPositivesWarning naming the class."""
    scores = np.array([[0.2, 0.9], [0.7, 0.1]])
    labels = np.array([[0, 1], [0, 0]])
    with pytest.warns(NoPositivesWarning, match="Alarm"):
        check_scores_labels(scores, labels, class_names=("Alarm", "Dog"))


def test_evaluate_rejects_wrong_threshold_count(dcase2019):
    """Evaluating with a threshold list of the wrong length raises ScoresError."""
    scores, labels, _ = dcase2019
    with pytest.raises(ScoresError, match="3 thresholds given for 10 classes"):
        evaluate(scores, labels, [0.5, 0.5, 0.5])
