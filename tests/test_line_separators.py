"""Readers of line-based files split rows at "\n" only: a U+2028 or U+0085 in a file name stays in the name."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from calitag.pipeline.labels import read_clip_labels
from calitag.pipeline.batch import list_sources

ODD_NAMES = ("line\u2028separator.wav", "next\u0085line.wav", "plain.wav")


def test_label_file_keeps_unicode_line_separators_in_names(tmp_path):
    """A label file row whose file name holds U+2028 or U+0085 is one row, and its name is kept whole."""
    path = tmp_path / "labels.csv"
    rows = [f"{name},dog;cat" for name in ODD_NAMES]
    path.write_bytes(("filename,labels\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    labels = read_clip_labels(path).labels
    assert set(labels) == set(ODD_NAMES)
    assert all(labels[name] == ("dog", "cat") for name in ODD_NAMES)


def test_path_list_keeps_unicode_line_separators_in_names(tmp_path):
    """A list file of paths names each file whole, U+2028 and U+0085 included, comments and blanks skipped."""
    for name in ODD_NAMES:
        sf.write(tmp_path / name, np.zeros(1600, dtype=np.float32), 16000)
    listing = tmp_path / "files.txt"
    listing.write_text("# clips\n" + "\n".join(ODD_NAMES) + "\n\n", encoding="utf-8")
    listed = list_sources(listing)
    assert listed == [str(tmp_path / name) for name in ODD_NAMES]
