"""Threshold solvers behind one interface: ``fit(scores, labels, method=..., objective=...)``.

Methods
-------
sgl        SGL-Thresh (Pellegrini & Masquelier 2021): full-batch Adam on -objective through the
           surrogate step. ``engine="fast"`` reads counts and kernel sums off sorted scores
           (:mod:`calitag.thresholds.index`); ``engine="autograd"`` runs the plain layer over the
           whole score matrix (any device, optional learnable slope). Both follow the same steps.
default    one threshold for every class.
heuristic  "dichoThresh" (Cances et al. 2019): per-class random search with shrinking Gaussian steps.
numeric    "numThresh" (Kong et al. 2019): finite-difference F gradient per class, Adam updates;
           each difference re-scores the whole matrix, which is what makes it slow.
exact      per-class optimum over the sorted scores: exact for macro/per-class F; coordinate
           ascent (to a fixed point) for micro F.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calitag.errors import CalibrationError
from calitag.thresholds.index import ScoreIndex
from calitag.thresholds.io import Thresholds
from calitag.thresholds.metrics import check_scores_labels, fbeta_np, outcome_counts, report_from_counts
from calitag.thresholds.objectives import Objective, fbeta_from_counts, objective_value, resolve_objective
from calitag.thresholds.surrogate import ThresholdLayer

from calitag.thresholds.choices import METHODS  # noqa: E402  (the names live where the CLI reads them cheaply)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class SGLOptions:
    """SGL-Thresh options; the defaults reproduce the paper's DCASE2017 run.

    Full-batch SGL draws no random numbers, so equal inputs give equal thresholds; ``seed`` is
    recorded for the interface's sake. ``grid_step_z`` is the fast engine's kernel-table step in
    units of 1/slope.
    """

    init: float | tuple[float, ...] = 0.3
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

    init: float = 0.5


@dataclass(frozen=True)
class HeuristicOptions:
    """dichoThresh: ``outer`` restarts of ``inner`` random steps each, per class."""

    init: float | tuple[float, ...] = 0.3
    outer: int = 80
    inner: int = 400
    sigma: float = 0.6
    step_ratio: float = 0.2
    ratio_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class NumericOptions:
    """numThresh: finite differences of step ``delta`` (up to ``max_tries`` steps), Adam at ``lr``."""

    init: float | tuple[float, ...] = 0.3
    lr: float = 1e-2
    iterations: int = 100
    delta: float = 0.01
    max_tries: int = 10
    max_seconds: float | None = None


@dataclass(frozen=True)
class ExactOptions:
    """Exact per-class search; ``init`` starts the micro-F coordinate ascent."""

    init: float | tuple[float, ...] = 0.3
    max_sweeps: int = 50


_OPTIONS: dict[str, type] = {
    "sgl": SGLOptions,
    "default": DefaultOptions,
    "heuristic": HeuristicOptions,
    "numeric": NumericOptions,
    "exact": ExactOptions,
}


def _resolve_options(method: str, options: dict[str, Any]) -> Any:
    cls = _OPTIONS[method]
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
        if hasattr(resolved, name) and not float(getattr(resolved, name)) > 0:
            raise CalibrationError(f"option {name} of method {method!r} must be > 0, got {getattr(resolved, name)}")
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


def _adam(param: torch.Tensor, lr: float) -> torch.optim.Adam:
    # foreach=False keeps the update sequence identical across engines.
    return torch.optim.Adam([param], lr=lr, foreach=False)


def _sgl_fast(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: SGLOptions, on_progress: ProgressFn | None) -> np.ndarray:
    index = ScoreIndex.build(scores, labels, slope=opts.slope, grid_step_z=opts.grid_step_z)
    n_pos = torch.from_numpy(index.n_pos)
    thresholds = torch.tensor(_initial(opts.init, scores.shape[1]), dtype=torch.float32)
    optimizer = _adam(thresholds, opts.lr)
    for epoch in range(opts.epochs):
        current = thresholds.detach().numpy()
        tp_np, pp_np = index.counts(current)
        tp = torch.from_numpy(tp_np).requires_grad_(True)
        pp = torch.from_numpy(pp_np).requires_grad_(True)
        value = fbeta_from_counts(tp, pp, n_pos, beta=spec.beta, average=spec.average)
        d_tp, d_pp = torch.autograd.grad(value, (tp, pp))
        k_pos, k_all = index.kernel_sums(current)
        # loss = -F; d(pred)/dt = -kernel, so dloss/dt = dF/dtp * Kpos + dF/dpp * Kall.
        grad = d_tp.numpy() * k_pos + d_pp.numpy() * k_all
        thresholds.grad = torch.from_numpy(grad.astype(np.float32))
        optimizer.step()
        with torch.no_grad():
            thresholds.clamp_(0.0, 1.0)
        if on_progress is not None:
            on_progress(epoch + 1, opts.epochs)
    return thresholds.detach().to(torch.float64).numpy()


def _sgl_autograd(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: SGLOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, float]:
    try:
        device = torch.device(opts.device)
        x = torch.as_tensor(scores, dtype=torch.float32, device=device)
    except (RuntimeError, AssertionError) as err:
        raise CalibrationError(f"device {opts.device!r} is not usable here: {err}") from err
    y = torch.as_tensor(labels, dtype=torch.float32, device=device)
    layer = ThresholdLayer(
        scores.shape[1], init=_initial(opts.init, scores.shape[1]).tolist(), slope=opts.slope,
        learn_slope=opts.learn_slope, device=device,
    )
    if opts.learn_slope:
        optimizer = torch.optim.Adam(
            [{"params": [layer.thresholds]}, {"params": [layer.slope], "lr": opts.slope_lr}], lr=opts.lr, foreach=False
        )
    else:
        optimizer = _adam(layer.thresholds, opts.lr)
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


def _heuristic(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: HeuristicOptions, on_progress: ProgressFn | None) -> np.ndarray:
    index = ScoreIndex.build(scores, labels, slope=None)
    rng = np.random.default_rng(opts.seed)

    def per_class_score(values: np.ndarray) -> np.ndarray:
        tp, pp = index.counts(values)
        return fbeta_np(tp, pp, index.n_pos, beta=spec.beta, average=None)

    best = _initial(opts.init, scores.shape[1])
    best_score = per_class_score(best)
    for outer in range(opts.outer):
        current = best.copy()
        ratio = opts.step_ratio
        for _ in range(opts.inner):
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


def _numeric(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: NumericOptions, on_progress: ProgressFn | None) -> tuple[np.ndarray, int]:
    def full_score(values: np.ndarray) -> float:
        # Re-scores the whole matrix on purpose: numThresh's cost is C full evaluations per step.
        tp, pp, n_pos = outcome_counts(scores, labels, values)
        return float(fbeta_np(tp, pp, n_pos, beta=spec.beta, average=spec.average))

    thresholds = torch.tensor(_initial(opts.init, scores.shape[1]), dtype=torch.float64)
    optimizer = torch.optim.Adam([thresholds], lr=opts.lr, foreach=False)
    start = time.perf_counter()
    done = 0
    for iteration in range(opts.iterations):
        if opts.max_seconds is not None and time.perf_counter() - start > opts.max_seconds:
            break
        values = thresholds.detach().numpy().copy()
        base = full_score(values)
        grads = np.zeros_like(values)
        for c in range(values.size):
            moved = values.copy()
            for tries in range(1, opts.max_tries + 1):
                moved[c] += opts.delta
                changed = full_score(moved)
                if changed != base:
                    break
            grads[c] = (changed - base) / (opts.delta * tries)
        thresholds.grad = torch.from_numpy(-grads)
        optimizer.step()
        with torch.no_grad():
            thresholds.clamp_(0.0, 1.0)
        done = iteration + 1
        if on_progress is not None:
            on_progress(done, opts.iterations)
    return thresholds.detach().numpy(), done


def _cut_table(column: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every achievable decision of one class: (thresholds, tp, pp), from 'none' to 'all'."""
    order = np.argsort(-column, kind="stable")
    desc = column[order].astype(np.float64)
    hits = np.concatenate([[0], np.cumsum(truth[order])])
    n = desc.size
    k = np.arange(n + 1)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = desc[:-1] > desc[1:]  # cut between distinct values only (ties cannot be split)
    valid[n] = desc[-1] > 0.0  # "predict all" needs t < min score with t >= 0
    thresholds = np.empty(n + 1)
    thresholds[0] = 1.0
    thresholds[1:n] = (desc[:-1] + desc[1:]) / 2.0
    thresholds[n] = 0.0
    return thresholds[valid], hits[k][valid], k[valid]


def _exact(scores: np.ndarray, labels: np.ndarray, spec: Objective, opts: ExactOptions) -> tuple[np.ndarray, int]:
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
    values = _initial(opts.init, n_classes)
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


def fit(
    scores: Any,
    labels: Any,
    *,
    method: str = "sgl",
    objective: str | Objective = "micro_f1",
    class_names: Sequence[str] | None = None,
    model: str | None = None,
    model_sha256: str | None = None,
    beta: float | None = None,
    on_progress: ProgressFn | None = None,
    **options: Any,
) -> Thresholds:
    """Fit one decision threshold per class on validation scores.

    Parameters
    ----------
    scores : array_like
        (n_clips, n_classes) clip scores in [0, 1].
    labels : array_like
        Same shape, 0/1.
    method : {"sgl", "default", "heuristic", "numeric", "exact"}
        Solver (see the module docstring).
    objective : str or Objective
        "micro_f1" (default), "macro_f1", "micro_fbeta" or "macro_fbeta".
    class_names : sequence of str, optional
        One per column ("0", "1", ... when omitted).
    model, model_sha256 : str, optional
        Provenance recorded in the result (registry name, checkpoint sha256).
    beta : float, optional
        Recall weight of the F-beta objectives.
    on_progress : callable, optional
        Called as ``on_progress(done, total)`` after each epoch/iteration.
    **options
        Solver options, keyword-only: sgl ``init, lr, epochs, slope, engine, learn_slope,
        slope_lr, device, seed, grid_step_z``; default ``init``; heuristic ``init, outer, inner,
        sigma, step_ratio, ratio_decay, seed``; numeric ``init, lr, iterations, delta,
        max_tries, max_seconds``; exact ``init, max_sweeps``.

    Returns
    -------
    Thresholds
        Values in [0, 1] with the method, resolved options, objective and validation scores.

    Raises
    ------
    ScoresError
        Invalid scores or labels (NaN/inf, outside [0, 1], shape mismatch, non-binary labels).
    CalibrationError
        Unknown method, objective or option, or an option out of range.

    Warns
    -----
    NoPositivesWarning
        A class has no positive example; its threshold stays finite.
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    spec = resolve_objective(objective, beta=beta)
    opts = _resolve_options(method, options)
    checked, truth = check_scores_labels(scores, labels, class_names=class_names)
    n_classes = checked.shape[1]
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(n_classes))
    if len(names) != n_classes:
        raise CalibrationError(f"{len(names)} class names given for {n_classes} score columns")
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if method == "sgl":
        if opts.engine == "fast":
            values = _sgl_fast(checked, truth, spec, opts, on_progress)
        else:
            values, final_slope = _sgl_autograd(checked, truth, spec, opts, on_progress)
            if opts.learn_slope:
                extra["final_slope_mean"] = final_slope
    elif method == "default":
        values = _initial(opts.init, n_classes)
    elif method == "heuristic":
        values = _heuristic(checked, truth, spec, opts, on_progress)
    elif method == "numeric":
        values, done = _numeric(checked, truth, spec, opts, on_progress)
        extra["iterations_done"] = done
    else:
        values, sweeps = _exact(checked, truth, spec, opts)
        extra["sweeps"] = sweeps
    seconds = time.perf_counter() - start
    values = np.clip(values, 0.0, 1.0)
    tp, pp, n_pos = outcome_counts(checked, truth, values)
    report = report_from_counts(tp, pp, n_pos, thresholds=values, class_names=names, n_clips=checked.shape[0])
    recorded = dataclasses.asdict(opts)
    if spec.name.endswith("fbeta"):
        recorded["beta"] = spec.beta
    return Thresholds(
        values=values,
        class_names=names,
        model=model,
        model_sha256=model_sha256,
        method=method,
        options=recorded,
        objective=spec.name,
        validation={
            "objective": float(fbeta_np(tp, pp, n_pos, beta=spec.beta, average=spec.average)),
            "micro_f1": report.micro_f1,
            "macro_f1": report.macro_f1,
            "n_clips": report.n_clips,
            "fit_seconds": seconds,
            **extra,
        },
    )
