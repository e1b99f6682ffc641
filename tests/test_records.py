"""Result files (pipeline/records.py): appended record by record, resumable, never truncated mid-record."""

from __future__ import annotations

import csv
import errno
import json
import os

import numpy as np
import pytest

from calitag.errors import OutputError
from calitag.pipeline.records import RecordWriter


def _record(i: int) -> dict:
    return {"path": f"f{i}.wav", "duration_s": 1.0, "tags": ["Speech"], "scores": {"Speech": 0.9}, "model": "debug"}


def test_jsonl_records_are_on_disk_before_close(tmp_path):
    """Each record is readable from the file as soon as write returns."""
    out = tmp_path / "r.jsonl"
    writer = RecordWriter(out, "jsonl")
    writer.write(_record(0))
    assert json.loads(out.read_text())["path"] == "f0.wav"
    writer.close()


def test_resume_cuts_a_partial_last_line_and_lists_done_files(tmp_path):
    """A run killed mid-record leaves a partial line; resume drops it and knows which files are done."""
    out = tmp_path / "r.jsonl"
    with RecordWriter(out, "jsonl") as writer:
        writer.write(_record(0))
        writer.write(_record(1))
    with out.open("a") as handle:
        handle.write('{"path": "f2.wav", "dur')  # killed here
    with RecordWriter(out, "jsonl", resume=True) as writer:
        assert writer.done == {"f0.wav", "f1.wav"}
        writer.write(_record(2))
    lines = out.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["f0.wav", "f1.wav", "f2.wav"]


def test_existing_output_is_not_overwritten_without_resume(tmp_path):
    """An existing results file is refused unless --resume is given."""
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps(_record(0)) + "\n")
    with pytest.raises(OutputError, match="--resume"):
        RecordWriter(out, "jsonl")
    assert out.read_text().count("\n") == 1


def test_csv_has_one_header_and_resumes(tmp_path):
    """CSV output writes its header once, also across a resume."""
    out = tmp_path / "r.csv"
    with RecordWriter(out, "csv") as writer:
        writer.write(_record(0))
    with RecordWriter(out, "csv", resume=True) as writer:
        assert writer.done == {"f0.wav"}
        writer.write({"path": "bad.wav", "model": "debug", "error": "not audio"})
    rows = list(csv.DictReader(out.open()))
    assert [r["path"] for r in rows] == ["f0.wav", "bad.wav"]
    assert rows[0]["scores"] == "Speech=0.9000" and rows[1]["error"] == "not audio"


ODD_NAMES = [
    "\udcff\udcfe latin1 \udce9.wav",  # os.fsdecode(b"\xff\xfe latin1 \xe9.wav"): not UTF-8
    "line\u2028separator.wav",
    "next\x85line.wav",
    "carriage\rreturn.wav",
    "new\nline.wav",
    'quote",comma.wav',
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_odd_file_names_are_written_and_resumed_exactly(tmp_path, fmt):
    """Undecodable bytes, U+2028, U+0085, CR, LF, quotes and commas in names survive a write and a resume."""
    out = tmp_path / f"r.{fmt}"
    with RecordWriter(out, fmt) as writer:
        for name in ODD_NAMES:
            writer.write({**_record(0), "path": name})
    if fmt == "jsonl":
        out.read_bytes().decode("utf-8")  # valid UTF-8 throughout
        assert out.read_bytes().count(b"\n") == len(ODD_NAMES)
    else:
        assert os.fsencode(ODD_NAMES[0]) in out.read_bytes()  # the name's own bytes
        with out.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
            assert [row["path"] for row in csv.DictReader(handle)] == ODD_NAMES
    with RecordWriter(out, fmt, resume=True) as writer:
        assert writer.done == set(ODD_NAMES)


def test_a_second_writer_on_the_same_file_is_refused(tmp_path):
    """While one run holds the results file, another (resuming or not) fails with a clear message."""
    out = tmp_path / "r.jsonl"
    with RecordWriter(out, "jsonl") as writer:
        writer.write(_record(0))
        for resume in (False, True):
            with pytest.raises(OutputError, match="another calitag run"):
                RecordWriter(out, "jsonl", resume=resume)
    with RecordWriter(out, "jsonl", resume=True) as writer:  # free again once closed
        assert writer.done == {"f0.wav"}


def test_resume_takes_the_format_of_the_existing_file(tmp_path):
    """Resuming without a format continues a CSV as CSV; asking for another format is an error."""
    out = tmp_path / "results.out"
    with RecordWriter(out, "csv") as writer:
        writer.write(_record(0))
    with RecordWriter(out, None, resume=True) as writer:
        assert writer.format == "csv"
        writer.write(_record(1))
    assert [row["path"] for row in csv.DictReader(out.open(newline=""))] == ["f0.wav", "f1.wav"]
    with pytest.raises(OutputError, match="holds csv records"):
        RecordWriter(out, "jsonl", resume=True)


def test_resume_refuses_a_file_that_is_not_results(tmp_path):
    """--resume onto a file that is not a results file (a label CSV) is refused and leaves it unchanged."""
    out = tmp_path / "labels.csv"
    out.write_text("filename,labels\na.wav,Speech\n")
    with pytest.raises(OutputError, match="--force"):
        RecordWriter(out, None, resume=True)
    assert out.read_text() == "filename,labels\na.wav,Speech\n"


def test_done_files_match_under_another_spelling_of_the_folder(tmp_path):
    """A file recorded as in/a.wav is done when asked as in/../in/a.wav or through a symlinked folder."""
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    out = tmp_path / "r.jsonl"
    with RecordWriter(out, "jsonl") as writer:
        writer.write({**_record(0), "path": str(tmp_path / "in" / "a.wav")})
    with RecordWriter(out, "jsonl", resume=True) as writer:
        assert writer.is_done(tmp_path / "in" / ".." / "in" / "a.wav")
        assert writer.is_done(tmp_path / "link" / "a.wav")
        assert not writer.is_done(tmp_path / "in" / "b.wav")


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_record(tmp_path, monkeypatch):
    """ENOSPC part-way through a record raises OutputError saying what to do, and the file keeps whole records."""
    import calitag.pipeline.records as records

    out = tmp_path / "r.jsonl"
    writer = RecordWriter(out, "jsonl")
    writer.write(_record(0))
    real_write = os.write

    def full_disk(fd, data):
        if fd == writer._fd and len(data) > 10:
            return real_write(fd, bytes(data[:10]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records.os, "write", full_disk)
    with pytest.raises(OutputError, match="No space left on device.*--resume"):
        writer.write(_record(1))
    monkeypatch.undo()
    writer.close()
    assert [json.loads(line)["path"] for line in out.read_text().split("\n") if line] == ["f0.wav"]


# --- reading batch outputs back: one reader for JSON lines, CSV and Parquet ---------------------------

CLASSES = ("Speech", "Dog", "Siren")


def _all_scores(i: int, name: str) -> dict:
    scores = {c: round(0.1 + 0.2 * k + 0.01 * i + 1e-5 * k, 6) for k, c in enumerate(CLASSES)}
    return {"path": name, "duration_s": 1.0, "tags": ["Siren"], "scores": scores, "model": "debug", "thresholds": None}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_read_all_scores_reads_jsonl_and_csv_alike(tmp_path, fmt):
    """JSONL and CSV batch outputs read back as the same paths, scores (CSV: to 4 decimals) and errors, odd names too."""
    from calitag.pipeline.records import read_all_scores

    out = tmp_path / f"r.{fmt}"
    with RecordWriter(out, fmt) as writer:
        for i, name in enumerate(ODD_NAMES):
            writer.write(_all_scores(i, name))
        writer.write({"path": "bad.wav", "model": "debug", "thresholds": None, "error": "not audio"})
    with out.open("ab") as handle:
        handle.write(b'"cut.wav",1.0,Siren,Speech=0.1')  # a record cut by a kill: left out
    paths, scores, errors = read_all_scores(out, model="debug", class_names=CLASSES)
    assert paths == ODD_NAMES and errors == {"bad.wav": "not audio"}
    expected = [[_all_scores(i, n)["scores"][c] for c in CLASSES] for i, n in enumerate(ODD_NAMES)]
    assert scores.dtype == np.float32 and scores.shape == (len(ODD_NAMES), len(CLASSES))
    np.testing.assert_allclose(scores, expected, atol=5e-5 if fmt == "csv" else 1e-7)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_read_all_scores_refuses_another_model_and_missing_scores(tmp_path, fmt):
    """A results file of another model, or without every class score, is refused naming the fix."""
    from calitag.pipeline.records import read_all_scores

    out = tmp_path / f"r.{fmt}"
    with RecordWriter(out, fmt) as writer:
        writer.write(_all_scores(0, "a.wav"))
    with pytest.raises(OutputError, match="not 'yamnet'"):
        read_all_scores(out, model="yamnet", class_names=CLASSES)
    with pytest.raises(OutputError, match="--all-scores"):
        read_all_scores(out, model="debug", class_names=(*CLASSES, "Cat"))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_read_all_scores_without_a_model_takes_any(tmp_path, fmt):
    """model=None (a thresholds file fitted without --model) reads the records of whatever model made them."""
    from calitag.pipeline.records import read_all_scores

    out = tmp_path / f"r.{fmt}"
    with RecordWriter(out, fmt) as writer:
        writer.write(_all_scores(0, "a.wav"))
    paths, scores, _ = read_all_scores(out, model=None, class_names=CLASSES)
    assert paths == ["a.wav"] and scores.shape == (1, len(CLASSES))


def test_read_all_scores_names_a_missing_output(tmp_path):
    """A results path that does not exist is reported as missing, not as a Parquet folder needing pyarrow."""
    from calitag.pipeline.records import read_all_scores

    with pytest.raises(OutputError, match="no such results file or folder"):
        read_all_scores(tmp_path / "missing.jsonl", model="debug", class_names=CLASSES)


def test_missing_pyarrow_names_the_parquet_extra(tmp_path, monkeypatch):
    """Parquet output without pyarrow fails with MissingDependencyError saying how to install the extra."""
    import sys

    from calitag.errors import MissingDependencyError
    from calitag.pipeline.records import ParquetWriter

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match=r'the parquet extra.*pip install -e "\.\[parquet\]"'):
        ParquetWriter(tmp_path / "out", class_names=CLASSES, model="debug", all_scores=True)
