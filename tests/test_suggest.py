"""calitag.suggest_labels, the learning curve, and `calitag suggest` on audio_samples/."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import calitag
from calitag.cli import main
from calitag.errors import CalibrationError, LabelsError, ScoresError
from calitag.thresholds.active import rank_unlabeled
from calitag.thresholds.learning_curve import expected_gain, learning_curve


@pytest.fixture(scope="module")
def pool(tagger_like_scores):
    """Seeded tagger-like scores with a random fifth of the clips labeled."""
    scores, targets, _ = tagger_like_scores
    labeled = np.random.default_rng(3).random(len(scores)) < 0.2
    return scores, targets, labeled


def test_picks_are_distinct_unlabeled_in_range_and_deterministic(pool):
    """The n picks are distinct rows among the unlabeled ones, and equal for equal seeds."""
    scores, targets, labeled = pool
    picks = calitag.suggest_labels(scores, targets, labeled, 25, seed=7)
    assert picks.shape == (25,) and len(set(picks.tolist())) == 25
    assert ((picks >= 0) & (picks < len(scores))).all() and not labeled[picks].any()
    assert np.array_equal(picks, calitag.suggest_labels(scores, targets, labeled, 25, seed=7))


def test_unlabeled_rows_labels_are_ignored(pool):
    """Garbage in the labels of unlabeled rows changes nothing."""
    scores, targets, labeled = pool
    noisy = targets.astype(np.float64).copy()
    noisy[~labeled] = 7.0
    assert np.array_equal(calitag.suggest_labels(scores, targets, labeled, 10),
                          calitag.suggest_labels(scores, noisy, labeled, 10))


def test_picks_straddle_the_thresholds(pool):
    """Suggested clips lie nearer the fitted thresholds than the unlabeled clips on average."""
    scores, targets, labeled = pool
    thresholds = calitag.fit_thresholds(scores[labeled], targets[labeled]).values
    picks = calitag.suggest_labels(scores, targets, labeled, 30)
    nearest = np.abs(scores - thresholds).min(axis=1)
    assert nearest[picks].mean() < 0.8 * nearest[~labeled].mean()  # random picks: about 1.0


def test_without_labels_the_picks_are_random_but_valid(pool):
    """With fewer than 2 labeled clips the picks are still distinct unlabeled rows."""
    scores, targets, _ = pool
    labeled = np.zeros(len(scores), dtype=bool)
    labeled[0] = True
    picks = calitag.suggest_labels(scores, targets, labeled, 5, seed=1)
    assert len(set(picks.tolist())) == 5 and 0 not in picks


def test_without_labeled_positives_the_picks_are_random_but_valid(pool):
    """With no labeled positive in any class (no probability map can be fitted) the picks are still valid."""
    scores, targets, labeled = pool
    ranked = rank_unlabeled(scores, np.zeros_like(targets), labeled, 8, seed=2)
    assert len(set(ranked.indices.tolist())) == 8 and not labeled[ranked.indices].any()
    assert np.isnan(ranked.thresholds).all() and (ranked.doubt == 0).all()


def test_picks_keep_the_labeled_f_measure_near_the_pools(pool):
    """After the picks, the labeled clips' micro-F1 at the pool's thresholds is near the pool's (unlike closest picks)."""
    scores, targets, labeled = pool
    thresholds = calitag.fit_thresholds(scores, targets).values
    truth = targets > 0

    def f1(rows):
        decided = scores[rows] > thresholds
        return 2 * (decided & truth[rows]).sum() / (decided.sum() + truth[rows].sum())

    picks = calitag.suggest_labels(scores, targets, labeled, 60)
    distance = np.abs(scores[~labeled] - calitag.fit_thresholds(scores[labeled], targets[labeled]).values).min(axis=1)
    closest = np.flatnonzero(~labeled)[np.argsort(distance)[:60]]
    assert abs(f1(np.r_[np.flatnonzero(labeled), picks]) - f1(np.arange(len(scores)))) < \
        abs(f1(np.r_[np.flatnonzero(labeled), closest]) - f1(np.arange(len(scores))))


@pytest.mark.parametrize(("change", "error", "match"), [
    (lambda s, y, m: (s, y, m.astype(int), 5), LabelsError, "boolean mask"),
    (lambda s, y, m: (s, y, m[:-1], 5), LabelsError, "one entry per clip"),
    (lambda s, y, m: (s, y[:, :-1], m, 5), LabelsError, "shape of scores"),
    (lambda s, y, m: (s, y, m, 0), LabelsError, "n must be an integer from 1"),
    (lambda s, y, m: (s, y, m, int((~m).sum()) + 1), LabelsError, "n must be an integer from 1"),
    (lambda s, y, m: (s * 2, y, m, 5), ScoresError, r"\[0, 1\]"),
    (lambda s, y, m: (s, y * 2, m, 5), ScoresError, "binary"),
])
def test_bad_inputs_raise_precise_errors(pool, change, error, match):
    """Each malformed input raises its error class with a message naming the problem."""
    scores, targets, labeled = pool
    with pytest.raises(error, match=match):
        calitag.suggest_labels(*change(scores, targets, labeled))


def test_unknown_objective_and_bad_seed(pool):
    """An unknown objective or a non-integer seed is refused."""
    scores, targets, labeled = pool
    with pytest.raises(CalibrationError):
        calitag.suggest_labels(scores, targets, labeled, 3, objective="accuracy")
    with pytest.raises(CalibrationError, match="seed"):
        calitag.suggest_labels(scores, targets, labeled, 3, seed=0.5)


def test_learning_curve_rises_and_gain_is_bounded(tagger_like_scores):
    """Held-out micro-F1 grows with the fitting clips; the extrapolated gain is >= 0 with low <= value <= high."""
    scores, targets, _ = tagger_like_scores
    curve = learning_curve(scores, targets, repeats=6, seed=0)
    assert list(curve.sizes) == sorted(curve.sizes) and curve.values.shape == (6, len(curve.sizes))
    assert curve.mean[-1] > curve.mean[0]
    gain = expected_gain(curve, 100)
    assert 0.0 <= gain.low <= gain.value <= gain.high < 0.5
    assert expected_gain(curve, 1000).value >= gain.value
    with pytest.raises(LabelsError, match="at least 8"):
        learning_curve(scores[:5], targets[:5])


def test_suggest_cli_on_audio_samples(yamnet_cached, audio_samples, tmp_path):
    """`calitag suggest` lists N unlabeled clips of audio_samples/, prints the gain, and keeps foreign files."""
    rows = list(csv.reader((audio_samples / "labels.csv").open()))[1:]
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\n" + "".join(f"{r[0]},{r[1]}\n" for r in rows[:24]))
    out = tmp_path / "to_label.csv"
    args = ["suggest", str(audio_samples), "--labels", str(labels), "--n", "6", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "more labels: micro-F1" in result.stdout and "wrote" in result.stdout
    listed = list(csv.DictReader(out.open()))
    names = [row["filename"] for row in listed]
    assert len(names) == 6 and len(set(names)) == 6 and not set(names) & {r[0] for r in rows[:24]}
    assert all((audio_samples / name).is_file() for name in names)
    assert all(0.0 <= float(row["score"]) <= 1.0 and row["class"] for row in listed)
    again = CliRunner().invoke(main, [*args, "--json"])
    assert again.exit_code == 0 and [p["filename"] for p in json.loads(again.stdout)["picks"]] == names
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my notes\n")
    refused = CliRunner().invoke(main, [*args[:-1], str(foreign)])
    assert refused.exit_code == 1 and foreign.read_text() == "my notes\n"


def test_calibration_carries_and_reports_its_learning_curve(tagger_like_scores):
    """calibrate's curve step gives a curve over the labeled clips (none below 8) and the HTML report plots it."""
    from calitag.pipeline.calibrate import CalibrationOptions, LabeledClips, curve_of
    from calitag.thresholds.html_report import report

    scores, targets, names = tagger_like_scores
    data = LabeledClips(tuple(f"{i}.wav" for i in range(len(scores))), tuple(names), np.arange(len(names)),
                        scores.astype(np.float64), targets)
    curve = curve_of(data, CalibrationOptions())
    assert curve is not None and curve.n_labeled == len(scores) and curve.values.shape[0] == 5
    small = LabeledClips(data.names[:7], data.classes, data.columns, data.scores[:7], data.targets[:7])
    assert curve_of(small, CalibrationOptions()) is None
    page = report(scores, targets, np.full(len(names), 0.5), class_names=names, learning_curve=curve)
    assert "id='learning-curve'" in page and "data:image/png;base64," in page.split("id='learning-curve'")[1]


def test_a_class_already_covered_gets_fewer_picks():
    """Labels at one class's crossing send the picks to another's, though its clips sit nearer their crossing."""
    from calitag.thresholds.active import _greedy, _Round

    # 60 clips at class 0's crossing (weight 1.0), 60 at class 1's (0.8); 30 of the first kind are labeled.
    kernel = np.zeros((120, 2))
    kernel[:60, 0], kernel[60:, 1] = 1.0, 0.8
    labeled = np.zeros(120, dtype=bool)
    labeled[:30] = True
    state = _Round(np.full(2, 0.5), kernel, kernel, np.zeros(120), 0.0)
    for power in (1.0, 2.0):
        picks = np.flatnonzero(~labeled)[_greedy(state, labeled, 10, 0.0, power, np.zeros(90))]
        assert (picks >= 60).all()
    first = np.flatnonzero(~labeled)[np.argmax(kernel[~labeled].sum(axis=1))]
    assert first < 60  # by weight alone, a clip of class 0 would come first


def test_simulation_prefers_clips_at_the_crossing(pool):
    """The simulated refit scores a batch at the thresholds above a batch of the lowest-scored clips."""
    from calitag.thresholds.active import _fit_round, _simulated_objective
    from calitag.thresholds.objectives import resolve_objective

    scores, targets, labeled = pool
    scores, targets, spec = scores.astype(np.float64), targets.astype(np.float64), resolve_objective("micro_f1")
    state = _fit_round(scores, targets, labeled, spec)
    unlabeled = np.flatnonzero(~labeled)
    near = unlabeled[np.argsort(-state.kernel[unlabeled].sum(axis=1))[:40]]
    low = unlabeled[np.argsort(scores[unlabeled].max(axis=1))[:40]]
    rng = np.random.default_rng(0)

    def value(rows: np.ndarray) -> float:
        drawn = (rng.random((16, len(rows), scores.shape[1])) < state.probs[rows]).astype(np.float64)
        return _simulated_objective(scores, targets, labeled, rows, drawn, state.probs, spec)

    assert value(near) > value(low)


def test_macro_objective_picks_are_valid_and_near_the_thresholds(pool):
    """With a macro objective (no shared F to balance) the picks are distinct, unlabeled and near the thresholds."""
    scores, targets, labeled = pool
    picks = calitag.suggest_labels(scores, targets, labeled, 30, objective="macro_f1", seed=4)
    assert len(set(picks.tolist())) == 30 and not labeled[picks].any()
    assert np.array_equal(picks, calitag.suggest_labels(scores, targets, labeled, 30, objective="macro_f1", seed=4))
    thresholds = calitag.fit_thresholds(scores[labeled], targets[labeled], objective="macro_f1").values
    nearest = np.abs(scores - thresholds).min(axis=1)
    assert nearest[picks].mean() < 0.8 * nearest[~labeled].mean()
