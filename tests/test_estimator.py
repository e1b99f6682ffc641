"""calitag.ThresholdTuner: a scikit-learn multi-label estimator over score matrices (thresholds/estimator.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator

import calitag
from calitag.thresholds.estimator import ThresholdTuner

#: Checks that feed generic features (any real values, or a 1-D target beside several feature columns):
#: the input here is a score matrix in [0, 1] with one 0/1 label column per score column, so fit refuses
#: them with a ScoresError. Their behaviours (pickle, idempotent fit, subset invariance, pipelines, output
#: format) are checked on score matrices below.
GENERIC_DATA = {
    "check_classifier_data_not_an_array", "check_classifier_multioutput", "check_classifiers_classes",
    "check_classifiers_multilabel_output_format_decision_function",
    "check_classifiers_multilabel_output_format_predict", "check_classifiers_multilabel_output_format_predict_proba",
    "check_classifiers_multilabel_representation_invariance", "check_classifiers_train",
    "check_decision_proba_consistency", "check_dict_unchanged", "check_dont_overwrite_parameters",
    "check_dtype_object", "check_estimators_dtypes", "check_estimators_fit_returns_self", "check_estimators_nan_inf",
    "check_estimators_overwrite_params", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_fit2d_1feature", "check_fit2d_1sample", "check_fit2d_predict1d", "check_fit_check_is_fitted",
    "check_fit_idempotent", "check_fit_non_negative", "check_fit_score_takes_y", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
}
#: A 1-D target of one class: with scores of several classes there is no label per class to fit.
ONE_LABEL = {"check_classifiers_one_label"}


@pytest.fixture(scope="module")
def data():
    """Scores of 3 classes whose positives score higher than their negatives, with overlap."""
    rng = np.random.default_rng(0)
    labels = (rng.random((240, 3)) < [0.3, 0.5, 0.1]).astype(int)
    scores = np.clip(0.25 * labels + rng.normal(0.2, 0.1, labels.shape), 0.0, 1.0)  # best thresholds near 0.3
    return scores, labels


def test_sklearn_estimator_checks_pass_where_they_apply():
    """Every scikit-learn estimator check passes but those feeding generic features or a single 1-D label."""
    results = check_estimator(ThresholdTuner(method="exact"), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed <= GENERIC_DATA | ONE_LABEL, failed - GENERIC_DATA - ONE_LABEL
    assert {"check_estimators_unfitted", "check_get_params_invariance", "check_set_params",
            "check_parameters_default_constructible", "check_no_attributes_set_in_init",
            "check_classifiers_regression_target", "check_estimator_cloneable"} <= passed


def test_fit_predict_match_fit_thresholds(data):
    """fit/predict give the thresholds and decisions of calitag.fit_thresholds with the same options."""
    scores, labels = data
    tuner = ThresholdTuner(method="exact", objective="macro_f1").fit(scores, labels)
    direct = calitag.fit_thresholds(scores, labels, method="exact", objective="macro_f1")
    np.testing.assert_allclose(tuner.thresholds_.values, direct.values)
    np.testing.assert_array_equal(tuner.predict(scores), scores > np.asarray(direct.values))
    assert tuner.score(scores, labels) == pytest.approx(f1_score(labels, tuner.predict(scores), average="macro"))
    assert tuner.score(scores, labels) > ThresholdTuner(method="default").fit(scores, labels).score(scores, labels)


def test_fit_options_pass_through_to_the_solver(data):
    """fit_options reach fit_thresholds: an unknown option is its CalibrationError, a solver option is recorded."""
    scores, labels = data
    tuner = ThresholdTuner(method="sgl", fit_options={"seed": 3, "epochs": 20}).fit(scores, labels)
    assert tuner.thresholds_.options["epochs"] == 20
    with pytest.raises(calitag.CalibrationError):
        ThresholdTuner(fit_options={"no_such_option": 1}).fit(scores, labels)


def test_predict_proba_is_the_scores_without_probability_maps(data):
    """Without a probabilities fit option, predict_proba returns the scores; decision_function is score - threshold."""
    scores, labels = data
    tuner = ThresholdTuner(method="exact").fit(scores, labels)
    np.testing.assert_array_equal(tuner.predict_proba(scores[:5]), scores[:5])
    assert ((tuner.decision_function(scores) > 0) == tuner.predict(scores).astype(bool)).all()


def test_predict_proba_is_calibrated_when_fitted_with_probability_maps(data):
    """With fit_options probabilities="platt", predict_proba equals the fitted Thresholds' maps and lowers the ECE."""
    from calitag.thresholds.probability import expected_calibration_error

    scores, labels = data
    fit_half, test_half = slice(0, 120), slice(120, None)
    tuner = ThresholdTuner(method="sgl", fit_options={"probabilities": "platt"}).fit(scores[fit_half], labels[fit_half])
    direct = calitag.fit_thresholds(scores[fit_half], labels[fit_half], method="sgl", probabilities="platt")
    probs = tuner.predict_proba(scores[test_half])
    np.testing.assert_allclose(probs, direct.probabilities(scores[test_half]))
    assert not np.allclose(probs, scores[test_half])
    raw = expected_calibration_error(scores[test_half], labels[test_half]).mean()
    assert expected_calibration_error(probs, labels[test_half]).mean() < raw


def test_a_precision_target_reaches_the_estimator(data):
    """fit_options target= gives the Thresholds' per-class certification, and predictions follow its thresholds."""
    scores, labels = data
    tuner = ThresholdTuner(method="sgl", fit_options={"target": "precision=0.7"}).fit(scores, labels)
    per_class = tuner.thresholds_.per_class
    assert len(per_class["certified"]) == 3 and any(per_class["certified"])
    np.testing.assert_array_equal(tuner.predict(scores), (scores > np.asarray(tuner.thresholds_.values)).astype(int))


def test_pickle_clone_and_idempotent_fit(data):
    """A fitted tuner pickles to the same decisions; a clone refits to the same thresholds; subsets predict alike."""
    scores, labels = data
    tuner = ThresholdTuner(method="exact").fit(scores, labels)
    again = pickle.loads(pickle.dumps(tuner))
    np.testing.assert_array_equal(again.predict(scores), tuner.predict(scores))
    np.testing.assert_allclose(clone(tuner).fit(scores, labels).thresholds_.values, tuner.thresholds_.values)
    np.testing.assert_array_equal(tuner.predict(scores[::7]), tuner.predict(scores)[::7])
    with pytest.raises(ValueError, match="3 features"):
        tuner.predict(scores[:, :2])


def test_pipeline_cross_val_score_and_grid_search(data):
    """The tuner works inside a Pipeline, cross_val_score and GridSearchCV on score matrices."""
    scores, labels = data
    pipe = Pipeline([("clip", FunctionTransformer(np.clip, kw_args={"a_min": 0.0, "a_max": 1.0})),
                     ("tuner", ThresholdTuner(method="exact"))])
    folds = cross_val_score(pipe, scores, labels, cv=KFold(3, shuffle=True, random_state=0))
    assert folds.shape == (3,) and (folds > 0.5).all()
    search = GridSearchCV(ThresholdTuner(), {"method": ["default", "exact"]}, cv=3).fit(scores, labels)
    assert search.best_params_ == {"method": "exact"}
    assert search.predict(scores).shape == labels.shape
