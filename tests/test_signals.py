"""Interruptions (cli/_common.py interruptible, the decoders of pipeline/local_engine.py): Ctrl-C and SIGTERM end a
command with one line and 128 + the signal's number, run every cleanup, leave no process behind, and a resume
finishes the run with every file once and the records an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from calitag.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory, audio_samples) -> Path:
    """Six 30-s recordings made by repeating a bundled clip: long enough to interrupt a run half-way."""
    samples, rate = sf.read(audio_samples / "speech_music_01.wav", dtype="float32")
    folder = tmp_path_factory.mktemp("long")
    for i in range(6):
        sf.write(folder / f"long_{i}.wav", np.roll(np.tile(samples, 31 * rate // len(samples) + 1), 977 * i)[: 30 * rate],
                 rate)
    return folder


def _batch_args(folder: Path, out: Path) -> list[str]:
    return ["batch", str(folder), "--model", "debug", "--device", "cpu", "--out", str(out), "--workers", "2"]


def _interrupt(folder: Path, out: Path, signum: int, processes) -> tuple[int, str, list[int]]:
    """Start `calitag batch` in its own session, send ``signum`` once its first record is written (SIGINT to the
    whole process group, as a terminal's Ctrl-C; SIGTERM to the batch process, as `kill`); exit code, stderr and
    the decoder processes it had."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "calitag.cli", *_batch_args(folder, out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no record appeared in {out} (exit {proc.poll()}): {proc.stderr.read()}")
            time.sleep(0.05)
        decoders = processes.children(proc.pid)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr, decoders


@pytest.mark.torch
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_batch_says_one_line_and_resumes_to_the_same_records(long_folder, tmp_path, signum,
                                                                            processes):
    """Ctrl-C / SIGTERM: exit 128+N, one line naming the signal, no traceback, no decoder left, no temporary file;
    --resume then writes every file once, records equal to an uninterrupted run's."""
    out = tmp_path / "r.jsonl"
    code, stderr, decoders = _interrupt(long_folder, out, signum, processes)
    name = signal.Signals(signum).name
    assert code == 128 + signum, stderr
    assert [line for line in stderr.splitlines() if "nterrupt" in line] == [
        f"error: interrupted by {name}; nothing partial was kept (`calitag batch --resume` continues a run)"]
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while any(processes.alive(pid) for pid in decoders) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert decoders and not any(processes.alive(pid) for pid in decoders), "decoder processes left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.jsonl.calitag.json", "r.jsonl"]
    written = out.read_text().splitlines()
    assert 1 <= len(written) < 6 and out.read_bytes().endswith(b"\n")

    resumed = CliRunner().invoke(main, [*_batch_args(long_folder, out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    full = tmp_path / "full.jsonl"
    assert CliRunner().invoke(main, _batch_args(long_folder, full)).exit_code == 0
    records = sorted(map(json.loads, out.read_text().splitlines()), key=lambda r: r["path"])
    assert [r["path"] for r in records] == sorted(str(p) for p in long_folder.iterdir())
    assert records == sorted(map(json.loads, full.read_text().splitlines()), key=lambda r: r["path"])


def test_sigterm_runs_the_cleanups_of_an_atomic_write(tmp_path):
    """SIGTERM while a command writes a file atomically: the temporary file is removed, exit code 143."""
    script = (
        "import os, signal, click\n"
        "from calitag.cli._common import interruptible\n"
        "from calitag._fileio import atomic_output\n"
        f"with interruptible():\n"
        f"    with atomic_output({str(tmp_path / 'final.bin')!r}) as handle:\n"
        "        handle.write(b'partial')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        handle.write(b' never')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: interrupted by SIGTERM; nothing partial was kept (`calitag batch --resume` continues a run)"]
    assert list(tmp_path.iterdir()) == []
