"""YAMNet batch throughput end to end: `calitag batch` in a fresh process on 10-s clips.

Makes ``--files`` 10-s clips by chaining the bundled recordings of ``audio_samples/`` (seeded
order, as benchmarks/batch.py does), at ``--rate`` Hz (16 kHz: YAMNet's own rate, no
resampling; 44.1 kHz: soxr resamples every file), then runs

    python -m calitag.cli batch CLIPS --out OUT.jsonl --model MODEL [--workers W] [--batch-size B]

(the command's own defaults where ``--workers`` / ``--batch-size`` are not given)

in a subprocess per model, and prints audio seconds / wall seconds with the process start
(imports, model load) included, the CPU seconds of the command and its decoder processes
(audio s per CPU s: steadier than wall time on a shared machine), and the time to its first
record with the figure after it. ``--baseline DIR`` runs a second calitag source tree alike
(e.g. ``git archive OLD | tar -x -C DIR``) for a side-by-side comparison. Runs alternate
between trees and models (``--repeats`` rounds) so that the load of a shared machine falls on
all of them alike; the best round of each is reported, with the load average before and after.

    python benchmarks/batch_yamnet.py [--files 200] [--rate 16000] [--models yamnet yamnet-int8]
                                      [--repeats 3] [--workers W] [--batch-size B] [--baseline DIR]

A script, never part of the test run. It prints one table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "audio_samples"
CLIP_S = 10.0


def make_clips(folder: Path, n_files: int, rate: int) -> list[Path]:
    """``n_files`` 10-s clips at ``rate`` Hz made by chaining the bundled recordings (seeded order)."""
    sources = sorted(SAMPLES.glob("*.wav"))
    decoded = {}
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_files):
        pieces, total = [], 0
        while total < CLIP_S * rate:
            source = sources[rng.integers(len(sources))]
            if source not in decoded:
                samples, source_rate = sf.read(source, dtype="float32", always_2d=True)
                decoded[source] = soxr.resample(samples.mean(axis=1), source_rate, rate).astype(np.float32)
            pieces.append(decoded[source])
            total += len(pieces[-1])
        path = folder / f"clip_{i:03d}.wav"
        sf.write(path, np.concatenate(pieces)[: int(CLIP_S * rate)], rate, subtype="PCM_16")
        paths.append(path)
    return paths


def run_once(folder: Path, out: Path, model: str, *, workers: int | None, batch_size: int | None,
             tree: Path = REPO) -> tuple[float, float, float]:
    """Wall seconds of one `calitag batch` process (calitag from ``tree``), seconds until its first
    record was written, and the CPU seconds (user + system) of the process and its workers."""
    command = [sys.executable, "-m", "calitag.cli", "batch", str(folder), "--out", str(out), "--model", model]
    command += ["--workers", str(workers)] if workers is not None else []
    command += ["--batch-size", str(batch_size)] if batch_size is not None else []
    # The installed calitag, or another tree's (a baseline checkout) put first on the path.
    env = dict(os.environ) if tree == REPO else dict(os.environ, PYTHONPATH=str(tree))
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and out.exists() and out.stat().st_size > 0:
            first = time.perf_counter() - start
        time.sleep(0.005)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"calitag batch failed ({proc.returncode}): {proc.stderr.read()}")
    n_records = sum(1 for _ in out.open())
    if n_records != len(list(folder.glob("*.wav"))):
        raise SystemExit(f"{out}: {n_records} records for {len(list(folder.glob('*.wav')))} files")
    return wall, first if first is not None else wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rate", type=int, default=16_000)
    parser.add_argument("--models", nargs="+", default=["yamnet", "yamnet-int8"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="Default: the command's default.")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the command's default.")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="Another calitag source tree (e.g. `git archive` of an older commit) to run alike.")
    args = parser.parse_args()

    audio_s = args.files * CLIP_S
    trees = {"this tree": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs = [(label, tree, model) for label, tree in trees.items() for model in args.models]
    best: dict[tuple[str, str], tuple[float, float, float]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        make_clips(folder, args.files, args.rate)
        for n, (_, tree, model) in enumerate(runs):  # warm-up: graphs prepared and cached, files in the page cache
            run_once(folder, Path(tmp) / f"warm-{n}.jsonl", model, workers=args.workers,
                     batch_size=args.batch_size, tree=tree)
        for round_ in range(args.repeats):
            for n, (label, tree, model) in enumerate(runs):
                wall, first, cpu = run_once(folder, Path(tmp) / f"run-{n}-{round_}.jsonl", model, workers=args.workers,
                                            batch_size=args.batch_size, tree=tree)
                if (label, model) not in best or wall < best[label, model][0]:
                    best[label, model] = (wall, first, cpu)
    load_after = os.getloadavg()[0]
    print(f"{args.files} clips of {CLIP_S:.0f} s at {args.rate} Hz ({audio_s:.0f} audio s), `calitag batch` "
          f"--workers {args.workers or 'default'} --batch-size {args.batch_size or 'default'}, best of {args.repeats} (alternating), "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"{'tree':<10} {'model':<12} {'wall s':>7} {'x real time':>12} {'CPU s':>7} {'audio s/CPU s':>14} "
          f"{'1st record s':>13} {'x real time after it':>21}")
    for (label, model), (wall, first, cpu) in best.items():
        print(f"{label:<10} {model:<12} {wall:>7.2f} {audio_s / wall:>12.0f} {cpu:>7.2f} {audio_s / cpu:>14.0f} "
              f"{first:>13.2f} {audio_s / max(wall - first, 1e-9):>21.0f}")


if __name__ == "__main__":
    main()
