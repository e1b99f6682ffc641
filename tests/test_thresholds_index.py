"""Sorted-score index: exact counts and tabulated surrogate-gradient sums (calitag.thresholds.index)."""

from __future__ import annotations

import numpy as np
import pytest

from calitag.thresholds import ScoreIndex, synthetic_scores
from calitag.thresholds import index as index_module


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


def _direct_kernel(scores: np.ndarray, values: np.ndarray, slope: float) -> np.ndarray:
    z = slope * (scores.astype(np.float64) - values)
    return (slope * np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2).sum(0)


def test_exact_counts_compare_with_the_float64_threshold(data):
    """counts(exact=True) equals numpy's float64 comparison, also for thresholds between two float32 neighbours."""
    scores, labels = data
    scores = scores.copy()
    scores[60:70, 2] = np.float32(1e-30)  # tiny scores whose float32 gaps are far below 1e-13
    index = ScoreIndex.build(scores, labels, slope=None)
    column = scores[:, 2].astype(np.float64)
    level = np.float64(np.float32(0.5))
    above = np.float64(np.nextafter(np.float32(0.5), np.float32(1)))
    for t in (level, (level + above) / 2, 1e-30, np.nextafter(1e-30, 1.0), 0.0, 1.0):
        values = np.full(12, t)
        values[3] = column[5]
        tp, pp = index.counts(values, exact=True)
        pred = scores > values
        np.testing.assert_array_equal(pp, pred.sum(0))
        np.testing.assert_array_equal(tp, (pred & labels).sum(0))


def test_epoch_reader_equals_counts_and_kernel_sums(data):
    """The SGL epoch reader gives the same counts and kernel sums as counts() and kernel_sums()."""
    scores, labels = data
    index = ScoreIndex.build(scores, labels, slope=50.0, grid_step_z=0.05)
    read = index.epoch_reader()
    rng = np.random.default_rng(1)
    for values in (rng.uniform(0, 1, 12).astype(np.float32), np.zeros(12, np.float32), np.ones(12, np.float32),
                   scores[11].copy()):
        tp, pp, k_pos, k_all = read(values)
        np.testing.assert_array_equal((tp, pp), index.counts(values))
        np.testing.assert_array_equal((k_pos, k_all), index.kernel_sums(values))


def test_build_does_not_depend_on_threads():
    """Sorting and tabulating blocks of classes in threads gives the same index as one thread."""
    scores, labels = synthetic_scores(300, 70, seed=5)
    one = ScoreIndex.build(scores, labels.astype(bool), slope=50.0, grid_step_z=0.05, workers=1)
    three = ScoreIndex.build(scores, labels.astype(bool), slope=50.0, grid_step_z=0.05, workers=3)
    for name in ("values", "below", "kernel"):
        np.testing.assert_array_equal(getattr(one, name), getattr(three, name))


def test_kernel_of_the_last_class_counts_every_score_of_its_top_bin():
    """The last class's highest grid bin holds several scores: its kernel sums still match the direct sum."""
    rng = np.random.default_rng(2)
    scores = rng.uniform(0.0, 0.5, (40, 3)).astype(np.float32)
    scores[:4, 2] = np.float32([0.9001, 0.9002, 0.9003, 0.9004])  # one bin of width 1/1000 at slope 50
    labels = np.zeros((40, 3), dtype=bool)
    labels[:4] = True
    index = ScoreIndex.build(scores, labels, slope=50.0, grid_step_z=0.05)
    values = np.array([0.3, 0.3, 0.9])
    k_pos, k_all = index.kernel_sums(values)
    np.testing.assert_allclose(k_all, _direct_kernel(scores, values, 50.0), rtol=1e-3)
    np.testing.assert_allclose(k_pos, _direct_kernel(np.where(labels, scores, 10.0), values, 50.0), rtol=1e-3)


@pytest.mark.parametrize("few_searches", [0, 16], ids=["one-search-for-all", "search-each"])
@pytest.mark.parametrize("slope", [None, 50.0])
def test_counts_in_crowded_bins_equal_brute_force(slope, few_searches, monkeypatch):
    """Quantised scores (hundreds per grid bin, levels on and off the grid's edges): counts stay exact.

    Both ways of finishing a crowded bin are checked: one binary search over every crowded class
    at once, and a search per class (used when few are crowded).
    """
    monkeypatch.setattr(index_module, "_FEW_SEARCHES", few_searches)
    rng = np.random.default_rng(4)
    raw, labels = synthetic_scores(3000, 9, seed=6)
    scores = raw.copy()
    scores[:, :3] = np.round(raw[:, :3] * 256) / 256  # levels k/256: on the edges of a 1/1024 grid
    scores[:, 3:6] = np.round(raw[:, 3:6] * 300) / 300  # levels between edges
    scores[:1500, 6] = np.float32(0.0301)  # one level holding half the clips
    index = ScoreIndex.build(scores, labels.astype(bool), slope=slope, grid_step_z=0.05)
    levels = np.unique(scores)
    queries = [levels[rng.integers(0, levels.size, 9)], np.nextafter(levels[rng.integers(0, levels.size, 9)], 0),
               rng.uniform(0, 1, 9), np.full(9, 0.0301), np.full(9, -0.1), np.linspace(0, 1, 9)]
    for values in queries:
        tp, pp = index.counts(values, exact=True)
        pred = scores > np.asarray(values)
        np.testing.assert_array_equal(pp, pred.sum(0))
        np.testing.assert_array_equal(tp, (pred & labels.astype(bool)).sum(0))
        if slope is not None:
            query = np.clip(np.asarray(values), 0, 1).astype(np.float32)
            read_tp, read_pp, _, _ = index.epoch_reader()(query)
            np.testing.assert_array_equal((read_tp, read_pp), index.counts(query))


@pytest.mark.parametrize("slope", [50.0, 150.0, 333.0])
def test_counts_at_the_grid_edges_equal_brute_force(slope):
    """Scores and thresholds on the float32 grid edges and one float32 step below them: exact counts."""
    step = 0.05 / slope
    edges = (np.arange(int(1 / step)) * step).astype(np.float32)
    below = np.nextafter(edges[1:], np.float32(0))
    column = np.concatenate([edges, below])
    scores = np.stack([column, column[::-1]], axis=1)
    labels = np.zeros(scores.shape, dtype=bool)
    labels[::3] = True
    index = ScoreIndex.build(scores, labels, slope=slope, grid_step_z=0.05)
    read = index.epoch_reader()
    queries = np.concatenate([edges[1:], below])
    for values in np.random.default_rng(0).choice(queries, (300, 2)):
        tp, pp = index.counts(values)
        pred = scores > values
        np.testing.assert_array_equal(pp, pred.sum(0))
        np.testing.assert_array_equal(tp, (pred & labels).sum(0))
        np.testing.assert_array_equal(read(values.astype(np.float32))[:2], (tp, pp))
