"""Inference speed of calitag's models, and calitag's Cnn14 against panns-inference's.

For each model: clips per second and real-time factor (compute seconds per second of audio) on
10-s clips, batch 1 and 8, timed from the waveform (frontend included) to the clip scores.
Random weights where no real ones exist (cnn14, cnn-transformer); crnn-dcase2019 loads the
published Keras file from ../shared/models when present; yamnet runs only when its checkpoint
is already in the calitag cache (``calitag models fetch yamnet``). cnn14 is also run with
panns-inference's own ``Cnn14`` class (its forward includes its torchlibrosa frontend) with the
same weights on the same input, the calls interleaved so both see the same machine load.

Each torch model runs in each ``--precisions`` (fp32, and bf16 where the CPU has native bfloat16),
through calitag's Tagger as `calitag tag` runs it (``--jit``: traced and frozen as `calitag batch`
runs it). GFLOP/s counts the network's convolution and matmul work (torch's FlopCounterMode, one
10-s clip) over the wall time of a call, next to the single-layer limit measured in the same run:
one 3x3 convolution of Cnn14's size (128 -> 128 channels on its 500 x 32 map, batch 8) in fp32
and in bf16 (channels-last), the most one layer of this network reaches on this CPU.

    python benchmarks/inference.py [--repeats 5] [--batch-sizes 1 8] [--models cnn14 ...]
                                   [--precisions fp32 bf16] [--jit]

A script, never part of the test run. It prints one table.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from calitag.errors import TaggingError
from calitag.models.registry import MODELS
from calitag.models.torch_frontend import LogMel

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CLIP = SHARED / "audio" / "R9_ZSCveAHg_7s.wav"
CRNN_H5 = SHARED / "models" / "crnn_dcase2019_pellegrini_irit_task4_1.h5"
AUDIOSET_CSV = REPO / "models" / "labels" / "audioset_527.csv"
CLIP_SECONDS = 10.0
DEFAULT_MODELS = ("cnn14", "cnn-transformer", "crnn-dcase2019", "yamnet", "yamnet-int8")
PANNS = "panns-inference 0.1.1"

Runner = Callable[[torch.Tensor], torch.Tensor]


def waveforms(sample_rate: int, batch: int) -> torch.Tensor:
    """``batch`` copies of a 10-s real clip at ``sample_rate`` (seeded noise without ../shared)."""
    n = int(CLIP_SECONDS * sample_rate)
    if CLIP.is_file():
        samples, rate = sf.read(CLIP, dtype="float32")
        if rate != sample_rate:
            samples = soxr.resample(samples, rate, sample_rate).astype(np.float32)
        samples = np.resize(samples, n)  # repeat the 7-s clip up to 10 s
    else:
        samples = 0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
    return torch.from_numpy(samples).unsqueeze(0).repeat(batch, 1).contiguous()


def checkpoint_for(name: str) -> tuple[Path | None, str]:
    """The checkpoint the benchmark uses for ``name``, and how to describe its weights."""
    if name == "crnn-dcase2019":
        return (CRNN_H5, "published") if CRNN_H5.is_file() else (None, "random")
    if name in ("yamnet", "yamnet-int8"):
        from calitag.models.checkpoints import resolve_checkpoint

        return resolve_checkpoint(name, download=False), "published"
    return None, "random"


def calitag_runner(name: str, *, precision: str = "fp32", jit: bool = False) -> tuple[Runner, str]:
    """Waveforms (batch, n_samples) -> clip scores through calitag's Tagger (frontend and model)."""
    from calitag.pipeline.tagger import Tagger

    spec = MODELS[name]
    checkpoint, weights = checkpoint_for(name)
    model = spec.resolve_builder()(checkpoint, seed=0)
    tagger = Tagger(spec, model, device=torch.device("cpu"), precision=precision, optimize=jit)

    def run(wave: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(tagger.score_windows(wave.numpy()))

    return run, weights


def network_gflop(name: str) -> float | None:
    """Convolution and matmul GFLOP of the network (frontend excluded) on one 10-s clip; None
    for a model that is not a torch module (yamnet)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = MODELS[name]
    checkpoint, _ = checkpoint_for(name)
    model = spec.resolve_builder()(checkpoint, seed=0)
    if not isinstance(model, torch.nn.Module):
        return None
    features = LogMel(spec.frontend)(waveforms(spec.frontend.sample_rate, 1))
    if name == "crnn-dcase2019":
        from calitag.models.crnn import prepare_features

        features = prepare_features(features)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(features)
    return counter.get_total_flops() / 1e9


def single_layer_limit(repeats: int, precisions: list[str]) -> dict[str, float]:
    """GFLOP/s of one 3x3 convolution of Cnn14's size (conv_block2.conv2: 128 -> 128 channels,
    500 x 32 map, batch 8), per precision: the most one layer reaches here."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 128, 500, 32, generator=generator)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
    flops = 2 * 128 * 128 * 9 * 500 * 32 * 8
    out = {}
    for precision in precisions:
        if precision == "bf16":
            layer = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
            layer.load_state_dict(conv.state_dict())
            layer = layer.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
            inp = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        else:
            layer, inp = conv, x
        with torch.inference_mode():
            wall, _ = time_interleaved({"layer": lambda _w: layer(inp)}, x, repeats)
        out[precision] = flops / min(wall["layer"]) / 1e9
    return out


def panns_cnn14_runner(state: dict[str, torch.Tensor]) -> Runner:
    """panns-inference's Cnn14 with calitag's cnn14 weights; imported with a temporary HOME
    holding the label CSV it otherwise downloads."""
    with tempfile.TemporaryDirectory() as home:
        labels = Path(home) / "panns_data" / "class_labels_indices.csv"
        labels.parent.mkdir()
        labels.write_bytes(AUDIOSET_CSV.read_bytes())
        old_home = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            panns_models = importlib.import_module("panns_inference.models")
        finally:
            if old_home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = old_home
    frontend = MODELS["cnn14"].frontend
    model = panns_models.Cnn14(
        sample_rate=frontend.sample_rate,
        window_size=frontend.n_fft,
        hop_size=frontend.hop_length,
        mel_bins=frontend.n_mels,
        fmin=frontend.f_min,
        fmax=frontend.f_max,
        classes_num=527,
    ).eval()
    full = model.state_dict()
    full.update(state)
    model.load_state_dict(full)

    def run(wave: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(wave)["clipwise_output"]

    return run


def time_interleaved(
    runners: dict[str, Runner], wave: torch.Tensor, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per call of each runner: one warm-up each, then
    ``repeats`` rounds in turn (so a change in machine load hits every runner alike)."""
    for run in runners.values():
        run(wave)
    wall: dict[str, list[float]] = {key: [] for key in runners}
    cpu: dict[str, list[float]] = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(wave)
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(MODELS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"],
                        help="default: fp32, and bf16 where the CPU has native bfloat16")
    parser.add_argument("--jit", action="store_true", help="trace and freeze cnn14/cnn-transformer as `calitag batch`")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from calitag.pipeline.precision import bf16_support

    native, reason = bf16_support(torch.device("cpu"))
    precisions = args.precisions or (["fp32", "bf16"] if native else ["fp32"])

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}; {CLIP_SECONDS:g}-s clips, best of {args.repeats} "
        f"(median in brackets); CPU s: process CPU seconds of the best call; "
        f"RTF = compute seconds / audio seconds"
    )
    limit = single_layer_limit(args.repeats, precisions)
    print(f"CPU bfloat16: {reason}; calitag rows {'traced and frozen (--jit)' if args.jit else 'eager'}")
    print("single-layer limit (one 3x3 conv, 128 -> 128 channels, 500 x 32, batch 8): "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in limit.items()))
    header = (
        f"{'model':<16} {'implementation':<22} {'weights':<9} {'batch':>5} {'s/batch':>17} "
        f"{'CPU s':>7} {'clips/s':>8} {'RTF':>7} {'speed vs panns':>15} {'GFLOP/s':>8} {'of limit':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        runners: dict[str, Runner] = {}
        for precision in precisions:
            try:
                ours, weights = calitag_runner(name, precision=precision, jit=args.jit)
            except (TaggingError, ImportError) as err:
                print(f"{name:<16} {precision} skipped: {err}")
                continue
            runners[f"calitag {precision}"] = ours
        if not runners:
            continue
        gflop = network_gflop(name)
        if name == "cnn14":
            try:
                from calitag.models import cnn14

                state = cnn14.load(None, seed=0).state_dict()  # the calitag runners use seed 0 too
                runners[PANNS] = panns_cnn14_runner(state)
            except ImportError as err:
                print(f"{'cnn14':<16} panns-inference side skipped: {err}")
        spec = MODELS[name]
        for batch in args.batch_sizes:
            wave = waveforms(spec.frontend.sample_rate, batch)
            if PANNS in runners:
                ours_key = next(iter(runners))
                diff = float((runners[ours_key](wave) - runners[PANNS](wave)).abs().max())
            wall, cpu = time_interleaved(runners, wave, args.repeats)
            best = {key: min(v) for key, v in wall.items()}
            for key, values in wall.items():
                ratio = ""
                if PANNS in runners:
                    ratio = f"{best[PANNS] / best[key]:.2f}x"
                rate = gflop_s = of_limit = ""
                if gflop is not None:
                    rate = batch * gflop / best[key]
                    gflop_s = f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}"
                    key_precision = "bf16" if key.endswith("bf16") else "fp32"
                    of_limit = f"{rate / limit[key_precision]:.0%}" if key_precision in limit else ""
                timing = f"{best[key]:.3f} ({statistics.median(values):.3f})"
                rtf = best[key] / (batch * CLIP_SECONDS)
                print(
                    f"{name:<16} {key:<22} {weights:<9} {batch:>5} {timing:>17} "
                    f"{min(cpu[key]):>7.3f} {batch / best[key]:>8.2f} {rtf:>7.4f} {ratio:>15} {gflop_s:>8} {of_limit:>8}"
                )
            if PANNS in runners:
                print(f"{'':<16} max |{ours_key} - panns| clip score: {diff:.2e}")
        if gflop is not None:
            print(f"{'':<16} network work: {gflop:.2f} GFLOP per 10-s clip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
