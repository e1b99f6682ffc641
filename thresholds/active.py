"""Which clips to label next: those near the point where each class's threshold should sit, in a mix
that keeps the labeled clips' F-measure honest.

A threshold that maximises micro-F1 sits where a class's probability of being positive equals
``F / 2`` (``F`` the micro-F1 reached; Lipton et al. 2014). A refit on the labeled clips places each
threshold where the *labeled* clips' positive rate crosses the *labeled* clips' ``F / 2``, so labels
help in two ways: clips near that crossing pin down the local positive rate, and the labeled clips as
a whole must keep the pool's F-measure, else every threshold moves with the bias (clips picked only
near the thresholds are harder than average, their F is lower, and the refit's thresholds drop:
the failure of "closest to the current thresholds" on small sets).

So, per round:

1. thresholds are fitted with SGL on the labeled clips (the calibration's own solver), and
   probabilities with a Platt map per class on the labeled clips (scikit-learn's logistic regression
   on the score's logit, a map pooled over the classes where a class has fewer than
   :data:`MIN_PLATT_EXAMPLES` positives or negatives). Choosing clips by their scores leaves
   ``p(positive | score)`` unbiased, so the map stays right as the picks concentrate.
2. The pool's micro-F1 at those thresholds is estimated with the labels where known and the
   probabilities elsewhere; an unlabeled clip's *near-threshold mass* is the sum over classes of a
   Gaussian kernel (width :data:`WINDOW`) of its probability's distance to ``F / 2``: a clip near the
   crossing of a frequent class, or near several, counts most, which is how micro-F1 weighs classes.
3. Picks are greedy: each adds the clip with the largest near-threshold mass minus
   :data:`BALANCE` times how much it moves the labeled set's expected balance
   ``(1 + b^2) TP - F (b^2 P + D)`` (zero when the labeled clips show the pool's F) away from zero.
   Confident positives, which raise the labeled F, come in to offset the hard clips near the thresholds.

For a macro objective every class has its own F and crossing: the kernel is centred on each class's
probability at its current threshold, and there is no shared F to balance.
With labels too few for a map (fewer than :data:`MIN_LABELED` clips, or no positive or no negative
among them) the picks are random.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from calitag.errors import CalibrationError, LabelsError
from calitag.thresholds.metrics import NoPositivesWarning, check_scores, check_targets
from calitag.thresholds.objectives import Objective, resolve_objective
from calitag.thresholds.probability import logit

#: Width of the near-threshold kernel, in probability: about 0.1 either side of the crossing counts.
WINDOW = 0.08
#: Weight of the balance against the near-threshold mass (both count class entries of clips).
BALANCE = 2.0
#: Fewer labeled clips than this: no map can be fitted, the picks are random.
MIN_LABELED = 2
#: A class with fewer labeled positives (or negatives) than this uses the map pooled over the classes.
MIN_PLATT_EXAMPLES = 3
#: Inverse regularisation of the Platt maps: with tens of labels the slope must not run away.
PLATT_C = 1.0

__all__ = ["BALANCE", "WINDOW", "Suggestions", "rank_unlabeled", "suggest_labels"]


@dataclass(frozen=True)
class Suggestions:
    """The clips to label next and why.

    indices: (n,) rows of the score matrix, in the order picked. doubt: (n,) their near-threshold mass
    (the sum over classes of the kernel, between 0 and n_classes; 0 when picked at random). classes: (n,)
    the column each pick is nearest the crossing in. thresholds: (n_classes,) the thresholds fitted on the
    labeled clips, NaN when the picks are random.
    """

    indices: np.ndarray
    doubt: np.ndarray
    classes: np.ndarray
    thresholds: np.ndarray


def _check_inputs(scores: Any, labels: Any, labeled: Any, n: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (N, C), 0/1 targets of the labeled rows (other rows zeroed), the labeled mask; precise errors."""
    checked = check_scores(scores, name="scores")
    mask = np.asarray(labeled)
    if mask.dtype != bool:
        raise LabelsError(f"labeled must be a boolean mask, got dtype {mask.dtype}; "
                          "pass e.g. np.isin(np.arange(n_clips), labeled_rows)")
    if mask.shape != (checked.shape[0],):
        raise LabelsError(f"labeled must have one entry per clip ({checked.shape[0]}), got shape {mask.shape}")
    label_array = np.asarray(labels)
    if label_array.shape != checked.shape:
        raise LabelsError(f"labels must have the shape of scores {checked.shape}, got {label_array.shape}")
    targets = np.zeros(checked.shape, dtype=np.float32)
    if mask.any():
        targets[mask] = check_targets(label_array[mask], (int(mask.sum()), checked.shape[1]), name="labels")
    n_unlabeled = int((~mask).sum())
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_unlabeled:
        raise LabelsError(f"n must be an integer from 1 to the number of unlabeled clips ({n_unlabeled}), got {n!r}")
    return checked, targets, mask


def platt_probabilities(scores: np.ndarray, targets: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """(N, C) probabilities of every clip from Platt maps fitted on the labeled rows (pooled where few)."""
    from sklearn.linear_model import LogisticRegression

    z, truth = logit(scores, eps=1e-6), targets[labeled] > 0
    pooled = LogisticRegression(C=PLATT_C).fit(z[labeled].reshape(-1, 1), truth.reshape(-1))
    probs = np.empty(scores.shape)
    for c in range(scores.shape[1]):
        n_pos = int(truth[:, c].sum())
        own = min(n_pos, len(truth) - n_pos) >= MIN_PLATT_EXAMPLES
        model = LogisticRegression(C=PLATT_C).fit(z[labeled, c, None], truth[:, c]) if own else pooled
        probs[:, c] = model.predict_proba(z[:, c, None])[:, 1]
    return probs


def _pick(mass: np.ndarray, shift: np.ndarray, balance: float, n: int, tiebreak: np.ndarray) -> np.ndarray:
    """Greedy positions: most mass minus BALANCE times the growth of |balance|, updated after each pick."""
    free, picks = np.ones(len(mass), dtype=bool), []
    for _ in range(n):
        value = mass - BALANCE * (np.abs(balance + shift) - abs(balance)) + tiebreak
        value[~free] = -np.inf
        best = int(np.argmax(value))
        free[best], balance = False, balance + shift[best]
        picks.append(best)
    return np.array(picks, dtype=np.int64)


def _rank(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, n: int, spec: Objective,
          rng: np.random.Generator) -> Suggestions:
    """The greedy picks of the module docstring, with fitted thresholds and maps."""
    from calitag.thresholds.solvers import fit

    with warnings.catch_warnings():
        # A class without labeled positives keeps a finite threshold, which is all the picks need.
        warnings.simplefilter("ignore", NoPositivesWarning)
        thresholds = fit(scores[mask], targets[mask], method="sgl", objective=spec).values
    probs = platt_probabilities(scores, targets, mask)
    probs[mask] = targets[mask]
    above, b2 = scores > thresholds, spec.beta**2
    if spec.average == "micro":
        f_pool = (1 + b2) * (probs * above).sum() / max(b2 * probs.sum() + above.sum(), 1e-12)
        centre = np.full(scores.shape[1], f_pool / (1 + b2))
    else:
        centre = np.array([np.interp(t, *_sorted_pair(scores[:, c], probs[:, c])) for c, t in enumerate(thresholds)])
    unlabeled = np.flatnonzero(~mask)
    kernel = np.exp(-0.5 * ((probs[unlabeled] - centre) / WINDOW) ** 2)
    balance, shift = 0.0, np.zeros(len(unlabeled))
    if spec.average == "micro":
        def entries(p: np.ndarray, a: np.ndarray) -> np.ndarray:
            return (1 + b2) * (p * a).sum(axis=1) - f_pool * (b2 * p.sum(axis=1) + a.sum(axis=1))
        balance = float(entries(targets[mask], above[mask]).sum())
        shift = entries(probs[unlabeled], above[unlabeled])
    # Ties (equal scores) in a seeded order, not by row number; far below any real difference.
    order = _pick(kernel.sum(axis=1), shift, balance, n, 1e-9 * rng.random(len(unlabeled)))
    return Suggestions(indices=unlabeled[order], doubt=kernel.sum(axis=1)[order],
                       classes=kernel[order].argmax(axis=1), thresholds=thresholds)


def _sorted_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def rank_unlabeled(scores: Any, labels: Any, labeled: Any, n: int, *, objective: str = "micro_f1",
                   seed: int = 0) -> Suggestions:
    """The ``n`` unlabeled clips to label next, with the class and threshold behind each pick.

    Parameters and errors as :func:`suggest_labels`; with fewer than 2 labeled clips, or no labeled
    positive or no labeled negative at all, the picks are random and their doubt is 0.
    """
    checked, targets, mask = _check_inputs(scores, labels, labeled, n)
    spec = resolve_objective(objective)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise CalibrationError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    known = targets[mask]
    if mask.sum() < MIN_LABELED or known.min(initial=1.0) == known.max(initial=0.0):
        picks = rng.choice(np.flatnonzero(~mask), size=n, replace=False)
        return Suggestions(picks, np.zeros(n), np.zeros(n, dtype=np.int64), np.full(checked.shape[1], np.nan))
    return _rank(checked.astype(np.float64), targets.astype(np.float64), mask, n, spec, rng)


def suggest_labels(scores: Any, labels: Any, labeled: Any, n: int, *, objective: str = "micro_f1",
                   seed: int = 0) -> np.ndarray:
    """Row indices of the ``n`` unlabeled clips whose labels would most settle the thresholds.

    Parameters
    ----------
    scores : array_like
        (n_clips, n_classes) clip scores in [0, 1].
    labels : array_like
        (n_clips, n_classes) 0/1 where ``labeled`` is True; other rows are ignored.
    labeled : array_like of bool
        (n_clips,) True for the clips labeled so far.
    n : int
        How many clips to suggest, from 1 to the number of unlabeled clips.
    objective : str
        What the thresholds maximise (as :func:`calitag.fit_thresholds`): "micro_f1", "macro_f1", ...
    seed : int
        Seeds the order of ties: equal inputs give equal picks.

    Returns
    -------
    numpy.ndarray
        (n,) distinct int64 indices of unlabeled rows, most informative first.

    Raises
    ------
    ScoresError
        Scores that are not a finite (n_clips, n_classes) matrix in [0, 1]; labels not 0/1 on the
        labeled rows.
    LabelsError
        ``labeled`` not a boolean mask of one entry per clip; labels of another shape; ``n`` not an
        integer from 1 to the number of unlabeled clips.
    CalibrationError
        Unknown objective; a seed that is not an integer.
    """
    return rank_unlabeled(scores, labels, labeled, n, objective=objective, seed=seed).indices.astype(np.int64)
