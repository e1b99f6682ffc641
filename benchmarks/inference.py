"""Inference speed of calitag's models, and calitag's Cnn14 against panns-inference's.

For each model: clips per second and real-time factor (compute seconds per second of audio) on
10-s clips, batch 1 and 8, timed from the waveform (frontend included) to the clip scores.
Random weights where no real ones exist (cnn14, cnn-transformer); crnn-dcase2019 loads the
published Keras file from ../shared/models when present; yamnet runs only when its checkpoint
is already in the calitag cache (``calitag models fetch yamnet``). cnn14 is also run with
panns-inference's own ``Cnn14`` class (its forward includes its torchlibrosa frontend) with the
same weights on the same input, the calls interleaved so both see the same machine load.

    python benchmarks/inference.py [--repeats 5] [--batch-sizes 1 8] [--models cnn14 ...]

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
from calitag.pipeline.features import LogMel

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


def calitag_runner(name: str) -> tuple[Runner, str]:
    """Waveforms (batch, n_samples) -> clip scores with calitag's frontend and model."""
    spec = MODELS[name]
    checkpoint, weights = checkpoint_for(name)
    model = spec.resolve_builder()(checkpoint, seed=0)
    frontend = LogMel(spec.frontend)
    prepare: Callable[[torch.Tensor], torch.Tensor] = torch.nn.Identity()
    if name == "crnn-dcase2019":
        from calitag.models.crnn import prepare_features

        prepare = prepare_features

    def run(wave: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(prepare(frontend(wave)))

    return run, weights


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
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.2f}; {CLIP_SECONDS:g}-s clips, best of {args.repeats} "
        f"(median in brackets); CPU s: process CPU seconds of the best call; "
        f"RTF = compute seconds / audio seconds"
    )
    header = (
        f"{'model':<16} {'implementation':<22} {'weights':<9} {'batch':>5} {'s/batch':>17} "
        f"{'CPU s':>7} {'clips/s':>8} {'RTF':>7} {'speed vs panns':>15}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        try:
            ours, weights = calitag_runner(name)
        except (TaggingError, ImportError) as err:
            print(f"{name:<16} skipped: {err}")
            continue
        runners = {"calitag": ours}
        if name == "cnn14":
            try:
                from calitag.models import cnn14

                state = cnn14.load(None, seed=0).state_dict()
                runners[PANNS] = panns_cnn14_runner(state)
            except ImportError as err:
                print(f"{'cnn14':<16} panns-inference side skipped: {err}")
        spec = MODELS[name]
        for batch in args.batch_sizes:
            wave = waveforms(spec.frontend.sample_rate, batch)
            if len(runners) > 1:
                diff = float((runners["calitag"](wave) - runners[PANNS](wave)).abs().max())
            wall, cpu = time_interleaved(runners, wave, args.repeats)
            best = {key: min(v) for key, v in wall.items()}
            for key, values in wall.items():
                ratio = ""
                if len(runners) > 1:
                    ratio = f"{best[PANNS] / best[key]:.2f}x"
                timing = f"{best[key]:.3f} ({statistics.median(values):.3f})"
                rtf = best[key] / (batch * CLIP_SECONDS)
                print(
                    f"{name:<16} {key:<22} {weights:<9} {batch:>5} {timing:>17} "
                    f"{min(cpu[key]):>7.3f} {batch / best[key]:>8.2f} {rtf:>7.4f} {ratio:>15}"
                )
            if len(runners) > 1:
                print(f"{'':<16} max |calitag - panns| clip score: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
