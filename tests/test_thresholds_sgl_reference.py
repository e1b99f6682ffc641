"""The plain SGL-Thresh reference (calitag.thresholds.sgl_reference) as the oracle of the fast engine; no torch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calitag.thresholds import NoPositivesWarning, ScoreIndex, fit, synthetic_scores
from calitag.thresholds.solvers import SGLOptions, _sgl_fast
from calitag.thresholds.objectives import resolve_objective
from calitag.thresholds.sgl_reference import label_rate_thresholds, sgl_thresholds

#: A kernel-table step fine enough (in units of 1/slope) that the fast engine's surrogate sums
#: round to the reference's float32 gradient: both then take the same Adam steps.
FINE_GRID_Z = 0.002
OBJECTIVES = [("micro_f1", None), ("macro_f1", None), ("micro_fbeta", 0.5), ("macro_fbeta", 2.0)]


def _fast_raw(scores: np.ndarray, labels: np.ndarray, *, objective: str, beta: float | None, init: float | None,
              grid_step_z: float) -> tuple[np.ndarray, ScoreIndex]:
    """The fast engine's thresholds before fit() snaps them, and its index."""
    index = ScoreIndex.build(scores, labels.astype(bool), slope=50.0, grid_step_z=grid_step_z)
    start = index.label_rate_thresholds() if init is None else np.full(scores.shape[1], init)
    opts = SGLOptions(grid_step_z=grid_step_z)
    return _sgl_fast(index, resolve_objective(objective, beta=beta), opts, start, None), index


def _paper_sets(shared) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(shared / "data" / "dcase2017_task4.npz") as data:
        sets = {"dcase2017 val": (data["val_scores"], data["val_labels"]),
                "dcase2017 eval": (data["eval_scores"], data["eval_labels"])}
    with np.load(shared / "data" / "dcase2019_task4_val.npz") as data:
        sets["dcase2019 val"] = (data["val_scores"], data["val_labels"])
    return sets


def _check_equal_steps(scores: np.ndarray, labels: np.ndarray, objective: str, beta: float | None,
                       init: float | None) -> None:
    """On a fine kernel grid the fast engine ends within 1e-6 of the reference, and fit() equals it snapped."""
    reference = sgl_thresholds(scores, labels, objective=objective, beta=beta, init=init)
    fast, index = _fast_raw(scores, labels, objective=objective, beta=beta, init=init, grid_step_z=FINE_GRID_Z)
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-6)
    given = {} if init is None else {"init": init}
    fitted = fit(scores, labels, objective=objective, beta=beta, grid_step_z=FINE_GRID_Z, **given)
    np.testing.assert_array_equal(fitted.values, index.snap(reference))


@pytest.mark.parametrize("init", [0.3, None], ids=["init-0.3", "label-rate"])
@pytest.mark.parametrize(("objective", "beta"), OBJECTIVES)
def test_fast_engine_takes_the_reference_steps_on_the_paper_data(shared, objective, beta, init):
    """On the DCASE2017 (val, eval) and DCASE2019 scores the fast engine follows the reference step for step."""
    for scores, labels in _paper_sets(shared).values():
        _check_equal_steps(scores, labels, objective, beta, init)


@pytest.mark.parametrize("init", [0.3, None], ids=["init-0.3", "label-rate"])
@pytest.mark.parametrize(("objective", "beta"), OBJECTIVES)
@pytest.mark.parametrize("shape_seed", [(600, 10, 0), (488, 17, 5)], ids=["600x10", "488x17"])
def test_fast_engine_takes_the_reference_steps_on_synthetic_scores(shape_seed, objective, beta, init):
    """On seeded long-tailed synthetic scores the fast engine follows the reference step for step."""
    n_clips, n_classes, seed = shape_seed
    scores, labels = synthetic_scores(n_clips, n_classes, seed=seed)
    _check_equal_steps(scores, labels, objective, beta, init)


@pytest.mark.parametrize(("objective", "beta"), OBJECTIVES)
def test_default_grid_stays_close_to_the_reference(shared, objective, beta):
    """With the default kernel grid (0.05 / slope) thresholds stay within 1e-2 of the reference and F within 2e-3."""
    for scores, labels in _paper_sets(shared).values():
        reference = sgl_thresholds(scores, labels, objective=objective, beta=beta, init=0.3)
        fitted = fit(scores, labels, objective=objective, beta=beta, init=0.3)
        snapped = ScoreIndex.build(scores, labels.astype(bool), slope=None).snap(reference)
        np.testing.assert_allclose(fitted.values, snapped, atol=1e-2)
        plain = fit(scores, labels, method="default", init=tuple(snapped), objective=objective, beta=beta)
        assert fitted.validation["objective"] == pytest.approx(plain.validation["objective"], abs=2e-3)


def test_label_rate_start_equals_the_index():
    """The plain label-rate start equals ScoreIndex.label_rate_thresholds, also for classes with 0 or all positives."""
    scores, labels = synthetic_scores(300, 8, seed=4)
    labels = labels.copy()
    labels[:, 2] = 0
    labels[:, 5] = 1
    index = ScoreIndex.build(scores, labels.astype(bool), slope=None)
    np.testing.assert_array_equal(label_rate_thresholds(scores, labels), index.label_rate_thresholds())
    assert label_rate_thresholds(scores, labels)[2] == 0.99 and label_rate_thresholds(scores, labels)[5] == 0.01


def test_reference_separates_separable_scores():
    """On separable classes the reference ends with every threshold between the negatives and the positives."""
    rng = np.random.default_rng(0)
    labels = rng.random((300, 3)) < 0.3
    scores = np.where(labels, rng.uniform(0.6, 0.7, (300, 3)), rng.uniform(0.1, 0.2, (300, 3)))
    values = sgl_thresholds(scores, labels, init=0.3, epochs=300, lr=0.02)
    assert ((values > 0.2) & (values < 0.6)).all()


def test_reference_clamps_into_the_unit_interval():
    """A class whose scores all lie above every threshold is pushed up and stays clamped at or below 1."""
    scores = np.full((50, 2), 0.999, dtype=np.float32)
    labels = np.zeros((50, 2), dtype=bool)
    labels[:5, 1] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        values = sgl_thresholds(scores, labels, init=0.99, lr=0.5, epochs=20)
    assert 0.0 <= values.min() and values.max() <= 1.0
