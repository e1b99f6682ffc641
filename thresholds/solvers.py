"""Threshold solvers behind one interface: ``fit(scores, labels, method=..., objective=...)``.

Methods
-------
sgl        SGL-Thresh (Pellegrini & Masquelier 2021): full-batch Adam on -objective through the
           surrogate step. ``engine="fast"`` (numpy) reads counts and kernel sums off sorted
           scores (:mod:`calitag.thresholds.index`), takes dF/dcounts in closed form and runs
           torch's Adam update in numpy; ``engine="autograd"`` (torch, imported on use) runs the
           plain layer over the whole score matrix (any device, optional learnable slope). Both
           follow the same steps.
default    one threshold for every class.
heuristic  "dichoThresh" (Cances et al. 2019): per-class random search with shrinking Gaussian steps.
numeric    "numThresh" (Kong et al. 2019): finite-difference F gradient per class, Adam updates;
           each difference re-scores the whole matrix, which is what makes it slow.
exact      per-class optimum over the sorted scores: exact for macro/per-class F; coordinate
           ascent (to a fixed point) for micro F.

Without ``init`` the solvers start at each class's label-rate threshold. Every fitted value is
then moved to the middle of its gap between fitting scores, and ``guard_folds`` falls back to the
label-rate threshold for classes where that beats the fit out of fold.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calitag._extras import import_torch
from calitag.errors import CalibrationError
from calitag.thresholds.index import ScoreIndex
from calitag.thresholds.io import DEFAULT_THRESHOLD, Thresholds
from calitag.thresholds.metrics import check_scores_labels, fbeta_np, outcome_counts, report_from_counts
from calitag.thresholds.objectives import Objective, fbeta_count_gradient, resolve_objective

from calitag.thresholds.choices import METHODS  # noqa: E402  (the names live where the CLI reads them cheaply)
from calitag.thresholds.splits import fold_indices
from calitag.thresholds.targets import DEFAULT_CONFIDENCE, certify, check_confidence, resolve_targets
from calitag.thresholds.targets import cut_table as _cut_table

ProgressFn = Callable[[int, int], None]
#: What the small-class guard falls back to: the class's label-rate threshold (fitted), or the fixed default.
GUARD_FALLBACKS = ("label_rate", "default")
#: Largest surrogate slope: beyond it the sigmoid is a step at float32's resolution of the scores (and
#: slope * score overflows float32 long before 1e308).
MAX_SLOPE = 1e6


@dataclass(frozen=True)
class SGLOptions:
    """SGL-Thresh options; with ``init=0.3`` they reproduce the paper's DCASE2017 run.

    ``init=None`` (the default) starts each class at its label-rate threshold (the score that
    predicts as many clips as the class has positives, see
    :meth:`~calitag.thresholds.index.ScoreIndex.label_rate_thresholds`), so no start value has
    to be guessed; a number or one value per class starts there instead.

    Full-batch SGL draws no random numbers, so equal inputs give equal thresholds; ``seed`` is
    recorded for the interface's sake. ``grid_step_z`` is the fast engine's kernel-table step in
    units of 1/slope.
    """

    init: float | tuple[float, ...] | None = None
    lr: float = 1e-2
    epochs: int = 100
    slope: float = 50.0
    engine: str = "fast"
    learn_slope: bool = False
    slope_lr: float = 1.0
    device: str = "cpu"
    seed: int = 0
    grid_step_z: float = 0.05


@dataclass(frozen=True)
class DefaultOptions:
    """One global threshold (``init``) for every class."""

    init: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class HeuristicOptions:
    """dichoThresh: ``outer`` restarts of ``inner`` random steps each, per class (``init`` as for sgl).

    ``max_seconds`` bounds the search: it stops after the step that passes it, keeping the best values found.
    """

    init: float | tuple[float, ...] | None = None
    outer: int = 80
    inner: int = 400
    sigma: float = 0.6
    step_ratio: float = 0.2
    ratio_decay: float = 1e-4
    seed: int = 0
    max_seconds: float | None = None


@dataclass(frozen=True)
class NumericOptions:
    """numThresh: finite differences of step ``delta`` (up to ``max_tries`` steps), Adam at ``lr`` (``init`` as for sgl).

    ``max_seconds`` bounds the run, read between full-matrix evaluations: an iteration it interrupts is dropped.
    """

    init: float | tuple[float, ...] | None = None
    lr: float = 1e-2
    iterations: int = 100
    delta: float = 0.01
    max_tries: int = 10
    max_seconds: float | None = None


@dataclass(frozen=True)
class ExactOptions:
    """Exact per-class search; ``init`` (as for sgl) starts the micro-F coordinate ascent."""

    init: float | tuple[float, ...] | None = None
    max_sweeps: int = 50


def _resolve_options(method: str, options: dict[str, Any]) -> Any:
    cls = _SOLVERS[method].options
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CalibrationError(
            f"method {method!r} has no option {', '.join(unknown)}: its options are {', '.join(sorted(known))}"
        )
    if "init" in options and np.ndim(options["init"]) > 0:
        options = {**options, "init": tuple(float(v) for v in np.asarray(options["init"]).reshape(-1))}
    resolved = cls(**options)
    for name in ("lr", "slope", "sigma", "step_ratio", "delta", "slope_lr", "grid_step_z"):
        if hasattr(resolved, name) and not 0 < float(getattr(resolved, name)) < float("inf"):
            raise CalibrationError(
                f"option {name} of method {method!r} must be a finite number > 0, got {getattr(resolved, name)}"
            )
    if getattr(resolved, "slope", 0.0) > MAX_SLOPE:
        raise CalibrationError(f"option slope of method {method!r} must be at most {MAX_SLOPE:g} (a step of the "
                               f"scores' float32 resolution), got {resolved.slope:g}")
    max_seconds = getattr(resolved, "max_seconds", None)
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and 0 <= max_seconds < math.inf):
        raise CalibrationError(f"option max_seconds of method {method!r} must be a finite number of seconds >= 0, "
                               f"got {max_seconds!r}")
    for name in ("epochs", "outer", "inner", "iterations", "max_tries", "max_sweeps"):
        if hasattr(resolved, name):
            value = getattr(resolved, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CalibrationError(f"option {name} of method {method!r} must be an integer >= 1, got {value!r}")
    if getattr(resolved, "engine", "fast") not in ("fast", "autograd"):
        raise CalibrationError(f"option engine must be 'fast' or 'autograd', got {resolved.engine!r}")
    if getattr(resolved, "learn_slope", False) and resolved.engine != "autograd":
        raise CalibrationError("learn_slope needs engine='autograd' (the fast engine tabulates one fixed slope)")
    return resolved


def _initial(init: float | tuple[float, ...], n_classes: int) -> np.ndarray:
    values = np.asarray(init, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n_classes, float(values[0]))
    if values.size != n_classes:
        raise CalibrationError(f"init has {values.size} values, expected 1 or one per class ({n_classes})")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise CalibrationError(f"init thresholds must lie in [0, 1], got values in [{values.min()}, {values.max()}]")
    return values


class _Adam:
    """``torch.optim.Adam`` (single-tensor path, no weight decay) in numpy, for one parameter array.

    The update is torch's, operation for operation and in the parameter's dtype: ``m += (1 - b1)
    (g - m)``; ``v = b2 v + (1 - b2) g g``; ``p += (-lr / (1 - b1**k)) m / (sqrt(v) / sqrt(1 - b2**k)
    + eps)``, with the bias corrections in float64 as torch computes them on the host.
    """

    def __init__(self, param: np.ndarray, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param = param
        self.lr = float(lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.exp_avg = np.zeros_like(param)
        self.exp_avg_sq = np.zeros_like(param)
        self.steps = 0

    def step(self, grad: np.ndarray) -> None:
        """One update of ``param`` in place from its gradient (of the loss to minimise)."""
        cast = self.param.dtype.type
        grad = np.asarray(grad, dtype=self.param.dtype)
        self.steps += 1
        self.exp_avg += cast(1 - self.beta1) * (grad - self.exp_avg)
        self.exp_avg_sq *= cast(self.beta2)
        self.exp_avg_sq += cast(1 - self.beta2) * grad * grad
        bias_correction1 = 1 - self.beta1**self.steps
        bias_correction2_sqrt = (1 - self.beta2**self.steps) ** 0.5
        denom = np.sqrt(self.exp_avg_sq) / cast(bias_correction2_sqrt) + cast(self.eps)
        self.param += cast(-self.lr / bias_correction1) * self.exp_avg / denom


def _sgl_fast(index: ScoreIndex, spec: Objective, opts: SGLOptions, init: np.ndarray,
              on_progress: ProgressFn | None) -> np.ndarray:
    # float32 like the autograd engine's parameter, so both engines take the same steps.
    thresholds = np.clip(init, 0.0, 1.0).astype(np.float32)
    optimizer = _Adam(thresholds, lr=opts.lr)
    read = index.epoch_reader()
    for epoch in range(opts.epochs):
        tp, pp, k_pos, k_all = read(thresholds)
        d_tp, d_pp = fbeta_count_gradient(tp, pp, index.n_pos, beta=spec.beta, average=spec.average)
        # loss = -F; d(pred)/dt = -kernel, so dloss/dt = dF/dtp * Kpos + dF/dpp * Kall.
        optimizer.step(d_tp * k_pos + d_pp * k_all)
        np.clip(thresholds, 0.0, 1.0, out=thresholds)
        if on_progress is not None:
            on_progress(epoch + 1, opts.epochs)
    return thresholds.astype(np.float64)


def _sgl_autograd(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: SGLOptions, init: np.ndarray,
                  on_progress: ProgressFn | None) -> tuple[np.ndarray, float]:
    torch = import_torch("engine='autograd' (use the default engine='fast' without it)")
    from calitag.thresholds.objectives import objective_value
    from calitag.thresholds.surrogate import ThresholdLayer

    try:
        device = torch.device(opts.device)
        x = torch.as_tensor(scores, dtype=torch.float32, device=device)
    except (RuntimeError, AssertionError) as err:
        raise CalibrationError(f"device {opts.device!r} is not usable here: {err}") from err
    y = torch.as_tensor(labels, dtype=torch.float32, device=device)
    layer = ThresholdLayer(
        scores.shape[1], init=init.tolist(), slope=opts.slope,
        learn_slope=opts.learn_slope, device=device,
    )
    if opts.learn_slope:
        optimizer = torch.optim.Adam(
            [{"params": [layer.thresholds]}, {"params": [layer.slope], "lr": opts.slope_lr}], lr=opts.lr, foreach=False
        )
    else:
        # foreach=False: the single-tensor update that the fast engine's numpy Adam reproduces.
        optimizer = torch.optim.Adam([layer.thresholds], lr=opts.lr, foreach=False)
    for epoch in range(opts.epochs):
        optimizer.zero_grad()
        loss = -objective_value(layer(x), y, spec)
        loss.backward()
        optimizer.step()
        layer.clamp_()
        if opts.learn_slope:
            with torch.no_grad():
                layer.slope.clamp_(min=1e-3)
        if on_progress is not None:
            on_progress(epoch + 1, opts.epochs)
    return layer.thresholds.detach().to("cpu", torch.float64).numpy(), float(layer.slope.detach().mean())


def _heuristic(index: ScoreIndex, spec: Objective, opts: HeuristicOptions, init: np.ndarray,
               on_progress: ProgressFn | None) -> np.ndarray:
    rng = np.random.default_rng(opts.seed)

    def per_class_score(values: np.ndarray) -> np.ndarray:
        tp, pp = index.counts(values)
        return fbeta_np(tp, pp, index.n_pos, beta=spec.beta, average=None)

    best = init.copy()
    best_score = per_class_score(best)
    deadline = None if opts.max_seconds is None else time.perf_counter() + opts.max_seconds
    for outer in range(opts.outer):
        current = best.copy()
        ratio = opts.step_ratio
        for _ in range(opts.inner):
            if deadline is not None and time.perf_counter() > deadline:
                return best
            # The original draws around the threshold itself (mean t, std sigma), scaled by ratio.
            proposal = np.clip(current + rng.normal(current, opts.sigma) * ratio, 0.0, 1.0)
            ratio -= opts.ratio_decay
            score = per_class_score(proposal)
            better = score > best_score
            best_score = np.where(better, score, best_score)
            best = np.where(better, proposal, best)
            current = np.where(better, proposal, current)
        if on_progress is not None:
            on_progress(outer + 1, opts.outer)
    return best


def _numeric(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: NumericOptions, init: np.ndarray,
             on_progress: ProgressFn | None) -> tuple[np.ndarray, int]:
    def full_score(values: np.ndarray) -> float:
        # Re-scores the whole matrix on purpose: numThresh's cost is C full evaluations per step.
        tp, pp, n_pos = outcome_counts(scores, labels, values)
        return float(fbeta_np(tp, pp, n_pos, beta=spec.beta, average=spec.average))

    thresholds = init.astype(np.float64)
    optimizer = _Adam(thresholds, lr=opts.lr)
    # The clock is read before every full-matrix evaluation, not only between iterations: one iteration
    # costs C of them (O(C^2 N)), minutes at 10^4 classes.
    deadline = None if opts.max_seconds is None else time.perf_counter() + opts.max_seconds
    done = 0
    for iteration in range(opts.iterations):
        values = thresholds.copy()
        base = full_score(values)
        grads = np.zeros_like(values)
        for c in range(values.size):
            moved = values.copy()
            for tries in range(1, opts.max_tries + 1):
                if deadline is not None and time.perf_counter() > deadline:
                    return thresholds, done  # the interrupted iteration's partial gradient is dropped
                moved[c] += opts.delta
                changed = full_score(moved)
                if changed != base:
                    break
            grads[c] = (changed - base) / (opts.delta * tries)
        optimizer.step(-grads)
        np.clip(thresholds, 0.0, 1.0, out=thresholds)
        done = iteration + 1
        if on_progress is not None:
            on_progress(done, opts.iterations)
    return thresholds, done


def _exact(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: ExactOptions, init: np.ndarray) -> tuple[np.ndarray, int]:
    n_classes = scores.shape[1]
    tables = [_cut_table(scores[:, c], labels[:, c]) for c in range(n_classes)]
    n_pos = labels.sum(axis=0).astype(np.float64)
    b2 = spec.beta**2
    if spec.average == "macro":
        values = np.empty(n_classes)
        for c, (cand, tp, pp) in enumerate(tables):
            per = fbeta_np(tp, pp, np.full(tp.shape, n_pos[c]), beta=spec.beta, average=None)
            # Among equal scores prefer the highest threshold (fewest alarms); for a class with
            # no positives every cut scores 0 and this predicts nothing.
            values[c] = cand[np.flatnonzero(per == per.max())[0]]
        return values, 1
    values = init.copy()
    tp_c, pp_c, _ = outcome_counts(scores, labels, values)
    tp_c, pp_c = tp_c.astype(np.float64), pp_c.astype(np.float64)
    total_pos = n_pos.sum()
    sweeps = 0
    for sweeps in range(1, opts.max_sweeps + 1):
        changed = False
        for c, (cand, tp, pp) in enumerate(tables):
            tp_rest, pp_rest = tp_c.sum() - tp_c[c], pp_c.sum() - pp_c[c]
            denominator = b2 * total_pos + pp_rest + pp
            with np.errstate(invalid="ignore", divide="ignore"):
                micro = np.where(denominator > 0, (1 + b2) * (tp_rest + tp) / np.where(denominator > 0, denominator, 1), 0.0)
            current_den = b2 * total_pos + pp_rest + pp_c[c]
            current = (1 + b2) * (tp_rest + tp_c[c]) / current_den if current_den > 0 else 0.0
            best = int(np.argmax(micro))
            if micro[best] > current + 1e-12:
                values[c], tp_c[c], pp_c[c] = cand[best], tp[best], pp[best]
                changed = True
        if not changed:
            break
    return values, sweeps


def _final_counts(index: ScoreIndex | None, scores: np.ndarray, labels: np.ndarray,
                  values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``outcome_counts(scores, labels, values)``, read off the index when it holds the scores exactly."""
    if index is None or scores.dtype != np.float32:
        return outcome_counts(scores, labels, values)
    tp, pp = index.counts(values, exact=True)
    return tp.astype(np.int64), pp.astype(np.int64), index.n_pos.astype(np.int64)


@dataclass(frozen=True)
class _Problem:
    """What every solver may read: the checked scores (N, C), labels (N, C) bool, objective, index and start (C,)."""

    scores: np.ndarray
    labels: np.ndarray
    spec: Objective
    index: ScoreIndex | None
    init: np.ndarray | None


SolveFn = Callable[[_Problem, Any, ProgressFn | None], tuple[np.ndarray, dict[str, Any]]]


def _solve_sgl(p: _Problem, opts: SGLOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, dict[str, Any]]:
    if opts.engine == "fast":
        return _sgl_fast(p.index, p.spec, opts, p.init, on_progress), {}
    values, final_slope = _sgl_autograd(p.scores, p.labels, p.spec, opts, p.init, on_progress)
    return values, {"final_slope_mean": final_slope} if opts.learn_slope else {}


def _solve_default(p: _Problem, opts: DefaultOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, dict[str, Any]]:
    return _initial(opts.init, p.scores.shape[1]), {}


def _solve_heuristic(p: _Problem, opts: HeuristicOptions,
                     on_progress: ProgressFn | None) -> tuple[np.ndarray, dict[str, Any]]:
    return _heuristic(p.index, p.spec, opts, p.init, on_progress), {}


def _solve_numeric(p: _Problem, opts: NumericOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, dict[str, Any]]:
    values, done = _numeric(p.scores, p.labels, p.spec, opts, p.init, on_progress)
    return values, {"iterations_done": done}


def _solve_exact(p: _Problem, opts: ExactOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, dict[str, Any]]:
    values, sweeps = _exact(p.scores, p.labels, p.spec, opts, p.init)
    return values, {"sweeps": sweeps}


@dataclass(frozen=True)
class _Solver:
    """One method: its options class and its solve function."""

    options: type
    solve: SolveFn


#: Method name -> solver; the names are :data:`calitag.thresholds.choices.METHODS`.
_SOLVERS: dict[str, _Solver] = {
    "sgl": _Solver(SGLOptions, _solve_sgl),
    "default": _Solver(DefaultOptions, _solve_default),
    "heuristic": _Solver(HeuristicOptions, _solve_heuristic),
    "numeric": _Solver(NumericOptions, _solve_numeric),
    "exact": _Solver(ExactOptions, _solve_exact),
}


def _prepare(scores: np.ndarray, labels: np.ndarray, spec: Objective, method: str, opts: Any) -> _Problem:
    """The sorted-score index (kernel table only for the fast SGL engine) and the start values; none for default."""
    if method == "default":
        return _Problem(scores, labels, spec, None, None)
    fast = method == "sgl" and opts.engine == "fast"
    index = ScoreIndex.build(scores, labels, slope=opts.slope if fast else None,
                             grid_step_z=opts.grid_step_z if fast else 0.05)
    init = index.label_rate_thresholds() if opts.init is None else _initial(opts.init, scores.shape[1])
    return _Problem(scores, labels, spec, index, init)


def _class_names(class_names: Sequence[str] | None, n_classes: int) -> tuple[str, ...]:
    """The given class names (one per score column), or "0", "1", ..."""
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise CalibrationError(f"{len(names)} class names given for {n_classes} score columns")
    return names


def _result(problem: _Problem, values: np.ndarray, *, names: tuple[str, ...], seconds: float, extra: dict[str, Any],
            per_class: dict[str, list[Any]], **provenance: Any) -> Thresholds:
    """The fitted thresholds with their validation figures on the fitting clips."""
    spec = problem.spec
    tp, pp, n_pos = _final_counts(problem.index, problem.scores, problem.labels, values)
    report = report_from_counts(tp, pp, n_pos, thresholds=values, class_names=names, n_clips=problem.scores.shape[0])
    validation = {
        "objective": float(fbeta_np(tp, pp, n_pos, beta=spec.beta, average=spec.average)),
        "micro_f1": report.micro_f1,
        "macro_f1": report.macro_f1,
        "n_clips": report.n_clips,
        "fit_seconds": seconds,
        **extra,
    }
    return Thresholds(values=values, class_names=names, objective=spec.name, validation=validation,
                      per_class={"positives": [int(n) for n in n_pos], **per_class}, **provenance)


def _recorded_options(opts: Any, method: str, spec: Objective) -> dict[str, Any]:
    """The resolved options as the thresholds file records them."""
    recorded = dataclasses.asdict(opts)
    if method != "default":
        recorded["init_source"] = "given" if opts.init is not None else "label_rate"
    if spec.name.endswith("fbeta"):
        recorded["beta"] = spec.beta
    return recorded


def _apply_guard(problem: _Problem, values: np.ndarray, *, method: str, options: dict[str, Any], folds: int,
                 default_threshold: float, seed: int, fallback: str = "label_rate"
                 ) -> tuple[np.ndarray, dict[str, list[Any]], dict[str, Any]]:
    """Keep the fallback for the classes whose fit does not beat it out of fold (see :func:`_guard`).

    The fallback is the class's label-rate threshold on the fitting clips (``fallback="label_rate"``,
    the default), or the fixed ``default_threshold`` (``fallback="default"``, the guard of calitag 0.1).
    """
    keep, reasons = _guard(problem.scores, problem.labels, values, spec=problem.spec, method=method, options=options,
                           folds=folds, default=default_threshold, seed=seed, fallback=fallback)
    if fallback == "label_rate":
        # Fitted like the fit itself: mid-gap between two fitting scores.
        backup = problem.index.snap(problem.index.label_rate_thresholds())
    else:
        # A kept default stays the default; only one within rounding of a score level (quantised
        # scores) moves to the middle of its gap, keeping the default's decisions on these clips.
        backup = np.full(values.size, float(default_threshold))
        backup = np.where(problem.index.near_a_score(backup), problem.index.snap(backup), backup)
    marker = "fallback" if fallback == "label_rate" else "default"
    kept = {"kept": ["fit" if k else marker for k in keep], "reason": reasons}
    summary = {"folds": folds, "fallback": fallback, "n_fallback": int((~keep).sum())}
    if fallback == "default":
        summary.update(default_threshold=default_threshold, n_default=int((~keep).sum()))
    return np.where(keep, values, backup), kept, summary


def fit(scores: Any, labels: Any, *, method: str = "sgl", objective: str | Objective = "micro_f1",
        class_names: Sequence[str] | None = None, model: str | None = None, model_sha256: str | None = None,
        beta: float | None = None, guard_folds: int | None = None, default_threshold: float = DEFAULT_THRESHOLD,
        guard_fallback: str = "label_rate", target: Any = None, confidence: float = DEFAULT_CONFIDENCE,
        probabilities: str = "none", on_progress: ProgressFn | None = None, **options: Any) -> Thresholds:
    """Fit one decision threshold per class on validation scores.

    Parameters
    ----------
    scores, labels : array_like
        (n_clips, n_classes) clip scores in [0, 1] and their 0/1 labels.
    method, objective : str
        Solver ("sgl", "default", "heuristic", "numeric", "exact"; see the module docstring) and
        objective ("micro_f1", "macro_f1", "micro_fbeta", "macro_fbeta"; or an Objective).
    class_names : sequence of str, optional
        One per column ("0", "1", ... when omitted).
    model, model_sha256 : str, optional
        Provenance recorded in the result (registry name, checkpoint sha256).
    beta : float, optional
        Recall weight of the F-beta objectives.
    guard_folds : int, optional
        Small-class guard: K-fold cross-validate the solver and its fallback inside the clips and
        keep the fallback where it wins, recording why (``per_class``). None: no guard.
    guard_fallback, default_threshold : str, float
        The guard's fallback: "label_rate", the class's label-rate threshold (kept on ties by the fit),
        or "default", the fixed ``default_threshold`` (which the fit must beat; calitag 0.1's guard).
    target : str, Target, mapping or path, optional
        Certify ``"precision=0.9"`` (every class), ``{"Dog": "recall=0.8"}`` or a CSV file's
        targets at ``confidence`` instead of the objective's optimum (:mod:`~calitag.thresholds.targets`);
        an uncertified class keeps the optimum, marked ``certified: false`` in ``per_class``.
    probabilities : {"none", "auto", "platt", "isotonic"}
        Also fit per-class calibration maps (:meth:`Thresholds.probabilities`).
    on_progress : callable, optional
        Called as ``on_progress(done, total)`` after each epoch/iteration.
    **options
        Solver options: the fields of the method's options class (:class:`SGLOptions`,
        :class:`DefaultOptions`, :class:`HeuristicOptions`, :class:`NumericOptions`, :class:`ExactOptions`).

    Returns
    -------
    Thresholds
        Values in [0, 1] with the method, resolved options, objective and validation scores.

    Raises
    ------
    ScoresError
        Invalid scores or labels (NaN/inf, outside [0, 1], shape mismatch, non-binary labels).
    CalibrationError
        Unknown method, objective, option or target, or an option out of range.

    Warns
    -----
    NoPositivesWarning
        A class has no positive example; its threshold stays finite.
    """
    if method not in _SOLVERS:
        raise CalibrationError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    spec = resolve_objective(objective, beta=beta)
    opts = _resolve_options(method, options)
    checked, truth = check_scores_labels(scores, labels, class_names=class_names)
    names = _class_names(class_names, n_classes := checked.shape[1])
    start = time.perf_counter()
    problem = _prepare(checked, truth, spec, method, opts)
    values, extra = _SOLVERS[method].solve(problem, opts, on_progress)
    if problem.index is not None:
        # Same decisions on the fitting clips, but never within rounding of a score level.
        values = problem.index.snap(np.clip(values, 0.0, 1.0))
    seconds, values = time.perf_counter() - start, np.clip(values, 0.0, 1.0)
    per_class: dict[str, list[Any]] = {"kept": ["fit"] * n_classes, "reason": [None] * n_classes}
    seed = int(getattr(opts, "seed", 0))
    if guard_folds is not None and method != "default":
        values, kept, extra["guard"] = _apply_guard(problem, values, method=method, options=options, folds=guard_folds,
                                                    default_threshold=default_threshold, seed=seed,
                                                    fallback=guard_fallback)
        per_class.update(kept)
    recorded = _recorded_options(opts, method, spec)
    values = _apply_targets(problem, values, per_class, recorded, target=target, confidence=confidence, names=names)
    provenance = {"model": model, "model_sha256": model_sha256, "method": method, "options": recorded}
    result = _result(problem, values, names=names, seconds=seconds, extra=extra, per_class=per_class, **provenance)
    return _with_probabilities(result, problem, method=probabilities, seed=seed)


def _with_probabilities(result: Thresholds, problem: _Problem, *, method: str, seed: int) -> Thresholds:
    """``result`` with per-class probability maps fitted on the problem's clips (unchanged for "none")."""
    if method == "none":
        return result
    from calitag.thresholds.probability import fit_probability_maps

    maps = fit_probability_maps(problem.scores, problem.labels, method=method, seed=seed)
    return dataclasses.replace(result, probability_maps=maps, created=result.created)


def _apply_targets(problem: _Problem, values: np.ndarray, per_class: dict[str, list[Any]], recorded: dict[str, Any],
                   *, target: Any, confidence: float, names: tuple[str, ...]) -> np.ndarray:
    """The thresholds of the classes with a target, certified where they can be; ``per_class`` records how.

    Without a target the values are returned as they are and nothing is recorded.
    """
    if target is None:
        return values
    targets = resolve_targets(target, names)
    recorded.update(target=sorted({str(t) for t in targets if t is not None}), confidence=float(confidence))
    outcomes = certify(problem.scores, problem.labels, targets, confidence=check_confidence(confidence))
    values = values.copy()
    per_class.update(target=[None if t is None else str(t) for t in targets], certified=[], best_level=[])
    for c, outcome in enumerate(outcomes):
        per_class["certified"].append(None if outcome is None else outcome.certified)
        per_class["best_level"].append(None if outcome is None else outcome.best_level)
        if outcome is None:
            continue
        if outcome.threshold is not None:
            values[c] = outcome.threshold
            per_class["kept"][c] = "target"
        level = f"best certifiable {targets[c].metric} {outcome.best_level:.3f}"
        per_class["reason"][c] = None if outcome.certified else f"{targets[c]} not certified at {confidence:g}: {level}"
    return values


def _guard(scores: np.ndarray, truth: np.ndarray, values: np.ndarray, *, spec: Objective, method: str,
           options: dict[str, Any], folds: int, default: float, seed: int,
           fallback: str = "label_rate") -> tuple[np.ndarray, list[str | None]]:
    """Per class: keep the fit (True) unless the fallback beats it out of fold.

    Both rules are cross-validated the same way: in each fold the solver and the fallback are
    fitted on the other folds' clips and decide the fold's clips. ``fallback="label_rate"``
    compares with the label-rate threshold (fitted per fold; the fit is kept on a tie);
    ``fallback="default"`` with the fixed ``default`` (the fit must beat it strictly).
    """
    import warnings

    from calitag.thresholds.metrics import NoPositivesWarning

    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= len(scores):
        raise CalibrationError(f"guard_folds must be an integer from 2 to the number of clips ({len(scores)}), got {folds!r}")
    if fallback not in GUARD_FALLBACKS:
        raise CalibrationError(f"guard fallback must be one of {', '.join(GUARD_FALLBACKS)}, got {fallback!r}")
    n_classes = scores.shape[1]
    fold = fold_indices(truth, folds, seed=seed)
    decided = np.zeros_like(truth)
    by_fallback = np.zeros_like(truth)
    for f in range(folds):
        inside = fold != f
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoPositivesWarning)
            inner = fit(scores[inside], truth[inside], method=method, objective=spec, **options)
        decided[~inside] = scores[~inside] > inner.values
        if fallback == "label_rate":
            rate = ScoreIndex.build(scores[inside], truth[inside], slope=None).label_rate_thresholds()
            by_fallback[~inside] = scores[~inside] > rate
    if fallback == "default":
        by_fallback = scores > default
    with_fit, with_fallback, n_pos = _guard_objectives(decided, by_fallback, truth, spec)
    keep = with_fit >= with_fallback if fallback == "label_rate" else with_fit > with_fallback
    name = "label-rate threshold" if fallback == "label_rate" else f"default {default:g}"
    reasons: list[str | None] = []
    for c in range(n_classes):
        if keep[c]:
            reasons.append(None)
        elif n_pos[c] == 0:
            reasons.append("no positive example")
        else:
            reasons.append(f"{folds}-fold {spec.label} {with_fit[c]:.4f} does not beat {name} "
                           f"({with_fallback[c]:.4f}) with {int(n_pos[c])} positive(s)")
    return keep, reasons


def _guard_objectives(decided: np.ndarray, by_fallback: np.ndarray, truth: np.ndarray,
                      spec: Objective) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, the out-of-fold objective with the fit's and with the fallback's decisions, and the positives."""
    tp_fit = (decided & truth).sum(axis=0).astype(np.float64)
    pp_fit = decided.sum(axis=0).astype(np.float64)
    tp_alt = (by_fallback & truth).sum(axis=0).astype(np.float64)
    pp_alt = by_fallback.sum(axis=0).astype(np.float64)
    n_pos = truth.sum(axis=0).astype(np.float64)
    if spec.average == "macro":
        with_fit = fbeta_np(tp_fit, pp_fit, n_pos, beta=spec.beta, average=None)
        with_alt = fbeta_np(tp_alt, pp_alt, n_pos, beta=spec.beta, average=None)
    else:
        # The micro objective of all out-of-fold decisions, with class c's own or the fallback's.
        tp_rest, pp_rest = tp_fit.sum() - tp_fit, pp_fit.sum() - pp_fit
        with_fit = np.full(truth.shape[1], float(fbeta_np(tp_fit, pp_fit, n_pos, beta=spec.beta)))
        with_alt = fbeta_np(tp_rest + tp_alt, pp_rest + pp_alt, np.full(truth.shape[1], n_pos.sum()),
                            beta=spec.beta, average=None)
    return with_fit, with_alt, n_pos
