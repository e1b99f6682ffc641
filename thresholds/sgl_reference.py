"""SGL-Thresh written plainly over the full score matrix: the definition, and the oracle of the fast engine.

Pellegrini & Masquelier (ICASSP 2021) learn one threshold per class by full-batch gradient
descent through the decision ``score > threshold``:

- forward, a Heaviside step: the decisions, and from them the counts TP, FP and FN per class
  and the objective F (micro or macro F-beta) measured exactly as at test time;
- backward, the derivative of the surrogate ``sigmoid(a x)``, ``x = score - threshold``:
  ``d decision / d x = a * sigmoid(a x) * sigmoid(-a x)``, so that raising a threshold lowers
  each decision by that much and dTP/dt, dFP/dt, dFN/dt are sums of it over the clips;
- Adam on ``-F`` (torch.optim.Adam's update, in float32 like the torch parameter), then a
  clamp of every threshold into [0, 1].

Each epoch costs a few passes over the N x C matrix; :func:`calitag.thresholds.fit` takes the
same steps in O(C) per epoch from sorted scores (:mod:`calitag.thresholds.index`), with the
surrogate sums read off a kernel table instead of summed here.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from calitag.thresholds.objectives import resolve_objective


def label_rate_thresholds(scores: np.ndarray, labels: np.ndarray, *, low: float = 0.01,
                          high: float = 0.99) -> np.ndarray:
    """Per class, the midpoint of the ``n_pos``-th and ``(n_pos + 1)``-th highest scores, clipped into [low, high].

    The threshold that predicts as many clips as the class has positives; a class with no
    positive gets ``high``, one positive everywhere ``low``. Returns (C,) float64.
    """
    ranked = -np.sort(-np.asarray(scores, dtype=np.float32), axis=0).astype(np.float64)  # descending per column
    n_clips, n_classes = ranked.shape
    n_pos = np.asarray(labels, dtype=bool).sum(axis=0)
    values = np.empty(n_classes)
    for c, k in enumerate(n_pos):
        values[c] = high if k == 0 else low if k == n_clips else (ranked[k - 1, c] + ranked[k, c]) / 2.0
    return np.clip(values, low, high)


def _objective_gradient(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, beta: float,
                        average: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dF/dTP, dF/dFP, dF/dFN of ``F = (1 + b2) TP / ((1 + b2) TP + b2 FN + FP)`` (0 where the denominator is 0)."""
    b2 = beta * beta
    if average == "micro":  # one F of the counts pooled over classes: every class gets the same partials
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    denominator = (1 + b2) * tp + b2 * fn + fp
    scale = np.where(denominator > 0, (1 + b2) / np.where(denominator > 0, denominator, 1.0) ** 2, 0.0)
    d_tp, d_fp, d_fn = scale * (b2 * fn + fp), -scale * tp, -scale * b2 * tp
    if average == "macro":  # the mean of per-class F
        return d_tp / tp.size, d_fp / tp.size, d_fn / tp.size
    return d_tp, d_fp, d_fn


def sgl_thresholds(scores: np.ndarray, labels: np.ndarray, *, objective: str = "micro_f1", beta: float | None = None,
                   init: float | np.ndarray | None = None, lr: float = 1e-2, slope: float = 50.0,
                   epochs: int = 100) -> np.ndarray:
    """SGL-Thresh: ``epochs`` full-batch Adam steps on ``-objective`` through the surrogate step.

    Parameters
    ----------
    scores : numpy.ndarray
        (N, C) scores in [0, 1], compared in float32.
    labels : numpy.ndarray
        (N, C) 0/1 labels.
    objective : str
        "micro_f1", "macro_f1", "micro_fbeta" or "macro_fbeta" (with ``beta``).
    beta : float, optional
        Recall weight of the F-beta objectives.
    init : float or numpy.ndarray, optional
        Start: one value, or one per class; None starts at :func:`label_rate_thresholds`.
    lr, slope, epochs
        Adam's learning rate, the surrogate's slope ``a`` and the number of full-batch steps.

    Returns
    -------
    numpy.ndarray
        (C,) float64 thresholds in [0, 1] (float32 values, as trained).
    """
    spec = resolve_objective(objective, beta=beta)
    scores = np.asarray(scores, dtype=np.float32)
    positive = np.asarray(labels, dtype=bool)
    start = label_rate_thresholds(scores, positive) if init is None else init
    thresholds = np.broadcast_to(np.asarray(start, dtype=np.float64), scores.shape[1:]).astype(np.float32)
    exp_avg, exp_avg_sq = np.zeros_like(thresholds), np.zeros_like(thresholds)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, epochs + 1):
        decision = scores > thresholds  # forward: the Heaviside step
        tp, fp = (decision & positive).sum(axis=0), (decision & ~positive).sum(axis=0)
        fn = (~decision & positive).sum(axis=0)
        d_tp, d_fp, d_fn = _objective_gradient(tp, fp, fn, beta=spec.beta, average=spec.average)
        # backward: the surrogate's derivative; a rising threshold lowers each decision by it.
        z = slope * (scores.astype(np.float64) - thresholds)
        bump = slope * expit(z) * expit(-z)
        bump_pos, bump_neg = (bump * positive).sum(axis=0), (bump * ~positive).sum(axis=0)
        # dLoss/dt for loss = -F, with dTP/dt = -bump_pos, dFP/dt = -bump_neg, dFN/dt = +bump_pos.
        grad = (d_tp * bump_pos + d_fp * bump_neg - d_fn * bump_pos).astype(np.float32)
        # torch.optim.Adam's update (single tensor, no weight decay) in its operation order; the
        # Python-float factors stay float32 against float32 arrays.
        exp_avg += (1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        denom = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2**step) + eps
        thresholds -= lr / (1 - beta1**step) * exp_avg / denom
        np.clip(thresholds, 0.0, 1.0, out=thresholds)
    return thresholds.astype(np.float64)
