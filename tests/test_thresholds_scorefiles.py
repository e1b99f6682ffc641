"""Score-file readers (calitag.thresholds.scorefiles)."""

from __future__ import annotations

import numpy as np
import pytest

from calitag.errors import ScoresError
from calitag.thresholds import read_scores


def test_read_scores_npz(tagger_like_scores, tmp_path):
    """An npz in the layout of the published score files reads as val and eval splits with bool labels."""
    scores, labels, names = tagger_like_scores
    np.savez(tmp_path / "split.npz", val_scores=scores[:400], val_labels=labels[:400], eval_scores=scores[400:],
             eval_labels=labels[400:])
    data = read_scores(tmp_path / "split.npz")
    assert data.val_scores.shape == (400, 10) and data.eval_scores.shape == (200, 10)
    assert data.val_labels.dtype == bool and data.class_names is None and data.names()[0] == "0"
    np.savez(tmp_path / "named.npz", val_scores=scores, val_labels=labels, classes=np.array(names))
    named = read_scores(tmp_path / "named.npz")
    assert named.class_names[1] == "Speech" and named.eval_scores is None


def test_read_scores_csv_and_npy_with_logits(tmp_path):
    """A CSV with a header of class names and an .npy label matrix read back; --logits maps to [0, 1]."""
    logits = np.array([[-2.0, 3.0], [0.0, -1.0], [4.0, 0.5]])
    lines = ["Speech,Music"] + [",".join(str(v) for v in row) for row in logits]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    np.save(tmp_path / "y.npy", np.array([[0, 1], [1, 0], [1, 1]]))
    with pytest.raises(ScoresError, match="--logits"):
        read_scores(tmp_path / "s.csv", labels=tmp_path / "y.npy")
    data = read_scores(tmp_path / "s.csv", labels=tmp_path / "y.npy", logits=True)
    assert data.class_names == ("Speech", "Music")
    np.testing.assert_allclose(data.val_scores, 1 / (1 + np.exp(-logits)))
    assert data.val_labels.tolist() == [[False, True], [True, False], [True, True]]


def test_read_scores_errors(tmp_path):
    """Missing, empty, wrong-layout and mismatched score files raise ScoresError."""
    with pytest.raises(ScoresError, match="not found"):
        read_scores(tmp_path / "none.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ScoresError, match="empty"):
        read_scores(tmp_path / "empty.npz")
    np.savez(tmp_path / "wrong.npz", scores=np.zeros((2, 2)))
    with pytest.raises(ScoresError, match="no 'val_scores'"):
        read_scores(tmp_path / "wrong.npz")
    np.savez(tmp_path / "half.npz", val_scores=np.zeros((2, 2)), val_labels=np.zeros((2, 2)),
             eval_scores=np.zeros((2, 2)))
    with pytest.raises(ScoresError, match="only one of eval"):
        read_scores(tmp_path / "half.npz")
    np.savez(tmp_path / "shape.npz", val_scores=np.zeros((3, 2)), val_labels=np.zeros((2, 2)))
    with pytest.raises(ScoresError, match="shape"):
        read_scores(tmp_path / "shape.npz")
    (tmp_path / "s.txt.json").write_text("{}")
    with pytest.raises(ScoresError, match="unsupported extension"):
        read_scores(tmp_path / "s.txt.json")


def test_blank_cell_in_first_row_is_not_a_header(tmp_path):
    """A blank cell among numbers in row 1 is reported as a blank value, not read as a header of names."""
    (tmp_path / "s.csv").write_text("0.1,,0.3\n0.4,0.5,0.6\n")
    with pytest.raises(ScoresError, match="row 1, column 2 is blank"):
        read_scores(tmp_path / "s.csv")
    (tmp_path / "h.csv").write_text("Speech,Music\n0.4,\n")
    with pytest.raises(ScoresError, match="row 2, column 2 is blank"):
        read_scores(tmp_path / "h.csv")
