"""Surrogate-gradient threshold calibration (SGL-Thresh), its baselines and the thresholds file.

    from calitag.thresholds import fit, evaluate, Thresholds
    th = fit(val_scores, val_labels, method="sgl", objective="micro_f1")   # init=0.3: the paper's start
    decisions = th.apply(eval_scores)            # bool (n_clips, n_classes), strict score > threshold
    report = evaluate(eval_scores, eval_labels, th)
    th.save("th.json"); Thresholds.load("th.json", expected_classes=th.class_names)
"""

from calitag.thresholds.bootstrap import Interval, PairedGain, bootstrap_f1, paired_gain
from calitag.thresholds.fit import (
    METHODS,
    DefaultOptions,
    ExactOptions,
    HeuristicOptions,
    NumericOptions,
    SGLOptions,
    fit,
)
from calitag.thresholds.index import ScoreIndex
from calitag.thresholds.io import FORMAT_VERSION, Thresholds
from calitag.thresholds.metrics import (
    ClassificationReport,
    NoPositivesWarning,
    check_scores,
    check_scores_labels,
    check_targets,
    evaluate,
)
from calitag.thresholds.objectives import (
    OBJECTIVES,
    Objective,
    fbeta_from_counts,
    macro_f1,
    macro_fbeta,
    micro_f1,
    micro_fbeta,
    objective_value,
    resolve_objective,
)
from calitag.thresholds.scorefiles import ScoreSet, read_scores
from calitag.thresholds.synthetic import synthetic_scores

# The surrogate-gradient layer needs torch: import it on first use, so that fitting, the
# thresholds file and every `calitag thresholds` command run without torch installed.
_TORCH_NAMES = {"SurrogateStep", "ThresholdLayer", "surrogate_step"}


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        from calitag.thresholds import surrogate

        return getattr(surrogate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMAT_VERSION",
    "METHODS",
    "OBJECTIVES",
    "ClassificationReport",
    "DefaultOptions",
    "ExactOptions",
    "HeuristicOptions",
    "NoPositivesWarning",
    "NumericOptions",
    "Objective",
    "SGLOptions",
    "ScoreIndex",
    "ScoreSet",
    "SurrogateStep",
    "ThresholdLayer",
    "Thresholds",
    "Interval",
    "PairedGain",
    "bootstrap_f1",
    "check_scores",
    "check_scores_labels",
    "check_targets",
    "paired_gain",
    "evaluate",
    "fbeta_from_counts",
    "fit",
    "macro_f1",
    "macro_fbeta",
    "micro_f1",
    "micro_fbeta",
    "objective_value",
    "read_scores",
    "resolve_objective",
    "surrogate_step",
    "synthetic_scores",
]
