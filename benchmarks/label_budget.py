"""Which clips to label: calitag.suggest_labels against random picks, on a fixed label budget.

    python benchmarks/label_budget.py [--data-dir ../shared/data] [--seeds N] [--sets 2017-all,2019,2017-val] [--jobs J]

Protocol (issue 23): per seed, 70% of a score set is the pool and 30% the test set; 8% of the
pool is labeled at random; then three rounds each label 6% more of the pool, picked at random or
by suggest_labels, and the thresholds are refitted with SGL (calitag.fit_thresholds, plain, no
guard) on the labeled clips after every round. The table gives test micro-F1 (%) after the last
round, per seed and on average; both arms share the split and the first labels. 6 seeds per set,
20 for sets under 1,000 clips. "whole pool" is the gain of labeling the whole pool instead (what
the labels could reach at most, roughly).

Sets: DCASE2017 task 4 (val + eval pooled, 1591 clips), DCASE2019 task 4 validation (1122 clips),
and DCASE2017 task 4 validation alone (488 clips: the small-set case).
"""

from __future__ import annotations

import argparse
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

import calitag
from calitag.thresholds import NoPositivesWarning

REPO = Path(__file__).resolve().parent.parent
#: --sets keys -> set names.
SET_KEYS = {"2017-all": "DCASE2017 val+eval", "2019": "DCASE2019 val", "2017-val": "DCASE2017 val"}


def load_sets(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (scores, 0/1 targets)."""
    with np.load(data_dir / "dcase2017_task4.npz") as d17, np.load(data_dir / "dcase2019_task4_val.npz") as d19:
        return {
            "DCASE2017 val+eval": (np.concatenate([d17["val_scores"], d17["eval_scores"]]),
                                   np.concatenate([d17["val_labels"], d17["eval_labels"]])),
            "DCASE2019 val": (d19["val_scores"], d19["val_labels"]),
            "DCASE2017 val": (d17["val_scores"], d17["val_labels"]),
        }


def micro_f1(scores: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> float:
    decided = scores > thresholds
    return 200.0 * (decided & truth).sum() / (decided.sum() + truth.sum())


def one_seed(scores: np.ndarray, targets: np.ndarray, seed: int) -> dict[str, float]:
    """Test micro-F1 (%) after the last round, for random and suggested picks, and with the whole pool labeled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(scores))
    n_pool = int(0.7 * len(scores))
    pool, test = order[:n_pool], order[n_pool:]
    s, y = scores[pool], targets[pool].astype(bool)
    first = np.zeros(n_pool, dtype=bool)
    first[rng.choice(n_pool, int(round(0.08 * n_pool)), replace=False)] = True
    step = int(round(0.06 * n_pool))
    out = {}
    for arm in ("random", "suggested"):
        labeled, picker = first.copy(), np.random.default_rng(seed + 1)
        for round_ in range(3):
            if arm == "random":
                picks = picker.choice(np.flatnonzero(~labeled), step, replace=False)
            else:
                picks = calitag.suggest_labels(s, y, labeled, step, seed=seed * 10 + round_)
            labeled[picks] = True
        thresholds = calitag.fit_thresholds(s[labeled], y[labeled]).values
        out[arm] = micro_f1(scores[test], targets[test].astype(bool), thresholds)
    out["whole pool"] = micro_f1(scores[test], targets[test].astype(bool), calitag.fit_thresholds(s, y).values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=None, help="Seeds per set (default: 6, 20 under 1,000 clips).")
    parser.add_argument("--sets", default=",".join(SET_KEYS), help=f"Comma-separated among {', '.join(SET_KEYS)}.")
    parser.add_argument("--jobs", type=int, default=1, help="Seeds run in this many processes at once.")
    args = parser.parse_args()
    chosen = [SET_KEYS[key] for key in args.sets.split(",") if key]
    warnings.simplefilter("ignore", NoPositivesWarning)
    gains = []
    print(f"{'set':<20} {'clips':>5} {'seeds':>5} {'random':>7} {'suggested':>9} {'gain':>6} {'se':>5} "
          f"{'whole pool':>10}  per seed (gain)")
    for name, (scores, targets) in load_sets(args.data_dir).items():
        if name not in chosen:
            continue
        n_seeds = args.seeds or (20 if len(scores) < 1000 else 6)
        with ProcessPoolExecutor(args.jobs, initializer=warnings.simplefilter, initargs=("ignore", NoPositivesWarning)) as pool:
            runs = list(pool.map(partial(one_seed, scores, targets), range(n_seeds)))
        diff = np.array([r["suggested"] - r["random"] for r in runs])
        gains.append(diff.mean())
        print(f"{name:<20} {len(scores):>5} {n_seeds:>5} {np.mean([r['random'] for r in runs]):>7.2f} "
              f"{np.mean([r['suggested'] for r in runs]):>9.2f} {diff.mean():>+6.2f} {diff.std(ddof=1) / np.sqrt(n_seeds):>5.2f} "
              f"{np.mean([r['whole pool'] - r['random'] for r in runs]):>+10.2f}"
              f"  {' '.join(f'{d:+.1f}' for d in diff)}", flush=True)
    print(f"average gain over the sets: {np.mean(gains):+.2f} points of test micro-F1; worst set {min(gains):+.2f}")


if __name__ == "__main__":
    main()
