"""Accuracy cost of bf16: the same recordings scored in float32 and in bfloat16, compared.

    python benchmarks/precision.py [--seed 0]

crnn-dcase2019 with its published Keras weights (../shared/models) on the real clips of
``audio_samples/`` and the soundscapes of ``audio_samples/soundscapes/``:

- max and mean |delta score| bf16 - fp32, clip scores (all clips) and frame scores (soundscapes);
- tag agreement at the authors' tuned tagging thresholds (the .thresholds.json beside the .h5),
  and the smallest distance of an fp32 clip score to its threshold;
- event-based macro-F1 on the held-out soundscapes (strong_labels_heldout.tsv) with the authors'
  post-processing and with calitag's stack tuned in fp32 on the tuning half, applied to fp32 and
  to bf16 frame scores.

cnn14 and cnn-transformer have no real weights here: their |delta| with seeded random weights is
printed as an indication only. Needs a CPU with native bfloat16 (AVX512-BF16 or AMX).
A script, never part of the test run. It prints one table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SAMPLES = REPO / "audio_samples"
SOUNDSCAPES = SAMPLES / "soundscapes"
CHECKPOINT = SHARED / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"
AUTHORS = SHARED / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.thresholds.json"


def delta(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max and mean |a - b|."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(d.max()), float(d.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuner and of random weights")
    args = parser.parse_args()

    from calitag.models.registry import get_spec
    from calitag.thresholds.events import detect_events, postprocess_from_authors, read_events_tsv
    from calitag.pipeline.precision import bf16_support
    from calitag.pipeline.sed_metrics import event_based_scores
    from calitag.pipeline.tagger import Tagger
    from calitag.thresholds.events_tuning import tune_events

    native, reason = bf16_support(torch.device("cpu"))
    if not native:
        print(f"needs native bfloat16: {reason}", file=sys.stderr)
        return 2
    if not CHECKPOINT.is_file():
        print(f"needs the CRNN weights at {CHECKPOINT}", file=sys.stderr)
        return 2
    clips = sorted(SAMPLES.glob("*.wav"))
    tune_ref = read_events_tsv(SOUNDSCAPES / "strong_labels_tune.tsv")
    held_ref = read_events_tsv(SOUNDSCAPES / "strong_labels_heldout.tsv")
    scapes = [SOUNDSCAPES / name for name in tune_ref.files + held_ref.files]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {reason}")
    print(f"crnn-dcase2019, published weights; {len(clips)} clips of audio_samples/ and {len(scapes)} soundscapes\n")

    taggers = {p: Tagger.load("crnn-dcase2019", checkpoint=CHECKPOINT, device="cpu", precision=p)
               for p in ("fp32", "bf16")}
    clip_scores = {p: t.scores(clips + scapes).probs for p, t in taggers.items()}
    frames = {p: {path.name: t.frame_scores(path) for path in scapes} for p, t in taggers.items()}

    rows: list[tuple[str, str]] = []
    mx, mean = delta(clip_scores["fp32"], clip_scores["bf16"])
    rows.append((f"clip scores, {len(clips) + len(scapes)} recordings x 10 classes: max / mean |delta|",
                 f"{mx:.2e} / {mean:.2e}"))
    fp32_frames = np.concatenate([frames["fp32"][s.name].probs for s in scapes])
    bf16_frames = np.concatenate([frames["bf16"][s.name].probs for s in scapes])
    mx, mean = delta(fp32_frames, bf16_frames)
    rows.append((f"frame scores, {len(fp32_frames)} frames x 10 classes: max / mean |delta|", f"{mx:.2e} / {mean:.2e}"))

    import json

    thresholds = np.asarray(json.loads(AUTHORS.read_text())["audio_tagging_thresholds"], dtype=np.float32)
    tags = {p: s > thresholds for p, s in clip_scores.items()}
    agree = int((tags["fp32"] == tags["bf16"]).sum())
    rows.append(("tag decisions equal at the authors' thresholds", f"{agree} of {tags['fp32'].size}"))
    margin = float(np.abs(clip_scores["fp32"] - thresholds).min())
    rows.append(("smallest |fp32 clip score - threshold|", f"{margin:.2e}"))

    authors = postprocess_from_authors(AUTHORS)
    tuned = tune_events([frames["fp32"][f] for f in tune_ref.files], tune_ref, seed=args.seed).postprocess
    classes = taggers["fp32"].class_names
    for label, pp in (("authors' post-processing", authors), ("calitag stack tuned in fp32", tuned)):
        f1 = {}
        for p in ("fp32", "bf16"):
            detected = [e for f in held_ref.files for e in detect_events(frames[p][f], pp)]
            f1[p] = event_based_scores(held_ref.events, detected, class_names=classes).macro_f1
        rows.append((f"held-out event macro-F1 %, {label}: fp32 / bf16", f"{100 * f1['fp32']:.1f} / {100 * f1['bf16']:.1f}"))

    for name in ("cnn14", "cnn-transformer"):
        spec = get_spec(name)
        out = {}
        for p in ("fp32", "bf16"):
            model = spec.resolve_builder()(None, seed=args.seed)
            out[p] = Tagger(spec, model, device=torch.device("cpu"), precision=p).scores(clips).probs
        mx, mean = delta(out["fp32"], out["bf16"])
        rows.append((f"{name}, random weights (indication only), {len(clips)} clips: max / mean |delta|",
                     f"{mx:.2e} / {mean:.2e}"))

    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
