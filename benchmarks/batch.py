"""Batch throughput: `calitag batch` against a plain loop over panns-inference's Cnn14, same files.

Both sides use Cnn14 with the same random weights (seed 0) on the same directory of 10-s clips
at 44.1 kHz, so both decode and resample to 32 kHz. The plain loop is what research code does:
for each file ``librosa.load(path, sr=32000)`` then one forward pass of panns-inference's ``Cnn14``
(its torchlibrosa frontend included). calitag runs ``run_batch`` with decoder processes and
batched windows, the network traced and frozen once as `calitag batch` does by default (the
build happens in the warm-up, as it would be amortised over a long run). The clip scores of the
two are compared as well. ``--precision bf16`` runs calitag's side in bfloat16 (CPUs with
native bfloat16); the difference printed is then bf16 against panns-inference's float32.

It then times each stage of calitag's path once more, in one process and one after the other,
on the same files: decode (soundfile), resample (soxr), frontend (log-Mel), model (batches of
``--batch-size``), write (one JSONL record per file), to show which one limits.

It also measures this machine's own limit: one 3x3 convolution of Cnn14's shape (128 -> 128
channels on its 500 x 32 map) in float32 (the faster of the default and the channels-last layout) and
in bfloat16 (channels-last; "emulated" where the CPU has no native bfloat16, then on a batch of 1),
in GFLOP/s, and puts the model stage beside it: the network's work per clip (torch's
``FlopCounterMode``, 40.1 GFLOP per 10-s clip) times clips/s, and its share of the limit in the
precision calitag ran (the limit is measured before and after the run and the better figure kept).
The CPU model, core count, relevant flags and the load average before and after the run frame the table. ``--precision bf16`` on a CPU without native bfloat16 prints the
machine lines and stops (calitag refuses bf16 there).

    python benchmarks/batch.py [--files 24] [--workers 1] [--batch-size 8] [--precision fp32|bf16]

A script, never part of the test run. It prints one table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from inference import panns_cnn14_runner  # benchmarks/ is on sys.path when a script in it runs

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "audio_samples"
CLIP_S = 10.0
FILE_RATE = 44_100


def make_clips(folder: Path, n_files: int) -> list[Path]:
    """``n_files`` 10-s 44.1 kHz clips made by chaining the bundled recordings (seeded order)."""
    sources = sorted(SAMPLES.glob("*.wav"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_files):
        pieces, total = [], 0
        while total < CLIP_S * FILE_RATE:
            samples, rate = sf.read(sources[rng.integers(len(sources))], dtype="float32")
            pieces.append(soxr.resample(samples, rate, FILE_RATE).astype(np.float32))
            total += len(pieces[-1])
        path = folder / f"clip_{i:03d}.wav"
        sf.write(path, np.concatenate(pieces)[: int(CLIP_S * FILE_RATE)], FILE_RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def plain_loop(run: Callable[[torch.Tensor], torch.Tensor], paths: list[Path]) -> np.ndarray:
    import librosa

    rows = []
    for path in paths:
        audio, _ = librosa.load(path, sr=32_000, mono=True)
        rows.append(run(torch.from_numpy(audio)[None])[0].numpy())
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    parser.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the two sides this many times and keep each side's best (a shared "
                             "machine's load then hits both alike)")
    args = parser.parse_args()
    load_before = os.getloadavg()

    from calitag.errors import PrecisionError
    from calitag.models import cnn14
    from calitag.models.registry import get_spec
    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.precision import bf16_support
    from calitag.pipeline.tagger import Tagger

    native, reason = bf16_support(torch.device("cpu"))
    print(machine_line())
    print(f"bfloat16: {reason}")
    limits = conv_layer_limits(args.batch_size, native=native)
    print(f"conv-layer limit (one 3x3 conv of Cnn14, 128 -> 128 channels on 500 x 32, best of 5): "
          + ", ".join(f"{p} {g:.0f} GFLOP/s ({how})" for p, (g, how) in limits.items()))
    ours = cnn14.load(None, seed=0)
    gflop = clip_gflop(ours)
    # As `calitag batch` runs it (--jit, the default): the network's inference copy (BN folded, channels-last).
    reference = panns_cnn14_runner(ours.state_dict())  # before the Tagger casts ours to bf16
    try:
        tagger = Tagger(get_spec("cnn14"), ours, device=torch.device("cpu"), batch_size=args.batch_size,
                        optimize=True, precision=args.precision)
    except PrecisionError as err:
        print(f"stopped: {err}")
        print(f"load average (1, 5, 15 min) before {fmt_load(load_before)}, after {fmt_load(os.getloadavg())}")
        raise SystemExit(2) from err
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp), args.files)
        plain_loop(reference, paths[:1])  # warm-up both sides
        run_batch(tagger, paths[:1], workers=0, with_tags=False)  # builds the traced graph
        plain_times, batch_times = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            theirs = plain_loop(reference, paths)
            plain_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            results = run_batch(tagger, paths, workers=args.workers, with_tags=False)
            batch_times.append(time.perf_counter() - start)
        plain_s, batch_s = min(plain_times), min(batch_times)
        stages = None if args.no_stages else stage_seconds(tagger, paths, Path(tmp), rounds=args.rounds)
    by_path = {r.path: r.scores for r in results}
    mine = np.stack([by_path[str(p)] for p in paths])
    audio_s = args.files * CLIP_S
    print(f"{args.files} clips of {CLIP_S:.0f} s at {FILE_RATE} Hz, Cnn14 random weights (seed 0), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, calitag in {tagger.precision}")
    print(f"best of {args.rounds} alternating rounds; all rounds, plain loop: "
          f"{', '.join(f'{t:.1f}' for t in plain_times)} s; calitag: {', '.join(f'{t:.1f}' for t in batch_times)} s")
    print(f"{'':<44} {'seconds':>8} {'files/s':>8} {'x real time':>12}")
    print(f"{'panns-inference Cnn14, plain loop (batch 1)':<44} {plain_s:>8.2f} {args.files / plain_s:>8.2f} "
          f"{audio_s / plain_s:>12.1f}")
    print(f"{f'calitag batch ({tagger.precision}, workers {args.workers}, batch {args.batch_size})':<44} {batch_s:>8.2f} "
          f"{args.files / batch_s:>8.2f} {audio_s / batch_s:>12.1f}")
    diff = np.abs(mine - theirs)
    print(f"speed-up: {plain_s / batch_s:.2f}x   |score difference| max {diff.max():.2e}, mean {diff.mean():.2e}")
    if stages is not None:
        total = sum(stages.values())
        print(f"\nstages of calitag's path, in one process, one after the other ({total:.2f} s in all; "
              f"model: best of {args.rounds}):")
        for stage, seconds in stages.items():
            print(f"  {stage:<10} {seconds:>7.2f} s  {seconds / total:>5.1%}  {args.files / seconds:>8.1f} files/s")
        # Measured again after the stages, and the better kept: a load that came and went during the run
        # then lowers the limit less than it lowered the model stage.
        again = conv_layer_limits(args.batch_size, native=native)
        limits = {p: max(limits[p], again[p]) for p in limits}
        print(f"conv-layer limit measured again after the stages: "
              + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, (g, _) in again.items()))
        limit = limits[tagger.precision][0]
        rate = args.files * gflop / stages["model"]
        print(f"model stage: {args.files / stages['model']:.2f} clips/s x {gflop:.1f} GFLOP per clip = {rate:.0f} GFLOP/s, "
              f"{rate / limit:.0%} of the {tagger.precision} conv-layer limit ({limit:.0f} GFLOP/s, the better of "
              "the two measurements)")
    print(f"load average (1, 5, 15 min) before {fmt_load(load_before)}, after {fmt_load(os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def machine_line() -> str:
    """CPU model, CPUs this process may use, and the SIMD / matrix flags that decide the kernels."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags]
    return (f"machine: {model}, {cpus} CPUs, flags {' '.join(present) or '-'} (absent: {' '.join(absent) or '-'}); "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def conv_layer_limits(batch: int, *, native: bool, repeats: int = 5) -> dict[str, tuple[float, str]]:
    """GFLOP/s of one 3x3 convolution of Cnn14's size (conv_block2.conv2: 128 -> 128 channels on a
    500 x 32 map) per precision, best of ``repeats``, with how it ran. float32 takes the faster of the
    default and the channels-last layout; bfloat16 runs channels-last, on a batch of 1 where emulated."""
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
    runs: dict[str, tuple[torch.nn.Module, torch.Tensor, str]] = {}
    x = torch.randn(batch, 128, 500, 32, generator=generator)
    last = torch.channels_last
    runs["fp32"] = (conv, x, f"batch {batch}")
    runs["fp32 channels-last"] = (conv_copy(conv, torch.float32), x.contiguous(memory_format=last), f"batch {batch}")
    bf16_batch = batch if native else 1
    runs["bf16"] = (conv_copy(conv, torch.bfloat16), x[:bf16_batch].to(torch.bfloat16).contiguous(memory_format=last),
                    f"batch {bf16_batch}" + ("" if native else ", emulated"))
    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, (layer, inp, _) in runs.items():
            layer(inp)
        for _ in range(repeats):  # interleaved, so the load of a shared machine hits all alike
            for name, (layer, inp, _) in runs.items():
                start = time.perf_counter()
                layer(inp)
                flops = 2 * 128 * 128 * 9 * 500 * 32 * inp.shape[0]
                best[name] = max(best.get(name, 0.0), flops / (time.perf_counter() - start) / 1e9)
    fp32_layout = max(("fp32", "fp32 channels-last"), key=best.__getitem__)
    layout = "channels-last" if fp32_layout.endswith("last") else "default layout"
    return {"fp32": (best[fp32_layout], f"{runs['fp32'][2]}, {layout}"), "bf16": (best["bf16"], runs["bf16"][2])}


def conv_copy(conv: torch.nn.Conv2d, dtype: torch.dtype) -> torch.nn.Conv2d:
    """``conv`` in ``dtype``, channels-last."""
    layer = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False).eval()
    layer.load_state_dict(conv.state_dict())
    return layer.to(dtype=dtype, memory_format=torch.channels_last)


def clip_gflop(model: torch.nn.Module) -> float:
    """Convolution and matmul GFLOP of ``model`` (float32) on one 10-s clip at 32 kHz (1001 frames)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 64, 1001))
    return counter.get_total_flops() / 1e9


def stage_seconds(tagger, paths: list[Path], tmp: Path, *, rounds: int = 1) -> dict[str, float]:
    """Seconds spent in each stage of calitag's path over ``paths``, run one stage at a time (the
    model stage ``rounds`` times, the best kept)."""
    from calitag.pipeline.audio import resample
    from calitag.pipeline.records import RecordWriter
    from calitag.pipeline.types import Waveform

    rate = tagger.spec.frontend.sample_rate
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    decoded = [sf.read(p, dtype="float32") for p in paths]
    seconds["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    waves = [resample(Waveform(samples=x, sample_rate=r, source=str(p)), sample_rate=rate).samples
             for (x, r), p in zip(decoded, paths)]
    seconds["resample"] = time.perf_counter() - start
    n = min(len(w) for w in waves)
    batches = [np.stack([w[:n] for w in waves[i : i + tagger.batch_size]])
               for i in range(0, len(waves), tagger.batch_size)]
    with torch.inference_mode():
        start = time.perf_counter()
        features = [tagger.frontend(torch.from_numpy(b)) for b in batches]
        seconds["frontend"] = time.perf_counter() - start
        model_times = []
        for _ in range(rounds):
            start = time.perf_counter()
            probs = [tagger.backend.network(f)(f).float().numpy() for f in features]
            model_times.append(time.perf_counter() - start)
        seconds["model"] = min(model_times)
    start = time.perf_counter()
    writer = RecordWriter(tmp / "stages.jsonl", "jsonl", resume=False)
    for path, row in zip(paths, np.concatenate(probs)):
        order = row.argsort()[::-1][:5]
        writer.write({"path": str(path), "scores": {tagger.class_names[i]: round(float(row[i]), 6) for i in order}})
    writer.close()
    seconds["write"] = time.perf_counter() - start
    return seconds


if __name__ == "__main__":
    main()
