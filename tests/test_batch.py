"""Batch processing (pipeline/batch.py and `calitag batch`): good files tagged, bad ones recorded, resumable."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from calitag.cli import main
from calitag.pipeline.batch import find_audio_files, run_batch
from calitag.pipeline.tagger import Tagger

# Runs the debug model (torch): skipped in a core install (see conftest.py).
pytestmark = pytest.mark.torch

GOOD = ("speech_01.wav", "music_01.wav", "alarm_clock_01.wav", "speech_music_01.wav")


@pytest.fixture()
def mixed_folder(tmp_path, audio_samples) -> Path:
    """Four real clips, a truncated wav, an empty file and a text file named .wav."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(audio_samples / name, folder / name)
    data = (audio_samples / GOOD[0]).read_bytes()
    (folder / "corrupt.wav").write_bytes(data[:30])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("this is not audio\n")
    (folder / "readme.txt").write_text("ignored: not an audio extension\n")
    return folder


@pytest.fixture(scope="module")
def debug_tagger() -> Tagger:
    return Tagger.load("debug", device="cpu", batch_size=4)


def test_find_audio_files_skips_other_extensions(mixed_folder):
    """Folder expansion keeps audio extensions only, sorted."""
    names = [p.name for p in find_audio_files(mixed_folder)]
    assert names == sorted(names) and "readme.txt" not in names and len(names) == 7


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_scores_equal_tagger_scores(debug_tagger, mixed_folder, workers):
    """Scores from the batch runner (in-process or with decoder processes) equal Tagger.scores file by file."""
    good = [mixed_folder / n for n in GOOD]
    results = {r.path: r for r in run_batch(debug_tagger, good, workers=workers)}
    expected = debug_tagger.scores(good).probs
    for path, row in zip(good, expected):
        result = results[str(path)]
        assert result.error is None
        np.testing.assert_allclose(result.scores, row, atol=1e-5)
        assert result.duration_s == pytest.approx(len(sf.read(path)[0]) / 16_000, abs=0.01)


def test_torch_models_keep_one_decoder_and_run_the_model_here(debug_tagger):
    """A torch model's workers only decode (no worker scorer), one by default; the model runs in this process."""
    from calitag.pipeline.local_engine import default_workers, worker_scorer

    assert worker_scorer(debug_tagger) is None and default_workers(debug_tagger) == 1


def test_segments_run_in_the_worker_processes(debug_tagger, mixed_folder, monkeypatch):
    """segment_s with workers=2 reads files in the decoder processes; segments equal Tagger.segment_scores,
    the clip score is their maximum and each segment gets its tags."""
    import calitag.pipeline.local_engine as engine

    real, main_pid = engine._file_messages, os.getpid()

    def in_workers_only(index, path, **options):
        if os.getpid() == main_pid:
            raise AssertionError(f"{path} was read in the main process")
        yield from real(index, path, **options)

    monkeypatch.setattr(engine, "_file_messages", in_workers_only)
    good = [mixed_folder / n for n in GOOD]
    results = {r.path: r for r in run_batch(debug_tagger, good, workers=2, segment_s=1.0)}
    for path in good:
        result, expected = results[str(path)], debug_tagger.segment_scores(path, segment_s=1.0)
        assert result.error is None and len(result.segment_tags) == len(expected.probs) > 1
        np.testing.assert_allclose(result.segments.probs, expected.probs, atol=1e-5)
        np.testing.assert_array_equal(result.segments.starts_s, expected.starts_s)
        np.testing.assert_array_equal(result.segments.ends_s, expected.ends_s)
        np.testing.assert_array_equal(result.scores, result.segments.probs.max(axis=0))
        assert result.duration_s == expected.ends_s[-1]


def test_run_batch_without_out_returns_tagged_results_and_writes_nothing(debug_tagger, mixed_folder, tmp_path,
                                                                          monkeypatch):
    """calitag.run_batch without out returns one result per file, tags as Tagger.tag decides them, and writes no file."""
    import calitag

    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    results = calitag.run_batch(debug_tagger, mixed_folder, workers=0)
    assert sorted(tmp_path.rglob("*")) == before
    assert len(results) == 7 and sorted(Path(r.path).name for r in results if r.error is None) == sorted(GOOD)
    ok = [r for r in results if r.error is None]
    expected = debug_tagger.tags_from_scores(debug_tagger.scores([r.path for r in ok]))
    assert [[label for label, _ in r.tags] for r in ok] == [[label for label, _ in t.labels] for t in expected]
    assert any(r.tags for r in ok)


def test_batch_cli_records_every_file_and_exits_1(mixed_folder, tmp_path):
    """Every good file gets tags and scores, every bad one an error record naming the problem; exit code 1."""
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out),
                                       "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(GOOD) | {"corrupt.wav", "empty.wav", "notes.wav"}
    for name in GOOD:
        assert "error" not in records[name] and len(records[name]["scores"]) == 5
        assert records[name]["duration_s"] > 1.0
    assert "not audio" in records["notes.wav"]["error"]
    assert records["empty.wav"]["error"] and records["corrupt.wav"]["error"]
    assert "skip" in result.stderr and "3 failed" in result.stderr


def test_resume_after_a_kill_loses_and_duplicates_nothing(mixed_folder, tmp_path):
    """A run cut after two records and half a third is finished by --resume with each file exactly once."""
    out = tmp_path / "results.jsonl"
    args = ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--workers", "0", "--device", "cpu"]
    CliRunner().invoke(main, args)
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][: len(full[2]) // 2])  # as if killed mid-write
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists" in again.output  # no silent overwrite without --resume
    resumed = CliRunner().invoke(main, args + ["--resume"])
    assert "2 of 7 file(s) already" in resumed.stderr
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(paths) == sorted(json.loads(line)["path"] for line in full)


def test_batch_csv_output(mixed_folder, tmp_path):
    """--out *.csv writes one CSV row per file with the error column for bad ones."""
    out = tmp_path / "results.csv"
    CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--workers", "0"])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("path,duration_s,tags,scores") and len(lines) == 8


# --- dead and orphaned decoders, odd names, duplicates, skipped entries, progress ----------------


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory, audio_samples) -> Path:
    """Eight 60-s recordings made by repeating a bundled clip: long enough to kill a run half-way."""
    samples, rate = sf.read(audio_samples / "speech_music_01.wav", dtype="float32")
    folder = tmp_path_factory.mktemp("long")
    for i in range(8):
        sf.write(folder / f"long_{i}.wav", np.tile(samples, 60 * rate // len(samples) + 1)[: 60 * rate], rate)
    return folder


def _start_batch(folder: Path, out: Path, *extra: str) -> "subprocess.Popen":
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "calitag.cli", "batch", str(folder), "--model", "debug",
                             "--device", "cpu", "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_records(out: Path, proc, n: int = 1, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    pytest.fail(f"no record appeared in {out} (exit {proc.poll()})")


def test_killed_decoder_is_replaced_and_the_run_ends_with_every_file(long_folder, tmp_path, processes):
    """kill -9 of the decoder mid-run: the batch ends within seconds, every file once, a warning, exit 1."""
    import signal
    import time

    out = tmp_path / "r.jsonl"
    proc = _start_batch(long_folder, out, "--workers", "1")
    _wait_for_records(out, proc)
    decoders = processes.children(proc.pid)
    assert decoders, "no decoder process found"
    for pid in decoders:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=60)
    except Exception:
        proc.kill()
        raise
    assert time.monotonic() - killed_at < 60
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert sorted(Path(p).name for p in paths) == sorted(p.name for p in long_folder.iterdir())
    assert all("error" not in json.loads(line) for line in out.read_text().splitlines())
    assert proc.returncode == 1 and "killed by SIGKILL" in stderr and "read again" in stderr


def test_a_file_that_kills_its_decoder_twice_is_reported(debug_tagger, mixed_folder, monkeypatch):
    """A file whose decoding kills the process each time is tried twice, then reported; the others are tagged."""
    import signal

    import calitag.pipeline.local_engine as batch

    real = batch._file_messages

    def deadly(index, path, **windowing):
        if Path(path).name == "music_01.wav":
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, in the decoder process
        yield from real(index, path, **windowing)

    monkeypatch.setattr(batch, "_file_messages", deadly)
    good = [mixed_folder / n for n in GOOD]
    results = {Path(r.path).name: r for r in run_batch(debug_tagger, good, workers=2)}
    assert set(results) == set(GOOD)
    assert "killed by SIGKILL" in results["music_01.wav"].error and "twice" in results["music_01.wav"].error
    assert all(results[n].error is None for n in GOOD if n != "music_01.wav")


def test_decoders_die_with_a_killed_batch(long_folder, tmp_path, processes):
    """After SIGKILL of the batch process, its decoder processes are gone within a few seconds."""
    import signal
    import time

    out = tmp_path / "r.jsonl"
    proc = _start_batch(long_folder, out, "--workers", "2")
    _wait_for_records(out, proc)
    decoders = processes.children(proc.pid)
    assert decoders
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(processes.alive(pid) for pid in decoders):
        time.sleep(0.1)
    assert not any(processes.alive(pid) for pid in decoders), "orphaned decoder processes"


def test_two_runs_on_one_output_cannot_both_write(long_folder, tmp_path):
    """A second batch on the --out of a running one fails at once; the first completes with one record per file."""
    out = tmp_path / "r.jsonl"
    first = _start_batch(long_folder, out, "--workers", "1")
    _wait_for_records(out, first)
    for extra in ([], ["--resume"]):
        second = CliRunner().invoke(main, ["batch", str(long_folder), "--model", "debug", "--out", str(out),
                                           "--device", "cpu", *extra])
        assert second.exit_code == 1 and "another calitag run" in second.output, second.output
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert len(out.read_text().splitlines()) == len(list(long_folder.iterdir()))


def test_undecodable_and_odd_names_are_tagged_and_resumed(mixed_folder, tmp_path):
    """Names with undecodable bytes, U+2028, U+0085 or CR are tagged and recorded once, and resume skips them."""
    odd = [os.fsdecode(b"\xff\xfe latin1 \xe9.wav"), "a\u2028b.wav", "c\x85d.wav", "cr\rname.wav"]
    for name in odd:
        shutil.copy(mixed_folder / GOOD[0], mixed_folder / name)
    tagged = CliRunner().invoke(main, ["tag", str(mixed_folder / odd[0]), "--model", "debug", "--device", "cpu"])
    assert tagged.exit_code == 0, tagged.output
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"r.{fmt}"
        args = ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--device", "cpu",
                "--workers", "0"]
        first = CliRunner().invoke(main, args)
        assert first.exit_code == 1 and "3 failed" in first.stderr, first.output  # the three bad files
        again = CliRunner().invoke(main, args + ["--resume"])
        assert "11 of 11 file(s) already" in again.stderr, again.output
        assert again.exit_code == 0 and "0 file(s) tagged" in again.stderr


def test_resume_under_another_spelling_and_without_format(mixed_folder, tmp_path, monkeypatch):
    """--resume with the folder spelled differently skips every file; without --format a CSV stays CSV."""
    out = tmp_path / "results.out"
    monkeypatch.chdir(mixed_folder.parent)
    first = CliRunner().invoke(main, ["batch", "in", "--model", "debug", "--out", str(out), "--format", "csv",
                                      "--device", "cpu", "--workers", "0"])
    assert first.exit_code == 1, first.output
    again = CliRunner().invoke(main, ["batch", str(mixed_folder / ".." / "in"), "--model", "debug", "--out",
                                      str(out), "--resume", "--device", "cpu", "--workers", "0"])
    assert "7 of 7 file(s) already" in again.stderr, again.output
    assert not out.read_text().lstrip().startswith("{") and "{" not in out.read_text()


def test_broken_links_are_recorded_and_other_entries_counted(mixed_folder, tmp_path):
    """A dangling symlink and a symlink loop get error records naming the cause; other entries are counted."""
    (mixed_folder / "gone.wav").symlink_to(mixed_folder / "nothing-here.wav")
    (mixed_folder / "loop.wav").symlink_to(mixed_folder / "loop.wav")
    (mixed_folder / "phone.m4a").write_bytes(b"\0\0\0\x20ftypM4A ")
    (mixed_folder / "sub.wav").mkdir()
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out),
                                       "--device", "cpu", "--workers", "1"])
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert "dangling symlink" in records["gone.wav"]["error"]
    assert "symlink loop" in records["loop.wav"]["error"]
    assert "corrupt or unreadable audio" in records["phone.m4a"]["error"]  # FFmpeg's kind: tried, not skipped
    assert "6 failed" in result.stderr and result.exit_code == 1
    assert "not an audio file name (.txt)" in result.stderr
    assert "a folder (--recursive to enter it), e.g. sub.wav" in result.stderr


def test_tag_a_folder_named_like_audio_fails(tmp_path):
    """`calitag tag dir.wav/` on a folder with no audio reports it and exits 1 rather than 0."""
    (tmp_path / "dir.wav").mkdir()
    result = CliRunner().invoke(main, ["tag", str(tmp_path / "dir.wav"), "--model", "debug", "--device", "cpu"])
    assert result.exit_code == 1 and f"skip {tmp_path / 'dir.wav'}" in result.stderr, result.output


def test_top_k_limits_tags_and_every_tag_keeps_its_score(mixed_folder, tmp_path):
    """batch --top-k caps the tags as in `calitag tag`; each tag written has its score."""
    out = tmp_path / "r.jsonl"
    CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out), "--device", "cpu",
                              "--workers", "0", "--top-k", "1", "--top-scores", "0"])
    records = [r for r in map(json.loads, out.read_text().splitlines()) if "error" not in r]
    assert records and all(len(r["tags"]) <= 1 for r in records)
    assert any(r["tags"] for r in records)
    assert all(set(r["tags"]) == set(r["scores"]) for r in records)
    tag = CliRunner().invoke(main, ["tag", str(mixed_folder / GOOD[0]), "--model", "debug", "--device", "cpu",
                                    "--top-k", "1", "--format", "json"])
    shown = json.loads(tag.stdout)[0]["tags"]
    assert [t["label"] for t in shown] == next(r["tags"] for r in records if r["path"].endswith(GOOD[0]))


def test_progress_counts_audio_seconds_within_long_files(debug_tagger, long_folder):
    """Progress moves with the audio scored inside a long file, and ends at the total duration."""
    from calitag.pipeline.batch import audio_seconds

    files = sorted(long_folder.iterdir())[:2]
    total = audio_seconds(files)
    seen = []
    run_batch(debug_tagger, files, workers=0, on_progress=seen.append)
    assert total == pytest.approx(120.0, abs=0.1)
    assert any(p.done == 0 and 0 < p.audio_s < 60 for p in seen)  # before the first file is done
    assert [p.audio_s for p in seen] == sorted(p.audio_s for p in seen)
    assert seen[-1].audio_s == pytest.approx(total, abs=0.1) and seen[-1].audio_total_s == total


def test_a_full_disk_stops_the_batch_with_a_clear_error(mixed_folder, tmp_path):
    """On a real full file system (a 64 KiB tmpfs) batch fails with the reason and whole records only."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (mount / "ballast").write_bytes(b"\0" * (64 * 1024 - 1500))
        out = mount / "r.jsonl"
        result = CliRunner().invoke(main, ["batch", str(mixed_folder), "--model", "debug", "--out", str(out),
                                           "--device", "cpu", "--workers", "0", "--all-scores"])
        assert result.exit_code == 1 and "No space left on device" in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        assert all(json.loads(line) for line in out.read_text().split("\n") if line)
        assert out.read_text().endswith("\n") or out.read_text() == ""
    finally:
        subprocess.run(["umount", str(mount)], check=False)
