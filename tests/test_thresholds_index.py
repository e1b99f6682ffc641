"""Sorted-score index: exact counts and tabulated surrogate-gradient sums (calitag.thresholds.index)."""

from __future__ import annotations

import numpy as np
import pytest

from calitag.thresholds import ScoreIndex, synthetic_scores


@pytest.fixture(scope="module")
def data():
    """Synthetic long-tailed scores with ties and exact 0/1 values added."""
    scores, labels = synthetic_scores(600, 12, seed=3)
    scores = scores.copy()
    scores[:40, 0] = 0.25  # a tie block
    scores[40:45, 1] = 0.0
    scores[45:50, 1] = 1.0
    return scores, labels.astype(bool)


def test_counts_equal_brute_force(data):
    """tp and pp equal direct counts of score > threshold, also at tied and boundary values."""
    scores, labels = data
    index = ScoreIndex.build(scores, labels, slope=None)
    for values in (np.full(12, 0.25, dtype=np.float32), np.zeros(12), np.ones(12), np.linspace(0, 1, 12),
                   scores[7].astype(np.float64)):
        tp, pp = index.counts(values)
        pred = scores > values.astype(np.float32)
        np.testing.assert_array_equal(pp, pred.sum(0))
        np.testing.assert_array_equal(tp, (pred & labels).sum(0))


@pytest.mark.parametrize("slope", [20.0, 50.0, 150.0])
def test_kernel_sums_match_direct_sum(data, slope):
    """Interpolated kernel sums agree with the direct sum of a*sig*sig over the scores (rel. 1e-3)."""
    scores, labels = data
    index = ScoreIndex.build(scores, labels, slope=slope, grid_step_z=0.05)
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = rng.uniform(0.0, 1.0, 12)
        k_pos, k_all = index.kernel_sums(values)
        z = slope * (scores.astype(np.float64) - values)
        bump = slope * np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2
        direct_all = bump.sum(0)
        direct_pos = (bump * labels).sum(0)
        scale = direct_all.max()
        np.testing.assert_allclose(k_all, direct_all, rtol=1e-3, atol=1e-6 * scale)
        np.testing.assert_allclose(k_pos, direct_pos, rtol=1e-3, atol=1e-6 * scale)


def test_finer_grid_is_more_accurate(data):
    """Halving the grid step reduces the kernel-sum error (second-order scheme)."""
    scores, labels = data
    values = np.full(12, 0.137)
    z = 50.0 * (scores.astype(np.float64) - values)
    direct = (50.0 * np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2).sum(0)
    errors = []
    for step in (0.2, 0.1, 0.05):
        _, k_all = ScoreIndex.build(scores, labels, slope=50.0, grid_step_z=step).kernel_sums(values)
        errors.append(np.abs(k_all - direct).max())
    assert errors[0] > errors[1] > errors[2]


def test_build_leaves_a_single_class_matrix_untouched():
    """Building the index of one class (its transpose is contiguous) sorts a copy, never the caller's scores."""
    rng = np.random.default_rng(0)
    scores = rng.random((50, 1)).astype(np.float32)
    labels = rng.random((50, 1)) < 0.4
    before = scores.copy()
    index = ScoreIndex.build(scores, labels, slope=50.0)
    np.testing.assert_array_equal(scores, before)
    tp, pp = index.counts(np.array([0.5]))
    assert (tp[0], pp[0]) == (((scores > 0.5) & labels).sum(), (scores > 0.5).sum())
