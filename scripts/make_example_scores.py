"""Write examples/: YAMNet clip scores of audio_samples/ as a `thresholds fit` score file, and AudioSet-named strong labels.

The score file the docs' `calitag thresholds` examples use, so that they run from a clone without ../shared:
the 45 clips of audio_samples/ scored by the default `yamnet` model (float network), restricted to the 7
classes that audio_samples/labels.csv uses, split 50/50 into val (fitting) and eval (held-out) clips with the
same stratified split `calitag calibrate --seed 0` makes. Arrays: val_scores, val_labels, eval_scores,
eval_labels, classes, val_files, eval_files.

Beside it, examples/strong_labels_{tune,heldout}_audioset.tsv: the soundscapes' strong labels
(audio_samples/soundscapes/) with the DESED label `Alarm_bell_ringing` renamed to the AudioSet class
`Alarm clock` (the events are alarm-clock sounds), so that `calibrate-events` and `detect` run with `yamnet`,
whose weights every user can get, instead of the CRNN's.

    python scripts/make_example_scores.py            # rewrite the file
    python scripts/make_example_scores.py --check    # exit 1 if the committed file differs by more than 1e-5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "examples" / "yamnet_audio_samples.npz"
#: DESED label -> the AudioSet (yamnet) class of the same sounds.
AUDIOSET_NAMES = {"Alarm_bell_ringing": "Alarm clock"}


def audioset_tables() -> dict[Path, str]:
    """The strong-label tables of the soundscapes with AudioSet class names, by output path."""
    tables = {}
    for part in ("tune", "heldout"):
        rows = (REPO / "audio_samples" / "soundscapes" / f"strong_labels_{part}.tsv").read_text(encoding="utf-8")
        lines = [line.split("\t") for line in rows.splitlines()]
        renamed = [[*cells[:3], AUDIOSET_NAMES.get(cells[3], cells[3])] for cells in lines]
        tables[OUT.parent / f"strong_labels_{part}_audioset.tsv"] = "".join("\t".join(c) + "\n" for c in renamed)
    return tables


def build() -> dict[str, np.ndarray]:
    """The arrays of the score file, computed from audio_samples/."""
    from calitag.pipeline import Tagger
    from calitag.pipeline.labels import read_clip_labels
    from calitag.thresholds.splits import split_indices

    samples = REPO / "audio_samples"
    tagger = Tagger.load("yamnet", device="cpu")
    labels = read_clip_labels(samples / "labels.csv", class_names=tagger.class_names)
    files = sorted(labels.labels)
    classes = tuple(c for c in tagger.class_names if any(c in labels.labels[f] for f in files))
    scores = tagger.scores([samples / f for f in files]).probs
    scores = np.asarray(scores)[:, [tagger.class_names.index(c) for c in classes]].astype(np.float32)
    targets = labels.targets(files, classes).astype(np.uint8)
    fit_idx, held_idx = split_indices(targets, held_out_fraction=0.5, seed=0)
    names = np.array(files, dtype=str)
    return {"val_scores": scores[fit_idx], "val_labels": targets[fit_idx], "eval_scores": scores[held_idx],
            "eval_labels": targets[held_idx], "classes": np.array(classes, dtype=str),
            "val_files": names[fit_idx], "eval_files": names[held_idx]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args()
    arrays = build()
    if args.check:
        with np.load(OUT, allow_pickle=False) as old:
            same = set(old.files) == set(arrays) and all(
                np.array_equal(old[k], v) if v.dtype.kind in "UiuS" else np.allclose(old[k], v, atol=1e-5)
                for k, v in arrays.items())
        same = same and all(path.read_text(encoding="utf-8") == text for path, text in audioset_tables().items())
        print("same" if same else f"{OUT.parent} differs from a rebuild")
        sys.exit(0 if same else 1)
    OUT.parent.mkdir(exist_ok=True)
    for path, text in audioset_tables().items():
        path.write_text(text, encoding="utf-8")
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(arrays['val_scores'])} val + {len(arrays['eval_scores'])} eval clips x "
          f"{len(arrays['classes'])} classes")


if __name__ == "__main__":
    main()
