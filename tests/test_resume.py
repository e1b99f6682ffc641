"""Resuming results (pipeline/records.py): no complete record is ever dropped, one run per output in every format,
records keyed by their resolved path, and a resume with other settings refused with the reason."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from calitag.errors import OutputError
from calitag.pipeline.records import ParquetWriter, RecordWriter, RunStamp

CLASSES = ("Speech", "Dog", "Siren")


def _record(name: str, *, thresholds: str | None = None) -> dict:
    return {"path": name, "duration_s": 1.0, "tags": ["Speech"], "scores": {"Speech": 0.9}, "model": "debug",
            "thresholds": thresholds}


def _write(out: Path, fmt: str, names: list[str], **options) -> None:
    with RecordWriter(out, fmt, **options) as writer:
        for name in names:
            writer.write(_record(name))


def test_a_damaged_csv_row_is_kept_and_the_records_after_it_survive(tmp_path):
    """A CSV row with a missing field in the middle is reported and kept; the complete records after it stay."""
    out = tmp_path / "r.csv"
    _write(out, "csv", ["a.wav", "b.wav", "c.wav"])
    lines = out.read_bytes().split(b"\r\n")
    lines[2] = lines[2].rsplit(b",", 2)[0]  # b.wav loses two fields
    damaged = b"\r\n".join(lines)
    out.write_bytes(damaged)
    with RecordWriter(out, "csv", resume=True) as writer:
        assert writer.done == {"a.wav", "c.wav"}
        assert any("row 3: 5 fields instead of 7" in note for note in writer.notes)
    assert out.read_bytes() == damaged  # nothing cut


def test_an_open_quote_at_the_end_is_moved_aside_not_dropped(tmp_path):
    """A CSV tail that is no complete record but spans lines (an open quote) is moved to a side file, then cut."""
    out = tmp_path / "r.csv"
    _write(out, "csv", ["a.wav"])
    tail = b'"b\r\nc.wav,1.0,Speech,Speech=0.9000,debug,,\r\n'
    out.write_bytes(out.read_bytes() + tail)
    with RecordWriter(out, "csv", resume=True) as writer:
        assert writer.done == {"a.wav"}
        assert any("moved aside" in note for note in writer.notes)
    [aside] = tmp_path.glob("r.csv.tail-*")
    assert aside.read_bytes() == tail and tail not in out.read_bytes()


@pytest.mark.parametrize("line", [b'{"path": null, "model": "debug"}', b'{"path": 3}', b"[1, 2]", b"{oops"])
def test_a_jsonl_line_without_a_path_is_reported_and_kept(tmp_path, line):
    """A JSON line whose path is null, not a string, or that is no JSON object is kept and reported, not a crash."""
    out = tmp_path / "r.jsonl"
    _write(out, "jsonl", ["a.wav"])
    out.write_bytes(out.read_bytes() + line + b"\n" + json.dumps(_record("b.wav")).encode() + b"\n")
    with RecordWriter(out, "jsonl", resume=True) as writer:
        assert writer.done == {"a.wav", "b.wav"}
        assert any("r.jsonl:2" in note for note in writer.notes)
    assert line in out.read_bytes()


def test_jsonl_resumed_from_another_folder_with_absolute_paths_redoes_nothing(tmp_path, monkeypatch):
    """Records of relative paths made in one working folder match the absolute paths of a resume from another."""
    (tmp_path / "in").mkdir()
    out = tmp_path / "r.jsonl"
    monkeypatch.chdir(tmp_path)
    _write(out, "jsonl", ["in/a.wav"], stamp=RunStamp("debug"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with RecordWriter(out, "jsonl", resume=True, stamp=RunStamp("debug")) as writer:
        assert writer.is_done(str(tmp_path / "in" / "a.wav"))
        assert not writer.is_done(str(elsewhere / "in" / "a.wav"))


@pytest.mark.parametrize("change", [{"thresholds": "other.json:0123456789ab"}, {"model": "yamnet"},
                                    {"checkpoint": "sha256:0123456789ab"}, {"all_scores": True}])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_resume_with_other_settings_is_refused_with_the_reason(tmp_path, fmt, change):
    """JSONL/CSV: another model, checkpoint, thresholds file or --all-scores on resume is refused, naming the option."""
    out = tmp_path / f"r.{fmt}"
    _write(out, fmt, ["a.wav"], stamp=RunStamp("debug"))
    option = {"thresholds": "--thresholds", "model": "--model", "checkpoint": "--checkpoint",
              "all_scores": "--all-scores"}[next(iter(change))]
    with pytest.raises(OutputError, match=f"cannot resume .* with other settings \\({option} "):
        RecordWriter(out, fmt, resume=True, stamp=RunStamp(**{"model": "debug", **change}))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_records_of_other_thresholds_are_refused_without_the_stamp(tmp_path, fmt):
    """Without its stamp file (an older output, or a copy) the records' own model and thresholds are compared."""
    out = tmp_path / f"r.{fmt}"
    with RecordWriter(out, fmt) as writer:
        writer.write(_record("a.wav", thresholds="t.json:0123456789ab"))
    with pytest.raises(OutputError, match="--thresholds 't.json:0123456789ab' there, None now"):
        RecordWriter(out, fmt, resume=True, stamp=RunStamp("debug"))
    with RecordWriter(out, fmt, resume=True, stamp=RunStamp("debug", thresholds="t.json:0123456789ab")) as writer:
        assert writer.done == {"a.wav"}


# --- Parquet folders -----------------------------------------------------------------------------------


def _parquet(out: Path, **options) -> ParquetWriter:
    pytest.importorskip("pyarrow")
    return ParquetWriter(out, class_names=CLASSES, model="debug", all_scores=options.pop("all_scores", False),
                         rows_per_part=options.pop("rows_per_part", 1), **options)


def test_a_second_parquet_writer_on_one_folder_is_refused(tmp_path):
    """Two runs cannot write into one Parquet folder at once; the folder is free again once the first ends."""
    first = _parquet(tmp_path / "out")
    with pytest.raises(OutputError, match="being written by another calitag run"):
        _parquet(tmp_path / "out", resume=True)
    first.close()
    _parquet(tmp_path / "out", resume=True).close()


def test_parquet_resume_matches_another_spelling_of_the_folder(tmp_path, monkeypatch):
    """Parquet records of in/a.wav are done for ./x/../in/a.wav and for the absolute path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "x").mkdir()
    with _parquet(tmp_path / "out") as writer:
        writer.write(_record("in/a.wav"))
    with _parquet(tmp_path / "out", resume=True) as writer:
        assert writer.is_done("./x/../in/a.wav") and writer.is_done(str(tmp_path / "in" / "a.wav"))
        assert not writer.is_done("in/b.wav")


def test_parquet_resume_without_all_scores_is_refused(tmp_path):
    """A folder of all-score parts cannot be resumed with top-k scores (and back): the table would not read."""
    with _parquet(tmp_path / "out", all_scores=True) as writer:
        record = _record("a.wav")
        writer.write({**record, "scores": dict(zip(CLASSES, (0.1, 0.2, 0.3)))})
    with pytest.raises(OutputError, match="--all-scores True there, False now"):
        _parquet(tmp_path / "out", resume=True)
    (tmp_path / "out" / "_calitag.json").unlink()  # an older folder: the parts' own schema is compared
    with pytest.raises(OutputError, match="keeps every class score.*resume with --all-scores"):
        _parquet(tmp_path / "out", resume=True)


def test_parquet_resume_with_other_thresholds_is_refused(tmp_path):
    """Parquet parts tagged with other thresholds are not continued."""
    with _parquet(tmp_path / "out") as writer:
        writer.write(_record("a.wav", thresholds="t.json:0123456789ab"))
    with pytest.raises(OutputError, match="thresholds 't.json:0123456789ab'"):
        _parquet(tmp_path / "out", resume=True)


def test_a_full_disk_leaves_no_temporary_part_and_says_what_to_do(tmp_path, monkeypatch):
    """ENOSPC while a part is written: one OutputError naming the fix, and no temporary part file stays."""
    writer = _parquet(tmp_path / "out", rows_per_part=2)
    writer.write(_record("a.wav"))

    def full_disk(table, stream, **options):
        stream.write(b"PAR1 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer._pq, "write_table", full_disk)
    with pytest.raises(OutputError, match="No space left on device.*--resume"):
        writer.write(_record("b.wav"))
    monkeypatch.undo()
    writer._buffer = []
    writer.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".calitag.lock", "_calitag.json"]


def test_a_resume_removes_the_temporary_parts_a_killed_run_left(tmp_path):
    """A .part-*.parquet.tmp left by a killed run is removed (and reported) when the folder is resumed."""
    with _parquet(tmp_path / "out") as writer:
        writer.write(_record("a.wav"))
    stale = tmp_path / "out" / ".part-20250101T000000-deadbeef-00001.parquet.tmp"
    stale.write_bytes(b"PAR1")
    with _parquet(tmp_path / "out", resume=True) as writer:
        assert writer.done == {"a.wav"} and any(stale.name in note for note in writer.notes)
    assert not stale.exists()
