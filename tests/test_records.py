"""Result files (pipeline/records.py): appended record by record, resumable, never truncated mid-record."""

from __future__ import annotations

import csv
import json

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
