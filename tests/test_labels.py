"""The bundled label lists (calitag/models/labels/) and load_class_names."""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
from pathlib import Path

import numpy as np
import pytest

from calitag.errors import ModelNotFoundError
from calitag.models.registry import MODELS, available_models, get_spec, load_class_names

LABELS = importlib.resources.files("calitag.models") / "labels"
# Published digest of AudioSet's class_labels_indices.csv (the design notes).
AUDIOSET_SHA256 = "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429"


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader((LABELS / name).read_text(encoding="utf-8").splitlines()))


def test_audioset_list_is_the_official_file_byte_for_byte() -> None:
    """audioset_527.csv has the sha256 and size of AudioSet's class_labels_indices.csv."""
    data = (LABELS / "audioset_527.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == AUDIOSET_SHA256
    assert len(data) == 14_675


def test_each_model_has_one_name_per_output_in_index_order() -> None:
    """Every registered model's label file has unique names with indices 0..n-1 in order."""
    for name in available_models():
        rows = _rows(get_spec(name).labels)
        assert [int(r["index"]) for r in rows] == list(range(len(rows)))
        names = load_class_names(name)
        assert names == tuple(r["display_name"] for r in rows)
        assert len(set(names)) == len(names)


def test_class_counts_match_the_models() -> None:
    """cnn14 has 527 classes, yamnet 521, cnn-transformer 17, crnn-dcase2019 10."""
    expected = {"cnn14": 527, "yamnet": 521, "cnn-transformer": 17, "crnn-dcase2019": 10}
    for name, count in expected.items():
        assert len(MODELS[name].class_names) == count


def test_dcase2019_order_is_the_crnn_output_order(shared: Path) -> None:
    """The DCASE2019 list has the class order stored with the CRNN's validation scores."""
    classes = np.load(shared / "data" / "dcase2019_task4_val.npz")["classes"]
    assert load_class_names("crnn-dcase2019") == tuple(str(c) for c in classes)


def test_dcase2017_and_debug_names_are_audioset_classes_with_their_ids() -> None:
    """Each DCASE2017 and debug row carries the AudioSet mid of its display name."""
    audioset = {r["mid"]: r["display_name"] for r in _rows("audioset_527.csv")}
    for name in ("dcase2017_task4_17.csv", "debug_5.csv"):
        for row in _rows(name):
            assert audioset[row["mid"]] == row["display_name"]


def test_yamnet_list_shares_most_names_with_audioset() -> None:
    """YAMNet's 521 classes are AudioSet classes: all but a handful of names are in the 527 list."""
    audioset = set(load_class_names("audioset_527.csv"))
    yamnet = load_class_names("yamnet")
    assert yamnet[0] == "Speech"
    assert sum(name in audioset for name in yamnet) >= 510


def test_attribution_names_every_label_file() -> None:
    """ATTRIBUTION.md lists each bundled CSV with a license."""
    text = (LABELS / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for entry in LABELS.iterdir():
        if entry.name.endswith(".csv"):
            assert f"`{entry.name}`" in text
    assert "CC BY 4.0" in text


def test_unknown_names_raise() -> None:
    """An unknown model or label file raises ModelNotFoundError listing the models."""
    with pytest.raises(ModelNotFoundError, match="available models: cnn-transformer"):
        load_class_names("wav2vec")
    with pytest.raises(ModelNotFoundError, match="not in calitag/models/labels"):
        load_class_names("nothing_here.csv")
