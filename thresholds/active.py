"""Which clips to label next: near where each class's threshold should sit, spread over the classes, in a
mix chosen by simulating the refit it leads to.

A threshold that maximises micro-F1 sits where a class's probability of being positive equals
``F / 2`` (``F`` the micro-F1 reached; Lipton et al. 2014). A refit on the labeled clips places each
threshold where the *labeled* clips' positive rate crosses the *labeled* clips' ``F / 2``, so labels
help in two ways: clips near that crossing pin down the local positive rate, and the labeled clips as
a whole must keep an F-measure near the pool's, else every threshold moves with the bias (clips picked
only near the thresholds are harder than average, their F is lower, and the refit's thresholds drop:
the failure of "closest to the current thresholds" on small sets). How much of that bias a pool can
take depends on its classes (a frequent class whose probability rises slowly with its score moves most),
so each round tries several mixes and keeps the one whose simulated refit does best.

Per round:

1. thresholds are fitted with SGL on the labeled clips (the calibration's own solver), and
   probabilities with a Platt map per class on the labeled clips (scikit-learn's logistic regression
   on the score's logit, a map pooled over the classes where a class has fewer than
   :data:`MIN_PLATT_EXAMPLES` positives or negatives). Choosing clips by their scores leaves
   ``p(positive | score)`` unbiased, so the maps stay right as the picks concentrate.
2. A clip's *near-threshold weight* in a class is a Gaussian kernel (width :data:`WINDOW`) of its
   probability's distance to ``F / 2`` (``F`` the pool's micro-F1 estimated with the labels where known
   and the probabilities elsewhere). Summed over the pool it says how many clips sit at a class's
   crossing; summed over the labeled clips, how well the labels already cover it.
3. For each mix ``(balance, power)`` of :data:`MIXES`, greedy picks: each adds the clip with the largest
   sum over classes of its weight times the class's *need* (the ratio of the pool's coverage to the
   labeled clips' coverage, to the ``power``: labels spread over the crossings, with diminishing returns
   where a class is already covered), less ``balance`` times how much it moves the labeled set's
   expected ``(1 + b^2) TP - F (b^2 P + D)`` away from zero (zero when the labeled clips show the pool's F:
   confident positives come in to offset the hard clips).
4. Each mix's picks are scored by simulation: :data:`DRAWS` draws of their labels from the probabilities
   (the same draws for every mix), the thresholds refitted with SGL on the labeled clips and the drawn
   ones, and the pool's expected objective at those thresholds under the probabilities. The best mix's
   picks are returned.

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
from calitag.thresholds.metrics import NoPositivesWarning, check_scores, check_targets, fbeta_np
from calitag.thresholds.objectives import Objective, resolve_objective
from calitag.thresholds.probability import logit

#: Width of the near-threshold kernel, in probability: about 0.1 either side of the crossing counts.
WINDOW = 0.08
#: The (balance weight, allocation power) mixes each round tries (module docstring, step 3).
MIXES = ((0.0, 2.0), (0.5, 2.0), (1.0, 2.0), (2.0, 2.0), (0.0, 1.0), (0.5, 1.0))
#: Label draws that score each mix (module docstring, step 4).
DRAWS = 16
#: Coverage a class counts as having before any label (in kernel units): keeps the need finite.
PRIOR_COVERAGE = 1.0
#: Fewer labeled clips than this: no map can be fitted, the picks are random.
MIN_LABELED = 2
#: A class with fewer labeled positives (or negatives) than this uses the map pooled over the classes.
MIN_PLATT_EXAMPLES = 3
#: Inverse regularisation of the Platt maps: with tens of labels the slope must not run away.
PLATT_C = 1.0

__all__ = ["DRAWS", "MIXES", "WINDOW", "Suggestions", "rank_unlabeled", "suggest_labels"]


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


@dataclass(frozen=True)
class _Round:
    """What one round knows: thresholds and maps fitted on the labeled clips, and each clip's kernel weights.

    probs: (N, C) the maps' probabilities of every clip. kernel: (N, C) near-threshold weights. shift: (N,)
    each clip's expected entry in the balance (zeros for a macro objective); balance: the labeled clips' own.
    """

    thresholds: np.ndarray
    probs: np.ndarray
    kernel: np.ndarray
    shift: np.ndarray
    balance: float


def _fit_round(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, spec: Objective) -> _Round:
    """Steps 1 and 2 of the module docstring."""
    from calitag.thresholds.solvers import fit

    with warnings.catch_warnings():
        # A class without labeled positives keeps a finite threshold, which is all the picks need.
        warnings.simplefilter("ignore", NoPositivesWarning)
        thresholds = fit(scores[mask], targets[mask], method="sgl", objective=spec).values
    probs = platt_probabilities(scores, targets, mask)
    known = np.where(mask[:, None], targets, probs)
    above, b2 = scores > thresholds, spec.beta**2
    shift, balance = np.zeros(len(scores)), 0.0
    if spec.average == "micro":
        f_pool = (1 + b2) * (known * above).sum() / max(b2 * known.sum() + above.sum(), 1e-12)
        centre = np.full(scores.shape[1], f_pool / (1 + b2))
        shift = (1 + b2) * (known * above).sum(axis=1) - f_pool * (b2 * known.sum(axis=1) + above.sum(axis=1))
        balance = float(shift[mask].sum())
    else:
        centre = np.array([np.interp(t, *_sorted_pair(scores[:, c], probs[:, c])) for c, t in enumerate(thresholds)])
    kernel = np.exp(-0.5 * ((probs - centre) / WINDOW) ** 2)
    return _Round(thresholds, probs, kernel, shift, balance)


def _greedy(state: _Round, mask: np.ndarray, n: int, balance_weight: float, power: float,
            tiebreak: np.ndarray) -> np.ndarray:
    """Step 3 for one mix: positions among the unlabeled clips, in the order picked."""
    unlabeled = np.flatnonzero(~mask)
    kernel, shift, balance = state.kernel[unlabeled], state.shift[unlabeled], state.balance
    pool = state.kernel.sum(axis=0)
    covered = PRIOR_COVERAGE + state.kernel[mask].sum(axis=0)
    expected_share = mask.sum() / len(mask)
    # need = (pool coverage / labeled coverage)^power, scaled so a class covered as a random sample would
    # cover it has need (mean pool / its pool)^(power - 1): 1 for power 1, favouring rare crossings for 2.
    scale = (pool.mean() / np.maximum(pool, 1e-12)) ** (power - 1)
    free, picks = np.ones(len(unlabeled), dtype=bool), []
    for _ in range(n):
        need = scale * (pool * expected_share / covered) ** power
        value = kernel @ need - balance_weight * (np.abs(balance + shift) - abs(balance)) + tiebreak
        value[~free] = -np.inf
        best = int(np.argmax(value))
        free[best], balance, covered = False, balance + shift[best], covered + kernel[best]
        picks.append(best)
    return np.array(picks, dtype=np.int64)


def _simulated_objective(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, rows: np.ndarray,
                         drawn: np.ndarray, probs: np.ndarray, spec: Objective) -> float:
    """Step 4 for one mix: the mean over draws of the pool's expected objective after the refit."""
    from calitag.thresholds.solvers import fit

    fitted = mask.copy()
    fitted[rows] = True
    value = 0.0
    for labels in drawn:
        trial = targets.copy()
        trial[rows] = labels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoPositivesWarning)
            thresholds = fit(scores[fitted], trial[fitted], method="sgl", objective=spec).values
        above = scores > thresholds
        value += float(fbeta_np((probs * above).sum(axis=0), above.sum(axis=0), probs.sum(axis=0),
                                beta=spec.beta, average=spec.average))
    return value / len(drawn)


def _rank(scores: np.ndarray, targets: np.ndarray, mask: np.ndarray, n: int, spec: Objective,
          rng: np.random.Generator) -> Suggestions:
    """The picks of the module docstring, with fitted thresholds and maps."""
    state = _fit_round(scores, targets, mask, spec)
    unlabeled = np.flatnonzero(~mask)
    # Ties (equal scores) in a seeded order, not by row number; far below any real difference.
    tiebreak = 1e-9 * rng.random(len(unlabeled))
    mixes = MIXES if spec.average == "micro" else tuple(dict.fromkeys((0.0, power) for _, power in MIXES))
    orders = [_greedy(state, mask, n, weight, power, tiebreak) for weight, power in mixes]
    # The same label draws for every mix, so the mixes differ by their picks alone.
    union = np.unique(np.concatenate([unlabeled[order] for order in orders]))
    draws = rng.random((DRAWS, len(union), scores.shape[1])) < state.probs[union]
    values = []
    for order in orders:
        rows = unlabeled[order]
        values.append(_simulated_objective(scores, targets, mask, rows, draws[:, np.searchsorted(union, rows)],
                                           state.probs, spec))
    order = orders[int(np.argmax(values))]
    weight = state.kernel[unlabeled[order]]
    return Suggestions(indices=unlabeled[order], doubt=weight.sum(axis=1), classes=weight.argmax(axis=1),
                       thresholds=state.thresholds)


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
