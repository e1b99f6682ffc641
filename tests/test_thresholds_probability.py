"""Per-class probability maps: fitting (sklearn), JSON storage, Thresholds.probabilities, ECE, old files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import CalibrationError, ThresholdsError
from calitag.thresholds import Thresholds, fit
from calitag.thresholds.probability import (
    MIN_ISOTONIC_POSITIVES,
    ProbabilityMap,
    brier_score,
    expected_calibration_error,
    fit_probability_maps,
    reliability,
)


def _overconfident(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes whose scores are sharper than their truth: P(y=1 | s) = sigmoid(0.5 logit(s))."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.6, 1.4, size=(n, 2))
    logit = np.log(scores) - np.log1p(-scores)
    labels = (rng.random((n, 2)) < 1 / (1 + np.exp(-0.5 * logit))).astype(np.uint8)
    return scores, labels


def test_platt_map_is_sklearns_logistic_regression_on_logits():
    """platt's probabilities equal LogisticRegression.predict_proba on the scores' logits."""
    from sklearn.linear_model import LogisticRegression

    scores, labels = _overconfident()
    maps = fit_probability_maps(scores, labels, method="platt")
    logit = np.log(scores[:, 0]) - np.log1p(-scores[:, 0])
    model = LogisticRegression(C=1e4, max_iter=1000).fit(logit[:, None], labels[:, 0])
    np.testing.assert_allclose(maps(scores)[:, 0], model.predict_proba(logit[:, None])[:, 1], atol=1e-9)
    assert maps.maps[0].a == pytest.approx(0.5, abs=0.1)  # the slope the labels were drawn with


def test_isotonic_map_stores_breakpoints_that_predict_like_sklearn():
    """The stored breakpoints reproduce IsotonicRegression.predict, on fitting and new scores, clipped outside."""
    from sklearn.isotonic import IsotonicRegression

    scores, labels = _overconfident()
    maps = fit_probability_maps(scores, labels, method="isotonic")
    model = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores[:, 1], labels[:, 1])
    new = np.concatenate([np.linspace(0, 1, 101), scores[:50, 1]])
    np.testing.assert_allclose(maps.maps[1](new), model.predict(new), atol=1e-12)
    assert all(np.diff(maps.maps[1].y) >= 0)


def test_auto_uses_simpler_maps_when_positives_are_few():
    """auto: identity below 2 positives; never isotonic below MIN_ISOTONIC_POSITIVES positives."""
    scores, labels = _overconfident(n=600)
    labels[:, 0] = 0
    labels[:1, 0] = 1
    rare = np.flatnonzero(labels[:, 1])[MIN_ISOTONIC_POSITIVES - 1:]
    labels[rare, 1] = 0
    maps = fit_probability_maps(scores, labels, method="auto")
    assert maps.maps[0].kind == "identity" and maps.maps[1].kind in ("identity", "platt")


def test_calibrated_probabilities_lower_ece_and_brier_on_new_clips():
    """On fresh clips of the same distribution, auto's maps lower the class-wise ECE and Brier score."""
    scores, labels = _overconfident(seed=0)
    fresh, fresh_labels = _overconfident(seed=1)
    maps = fit_probability_maps(scores, labels, method="auto")
    calibrated = maps(fresh)
    assert expected_calibration_error(calibrated, fresh_labels).mean() < 0.7 * expected_calibration_error(
        fresh, fresh_labels).mean()
    assert brier_score(calibrated, fresh_labels).mean() < brier_score(fresh, fresh_labels).mean()


def test_ece_and_reliability_on_a_hand_counted_example():
    """Two bins: |0.1 - 0| * 2/4 + |0.9 - 0.5| * 2/4 = 0.25; the diagram has one point per non-empty bin."""
    probs = np.array([[0.1], [0.1], [0.9], [0.9]])
    labels = np.array([[0], [0], [1], [0]])
    assert expected_calibration_error(probs, labels)[0] == pytest.approx(0.25)
    assert reliability(probs[:, 0], labels[:, 0]) == [(pytest.approx(0.1), 0.0, 2), (pytest.approx(0.9), 0.5, 2)]


def test_maps_round_trip_as_plain_json_and_give_probabilities(tmp_path):
    """fit(probabilities='auto') stores numbers only; the loaded file gives the same (n, C) probabilities."""
    scores, labels = _overconfident()
    th = fit(scores, labels, probabilities="isotonic", class_names=("a", "b"))
    path = th.save(tmp_path / "th.json")
    document = json.loads(path.read_text())
    assert document["format_version"] == 3 and document["probabilities"]["maps"][0]["kind"] == "isotonic"
    loaded = Thresholds.load(path)
    np.testing.assert_array_equal(loaded.probabilities(scores), th.probabilities(scores))
    assert loaded.probabilities(scores).shape == scores.shape
    # The decisions stay those of the thresholds; only the numbers shown change.
    plain, shown = loaded.labels(scores[:20]), loaded.labels(scores[:20], probabilities=True)
    assert [sorted(n for n, _ in row) for row in plain] == [sorted(n for n, _ in row) for row in shown]
    assert loaded.probability_thresholds().shape == (2,)


def test_default_fit_has_no_maps_and_probabilities_says_how_to_get_them():
    """Without probabilities= the file has no maps and asking for probabilities names the option."""
    scores, labels = _overconfident()
    th = fit(scores, labels)
    assert th.probability_maps is None and "probabilities" not in th.to_dict()
    with pytest.raises(ThresholdsError, match="--probabilities"):
        th.probabilities(scores)


def test_bad_map_parameters_are_refused():
    """A decreasing isotonic map or an unknown kind is refused."""
    with pytest.raises(CalibrationError, match="non-decreasing"):
        ProbabilityMap("isotonic", x=(0.0, 1.0), y=(0.8, 0.2))
    with pytest.raises(CalibrationError, match="kind"):
        ProbabilityMap("beta")


def test_a_thresholds_file_written_before_still_loads(tmp_path):
    """A version-2 file of calitag 0.1 (no targets, no maps) loads with its decisions and nothing certified."""
    old = {
        "format_version": 2, "calitag_version": "0.1.0", "created": "2025-11-01T10:00:00+00:00",
        "model": "yamnet", "model_sha256": None, "class_names": ["Speech", "Camera"], "thresholds": [0.31, 0.5],
        "method": "sgl", "options": {"lr": 0.01, "epochs": 100}, "objective": "micro_f1",
        "validation": {"micro_f1": 0.9, "macro_f1": 0.6, "objective": 0.9, "n_clips": 22}, "events": None,
        "per_class": {"positives": [9, 2], "kept": ["fit", "default"],
                      "reason": [None, "3-fold micro-F1 0.5 does not beat default 0.5"]},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    th = Thresholds.load(path)
    assert th.values.tolist() == [0.31, 0.5] and th.per_class["kept"] == ["fit", "default"]
    assert th.uncertified == () and th.probability_maps is None
    assert th.apply(np.array([[0.4, 0.6]])).tolist() == [[True, True]]
    version1 = {k: v for k, v in old.items() if k != "per_class"} | {"format_version": 1}
    path.write_text(json.dumps(version1))
    assert Thresholds.load(path).per_class is None


def test_dcase2017_auto_maps_lower_eval_ece(shared, tmp_path):
    """`thresholds fit --probabilities auto` on DCASE2017 val lowers the eval ECE by >= 15%, never above 1.02x."""
    data = shared / "data" / "dcase2017_task4.npz"
    out = tmp_path / "th.json"
    result = CliRunner().invoke(main, ["thresholds", "fit", str(data), "--probabilities", "auto", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(data) as d:
        scores, labels = d["eval_scores"], d["eval_labels"]
    raw = expected_calibration_error(scores, labels).mean()
    calibrated = expected_calibration_error(Thresholds.load(out).probabilities(scores), labels).mean()
    assert calibrated <= 0.85 * raw
    assert "probability maps (auto)" in result.stdout
