"""The decision stage: SGL-Thresh and its baselines, the thresholds file, sound event post-processing.

    from calitag.thresholds import fit, evaluate, Thresholds
    th = fit(val_scores, val_labels, method="sgl", objective="micro_f1")   # init=0.3: the paper's start
    decisions = th.apply(eval_scores)            # bool (n_clips, n_classes), strict score > threshold
    report = evaluate(eval_scores, eval_targets, th)
    th.save("th.json"); Thresholds.load("th.json", expected_classes=th.class_names)
    th = fit(val_scores, val_labels, target="precision=0.9", probabilities="auto")  # certified, calibrated
    th.per_class["certified"], th.probabilities(eval_scores)

Names are imported on first use: reading a thresholds file loads neither the solvers nor torch.
Frame scores have their own decision stack in :mod:`calitag.thresholds.events`.
"""

from calitag._lazy import attach

_FIT = "calitag.thresholds.solvers"
_IO = "calitag.thresholds.io"
_METRICS = "calitag.thresholds.metrics"
_OBJECTIVES = "calitag.thresholds.objectives"
_EXPORTS = {
    **dict.fromkeys(("DefaultOptions", "ExactOptions", "HeuristicOptions", "NumericOptions", "SGLOptions", "fit"),
                    _FIT),
    "METHODS": "calitag.thresholds.choices",
    "OBJECTIVES": "calitag.thresholds.choices",
    "ScoreIndex": "calitag.thresholds.index",
    **dict.fromkeys(("FORMAT_VERSION", "Thresholds"), _IO),
    **dict.fromkeys(("ScoreSet", "read_scores"), "calitag.thresholds.scorefiles"),
    **dict.fromkeys(("Interval", "PairedGain", "bootstrap_f1", "paired_gain"), "calitag.thresholds.bootstrap"),
    **dict.fromkeys(("ClassificationReport", "NoPositivesWarning", "check_targets", "check_scores",
                     "check_scores_labels", "evaluate"), _METRICS),
    **dict.fromkeys(("Objective", "fbeta_from_counts", "macro_f1", "macro_fbeta", "micro_f1", "micro_fbeta",
                     "objective_value", "resolve_objective"), _OBJECTIVES),
    **dict.fromkeys(("SurrogateStep", "ThresholdLayer", "surrogate_step"), "calitag.thresholds.surrogate"),
    "synthetic_scores": "calitag.thresholds.synthetic",
    **dict.fromkeys(("Target", "certify", "read_targets"), "calitag.thresholds.targets"),
    **dict.fromkeys(("ProbabilityMaps", "brier_score", "expected_calibration_error", "fit_probability_maps"),
                    "calitag.thresholds.probability"),
    **dict.fromkeys(("label_rate_thresholds", "sgl_thresholds"), "calitag.thresholds.sgl_reference"),
}
__all__ = sorted(_EXPORTS)
attach(__name__, _EXPORTS)
