"""The post-processing stack, the events section format and the DCASE TSV files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calitag.errors import LabelsError, ScoresError, ThresholdsError, ThresholdsMismatchError
from calitag.thresholds.events import (
    ClassPostprocess,
    Event,
    Postprocess,
    binarize,
    detect_events,
    load_postprocess,
    postprocess_from_authors,
    read_events_tsv,
    smooth,
    write_events_tsv,
)
from calitag.thresholds.events.postprocess import clean_segments
from calitag.pipeline.types import FrameScores

HOP = 0.1  # 10 frames per second keeps the expected times readable


def _frames(curves: dict[str, np.ndarray], source: str = "clips/s1.wav") -> FrameScores:
    names = tuple(curves)
    return FrameScores(np.stack([curves[n] for n in names], axis=1), HOP, names, "debug", source)


def test_median_filter_removes_short_dropouts_and_spikes():
    """A median of 5 frames fills a 2-frame dropout in a plateau and removes a 2-frame spike."""
    x = np.zeros(40)
    x[5:25] = 0.9
    x[12:14] = 0.1  # dropout inside the event
    x[32:34] = 0.8  # isolated spike
    y = smooth(x, kind="median", kernel_frames=5)
    assert np.all(y[5:25] == 0.9)
    assert np.all(y[30:] == 0.0)


def test_moving_average_equals_window_mean():
    """The moving average of a step equals the mean of the window around each frame."""
    x = np.r_[np.zeros(10), np.ones(10)]
    y = smooth(x, kind="mean", kernel_frames=4)
    assert y[10] == pytest.approx(np.mean(x[8:12]))
    assert y[0] == 0.0 and y[-1] == 1.0
    assert np.array_equal(smooth(x, kind="none", kernel_frames=9), x)


def test_threshold_is_strict():
    """A frame exactly at the threshold is inactive (score > threshold), as in SGL-Thresh."""
    assert binarize(np.array([0.5, 0.50001, 0.4]), threshold=0.5).tolist() == [False, True, False]


def test_hysteresis_keeps_runs_above_low_that_reach_high():
    """Hysteresis keeps a run above low only when it holds a frame above high, over the whole run."""
    x = np.array([0.1, 0.35, 0.45, 0.8, 0.45, 0.35, 0.1, 0.45, 0.45, 0.1])
    assert binarize(x, threshold=0.7, low=0.3).astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert binarize(x, threshold=0.7).astype(int).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_min_gap_merges_then_min_duration_drops():
    """Gaps shorter than min_gap are filled first; events still shorter than min_duration are dropped."""
    on, off = clean_segments(np.array([0.0, 1.1, 3.0, 5.0]), np.array([1.0, 2.0, 3.1, 5.4]),
                             min_gap_s=0.2, min_duration_s=0.3)
    assert on.tolist() == [0.0, 5.0] and off.tolist() == [2.0, 5.4]


def test_detect_events_times_and_labels():
    """Frames a..b-1 above threshold become one event [a*hop, b*hop) with the file's base name."""
    speech = np.zeros(50)
    speech[10:20] = 0.9
    dog = np.zeros(50)
    dog[30:33] = 0.8
    dog[36:45] = 0.8
    pp = Postprocess(("Speech", "Dog"), (ClassPostprocess(threshold=0.5),
                                         ClassPostprocess(threshold=0.5, min_gap_s=0.35)), frame_hop_s=HOP)
    events = detect_events(_frames({"Speech": speech, "Dog": dog}), pp)
    assert [(e.file, e.label) for e in events] == [("s1.wav", "Speech"), ("s1.wav", "Dog")]
    assert events[0].onset_s == pytest.approx(1.0) and events[0].offset_s == pytest.approx(2.0)
    assert events[1].onset_s == pytest.approx(3.0) and events[1].offset_s == pytest.approx(4.5)


def test_noisy_plateau_needs_its_median_kernel():
    """On a noisy plateau a plain threshold fragments the event, the median filter recovers it whole."""
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.15, 0.1, 100), 0, 1)
    x[20:60] = np.clip(rng.normal(0.75, 0.1, 40), 0, 1)
    x[20:60][rng.random(40) < 0.25] = 0.2  # dropouts
    fs = _frames({"Speech": x})
    raw = detect_events(fs, Postprocess.uniform(("Speech",), ClassPostprocess(threshold=0.5)))
    med = detect_events(fs, Postprocess.uniform(("Speech",), ClassPostprocess("median", 9, 0.5)))
    assert len(raw) > 3
    assert len(med) == 1
    assert med[0].onset_s == pytest.approx(2.0, abs=0.25) and med[0].offset_s == pytest.approx(6.0, abs=0.25)


def test_detect_events_checks_classes_hop_and_values():
    """Parameters for other classes or another frame hop, and NaN scores, are refused."""
    fs = _frames({"Speech": np.zeros(10)})
    with pytest.raises(ThresholdsMismatchError, match="classes"):
        detect_events(fs, Postprocess.uniform(("Dog",)))
    with pytest.raises(ThresholdsMismatchError, match="frame hop"):
        detect_events(fs, Postprocess.uniform(("Speech",), frame_hop_s=0.02))
    bad = FrameScores(np.array([[np.nan]]), HOP, ("Speech",), "debug", "x.wav")
    with pytest.raises(ScoresError, match="x.wav"):
        detect_events(bad, Postprocess.uniform(("Speech",)))


def test_events_section_round_trip_and_validation():
    """to_dict/from_dict round-trips through JSON; bad values and foreign classes are refused."""
    pp = Postprocess(("Speech", "Dog"), (ClassPostprocess("median", 7, 0.4, None, 0.1, 0.2),
                                         ClassPostprocess("mean", 3, 0.6, 0.3)), frame_hop_s=0.02322)
    data = json.loads(json.dumps(pp.to_dict()))
    assert data["classes"]["Dog"]["binarize"] == "hysteresis"
    back = Postprocess.from_dict(data, class_names=["Dog", "Speech"])
    assert back.class_names == ("Dog", "Speech")
    assert back["Speech"] == pp["Speech"] and back["Dog"] == pp["Dog"]
    with pytest.raises(ThresholdsMismatchError, match="Cat"):
        Postprocess.from_dict(data, class_names=["Speech", "Cat"])
    data["classes"]["Dog"]["low"] = 0.9
    with pytest.raises(ThresholdsError, match="low"):
        Postprocess.from_dict(data)
    with pytest.raises(ThresholdsError, match="smoothing"):
        ClassPostprocess(smoothing="gaussian")


def test_authors_parameters_convert(shared):
    """The CRNN authors' hysteresis file becomes moving-average kernels and high/low per class."""
    path = shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.thresholds.json"
    raw = json.loads(path.read_text())
    pp = postprocess_from_authors(path)
    assert pp.class_names == tuple(raw["classes"])
    assert pp.frame_hop_s == pytest.approx(512 / 22050)
    hyst = raw["localization_hysteresis"]
    for i, p in enumerate(pp.params):
        assert p.smoothing == "mean" and p.kernel_frames == int(hyst["window_frames"][i])
        assert p.threshold == hyst["high"][i]
        if hyst["low"][i] < hyst["high"][i]:
            assert p.low == hyst["low"][i]
        else:  # their decoder ends an event below low: low above high acts as a threshold at high
            assert p.binarize == "threshold"
    assert pp["Speech"].binarize == "threshold"  # shipped low 0.99 > high 0.548
    assert load_postprocess(path, class_names=list(reversed(raw["classes"]))).class_names[0] == raw["classes"][-1]


def test_tsv_round_trip_atomic(tmp_path):
    """Events written as a DCASE TSV read back equal (3 decimals), with empty files kept, and no temp left."""
    events = [Event("b.wav", 0.5, 1.25, "Dog"), Event("a.wav", 1.0, 2.0, "Speech")]
    out = write_events_tsv(tmp_path / "events.tsv", events, files=["a.wav", "b.wav", "c.wav"])
    lines = out.read_text().splitlines()
    assert lines[0] == "filename\tonset\toffset\tevent_label"
    assert lines[1] == "a.wav\t1.000\t2.000\tSpeech"
    table = read_events_tsv(out)
    assert table.events == tuple(sorted(events))
    assert table.files == ("a.wav", "b.wav", "c.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.tsv"]


def test_tsv_errors_name_file_and_line(tmp_path):
    """A malformed line gives a LabelsError naming the file and line number."""
    bad = tmp_path / "strong.tsv"
    bad.write_text("filename\tonset\toffset\tevent_label\na.wav\t2.0\t1.0\tDog\n")
    with pytest.raises(LabelsError, match=r"strong.tsv:2.*onset <= offset"):
        read_events_tsv(bad)
    bad.write_text("a.wav\tx\t1.0\tDog\n")
    with pytest.raises(LabelsError, match=r"strong.tsv:1.*numbers"):
        read_events_tsv(bad)
    with pytest.raises(LabelsError, match="not found"):
        read_events_tsv(tmp_path / "missing.tsv")


# --- calitag detect ---------------------------------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent
SOUNDSCAPES = REPO / "audio_samples" / "soundscapes"


@pytest.fixture(scope="module")
def soundscapes():
    """The strongly labeled real soundscapes of audio_samples/ (built by its builder script)."""
    if not (SOUNDSCAPES / "strong_labels.tsv").is_file():
        pytest.skip(f"no soundscapes at {SOUNDSCAPES}: run the audio_samples builder")
    return SOUNDSCAPES


@pytest.mark.torch
def test_detect_cli_on_a_real_soundscape(shared, soundscapes, tmp_path):
    """`calitag detect` with the CRNN and the authors' parameters finds the speech and bells of a soundscape."""
    from click.testing import CliRunner

    from calitag.cli import main
    from calitag.thresholds.events.event_metrics import segment_based_scores

    out = tmp_path / "events.tsv"
    result = CliRunner().invoke(main, [
        "detect", str(soundscapes / "heldout_00.flac"), "--model", "crnn-dcase2019",
        "--checkpoint", str(shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"),
        "--postprocess", str(shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.thresholds.json"),
        "--out", str(out), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "heldout_00.flac" in result.output
    table = read_events_tsv(out)
    assert table.files == ("heldout_00.flac",)
    assert all(0.0 <= e.onset_s < e.offset_s <= 10.05 for e in table.events)
    reference = [e for e in read_events_tsv(soundscapes / "strong_labels.tsv").events if e.file == "heldout_00.flac"]
    present = sorted({e.label for e in reference})
    found = [e for e in table.events if e.label in present]
    assert segment_based_scores(reference, found, class_names=present).macro_f1 > 0.7


@pytest.mark.torch
def test_detect_cli_reports_bad_files_and_keeps_going(soundscapes, tmp_path):
    """A corrupt file is skipped with a message and exit code 1; the good file's events are written."""
    import shutil

    from click.testing import CliRunner

    from calitag.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(soundscapes / "tune_00.flac", folder / "good.flac")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "events.tsv"
    result = CliRunner().invoke(main, ["detect", str(folder), "--model", "debug", "--out", str(out),
                                       "--device", "cpu"])
    assert result.exit_code == 1
    assert "skip" in result.output and "broken.wav" in result.output
    assert read_events_tsv(out).files == ("good.flac",)


@pytest.mark.torch
def test_detect_cli_refuses_parameters_of_another_model(soundscapes, tmp_path):
    """An events section fitted for other classes is refused with a clear message, not a traceback."""
    from click.testing import CliRunner

    from calitag.cli import main

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"events": Postprocess.uniform(("Dog", "Cat")).to_dict()}))
    result = CliRunner().invoke(main, ["detect", str(soundscapes / "tune_00.flac"), "--model", "debug",
                                       "--postprocess", str(other), "--out", str(tmp_path / "e.tsv")])
    assert result.exit_code == 1
    assert "error: " in result.output and "classes" in result.output
    assert not (tmp_path / "e.tsv").exists()
