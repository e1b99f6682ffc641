"""PSDS1/PSDS2, AP and collar F1 (thresholds/events/psds.py) against sed_scores_eval on the bundled soundscapes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sse = pytest.importorskip("sed_scores_eval", reason="PSDS needs the events extra (sed_scores_eval)")

from calitag.cli import main  # noqa: E402
from calitag.thresholds.events import ClassPostprocess, Postprocess, read_events_tsv, write_events_tsv  # noqa: E402
from calitag.thresholds.events.psds import PSDS_SCENARIOS, evaluate_sed, write_frame_scores  # noqa: E402

SCAPES = Path(__file__).resolve().parent.parent / "audio_samples" / "soundscapes"


@pytest.fixture(scope="module")
def yamnet_scores(yamnet_cached):
    """YAMNet's frame scores of the 8 soundscapes, in the order of the strong labels."""
    import calitag

    table = read_events_tsv(SCAPES / "strong_labels.tsv")
    tagger = calitag.load_tagger("yamnet")
    return table, [tagger.frame_scores(SCAPES / name) for name in table.files]


def _reference_psds(scores_dir: Path, tsv: Path, durations: dict[str, float]) -> dict[str, float]:
    """PSDS1/2 computed by sed_scores_eval alone from the written score files and the DCASE table."""
    scores = sse.io.read_sed_scores(scores_dir)
    truth = sse.io.read_ground_truth_events(tsv)
    classes = sorted({label for events in truth.values() for *_, label in events})
    scores = {key: frame[["onset", "offset", *classes]] for key, frame in scores.items()}
    out = {}
    for name, setting in PSDS_SCENARIOS.items():
        if len(classes) == 1:  # no other class to cross-trigger
            setting = {**setting, "cttc_threshold": None, "alpha_ct": 0.0}
        out[name] = sse.intersection_based.psds(scores=scores, ground_truth=truth, audio_durations=durations,
                                                **setting)[0]
    return out


def test_psds_equals_sed_scores_evals_on_the_soundscapes(yamnet_scores, tmp_path):
    """PSDS1 and PSDS2 of the raw YAMNet scores equal sed_scores_eval's from its own file readers to 1e-6."""
    table, scores = yamnet_scores
    speech_tsv = tmp_path / "speech.tsv"
    write_events_tsv(speech_tsv, [e for e in table.events if e.label == "Speech"], files=table.files)
    write_frame_scores(tmp_path / "scores", scores, table.files)
    durations = {name.rsplit(".", 1)[0]: 10.0 for name in table.files}
    result = evaluate_sed(scores, [e for e in table.events if e.label == "Speech"], files=table.files,
                          durations_s=dict.fromkeys(table.files, 10.0))
    expected = _reference_psds(tmp_path / "scores", speech_tsv, durations)
    assert result.classes == ("Speech",)
    assert result.raw.psds1 == pytest.approx(expected["psds1"], abs=1e-6)
    assert result.raw.psds2 == pytest.approx(expected["psds2"], abs=1e-6)
    assert 0.0 < result.raw.psds1 < 1.0


def test_collar_f1_is_sed_scores_evals_at_the_strict_threshold(yamnet_scores):
    """The raw F1 of the 0.5 events equals sed_scores_eval's collar F1 of the raw scores at the strict threshold."""
    table, scores = yamnet_scores
    result = evaluate_sed(scores, table.events, files=table.files)
    frames = {name.rsplit(".", 1)[0]: sse.base_modules.scores.create_score_dataframe(
        np.asarray(fs.probs, dtype=np.float64)[:, [0]], np.arange(len(fs.probs) + 1) * fs.frame_hop_s, ["Speech"])
        for name, fs in zip(table.files, scores)}
    truth = {name.rsplit(".", 1)[0]: [(e.onset_s, e.offset_s, e.label) for e in table.events
                                      if e.file == name and e.label == "Speech"] for name in table.files}
    f1, *_ = sse.collar_based.fscore(scores=frames, ground_truth=truth, threshold=np.nextafter(0.5, 1.0),
                                     onset_collar=0.2, offset_collar=0.2, offset_collar_rate=0.2)
    assert result.raw.class_f1["Speech"] == pytest.approx(f1["Speech"], abs=1e-9)
    assert result.ignored_classes == ("Alarm_bell_ringing",)


def test_postprocessing_changes_the_scores_evaluated(yamnet_scores):
    """A smoothing stack gives other PSDS1 and F1 than the raw scores; no stack gives the raw figures."""
    table, scores = yamnet_scores
    names = scores[0].class_names
    smoothed = Postprocess.uniform(names, ClassPostprocess(smoothing="mean", kernel_frames=3, threshold=0.4))
    result = evaluate_sed(scores, table.events, files=table.files, postprocess=smoothed)
    assert result.postprocessed.psds1 != pytest.approx(result.raw.psds1)
    assert result.postprocessed.class_f1 != result.raw.class_f1
    plain = evaluate_sed(scores, table.events, files=table.files)
    assert dataclasses.asdict(plain.postprocessed) == dataclasses.asdict(plain.raw)


def test_sed_scores_files_read_back_as_the_scores(yamnet_scores, tmp_path):
    """write_frame_scores writes one <id>.tsv per recording that sed_scores_eval reads back to the same numbers."""
    table, scores = yamnet_scores
    write_frame_scores(tmp_path, scores, table.files)
    back = sse.io.read_sed_scores(tmp_path)
    assert sorted(back) == sorted(name.rsplit(".", 1)[0] for name in table.files)
    frame = back["tune_00"]
    np.testing.assert_allclose(frame[list(scores[0].class_names)].to_numpy(), scores[table.files.index("tune_00.flac")]
                               .probs, atol=1e-7)
    assert frame["offset"].iloc[0] == pytest.approx(scores[0].frame_hop_s)


def test_events_evaluate_cli_prints_psds(yamnet_cached, tmp_path):
    """`calitag events evaluate` prints PSDS1, PSDS2, mAP and F1 for raw and post-processed scores, and a JSON form."""
    result = CliRunner().invoke(main, ["events", "evaluate", str(SCAPES), "--events",
                                       str(SCAPES / "strong_labels_heldout.tsv"), "--model", "yamnet", "--json",
                                       "--scores-dir", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    import json

    document = json.loads(result.output[result.output.index("{"):])
    assert document["classes"] == ["Speech"] and document["n_files"] == 4
    assert 0.0 <= document["raw"]["psds1"] <= 1.0 and "Speech" in document["raw"]["class_ap"]
    assert len(list((tmp_path / "scores").glob("*.tsv"))) == 4


def test_crnn_psds_with_cross_triggers(shared, tmp_path):
    """With the CRNN's two soundscape classes, PSDS2 (cross-trigger penalty) equals sed_scores_eval's to 1e-6."""
    import calitag

    weights = shared / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"
    if not weights.is_file():
        pytest.skip(f"no CRNN weights at {weights}")
    pytest.importorskip("h5py")
    tagger = calitag.load_tagger("crnn-dcase2019", checkpoint=weights)
    table = read_events_tsv(SCAPES / "strong_labels.tsv")
    scores = [tagger.frame_scores(SCAPES / name) for name in table.files]
    result = evaluate_sed(scores, table.events, files=table.files, durations_s=dict.fromkeys(table.files, 10.0))
    write_frame_scores(tmp_path / "scores", scores, table.files)
    expected = _reference_psds(tmp_path / "scores", SCAPES / "strong_labels.tsv",
                               {name.rsplit(".", 1)[0]: 10.0 for name in table.files})
    assert result.classes == ("Alarm_bell_ringing", "Speech")
    assert result.raw.psds2 == pytest.approx(expected["psds2"], abs=1e-6)
    assert result.raw.psds1 == pytest.approx(expected["psds1"], abs=1e-6)
