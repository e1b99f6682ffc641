"""Operating points: certified precision targets, calibrated probabilities and the small-class guard.

    python benchmarks/operating_points.py [--seeds 8] [--tiny-seeds 2] [--skip-audio]

The three checks of issue 22 on the score sets of ../shared/data (DCASE2017 task 4: val and eval;
DCASE2019 task 4: val only, split 50/50 into a fitting and an evaluation half):

1. targets: pool a set's clips, split them 50/50 at random (``--seeds`` seeds), run
   ``calitag thresholds fit SPLIT.npz --target precision=0.8 --out th.json`` (half A as val, half B as
   eval) and read ``per_class.certified``; print the share of certified (class, split) pairs and the
   share of those whose precision on half B is at least 0.75 (wanted: >= 25% and >= 90%);
2. probabilities: ``calitag thresholds fit SET.npz --probabilities auto --out th.json`` on val, then
   ``Thresholds.load(th).probabilities(eval_scores)``: class-wise ECE (15 equal bins) of the eval
   clips, raw scores against calibrated (wanted: never above 1.02x raw, >= 15% lower on average);
   platt and isotonic for comparison;
3. guard: eval macro-F1 of ``--guard-folds 3`` (label-rate fallback) against no guard and against the
   fixed-0.5 fallback of calitag 0.1 (wanted: cost <= 0.5 points); then tiny classes: per class and
   seed, the fitting clips keep only 4 random positives of that class, and that class's eval F1 is
   averaged over classes and seeds; and audio_samples/ scored by yamnet (the split of
   ``calitag calibrate``): per-class thresholds and held-out F1, Camera included.

The commands run in-process through click's CliRunner (the code path of the console script). A
script, never part of the test run; it prints tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # run from a clone without installing

from calitag.cli import main as cli  # noqa: E402
from calitag.thresholds import Thresholds, evaluate, fit  # noqa: E402
from calitag.thresholds.probability import expected_calibration_error  # noqa: E402
from calitag.thresholds.splits import split_indices  # noqa: E402


def score_sets() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (fit scores, fit labels, eval scores, eval labels); DCASE2019 val split 50/50 (seed 0)."""
    sets = {}
    path = SHARED / "dcase2017_task4.npz"
    if path.is_file():
        with np.load(path) as d:
            sets["dcase2017"] = (d["val_scores"], d["val_labels"], d["eval_scores"], d["eval_labels"])
    path = SHARED / "dcase2019_task4_val.npz"
    if path.is_file():
        with np.load(path) as d:
            a, b = split_indices(d["val_labels"], held_out_fraction=0.5, seed=0)
            sets["dcase2019 (val halves)"] = (d["val_scores"][a], d["val_labels"][a], d["val_scores"][b],
                                              d["val_labels"][b])
    return sets


def run_cli(*args: str) -> None:
    """``calitag ARGS`` in this process; raises with its output when it fails."""
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"calitag {' '.join(args)} failed ({result.exit_code}): {result.output}")


def check_targets(sets: dict, *, seeds: int, folder: Path) -> None:
    print("\n1. precision target 0.8 (confidence 0.95), pooled clips split 50/50 at random")
    print(f"{'set':<24} {'pairs':>5} {'certified':>10} {'kept P>=0.75':>13} {'per seed (certified, kept)'}")
    for name, (vs, vl, es, el) in sets.items():
        # DCASE2019's two halves are its val split: pooled, they are the whole of it.
        scores, labels = np.concatenate([vs, es]), np.concatenate([vl, el]) > 0
        per_seed, n_cert, n_kept, n_pairs = [], 0, 0, 0
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(len(scores))
            a, b = order[: len(order) // 2], order[len(order) // 2:]
            split = folder / f"split_{seed}.npz"
            np.savez(split, val_scores=scores[a], val_labels=labels[a].astype(np.uint8), eval_scores=scores[b],
                     eval_labels=labels[b].astype(np.uint8))
            out = folder / "th.json"
            run_cli("thresholds", "fit", str(split), "--target", "precision=0.8", "--out", str(out), "--force")
            document = json.loads(out.read_text())
            certified = np.array(document["per_class"]["certified"], dtype=bool)
            decided = scores[b] > np.array(document["thresholds"])
            tp, pp = (decided & labels[b]).sum(0), decided.sum(0)
            precision = np.where(pp > 0, tp / np.maximum(pp, 1), 1.0)
            kept = certified & (precision >= 0.75)
            per_seed.append(f"{certified.sum()}/{kept.sum()}")
            n_cert, n_kept, n_pairs = n_cert + certified.sum(), n_kept + kept.sum(), n_pairs + certified.size
        print(f"{name:<24} {n_pairs:>5} {n_cert / n_pairs:>10.1%} {n_kept / max(n_cert, 1):>13.1%} "
              f"{' '.join(per_seed)}")


def check_probabilities(sets: dict, *, folder: Path) -> None:
    print("\n2. probabilities fitted on the fitting clips, class-wise ECE (15 equal bins) of the eval clips")
    print(f"{'set':<24} {'raw':>7} {'auto':>7} {'ratio':>6} {'platt':>7} {'isotonic':>8}  auto's maps")
    ratios = []
    for name, (vs, vl, es, el) in sets.items():
        split = folder / "set.npz"
        np.savez(split, val_scores=vs, val_labels=vl, eval_scores=es, eval_labels=el)
        raw = expected_calibration_error(es, el).mean()
        row = {}
        for method in ("auto", "platt", "isotonic"):
            out = folder / f"th_{method}.json"
            run_cli("thresholds", "fit", str(split), "--probabilities", method, "--out", str(out), "--force")
            th = Thresholds.load(out)
            row[method] = expected_calibration_error(th.probabilities(es), el).mean()
            if method == "auto":
                kinds = [m.kind for m in th.probability_maps.maps]
        ratios.append(row["auto"] / raw)
        print(f"{name:<24} {raw:>7.4f} {row['auto']:>7.4f} {row['auto'] / raw:>6.2f} {row['platt']:>7.4f} "
              f"{row['isotonic']:>8.4f}  " + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds))))
    print(f"mean ratio auto/raw {np.mean(ratios):.2f} (wanted <= 0.85), worst {max(ratios):.2f} (wanted <= 1.02)")


def macro_f1(vs, vl, es, el, **guard) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return 100 * evaluate(es, el, fit(vs, vl, **guard)).macro_f1


def check_guard(sets: dict, *, tiny_seeds: int) -> None:
    print("\n3. guard (3 folds): eval macro-F1, method sgl, objective micro-F1")
    print(f"{'set':<24} {'no guard':>9} {'label-rate':>11} {'cost':>6} {'fixed 0.5':>10} {'cost':>6}")
    guards = {"none": {}, "label_rate": {"guard_folds": 3}, "default": {"guard_folds": 3, "guard_fallback": "default"}}
    for name, data in sets.items():
        f = {key: macro_f1(*data, **kw) for key, kw in guards.items()}
        print(f"{name:<24} {f['none']:>9.2f} {f['label_rate']:>11.2f} {f['none'] - f['label_rate']:>+6.2f} "
              f"{f['default']:>10.2f} {f['none'] - f['default']:>+6.2f}")
    print("\n   tiny classes: the fitting clips keep 4 positives of one class; that class's eval F1 (mean)")
    print(f"{'set':<24} {'no guard':>9} {'label-rate':>11} {'fixed 0.5':>10}")
    for name, (vs, vl, es, el) in sets.items():
        sums = dict.fromkeys(guards, 0.0)
        count = 0
        for seed in range(tiny_seeds):
            rng = np.random.default_rng(seed)
            for c in range(vl.shape[1]):
                positives = np.flatnonzero(vl[:, c] > 0)
                drop = rng.choice(positives, size=max(len(positives) - 4, 0), replace=False)
                keep = np.setdiff1d(np.arange(len(vl)), drop)
                for key, kw in guards.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        th = fit(vs[keep], vl[keep], **kw)
                    sums[key] += evaluate(es, el, th).f1[c]
                count += 1
        print(f"{name:<24} " + " ".join(f"{100 * sums[k] / count:>{w}.2f}" for k, w in
                                        (("none", 9), ("label_rate", 11), ("default", 10))))


def check_audio_samples() -> None:
    """yamnet on audio_samples/: the split of `calitag calibrate`, per-class threshold and held-out F1."""
    from calitag import load_tagger
    from calitag.pipeline.calibrate import CalibrationOptions, ScoreCache, gather_clip_scores, select_classes
    from calitag.pipeline.labels import read_clip_labels

    tagger = load_tagger("yamnet")
    folder = REPO / "audio_samples"
    labels = read_clip_labels(folder / "labels.csv", class_names=tagger.class_names)
    clips = gather_clip_scores(tagger, folder, labels, scored=None, cache=ScoreCache(None, tagger.class_names),
                               checkpoint_sha256=None, options=CalibrationOptions(workers=0))
    data = select_classes(clips, labels, class_names=tagger.class_names, model=tagger.name)
    fit_idx, held = split_indices(data.targets, held_out_fraction=0.5, seed=0)
    guards = {"no guard": {}, "label-rate": {"guard_folds": 3},
              "fixed 0.5": {"guard_folds": 3, "guard_fallback": "default"}}
    print("\n   audio_samples/ (yamnet, the held-out split of `calitag calibrate`): threshold, held-out F1")
    reports = {}
    for key, kw in guards.items():
        th = fit(data.scores[fit_idx], data.targets[fit_idx], class_names=data.classes, **kw)
        reports[key] = (th, evaluate(data.scores[held], data.targets[held], th))
    print(f"{'class':<24} {'n fit':>5} | " + " | ".join(f"{key:>14}" for key in guards))
    for i, name in enumerate(data.classes):
        cells = [f"{th.values[i]:.3f} F1 {report.f1[i]:.2f}" for th, report in reports.values()]
        print(f"{name:<24} {int(data.targets[fit_idx, i].sum()):>5} | " + " | ".join(f"{c:>14}" for c in cells))
    print(f"{'macro-F1':<32} | " + " | ".join(f"{report.macro_f1:>14.3f}" for _, report in reports.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--tiny-seeds", type=int, default=2)
    parser.add_argument("--skip-audio", action="store_true", help="Skip audio_samples/ (needs the yamnet wheel).")
    parser.add_argument("--only-targets", action="store_true", help="Run check 1 only.")
    args = parser.parse_args()
    sets = score_sets()
    if not sets:
        sys.exit(f"no score sets in {SHARED}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        check_targets(sets, seeds=args.seeds, folder=Path(tmp))
        if args.only_targets:
            return
        check_probabilities(sets, folder=Path(tmp))
    check_guard(sets, tiny_seeds=args.tiny_seeds)
    if not args.skip_audio:
        check_audio_samples()
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
