"""Label-file and calibration messages that name the right cause (pipeline/labels.py, calibrate, thresholds fit)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import LabelsError
from calitag.models.registry import get_spec
from calitag.pipeline.calibrate import calibrate
from calitag.pipeline.labels import read_clip_labels
from calitag.pipeline.tagger import Tagger

AUDIOSET = get_spec("cnn14").class_names  # holds "Cattle, bovinae"


def test_unquoted_comma_in_a_class_name_says_to_quote(tmp_path):
    """`a.wav,Animal;Cattle, bovinae` (no quotes) says the cell was cut at a comma and shows the quoted row."""
    path = tmp_path / "labels.csv"
    path.write_text("filename,labels\na.wav,Animal;Cattle, bovinae\n")
    with pytest.raises(LabelsError, match=r"line 2: the labels cell is split by an unquoted comma \(the class "
                                          r"'Cattle, bovinae' was cut.*a.wav,\"Animal;Cattle, bovinae\""):
        read_clip_labels(path, class_names=AUDIOSET)


def test_unquoted_comma_without_a_header_is_caught_too(tmp_path):
    """Without a header row, a cut class name is detected the same way; the quoted form reads fine."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a.wav,Cattle, bovinae\n")
    with pytest.raises(LabelsError, match="line 1: the labels cell is split by an unquoted comma"):
        read_clip_labels(bad, class_names=AUDIOSET)
    good = tmp_path / "good.csv"
    good.write_text('a.wav,"Animal;Cattle, bovinae"\n')
    assert read_clip_labels(good, class_names=AUDIOSET).labels == {"a.wav": ("Animal", "Cattle, bovinae")}


def test_duplicate_row_names_its_own_line(tmp_path):
    """A file listed twice is reported at the line of the second listing, blank lines and no header counted."""
    path = tmp_path / "labels.csv"
    path.write_text("a.wav,Speech\n\nb.wav,Music\na.wav,Music\n")
    with pytest.raises(LabelsError, match="line 4: a.wav is listed twice"):
        read_clip_labels(path)


@pytest.mark.torch
def test_clips_that_fail_to_decode_are_named_as_the_cause(audio_samples, tmp_path):
    """When every labeled clip fails to decode, the error says so (with a decoder message), not 'no class'."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        (folder / name).write_text("not audio at all\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\na.wav,Speech\nb.wav,Music\nc.wav,Speech\n")
    tagger = Tagger.load("debug", device="cpu")
    with pytest.raises(LabelsError, match=r"3 of the 3 labeled clip\(s\) in .* could not be read.*not audio"):
        calibrate(tagger, folder, read_clip_labels(labels), out=tmp_path / "th.json", workers=0)


def test_label_file_errors_name_the_label_file(tmp_path):
    """`thresholds fit scores.csv --labels labels.csv` with a bad label value names labels.csv, not scores.csv."""
    rng = np.random.default_rng(0)
    scores, labels = tmp_path / "scores.csv", tmp_path / "labels.csv"
    np.savetxt(scores, rng.random((6, 2)), delimiter=",")
    np.savetxt(labels, np.array([[0, 1], [1, 0], [0, 2], [1, 1], [0, 0], [1, 0]]), delimiter=",", fmt="%d")
    result = CliRunner().invoke(main, ["thresholds", "fit", str(scores), "--labels", str(labels)])
    assert result.exit_code != 0
    assert "labels.csv" in result.output and "scores.csv" not in result.output


def test_models_classes_lists_names_with_indices():
    """`calitag models classes crnn-dcase2019` prints its 10 DESED classes in output order, index first."""
    result = CliRunner().invoke(main, ["models", "classes", "crnn-dcase2019"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines == [f"{i}\t{name}" for i, name in enumerate(get_spec("crnn-dcase2019").class_names)]
    assert lines[1] == "1\tSpeech"
    grep = CliRunner().invoke(main, ["models", "classes", "cnn14", "--grep", "cattle"])
    assert grep.output.splitlines() == [f"{AUDIOSET.index('Cattle, bovinae')}\tCattle, bovinae"]


@pytest.mark.torch
def test_cli_emits_no_click_deprecation_warning(audio_samples, recwarn):
    """`calitag tag` no longer calls click.get_text_stream (deprecated in click 8.2)."""
    result = CliRunner().invoke(main, ["tag", str(audio_samples / "speech_01.wav"), "--model", "debug",
                                       "--device", "cpu", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert not [w for w in recwarn if "get_text_stream" in str(w.message)]
