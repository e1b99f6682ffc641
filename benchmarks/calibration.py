"""Table 2 of the SGL-Thresh paper next to calitag's solvers, the init study, and the AudioSet-sized timing run.

    python benchmarks/calibration.py [--data-dir ../shared/data] [--repeats 5] [--autograd-repeats 3]

Part 1 fits every solver on the clip scores published with the paper (DCASE2017 task 4: fit on
val, report eval (val); DCASE2019 task 4: val only) and prints micro-F1 in % with fit seconds
beside the paper's figures. Part 2 compares the start values of sgl: DCASE2017 eval micro-F1
(fit on val) and DCASE2019 3-fold cross-validation inside val (the same folds for every
candidate). Part 3 times `sgl` on seeded synthetic scores of AudioSet's size (15,278 clips x
527 classes) with the fast numpy engine and with the plain autograd engine (the same algorithm
over the full score matrix, torch), in this process, best of several runs each, then the whole
`calitag thresholds fit` command (a fresh process, wall clock, median of 5).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from calitag.thresholds import NoPositivesWarning, ScoreIndex, evaluate, fit, synthetic_scores

REPO = Path(__file__).resolve().parent.parent

# Reference micro-F1 (%) from the paper (eval, val), as listed in the design notes.
PAPER = {
    ("DCASE2017", "default"): (59.0, 53.8),
    ("DCASE2017", "sgl"): (62.0, 61.8),
    ("DCASE2019", "default"): (71.3, 70.1),
    ("DCASE2019", "sgl"): (73.0, 72.9),
    ("AudioSet", "default"): (50.7, None),
    ("AudioSet", "sgl"): (54.9, 56.7),
}
PAPER_TIME_AUDIOSET = {"sgl": "1.5 s GPU / 3 s CPU", "heuristic": "9 h", "numeric": "5 days"}
LABELS = {"default": "defThresh", "heuristic": "dichoThresh", "numeric": "numThresh", "sgl": "SGL-Thresh",
          "sgl-auto": "SGL, no init", "exact": "exact (calitag)"}
DATASETS = {"DCASE2017": ("dcase2017_task4.npz", 0.3), "DCASE2019": ("dcase2019_task4_val.npz", 0.5)}


def _fmt(eval_f1: float | None, val_f1: float | None) -> str:
    head = "   -  " if eval_f1 is None else f"{eval_f1:5.1f} "
    tail = "" if val_f1 is None else f"({val_f1:.1f})"
    return f"{head}{tail:<7}"


def table2(data_dir: Path) -> None:
    """Print every solver on the DCASE sets beside the paper's numbers."""
    print("Table 2: micro-F1 % eval (val), fitted on val; paper figures from the SGL-Thresh paper")
    print(f"{'dataset':<10} {'method':<16} {'paper':<14} {'calitag':<14} {'fit s':>8}  options")
    for dataset, (file, init) in DATASETS.items():
        with np.load(data_dir / file) as data:
            arrays = {key: data[key] for key in data.files}
        for method in ("default", "heuristic", "numeric", "sgl", "sgl-auto", "exact"):
            given = {} if method == "sgl-auto" else {"init": init}
            th = fit(arrays["val_scores"], arrays["val_labels"], method=method.removesuffix("-auto"), **given)
            eval_f1 = None
            if "eval_scores" in arrays:
                eval_f1 = 100 * evaluate(arrays["eval_scores"], arrays["eval_labels"], th).micro_f1
            val_f1 = 100 * th.validation["micro_f1"]
            paper = PAPER.get((dataset, method))
            paper_txt = _fmt(*paper) if paper else "   -"
            shown = {k: v for k, v in th.options.items() if k in ("init", "init_source", "lr", "epochs", "slope",
                                                                   "outer", "inner", "iterations")}
            print(f"{dataset:<10} {LABELS[method]:<16} {paper_txt:<14} {_fmt(eval_f1, val_f1):<14} "
                  f"{th.validation['fit_seconds']:>8.3f}  {shown}")
    print(f"{'AudioSet':<10} {'defThresh':<16} {_fmt(*PAPER[('AudioSet', 'default')]):<14} (no AudioSet scores here)")
    print(f"{'AudioSet':<10} {'SGL-Thresh':<16} {_fmt(*PAPER[('AudioSet', 'sgl')]):<14} "
          f"paper fit time: {PAPER_TIME_AUDIOSET['sgl']}; dichoThresh {PAPER_TIME_AUDIOSET['heuristic']}, "
          f"numThresh {PAPER_TIME_AUDIOSET['numeric']}")


def _best(fn, repeats: int) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _init_candidates(scores: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Every start value tried for sgl: fixed values and data-derived per-class ones."""
    index = ScoreIndex.build(scores, labels.astype(bool), slope=None)
    rate = index.label_rate_thresholds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        per_class_best = np.clip(fit(scores, labels, method="exact", objective="macro_f1").values, 0.01, 0.99)
        micro_best = np.clip(fit(scores, labels, method="exact", init=rate).values, 0.01, 0.99)
    positives = [scores[labels[:, c] > 0, c] for c in range(scores.shape[1])]
    negatives = [scores[labels[:, c] == 0, c] for c in range(scores.shape[1])]
    medians = np.clip([(np.median(p) + np.median(n)) / 2 if len(p) and len(n) else 0.5
                       for p, n in zip(positives, negatives)], 0.01, 0.99)
    return {
        "0.3 (paper, DCASE2017)": 0.3,
        "0.5 (paper, DCASE2019)": 0.5,
        "label rate (default)": None,
        "(label rate + 0.5) / 2": tuple((rate + 0.5) / 2),
        "per-class F1 optimum": tuple(per_class_best),
        "exact micro-F1 optimum": tuple(micro_best),
        "pos/neg median midpoint": tuple(medians),
    }


def init_study(data_dir: Path) -> None:
    """Print sgl's result from every start value: DCASE2017 eval, DCASE2019 3-fold CV inside val."""
    with np.load(data_dir / DATASETS["DCASE2017"][0]) as data:
        d17 = {key: data[key] for key in data.files}
    with np.load(data_dir / DATASETS["DCASE2019"][0]) as data:
        d19 = {key: data[key] for key in data.files}
    folds = np.random.default_rng(0).permutation(len(d19["val_scores"])) % 3
    candidates17 = _init_candidates(d17["val_scores"], d17["val_labels"])
    fold_candidates = []
    for k in range(3):
        inside = folds != k
        fold_candidates.append(_init_candidates(d19["val_scores"][inside], d19["val_labels"][inside]))
    print("\nsgl start values: DCASE2017 eval micro-F1 % (fit on val); DCASE2019 3-fold CV inside val, "
          "micro-F1 % of each held-out fold and their mean (folds: seeded permutation, the same for every row)")
    print(f"{'init':<26} {'DCASE2017 eval':>14} {'DCASE2019 CV mean':>18}   folds")
    for name in candidates17:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoPositivesWarning)
            th = fit(d17["val_scores"], d17["val_labels"], init=candidates17[name])
            eval17 = 100 * evaluate(d17["eval_scores"], d17["eval_labels"], th).micro_f1
            per_fold = []
            for k in range(3):
                inside = folds != k
                th = fit(d19["val_scores"][inside], d19["val_labels"][inside], init=fold_candidates[k][name])
                per_fold.append(100 * evaluate(d19["val_scores"][~inside], d19["val_labels"][~inside], th).micro_f1)
        print(f"{name:<26} {eval17:>14.2f} {np.mean(per_fold):>18.2f}   {', '.join(f'{v:.2f}' for v in per_fold)}")


def _thresholds_fit_wall(scores: np.ndarray, labels: np.ndarray, runs: int = 5) -> float:
    """Median wall seconds of `calitag thresholds fit` on these scores, a fresh process each run.

    One untimed run first, with bytecode writing allowed, so that the timed runs import
    compiled modules as an installed package does.
    """
    import os
    import statistics
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audioset_sized.npz"
        np.savez(path, val_scores=scores, val_labels=labels)
        env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
        walls = []
        for run in range(runs + 1):
            out = Path(folder) / f"th{run}.json"
            command = [sys.executable, "-c", "from calitag.cli import main; main()", "thresholds", "fit", str(path),
                       "--init", "0.3", "--out", str(out)]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            if run:
                walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def _load() -> str:
    import os

    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def fit_breakdown(scores: np.ndarray, labels: np.ndarray, repeats: int) -> None:
    """Print where the fast fit's time goes, best of ``repeats`` each, and the floor of its index build.

    The floor is the build's unavoidable numpy work alone, with the build's own blocks of 32
    classes on the same threads: the transposed float32 copy and the per-class sort, the
    grid-edge search of each sorted row, and the two FFT convolutions per class (positives and
    all scores). The build adds the linear binning and the positives' table to that.
    """
    from concurrent.futures import ThreadPoolExecutor

    from calitag._host import usable_cpus
    from calitag.thresholds import index as index_module
    from calitag.thresholds.solvers import SGLOptions, _sgl_fast
    from calitag.thresholds.metrics import check_scores_labels
    from calitag.thresholds.objectives import resolve_objective

    opts = SGLOptions()
    check_s, (checked, truth) = _best(lambda: check_scores_labels(scores, labels), repeats)
    build_s, index = _best(lambda: ScoreIndex.build(checked, truth, slope=opts.slope, grid_step_z=opts.grid_step_z), repeats)
    one_s, _ = _best(lambda: ScoreIndex.build(checked, truth, slope=opts.slope, grid_step_z=opts.grid_step_z, workers=1),
                     repeats)
    init = np.full(scores.shape[1], 0.3)
    epochs_s, _ = _best(lambda: _sgl_fast(index, resolve_objective("micro_f1"), opts, init, None), repeats)
    n_clips, n_classes = checked.shape
    rows = np.empty((n_classes, n_clips), dtype=np.float32)
    edges, block = index.edges, index_module.CHUNK_CLASSES
    grid = np.random.default_rng(0).random((n_classes, edges.size))
    step_z = index.grid_step * opts.slope

    def stage(level: int, first: int) -> None:
        part = rows[first:first + block]
        part[:] = checked[:, first:first + block].T
        part.sort(axis=1)
        if level >= 1:
            for row in part:
                row.searchsorted(edges)
        if level >= 2:
            for _ in range(2):
                index_module._convolve_kernel(grid[first:first + block], step_z=step_z, slope=opts.slope)

    workers = min(usable_cpus(), 4)
    floor = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for level in range(3):
            def run(level=level):
                for done in [pool.submit(stage, level, first) for first in range(0, n_classes, block)]:
                    done.result()
            floor.append(_best(run, repeats)[0])
    print(f"where the fit's time goes (best of {repeats} each): input checks {check_s * 1e3:.0f} ms; index build "
          f"{build_s * 1e3:.0f} ms wall on {workers} threads ({one_s * 1e3:.0f} ms on one); 100 epochs "
          f"{epochs_s * 1e3:.0f} ms")
    print(f"floor of the index build on {workers} threads: transposed copy + per-class sort {floor[0] * 1e3:.0f} ms, "
          f"+ grid-edge search {floor[1] * 1e3:.0f} ms, + two FFT convolutions per class {floor[2] * 1e3:.0f} ms")


def _cpu_ticks() -> tuple[int, int] | None:
    """(stolen, all) CPU ticks so far from /proc/stat (Linux), or None where it cannot be read."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _stolen_since(start: tuple[int, int] | None) -> str:
    """The share of CPU time the hypervisor took from this machine since ``start`` (timings are noisier above a few %)."""
    now = _cpu_ticks()
    if start is None or now is None or now[1] <= start[1]:
        return "stolen CPU time unknown"
    return f"{100 * (now[0] - start[0]) / (now[1] - start[1]):.0f}% of CPU time stolen by the hypervisor"


def _code_lines(module: object, names: tuple[str, ...] | None = None) -> int:
    """Lines of code of a module (or of its top-level functions/classes ``names``): no blank, comment or docstring lines."""
    import ast
    import inspect

    source = inspect.getsource(module)
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    spans = [(1, len(source.splitlines()))] if names is None else [
        (node.lineno, node.end_lineno) for node in tree.body if getattr(node, "name", None) in names]
    lines = source.splitlines()
    return sum(1 for first, last in spans for number in range(first, last + 1)
               if number not in docstrings and lines[number - 1].strip() and not lines[number - 1].strip().startswith("#"))


def reference_check(scores: np.ndarray, labels: np.ndarray, repeats: int, autograd_repeats: int) -> None:
    """Print the fast engine beside the plain reference (and autograd where torch exists): time per 100 epochs, max |diff|, code lines.

    The thresholds compared are the raw ones, before fit() snaps them to gap midpoints (the
    autograd engine's come snapped out of fit(), so it is compared snapped).
    """
    from calitag.thresholds import index as index_module
    from calitag.thresholds import objectives as objectives_module
    from calitag.thresholds import sgl_reference
    from calitag.thresholds import solvers as fit_module
    from calitag.thresholds.metrics import check_scores_labels

    checked, truth = check_scores_labels(scores, labels, warn_no_positives=False)
    opts = fit_module.SGLOptions()
    index = ScoreIndex.build(checked, truth, slope=opts.slope, grid_step_z=opts.grid_step_z)
    init = np.full(scores.shape[1], 0.3)
    spec = fit_module.resolve_objective("micro_f1")
    fast_s, fast = _best(lambda: fit_module._sgl_fast(index, spec, opts, init, None), repeats)
    reference_s, reference = _best(lambda: sgl_reference.sgl_thresholds(scores, labels, init=0.3), 1)
    print(f"\nSGL micro-F1, init 0.3, 100 epochs on the same {scores.shape[0]:,} x {scores.shape[1]} scores "
          "(seconds per 100 epochs; max |delta| of raw thresholds against the reference)")
    print(f"{'fast engine (100-epoch loop)':<30} {fast_s:>9.3f} s   max |fast - reference| {np.abs(fast - reference).max():.2e}")
    print(f"{'plain numpy reference':<30} {reference_s:>9.3f} s")
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"{'autograd engine':<30} {'-':>9}     (torch not installed)")
    else:
        plain_s, plain = _best(lambda: fit(scores, labels, init=0.3, engine="autograd"), autograd_repeats)
        print(f"{'autograd engine (torch)':<30} {plain_s:>9.3f} s   max |autograd - snapped reference| "
              f"{np.abs(plain.values - index.snap(reference)).max():.2e} (whole fit, snapped)")
    fast_lines = (_code_lines(index_module) + _code_lines(fit_module, ("_Adam", "_sgl_fast"))
                  + _code_lines(objectives_module, ("fbeta_count_gradient",)))
    print(f"code lines (no blank/comment/docstring lines): reference {_code_lines(sgl_reference)}; fast engine "
          f"{fast_lines} (index.py, _Adam, _sgl_fast, fbeta_count_gradient)")


def audioset_timing(repeats: int, autograd_repeats: int) -> bool:
    """Time sgl (numpy fast vs plain autograd) on AudioSet-sized synthetic scores; True when targets are met.

    The autograd column needs torch; without it only the fast engine is timed (and the
    speed-up target is not checked).
    """
    try:
        import torch
    except ImportError:
        torch = None
    ticks = _cpu_ticks()
    scores, labels = synthetic_scores(seed=0)
    n_clips, n_classes = scores.shape
    threads = f"torch threads {torch.get_num_threads()}" if torch is not None else "torch not installed: no autograd column"
    print(f"\nAudioSet-sized synthetic run: {n_clips:,} clips x {n_classes} classes, seed 0, "
          f"sgl lr 0.01, 100 epochs, slope 50, init 0.3; {threads}; {_load()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoPositivesWarning)
        fit(scores[:200], labels[:200], init=0.3)  # imports and first-call set-up, not timed
        fast_s, fast = _best(lambda: fit(scores, labels, init=0.3, engine="fast"), repeats)
        if torch is not None:
            fit(scores[:200], labels[:200], init=0.3, engine="autograd")
            plain_s, plain = _best(lambda: fit(scores, labels, init=0.3, engine="autograd"), autograd_repeats)
    default_f1 = evaluate(scores, labels, 0.3).micro_f1
    fast_f1 = fast.validation["micro_f1"]
    print(f"{'engine':<26} {'best s':>8} {'val micro-F1':>13} {'x autograd':>11}")
    print(f"{'defThresh 0.3':<26} {'':>8} {default_f1:>13.4f}")
    ok_speed = True
    if torch is not None:
        plain_f1 = plain.validation["micro_f1"]
        speedup = plain_s / fast_s
        print(f"{'sgl, plain autograd':<26} {plain_s:>8.3f} {plain_f1:>13.4f} {1.0:>11.1f}   (best of {autograd_repeats})")
        print(f"{'sgl, calitag fast (numpy)':<26} {fast_s:>8.3f} {fast_f1:>13.4f} {speedup:>11.1f}   (best of {repeats})")
        gap = abs(fast_f1 - plain_f1)
        max_diff = float(np.abs(fast.values - plain.values).max())
        print(f"speed-up {speedup:.1f}x, |delta F1| {gap:.5f}, max |delta threshold| {max_diff:.2e}")
        ok_speed = speedup >= 50.0 and gap <= 0.002
    else:
        print(f"{'sgl, calitag fast (numpy)':<26} {fast_s:>8.3f} {fast_f1:>13.4f} {'-':>11}   (best of {repeats})")
    fit_breakdown(scores, labels, repeats)
    reference_check(scores, labels, repeats, autograd_repeats)
    command_s = _thresholds_fit_wall(scores, labels)
    print(f"`calitag thresholds fit` on the same scores (.npz), whole command: {command_s:.2f} s wall (median of 5)")
    print(f"after the runs: {_load()}; during them {_stolen_since(ticks)}")
    ok = fast_s <= 0.1 and ok_speed and command_s <= 1.0
    wanted = "fit <= 0.1 s, >= 50x, |delta F1| <= 0.002, command <= 1.0 s" if torch is not None else "fit <= 0.1 s, command <= 1.0 s"
    print(f"targets ({wanted}): {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the fast engine (best is shown)")
    parser.add_argument("--autograd-repeats", type=int, default=3, help="timed runs of the autograd engine")
    parser.add_argument("--skip-table", action="store_true")
    parser.add_argument("--skip-init-study", action="store_true")
    parser.add_argument("--skip-audioset", action="store_true")
    args = parser.parse_args()
    if not args.skip_table:
        if not args.data_dir.is_dir():
            print(f"data folder {args.data_dir} not found: pass --data-dir", file=sys.stderr)
            return 2
        table2(args.data_dir)
    if not args.skip_init_study and args.data_dir.is_dir():
        init_study(args.data_dir)
    ok = True
    if not args.skip_audioset:
        ok = audioset_timing(args.repeats, args.autograd_repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
