"""Sound event detection on the real soundscapes: fixed threshold vs the authors' stack vs calitag's tuned one.

    python benchmarks/sed.py [--soundscapes audio_samples/soundscapes] [--seed 0]

Scores every soundscape with the DCASE2019 CRNN (its published Keras weights in ../shared/models),
tunes calitag's per-class stack on the tuning half (strong_labels_tune.tsv) and prints, on the
held-out half (strong_labels_heldout.tsv), event-based macro-F1 (DCASE collars) next to micro-F1 and
segment-based macro-F1 for:

- threshold 0.5 with no smoothing,
- the authors' shipped hysteresis and moving-average parameters,
- calitag's tuned stack, with its fit seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CHECKPOINT = SHARED / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"
AUTHORS = SHARED / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.thresholds.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soundscapes", type=Path, default=REPO / "audio_samples" / "soundscapes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from calitag.thresholds.events import Postprocess, detect_events, postprocess_from_authors, read_events_tsv
    from calitag.thresholds.events.event_metrics import event_based_scores, segment_based_scores
    from calitag.pipeline.tagger import Tagger
    from calitag.thresholds.events.tuning import tune_events

    if not CHECKPOINT.is_file():
        print(f"needs the CRNN weights at {CHECKPOINT}", file=sys.stderr)
        return 2
    tune_ref = read_events_tsv(args.soundscapes / "strong_labels_tune.tsv")
    held_ref = read_events_tsv(args.soundscapes / "strong_labels_heldout.tsv")

    tagger = Tagger.load("crnn-dcase2019", checkpoint=CHECKPOINT, device="cpu")
    t0 = time.perf_counter()
    scores = {name: tagger.frame_scores(args.soundscapes / name) for name in tune_ref.files + held_ref.files}
    score_s = time.perf_counter() - t0
    tune_scores = [scores[f] for f in tune_ref.files]
    held_scores = [scores[f] for f in held_ref.files]
    classes = tagger.class_names
    durations = {os.path.basename(fs.source): len(fs.probs) * fs.frame_hop_s for fs in scores.values()}

    def evaluate(pp: Postprocess, frame_scores, reference) -> tuple[float, float, float]:
        detected = [e for fs in frame_scores for e in detect_events(fs, pp)]
        ev = event_based_scores(reference.events, detected, class_names=classes)
        seg = segment_based_scores(reference.events, detected, class_names=classes,
                                   durations_s={f: durations[f] for f in reference.files})
        return ev.macro_f1, ev.micro_f1, seg.macro_f1

    fixed = Postprocess.uniform(classes, frame_hop_s=tagger_hop(scores))
    authors = postprocess_from_authors(AUTHORS)
    t0 = time.perf_counter()
    import torch

    # The first torch optimiser built in a process pays torch's lazy imports (seconds); timed apart.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tuned = tune_events(tune_scores, tune_ref, seed=args.seed)
    fit_s = time.perf_counter() - t0

    print(f"crnn-dcase2019 on {len(tune_ref.files)} tuning + {len(held_ref.files)} held-out soundscapes "
          f"({len(tune_ref.events)} + {len(held_ref.events)} events; classes present: "
          f"{', '.join(held_ref.class_names)}); frame scoring took {score_s:.1f} s, "
          f"torch's one-off optimiser warm-up {import_s:.1f} s (not in fit s)")
    print("macro-F1 averages the classes that have reference events; micro-F1 also counts false alarms "
          "of the other classes.\n")
    header = (f"{'post-processing':<42} {'fit s':>6} {'held-out event macro-F1':>24} {'event micro-F1':>15} "
              f"{'segment macro-F1':>17} {'tuning-half event macro-F1':>27}")
    print(header)
    print("-" * len(header))
    rows = [
        ("threshold 0.5, no smoothing", None, fixed),
        ("authors' hysteresis + moving average", None, authors),
        (f"calitag tuned (sgl surrogate + search, seed {args.seed})", fit_s, tuned.postprocess),
    ]
    for name, seconds, pp in rows:
        held = evaluate(pp, held_scores, held_ref)
        tune = evaluate(pp, tune_scores, tune_ref)
        fit = "-" if seconds is None else f"{seconds:.2f}"
        print(f"{name:<42} {fit:>6} {100 * held[0]:>24.1f} {100 * held[1]:>15.1f} {100 * held[2]:>17.1f} "
              f"{100 * tune[0]:>27.1f}")
    print("\ntuned parameters (classes with reference events):")
    for label in tune_ref.class_names:
        print(f"  {label}: {tuned.postprocess[label].to_dict()}")
    return 0


def tagger_hop(scores: dict) -> float:
    """The frame hop shared by all scored recordings."""
    return next(iter(scores.values())).frame_hop_s


if __name__ == "__main__":
    raise SystemExit(main())
