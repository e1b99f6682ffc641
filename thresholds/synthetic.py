"""Seeded synthetic multi-label scores shaped like a large tagger's output (for benchmarks and tests)."""

from __future__ import annotations

import numpy as np

#: AudioSet-sized defaults: the paper's AudioSet evaluation split size and class count.
AUDIOSET_CLIPS = 15_278
AUDIOSET_CLASSES = 527


def synthetic_scores(
    n_clips: int = AUDIOSET_CLIPS, n_classes: int = AUDIOSET_CLASSES, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels with a long-tailed class prior and badly calibrated per-class scores.

    Labels follow a Zipf-like prevalence (about 2.6 labels per clip for 527 classes, every class
    with a few positives). Scores are sigmoids of Gaussian logits whose per-class offsets differ,
    so one global threshold is far from optimal, as with a real tagger.

    Parameters
    ----------
    n_clips, n_classes : int
        Matrix shape.
    seed : int
        numpy Generator seed; the same seed gives the same arrays.

    Returns
    -------
    tuple of numpy.ndarray
        ``(scores (n_clips, n_classes) float32 in [0, 1], labels (n_clips, n_classes) uint8)``.
    """
    from scipy.special import expit  # imported here: only benchmarks and tests need it

    rng = np.random.default_rng(seed)
    prevalence = np.clip(0.2 / np.arange(1, n_classes + 1) ** 0.8, 3.0 / n_clips, None)
    prevalence = rng.permutation(prevalence)
    labels = rng.random((n_clips, n_classes)) < prevalence
    negative_mean = rng.normal(-6.0, 1.0, n_classes)
    positive_mean = rng.normal(0.0, 1.5, n_classes)
    logits = np.where(
        labels,
        rng.normal(positive_mean, 1.5, (n_clips, n_classes)),
        rng.normal(negative_mean, 2.0, (n_clips, n_classes)),
    )
    return expit(logits).astype(np.float32), labels.astype(np.uint8)
