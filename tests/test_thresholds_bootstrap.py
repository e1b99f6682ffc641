"""Bootstrap intervals of F1 and the paired gain (calitag.thresholds.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from calitag.errors import ScoresError
from calitag.thresholds import evaluate
from calitag.thresholds.bootstrap import bootstrap_f1, paired_gain


@pytest.fixture(scope="module")
def fixture_decisions():
    """120 clips x 5 classes of noisy decisions, one class rare (3 positives)."""
    rng = np.random.default_rng(7)
    targets = rng.random((120, 5)) < np.array([0.4, 0.3, 0.2, 0.1, 0.0])
    targets[:3, 4] = True
    scores = np.clip(targets * 0.35 + rng.random((120, 5)) * 0.65, 0, 1)
    return scores, targets.astype(np.uint8)


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_perfect_decisions_get_the_interval_one_to_one(fixture_decisions, average):
    """Decisions equal to the targets get F1 1.0 [1.0, 1.0], even with a class absent from many resamples."""
    _, targets = fixture_decisions
    interval = bootstrap_f1(targets.astype(bool), targets, average=average, seed=0)
    assert (interval.value, interval.low, interval.high) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_interval_agrees_with_scipy_bootstrap(fixture_decisions, average):
    """The percentile interval matches scipy.stats.bootstrap's on the same statistic within Monte Carlo error."""
    stats = pytest.importorskip("scipy.stats")
    scores, targets = fixture_decisions
    decided = scores > 0.5
    truth = targets > 0

    def statistic(index):
        rows = np.asarray(index, dtype=int)
        d, t = decided[rows], truth[rows]
        tp, pp, pos = (d & t).sum(0), d.sum(0), t.sum(0)
        f1 = 2 * tp / np.maximum(pp + pos, 1)
        if average == "micro":
            return 2 * tp.sum() / (pp.sum() + pos.sum())
        return f1[pos > 0].mean()

    ours = bootstrap_f1(decided, targets, average=average, n_resamples=4000, seed=1)
    theirs = stats.bootstrap((np.arange(len(decided)),), statistic, vectorized=False, n_resamples=4000,
                             method="percentile", random_state=2, confidence_level=0.95).confidence_interval
    assert ours.value == pytest.approx(statistic(np.arange(len(decided))))
    assert ours.low == pytest.approx(theirs.low, abs=0.012) and ours.high == pytest.approx(theirs.high, abs=0.012)


def test_point_values_match_the_exact_report(fixture_decisions):
    """Micro point value equals the exact micro-F1; macro averages only the classes with positives."""
    scores, targets = fixture_decisions
    values = np.array([0.5, 0.5, 0.6, 0.4, 0.5])
    report = evaluate(scores, targets, values)
    assert bootstrap_f1(scores > values, targets, average="micro").value == pytest.approx(report.micro_f1)
    present = report.support > 0
    assert bootstrap_f1(scores > values, targets, average="macro").value == pytest.approx(report.f1[present].mean())


def test_paired_gain_of_better_decisions_is_positive_and_verdict_reads_in_points(fixture_decisions):
    """Calibrated decisions that fix errors give a positive gain interval and a one-line verdict."""
    scores, targets = fixture_decisions
    default = scores > 0.9
    calibrated = scores > 0.5
    gain = paired_gain(default, calibrated, targets, average="micro", seed=0)
    assert gain.gain.value == pytest.approx(gain.calibrated.value - gain.default.value)
    assert 0 < gain.gain.low <= gain.gain.value <= gain.gain.high
    assert gain.verdict().startswith(f"micro-F1 {100 * gain.gain.value:+.1f} points [+")
    same = paired_gain(default, default, targets, average="macro", seed=0)
    assert (same.gain.value, same.gain.low, same.gain.high) == (0.0, 0.0, 0.0)


def test_paired_interval_is_narrower_than_the_difference_of_separate_intervals(fixture_decisions):
    """Pairing cancels the shared clip variation: the gain's interval is narrower than default's and calibrated's together."""
    scores, targets = fixture_decisions
    gain = paired_gain(scores > 0.7, scores > 0.5, targets, average="micro", seed=0)
    separate = (gain.calibrated.high - gain.default.low) - (gain.calibrated.low - gain.default.high)
    assert gain.gain.high - gain.gain.low < separate


def test_shape_mismatch_is_refused():
    """Decisions and targets of different shapes raise ScoresError."""
    with pytest.raises(ScoresError, match="one shape"):
        bootstrap_f1(np.ones((3, 2), bool), np.ones((3, 3)))
