"""Threshold solvers and the paper's reference numbers (calitag.thresholds.solvers)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calitag.errors import CalibrationError, ScoresError
from calitag.thresholds import METHODS, NoPositivesWarning, evaluate, fit, synthetic_scores


def _pct(value: float) -> float:
    return round(100 * value, 1)


@pytest.fixture(scope="module")
def dcase2017(shared):
    """CNN-transformer-avg clip scores on DCASE2017 task 4 (val 488 clips, eval 1103 clips)."""
    with np.load(shared / "data" / "dcase2017_task4.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def dcase2019(shared):
    """DCASE2019 CRNN clip scores on the task-4 validation subset (1122 clips)."""
    with np.load(shared / "data" / "dcase2019_task4_val.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def tagger_like(tagger_like_scores):
    """Seeded 600 x 10 tagger-like validation scores (for behaviour that needs no published data)."""
    scores, labels, names = tagger_like_scores
    return {"val_scores": scores, "val_labels": labels, "classes": np.array(names)}


@pytest.fixture(scope="module")
def separable():
    """Per-class scores where every positive scores above every negative, with class-specific gaps."""
    rng = np.random.default_rng(0)
    labels = rng.random((300, 4)) < 0.3
    low = np.array([0.05, 0.2, 0.4, 0.55])
    high = low + 0.3
    scores = np.where(labels, rng.uniform(high[None, :], high[None, :] + 0.1, (300, 4)),
                      rng.uniform(low[None, :] - 0.05, low[None, :], (300, 4)))
    return scores, labels.astype(np.uint8), low, high


@pytest.fixture(scope="module")
def long_tailed_17():
    """Seeded 488 x 17 long-tailed scores, the shape of the DCASE2017 validation split (no file needed)."""
    scores, labels = synthetic_scores(488, 17, seed=5)
    return {"val_scores": scores, "val_labels": labels}


def test_default_threshold_reproduces_paper(dcase2017, dcase2019):
    """defThresh gives 59.0 (53.8) on DCASE2017 at 0.3 and 70.1 (val) on DCASE2019 at 0.5."""
    th17 = fit(dcase2017["val_scores"], dcase2017["val_labels"], method="default", init=0.3)
    assert _pct(evaluate(dcase2017["eval_scores"], dcase2017["eval_labels"], th17).micro_f1) == 59.0
    assert _pct(th17.validation["micro_f1"]) == 53.8
    th19 = fit(dcase2019["val_scores"], dcase2019["val_labels"], method="default", init=0.5)
    assert _pct(th19.validation["micro_f1"]) == 70.1


def test_sgl_reaches_paper_on_dcase2017(dcase2017):
    """SGL-Thresh with the paper's defaults reaches >= 61.8 eval and >= 61.5 val micro-F1 on DCASE2017."""
    th = fit(dcase2017["val_scores"], dcase2017["val_labels"], method="sgl", init=0.3)
    assert th.options["lr"] == 0.01 and th.options["epochs"] == 100 and th.options["slope"] == 50.0
    assert _pct(evaluate(dcase2017["eval_scores"], dcase2017["eval_labels"], th).micro_f1) >= 61.8
    assert _pct(th.validation["micro_f1"]) >= 61.5


def test_sgl_reaches_paper_on_dcase2019(dcase2019):
    """SGL-Thresh with init 0.5 reaches >= 72.6 val micro-F1 on DCASE2019."""
    th = fit(dcase2019["val_scores"], dcase2019["val_labels"], method="sgl", init=0.5,
             class_names=tuple(str(c) for c in dcase2019["classes"]))
    assert _pct(th.validation["micro_f1"]) >= 72.6
    assert th.class_names[1] == "Speech"


@pytest.mark.torch
@pytest.mark.parametrize("objective", ["micro_f1", "macro_f1"])
def test_fast_engine_follows_autograd_engine(tagger_like, objective):
    """The sorted-score engine ends where the plain autograd engine ends (thresholds within 1e-3, equal F)."""
    args = (tagger_like["val_scores"], tagger_like["val_labels"])
    fast = fit(*args, method="sgl", objective=objective, init=0.3, engine="fast")
    plain = fit(*args, method="sgl", objective=objective, init=0.3, engine="autograd")
    np.testing.assert_allclose(fast.values, plain.values, atol=1e-3)
    assert fast.validation["objective"] == pytest.approx(plain.validation["objective"], abs=2e-3)


@pytest.mark.torch
def test_fast_engine_follows_autograd_on_long_tailed_data():
    """On 2000 x 50 long-tailed synthetic scores both engines give the same micro-F1 (+-0.002)."""
    scores, labels = synthetic_scores(2000, 50, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        fast = fit(scores, labels, init=0.3, engine="fast")
        plain = fit(scores, labels, init=0.3, engine="autograd")
    assert fast.validation["micro_f1"] == pytest.approx(plain.validation["micro_f1"], abs=0.002)
    assert fast.validation["micro_f1"] > evaluate(scores, labels, 0.3).micro_f1


@pytest.mark.parametrize("method", ["sgl", "heuristic", "exact"])
def test_solvers_separate_separable_classes(separable, method):
    """On separable data sgl, heuristic and exact put each threshold between negatives and positives."""
    scores, labels, low, high = separable
    options = {"outer": 5, "inner": 100} if method == "heuristic" else {}
    if method == "sgl":
        options = {"epochs": 300, "lr": 0.02}
    th = fit(scores, labels, method=method, init=0.3, **options)
    assert th.validation["micro_f1"] == 1.0
    assert ((th.values >= low) & (th.values < high)).all()


def test_numeric_improves_on_its_start_and_respects_bounds(tagger_like):
    """numThresh raises val micro-F1 above its start and stops at its iteration bound."""
    scores, labels = tagger_like["val_scores"], tagger_like["val_labels"]
    th = fit(scores, labels, method="numeric", init=0.5, iterations=20)
    assert th.validation["iterations_done"] == 20
    assert th.validation["micro_f1"] > evaluate(scores, labels, 0.5).micro_f1
    bounded = fit(scores, labels, method="numeric", init=0.5, iterations=1000, max_seconds=0.0)
    assert bounded.validation["iterations_done"] <= 1


def test_exact_macro_is_optimal_per_class(tagger_like):
    """exact with macro-F1 gives every class an F1 no lower than any other cut of its scores."""
    scores, labels = tagger_like["val_scores"], tagger_like["val_labels"].astype(bool)
    th = fit(scores, labels, method="exact", objective="macro_f1")
    report = evaluate(scores, labels, th)
    for c in range(scores.shape[1]):
        cuts = np.unique(scores[:, c])
        pred = scores[:, c][None, :] > cuts[:, None]
        tp = (pred & labels[:, c]).sum(1)
        best = (2 * tp / (pred.sum(1) + labels[:, c].sum())).max()
        assert report.f1[c] >= best - 1e-12


def test_exact_micro_beats_other_solvers(tagger_like):
    """exact (coordinate ascent on micro-F1) reaches at least the val micro-F1 of sgl and default."""
    args = (tagger_like["val_scores"], tagger_like["val_labels"])
    exact = fit(*args, method="exact", init=0.3)
    assert exact.validation["micro_f1"] >= fit(*args, method="sgl", init=0.3).validation["micro_f1"]
    assert exact.validation["micro_f1"] >= fit(*args, method="default", init=0.3).validation["micro_f1"]


def test_fbeta_objective_shifts_recall(tagger_like):
    """Maximising micro-F2 gives more recall than micro-F0.5."""
    args = (tagger_like["val_scores"], tagger_like["val_labels"])
    recall_heavy = fit(*args, method="exact", objective="micro_fbeta", beta=2.0)
    precision_heavy = fit(*args, method="exact", objective="micro_fbeta", beta=0.5)
    assert recall_heavy.options["beta"] == 2.0
    assert evaluate(*args, recall_heavy).micro_recall > evaluate(*args, precision_heavy).micro_recall


@pytest.mark.parametrize("method", ["sgl", "heuristic"])
def test_solvers_are_deterministic(tagger_like, method):
    """The same seed gives identical thresholds."""
    args = (tagger_like["val_scores"], tagger_like["val_labels"])
    options = {"outer": 2, "inner": 50} if method == "heuristic" else {}
    first = fit(*args, method=method, seed=4, **options)
    second = fit(*args, method=method, seed=4, **options)
    np.testing.assert_array_equal(first.values, second.values)


@pytest.mark.torch
def test_learnable_slope_runs_with_autograd(tagger_like):
    """learn_slope moves the slope and records it; with a vanishing slope_lr it takes the fixed-slope steps exactly."""
    args = (tagger_like["val_scores"], tagger_like["val_labels"])
    learned = fit(*args, init=0.5, engine="autograd", learn_slope=True, epochs=20)
    assert learned.validation["final_slope_mean"] != 50.0
    frozen = fit(*args, init=0.5, engine="autograd", learn_slope=True, slope_lr=1e-12, epochs=20)
    fixed = fit(*args, init=0.5, engine="autograd", epochs=20)
    assert frozen.validation["final_slope_mean"] == 50.0
    np.testing.assert_array_equal(frozen.values, fixed.values)


@pytest.mark.parametrize("method", METHODS)
def test_class_without_positives_warns_and_stays_finite(method):
    """Every solver warns about a class with no positives and keeps its threshold finite in [0, 1]."""
    scores, labels = synthetic_scores(400, 5, seed=2)
    labels = labels.copy()
    labels[:, 3] = 0
    options = {"outer": 2, "inner": 20} if method == "heuristic" else {}
    if method == "numeric":
        options = {"iterations": 3}
    with pytest.warns(NoPositivesWarning, match="no positive"):
        th = fit(scores, labels, method=method, **options)
    assert np.isfinite(th.values).all() and 0.0 <= th.values[3] <= 1.0


def test_bad_method_objective_and_options_raise():
    """Unknown method, objective, option name or value raises CalibrationError; bad scores ScoresError."""
    scores, labels = synthetic_scores(50, 3, seed=0)
    with pytest.raises(CalibrationError, match="unknown method"):
        fit(scores, labels, method="magic")
    with pytest.raises(CalibrationError, match="unknown objective"):
        fit(scores, labels, objective="auc")
    with pytest.raises(CalibrationError, match="has no option lr"):
        fit(scores, labels, method="exact", lr=0.1)
    with pytest.raises(CalibrationError, match="epochs"):
        fit(scores, labels, epochs=0)
    with pytest.raises(CalibrationError, match="learn_slope needs engine='autograd'"):
        fit(scores, labels, learn_slope=True)
    with pytest.raises(CalibrationError, match="class names"):
        fit(scores, labels, class_names=("a", "b"))
    bad = scores.astype(np.float64)
    bad[0, 0] = np.nan
    with pytest.raises(ScoresError, match="NaN"):
        fit(bad, labels)
    with pytest.raises(ScoresError, match="shape"):
        fit(scores, labels[:10])


def _torch_adam_reference(scores: np.ndarray, labels: np.ndarray, *, init: float, objective: str, beta: float = 1.0):
    """Today's fast engine with torch's Adam and autograd for dF/dcounts: the numpy engine's reference."""
    torch = pytest.importorskip("torch", reason="the reference engine runs torch.optim.Adam")
    from calitag.thresholds import ScoreIndex, fbeta_from_counts, resolve_objective

    spec = resolve_objective(objective, beta=beta if objective.endswith("fbeta") else None)
    index = ScoreIndex.build(scores, labels.astype(bool), slope=50.0, grid_step_z=0.05)
    n_pos = torch.from_numpy(index.n_pos)
    thresholds = torch.full((scores.shape[1],), init, dtype=torch.float32)
    optimizer = torch.optim.Adam([thresholds], lr=1e-2, foreach=False)
    for _ in range(100):
        current = thresholds.detach().numpy()
        tp_np, pp_np = index.counts(current)
        tp = torch.from_numpy(tp_np).requires_grad_(True)
        pp = torch.from_numpy(pp_np).requires_grad_(True)
        value = fbeta_from_counts(tp, pp, n_pos, beta=spec.beta, average=spec.average)
        d_tp, d_pp = torch.autograd.grad(value, (tp, pp))
        k_pos, k_all = index.kernel_sums(current)
        thresholds.grad = torch.from_numpy((d_tp.numpy() * k_pos + d_pp.numpy() * k_all).astype(np.float32))
        optimizer.step()
        with torch.no_grad():
            thresholds.clamp_(0.0, 1.0)
    return thresholds.double().numpy(), index


@pytest.mark.parametrize("objective", ["micro_f1", "macro_f1", "micro_fbeta"])
@pytest.mark.parametrize("dataset", ["long_tailed_17", "tagger_like"])
def test_numpy_adam_engine_equals_torch_adam_engine(request, dataset, objective):
    """The numpy engine (closed-form count gradient, numpy Adam) ends within 1e-6 of torch's Adam and autograd."""
    data = request.getfixturevalue(dataset)
    init = 0.3 if dataset == "long_tailed_17" else 0.5
    reference, index = _torch_adam_reference(data["val_scores"], data["val_labels"], init=init, objective=objective,
                                             beta=0.5)
    th = fit(data["val_scores"], data["val_labels"], method="sgl", init=init, objective=objective,
             beta=0.5 if objective.endswith("fbeta") else None)
    # fit() snaps to the middle of the score gap; the reference, snapped the same way, must agree.
    np.testing.assert_allclose(th.values, index.snap(reference), atol=1e-6)


def test_numpy_adam_engine_equals_torch_adam_engine_on_the_paper_data(dcase2017, dcase2019):
    """On both DCASE score sets, for micro-F1, macro-F1 and micro-F0.5, the numpy engine ends within 1e-6 of torch's Adam."""
    for data, init in ((dcase2017, 0.3), (dcase2019, 0.5)):
        for objective in ("micro_f1", "macro_f1", "micro_fbeta"):
            reference, index = _torch_adam_reference(data["val_scores"], data["val_labels"], init=init,
                                                     objective=objective, beta=0.5)
            th = fit(data["val_scores"], data["val_labels"], method="sgl", init=init, objective=objective,
                     beta=0.5 if objective.endswith("fbeta") else None)
            np.testing.assert_allclose(th.values, index.snap(reference), atol=1e-6, err_msg=objective)


def test_no_init_starts_from_the_label_rate(tagger_like):
    """With no init, sgl records init None and the label-rate start, and beats the default 0.5 on its data."""
    scores, labels = tagger_like["val_scores"], tagger_like["val_labels"]
    th = fit(scores, labels)
    assert th.options["init"] is None and th.options["init_source"] == "label_rate"
    assert th.validation["micro_f1"] > evaluate(scores, labels, 0.5).micro_f1


def test_label_rate_init_reaches_62_2_on_dcase2017(dcase2017):
    """With no init, sgl starts from each class's label-rate threshold and reaches >= 62.2 eval micro-F1."""
    th = fit(dcase2017["val_scores"], dcase2017["val_labels"])
    assert th.options["init"] is None and th.options["init_source"] == "label_rate"
    assert 100 * evaluate(dcase2017["eval_scores"], dcase2017["eval_labels"], th).micro_f1 >= 62.2


def _cv_micro_f1(data: dict, init: float | None, folds: np.ndarray) -> float:
    """Mean held-out micro-F1 (%) of sgl fitted on the other folds, over 3 folds."""
    values = []
    for k in range(3):
        inside = folds != k
        th = fit(data["val_scores"][inside], data["val_labels"][inside], init=init)
        values.append(100 * evaluate(data["val_scores"][~inside], data["val_labels"][~inside], th).micro_f1)
    return float(np.mean(values))


def test_label_rate_init_matches_the_better_fixed_init_on_dcase2019(dcase2019):
    """On 3-fold CV inside DCASE2019 val the no-init default is within 0.2 points of the better of 0.3 and 0.5."""
    folds = np.random.default_rng(0).permutation(len(dcase2019["val_scores"])) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        best_fixed = max(_cv_micro_f1(dcase2019, 0.3, folds), _cv_micro_f1(dcase2019, 0.5, folds))
        assert _cv_micro_f1(dcase2019, None, folds) >= best_fixed - 0.2


@pytest.mark.parametrize("method", ["sgl", "heuristic", "exact"])
def test_fitted_thresholds_sit_between_score_levels(method):
    """With heavily tied (8-bit-like) scores no fitted threshold lies within 1e-6 of a fitting score."""
    rng = np.random.default_rng(3)
    levels = np.array([0.05, 0.18, 0.319, 0.5, 0.681, 0.82, 0.906, 0.953])
    labels = rng.random((400, 6)) < 0.25
    steps = np.clip(rng.integers(0, 4, (400, 6)) + 3 * labels, 0, levels.size - 1)
    scores = levels[steps]
    options = {"outer": 5, "inner": 50} if method == "heuristic" else {}
    th = fit(scores, labels.astype(np.uint8), method=method, **options)
    distance = np.abs(scores[:, :, None] - th.values[None, None, :]).min(axis=(0, 1))
    gaps = np.abs(levels[:, None] - th.values[None, :]).min(axis=0)
    assert gaps.min() > 1e-6 and distance.min() > 1e-6
    np.testing.assert_array_equal(th.apply(scores), scores > th.values)


def test_snap_keeps_the_decisions_on_the_fitting_scores(long_tailed_17):
    """Moving thresholds to gap midpoints changes no decision on the fitting clips."""
    from calitag.thresholds import ScoreIndex

    scores, labels = long_tailed_17["val_scores"], long_tailed_17["val_labels"].astype(bool)
    index = ScoreIndex.build(scores, labels, slope=None)
    raw = np.random.default_rng(0).random(scores.shape[1])
    snapped = index.snap(raw)
    np.testing.assert_array_equal(scores > raw.astype(np.float32), scores > snapped)
    assert not np.array_equal(raw, snapped)


def test_guard_keeps_the_default_for_a_class_the_fit_does_not_help():
    """A class whose fit loses to 0.5 out of fold keeps 0.5's decisions, and the file says why."""
    rng = np.random.default_rng(0)
    n = 300
    labels = np.zeros((n, 2), dtype=np.uint8)
    labels[:, 0] = rng.random(n) < 0.3
    labels[:3, 1] = 1  # three positives, scored like noise
    scores = np.empty((n, 2))
    scores[:, 0] = np.where(labels[:, 0], rng.uniform(0.2, 0.45, n), rng.uniform(0.0, 0.25, n))
    scores[:, 1] = rng.uniform(0.0, 0.49, n)
    th = fit(scores, labels, guard_folds=3, guard_fallback="default", class_names=("strong", "noise"))
    assert th.per_class["positives"] == [int(labels[:, 0].sum()), 3]
    assert th.per_class["kept"] == ["fit", "default"]
    assert th.per_class["reason"][0] is None and "3 positive" in th.per_class["reason"][1]
    np.testing.assert_array_equal(scores[:, 1] > th.values[1], scores[:, 1] > 0.5)
    assert th.values[0] < 0.45  # the fit for the separable class was kept


def test_slope_must_be_finite():
    """An infinite surrogate slope is refused with a clear message instead of dividing by zero."""
    scores, labels = synthetic_scores(100, 3, seed=0)
    with pytest.raises(CalibrationError, match="slope.*finite"):
        fit(scores, labels, slope=float("inf"))


def test_guard_keeps_a_fitted_threshold_for_a_tiny_class_that_separates_low():
    """A class with 4 positives just above its negatives (like audio_samples' Camera) is not sent to 0.5."""
    rng = np.random.default_rng(3)
    n = 240
    labels = np.zeros((n, 2), dtype=np.uint8)
    labels[:, 0] = rng.random(n) < 0.3
    labels[:4, 1] = 1
    scores = np.empty((n, 2))
    scores[:, 0] = np.where(labels[:, 0], rng.uniform(0.3, 0.9, n), rng.uniform(0.0, 0.4, n))
    scores[:, 1] = np.where(labels[:, 1], rng.uniform(0.12, 0.2, n), rng.uniform(0.0, 0.08, n))
    new = fit(scores, labels, guard_folds=3, class_names=("common", "tiny"))
    old = fit(scores, labels, guard_folds=3, guard_fallback="default", class_names=("common", "tiny"))
    assert old.values[1] == 0.5  # calitag 0.1's guard: the tiny class never fires
    assert 0.08 < new.values[1] < 0.12 and new.per_class["kept"][1] in ("fit", "fallback")
    assert new.validation["guard"]["fallback"] == "label_rate"


def test_guard_falls_back_to_the_label_rate_threshold_and_says_so():
    """Where the label-rate threshold wins out of fold it is kept, marked 'fallback', with the reason."""
    rng = np.random.default_rng(0)
    n = 300
    labels = np.zeros((n, 2), dtype=np.uint8)
    labels[:, 0] = rng.random(n) < 0.3
    labels[:3, 1] = 1
    scores = np.empty((n, 2))
    scores[:, 0] = np.where(labels[:, 0], rng.uniform(0.2, 0.45, n), rng.uniform(0.0, 0.25, n))
    scores[:, 1] = rng.uniform(0.0, 0.49, n)
    th = fit(scores, labels, guard_folds=3, class_names=("strong", "noise"))
    fallen = [i for i, kept in enumerate(th.per_class["kept"]) if kept == "fallback"]
    assert fallen, "some class should fall back on these clips"
    for i in fallen:
        assert "label-rate threshold" in th.per_class["reason"][i]
        predicted = int((scores[:, i] > th.values[i]).sum())
        assert predicted == int(labels[:, i].sum())  # the label-rate rule: as many clips as positives


def test_guard_costs_nothing_on_dcase2017_eval(dcase2017, dcase2019):
    """--guard-folds 3 loses at most 0.5 points of eval macro-F1 to no guard (DCASE2017; DCASE2019 val halves)."""
    from calitag.thresholds.splits import split_indices

    a, b = split_indices(dcase2019["val_labels"], held_out_fraction=0.5, seed=0)
    sets = [(dcase2017["val_scores"], dcase2017["val_labels"], dcase2017["eval_scores"], dcase2017["eval_labels"]),
            (dcase2019["val_scores"][a], dcase2019["val_labels"][a], dcase2019["val_scores"][b],
             dcase2019["val_labels"][b])]
    for vs, vl, es, el in sets:
        plain = evaluate(es, el, fit(vs, vl)).macro_f1
        guarded = evaluate(es, el, fit(vs, vl, guard_folds=3)).macro_f1
        assert _pct(guarded) >= _pct(plain) - 0.5


def test_guard_helps_dcase2019_classes_cut_to_four_positives(dcase2019):
    """With 4 fitting positives per class in turn, the guard raises that class's mean held-out F1."""
    from calitag.thresholds.splits import split_indices

    scores, labels = dcase2019["val_scores"], dcase2019["val_labels"]
    a, b = split_indices(labels, held_out_fraction=0.5, seed=0)
    rng = np.random.default_rng(0)
    plain = guarded = 0.0
    for c in range(labels.shape[1]):
        positives = a[labels[a, c] > 0]
        keep = np.setdiff1d(a, rng.choice(positives, size=len(positives) - 4, replace=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain += evaluate(scores[b], labels[b], fit(scores[keep], labels[keep])).f1[c]
            guarded += evaluate(scores[b], labels[b], fit(scores[keep], labels[keep], guard_folds=3)).f1[c]
    assert guarded > plain + 0.02 * labels.shape[1]
