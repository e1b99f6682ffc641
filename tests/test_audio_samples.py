"""audio_samples/: the real clips, their labels and attribution, and the strongly labeled soundscapes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calitag.models.registry import get_spec

SAMPLES = Path(__file__).resolve().parent.parent / "audio_samples"
SCAPES = SAMPLES / "soundscapes"
MAIN_CLASSES = ("Speech", "Music", "Alarm clock", "Telephone bell ringing")
MAX_FOLDER_BYTES = 5_000_000


def read_rows(path: Path, *, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def split_labels(cell: str) -> list[str]:
    return [label for label in cell.split(";") if label]


@pytest.fixture(scope="module")
def clips() -> list[dict[str, str]]:
    return read_rows(SAMPLES / "labels.csv")


@pytest.fixture(scope="module")
def strong() -> list[dict[str, str]]:
    return read_rows(SCAPES / "strong_labels.tsv", delimiter="\t")


def test_every_listed_clip_exists(clips):
    """Each file named in labels.csv is in audio_samples/, and every .wav there is listed."""
    listed = [row["filename"] for row in clips]
    assert len(listed) == len(set(listed))
    assert all((SAMPLES / name).is_file() for name in listed), [
        n for n in listed if not (SAMPLES / n).is_file()
    ]
    assert sorted(p.name for p in SAMPLES.glob("*.wav")) == sorted(listed)


def test_clips_are_16k_mono_float32_of_stated_duration(clips):
    """Every clip reads as 16 kHz mono float32, lasts its stated duration (+-0.1 s), with 0 < std < 1."""
    for row in clips:
        audio, rate = sf.read(SAMPLES / row["filename"], dtype="float32")
        assert audio.dtype == np.float32 and audio.ndim == 1, row["filename"]
        assert rate == 16_000, row["filename"]
        assert sf.info(SAMPLES / row["filename"]).subtype == "PCM_16", row["filename"]
        assert abs(audio.size / rate - float(row["duration_s"])) <= 0.1, row["filename"]
        assert 0.0 < float(audio.std()) < 1.0, row["filename"]


def test_labels_are_class_names_of_yamnet_and_audioset(clips):
    """Every label is a class name of both YAMNet (521) and the AudioSet list of Cnn14 (527)."""
    yamnet = set(get_spec("yamnet").class_names)
    audioset = set(get_spec("cnn14").class_names)
    used = {label for row in clips for label in split_labels(row["labels"])}
    assert used, "labels.csv names no class"
    assert used <= yamnet & audioset, sorted(used - (yamnet & audioset))


def test_main_classes_have_enough_positives_and_negatives(clips):
    """Each main class has at least 6 positive and 6 negative clips, so a train/val split can calibrate it."""
    for name in MAIN_CLASSES:
        positives = sum(name in split_labels(row["labels"]) for row in clips)
        assert positives >= 6, (name, positives)
        assert len(clips) - positives >= 6, (name, positives)


def test_mixtures_carry_the_union_of_their_sources_labels():
    """A mixture lists as many labels as it has sources, and the clips it draws on share each of them."""
    manifest = read_rows(SAMPLES / "manifest.csv")
    labels_of = {row["filename"]: set(split_labels(row["labels"])) for row in manifest}
    singles = [row for row in manifest if row["kind"] == "single"]
    mixtures = [row for row in manifest if row["kind"] == "mixture"]
    assert mixtures
    for row in mixtures:
        sources = row["sources"].split(" + ")
        assert len(labels_of[row["filename"]]) == len(sources) >= 2, row["filename"]
        assert row["snr"].count("dB") == len(sources) - 1, row["filename"]
        for label in labels_of[row["filename"]]:
            assert any(labels_of[s["filename"]] == {label} for s in singles), (row["filename"], label)


def test_dcase2019_labels_map_the_audioset_ones(clips):
    """labels_dcase2019.csv lists the same files in DCASE2019 names: Speech as is, rings and alarms as Alarm_bell_ringing."""
    dcase_names = set(get_spec("crnn-dcase2019").class_names)
    dcase = read_rows(SAMPLES / "labels_dcase2019.csv")
    assert [row["filename"] for row in dcase] == [row["filename"] for row in clips]
    for audioset_row, dcase_row in zip(clips, dcase):
        audioset_labels = set(split_labels(audioset_row["labels"]))
        dcase_labels = set(split_labels(dcase_row["labels"]))
        assert dcase_labels <= dcase_names, dcase_row
        assert ("Speech" in audioset_labels) == ("Speech" in dcase_labels), dcase_row
        ringing = bool(audioset_labels & {"Alarm clock", "Telephone bell ringing"})
        assert ringing == ("Alarm_bell_ringing" in dcase_labels), dcase_row


def test_labels_file_reads_with_the_calibrate_reader(clips):
    """calitag's label reader parses labels.csv to the same label sets (no class name holds a comma)."""
    labels_module = pytest.importorskip("calitag.pipeline.labels")
    parsed = labels_module.read_clip_labels(SAMPLES / "labels.csv").labels
    assert {name: set(labs) for name, labs in parsed.items()} == {
        row["filename"]: set(split_labels(row["labels"])) for row in clips
    }


def test_folder_is_under_5_mb():
    """The whole audio_samples/ folder, soundscapes included, stays under 5 MB."""
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert 0 < total < MAX_FOLDER_BYTES, total


def test_attribution_names_every_audio_file():
    """ATTRIBUTION.md names the Debian packages with versions and every clip and soundscape it credits."""
    text = (SAMPLES / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for package in (
        "asterisk-core-sounds-en-wav | 1.6.1-1",
        "asterisk-moh-opsound-wav | 2.03-1.1",
        "sound-theme-freedesktop | 0.8-2",
    ):
        assert package in text
    for path in list(SAMPLES.glob("*.wav")) + list(SCAPES.glob("*.flac")):
        assert str(path.relative_to(SAMPLES)) in text, path.name
    manifest = read_rows(SAMPLES / "manifest.csv")
    for row in manifest:
        licenses = set(row["license"].split(";"))
        assert licenses <= {"CC-BY-SA-3.0", "CC-BY-3.0", "GPL-2+"}, row
        assert not ("GPL-2+" in licenses and "CC-BY-SA-3.0" in licenses), row["filename"]


def test_soundscapes_are_mono_float32_of_manifest_duration():
    """Each soundscape reads as mono float32 at its stated rate and duration (+-0.1 s), with 0 < std < 1."""
    manifest = read_rows(SCAPES / "manifest.csv")
    assert sorted(row["filename"] for row in manifest) == sorted(p.name for p in SCAPES.glob("*.flac"))
    for row in manifest:
        audio, rate = sf.read(SCAPES / row["filename"], dtype="float32")
        assert audio.dtype == np.float32 and audio.ndim == 1, row["filename"]
        assert rate == int(row["sample_rate"]), row["filename"]
        assert abs(audio.size / rate - float(row["duration_s"])) <= 0.1, row["filename"]
        assert 0.0 < float(audio.std()) < 1.0, row["filename"]


def test_strong_labels_lie_within_their_files(strong):
    """Every strong label names a soundscape, a DCASE2019 class, and 0 <= onset < offset <= duration."""
    dcase_names = set(get_spec("crnn-dcase2019").class_names)
    assert list(strong[0]) == ["filename", "onset", "offset", "event_label"]
    for row in strong:
        duration = sf.info(SCAPES / row["filename"]).duration
        onset, offset = float(row["onset"]), float(row["offset"])
        assert 0.0 <= onset < offset <= duration, row
        assert row["event_label"] in dcase_names, row


def test_tune_and_heldout_halves_partition_the_soundscapes(strong):
    """The tune and held-out TSVs split the soundscapes in two halves, each holding both event classes."""
    tune = read_rows(SCAPES / "strong_labels_tune.tsv", delimiter="\t")
    heldout = read_rows(SCAPES / "strong_labels_heldout.tsv", delimiter="\t")
    assert sorted(map(tuple, (r.values() for r in tune + heldout))) == sorted(
        map(tuple, (r.values() for r in strong))
    )
    tune_files = {r["filename"] for r in tune}
    heldout_files = {r["filename"] for r in heldout}
    assert not tune_files & heldout_files
    assert tune_files | heldout_files == {p.name for p in SCAPES.glob("*.flac")}
    assert len(tune_files) == len(heldout_files)
    for half in (tune, heldout):
        assert {r["event_label"] for r in half} == {"Speech", "Alarm_bell_ringing"}


def test_events_are_louder_than_the_background_between_them(strong):
    """Inside each labeled event the soundscape is at least 6 dB louder than where no event is labeled."""
    by_file: dict[str, list[tuple[float, float]]] = {}
    for row in strong:
        by_file.setdefault(row["filename"], []).append((float(row["onset"]), float(row["offset"])))
    for name, events in by_file.items():
        audio, rate = sf.read(SCAPES / name, dtype="float64")
        quiet = np.ones(audio.size, dtype=bool)
        for onset, offset in events:
            quiet[max(0, int((onset - 0.1) * rate)) : int((offset + 0.1) * rate)] = False
        assert quiet.sum() > rate // 2, name
        background_db = 10 * np.log10(np.mean(audio[quiet] ** 2))
        for onset, offset in events:
            event_db = 10 * np.log10(np.mean(audio[int(onset * rate) : int(offset * rate)] ** 2))
            assert event_db > background_db + 6.0, (name, onset, offset, event_db, background_db)
