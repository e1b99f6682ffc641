"""Clip-level label files (pipeline/labels.py): CSV, TSV, DCASE weak labels, their errors, and name matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calitag.errors import LabelsError
from calitag.pipeline.labels import check_label_names, match_recorded, read_clip_labels

NAMES = ("Speech", "Music", "Beep, bleep", "Alarm clock")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_semicolons_and_quoted_commas(tmp_path):
    """`;`-separated labels and quoted comma-separated ones both parse; names holding a comma survive."""
    path = _write(tmp_path, "l.csv", 'filename,labels\na.wav,Speech;Music\nb.wav,"Speech,Beep, bleep"\nc.wav,\n')
    labels = read_clip_labels(path, class_names=NAMES).labels
    assert labels == {"a.wav": ("Speech", "Music"), "b.wav": ("Speech", "Beep, bleep"), "c.wav": ()}


def test_dcase_weak_label_tsv(tmp_path):
    """The DCASE weak-label TSV (filename<TAB>event_labels, comma-separated) parses."""
    path = _write(tmp_path, "weak.tsv", "filename\tevent_labels\nY1.wav\tSpeech,Dog\nY2.wav\tCat\n")
    assert read_clip_labels(path).labels == {"Y1.wav": ("Speech", "Dog"), "Y2.wav": ("Cat",)}


def test_headerless_file_takes_first_two_columns(tmp_path):
    """Without a header the file is column 1 and the labels column 2."""
    path = _write(tmp_path, "l.csv", "a.wav,Speech\nb.wav,Music\n")
    assert read_clip_labels(path).labels == {"a.wav": ("Speech",), "b.wav": ("Music",)}


def test_targets_follow_file_and_class_order(tmp_path):
    """The target matrix has one row per requested file and one column per class."""
    labels = read_clip_labels(_write(tmp_path, "l.csv", "filename,labels\na.wav,Music\nb.wav,Speech;Music\n"))
    np.testing.assert_array_equal(labels.targets(["b.wav", "a.wav"], ("Speech", "Music")), [[1, 1], [0, 1]])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("filename,other\na.wav,x\n", "no labels column"),
        ("filename,labels\na.wav,Speech\na.wav,Music\n", "listed twice"),
        ("filename,labels\n,Speech\n", "no file name"),
    ],
)
def test_malformed_files_raise(tmp_path, text, match):
    """Empty files, missing columns, duplicates and blank names raise LabelsError naming the file."""
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(LabelsError, match=match):
        read_clip_labels(path)


def test_missing_label_file_raises(tmp_path):
    """A label file that does not exist raises LabelsError with its path."""
    with pytest.raises(LabelsError, match="nope.csv"):
        read_clip_labels(tmp_path / "nope.csv")


def test_unknown_class_names_are_reported_with_suggestions(tmp_path):
    """A label the model lacks raises, naming it and the closest class names."""
    labels = read_clip_labels(_write(tmp_path, "l.csv", "filename,labels\na.wav,Speach\n"))
    with pytest.raises(LabelsError, match="'Speach' \\(did you mean 'Speech'"):
        check_label_names(labels, NAMES, model="yamnet")


def test_names_match_recorded_paths_by_whole_trailing_components():
    """A name matches the recorded path equal to it or ending in / + it, never a longer last component."""
    paths = ["/data/clips/a.wav", "/data/clips/sub/b.wav", "/data/xsub/c.wav", "rel/d.wav"]
    matched = match_recorded(["a.wav", "sub/b.wav", "clips/sub/b.wav", "sub/c.wav", "./rel/d.wav", "e.wav"], paths,
                             source="out.jsonl")
    assert matched == {"a.wav": 0, "sub/b.wav": 1, "clips/sub/b.wav": 1, "./rel/d.wav": 3}


def test_an_ambiguous_name_raises_with_the_callers_fix():
    """A name that matches two recorded paths raises LabelsError naming both and the fix given."""
    paths = ["/x/one/a.wav", "/x/two/a.wav"]
    with pytest.raises(LabelsError, match=r"out.jsonl: a.wav matches 2 recorded files \(/x/one/a.wav, /x/two/a.wav\); "
                                          "name files by a longer path"):
        match_recorded(["a.wav"], paths, source="out.jsonl")
    with pytest.raises(LabelsError, match="pass --folder"):
        match_recorded(["a.wav"], paths, source="out.jsonl", fix="pass --folder")
    assert match_recorded(["one/a.wav"], paths, source="out.jsonl") == {"one/a.wav": 0}


def test_a_folder_resolves_names_before_suffix_matching(tmp_path):
    """With a folder, folder / name picks its record among paths that share the name."""
    paths = [str(tmp_path / "one" / "a.wav"), str(tmp_path / "two" / "a.wav")]
    assert match_recorded(["a.wav"], paths, source="out.jsonl", folder=tmp_path / "two") == {"a.wav": 1}
    with pytest.raises(LabelsError, match="matches 2"):
        match_recorded(["a.wav"], paths, source="out.jsonl", folder=tmp_path / "three")
