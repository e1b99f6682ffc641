"""Ray engine overhead: `calitag batch --engine ray` against the local engine on the same files, one machine.

Both engines tag the same directory of 10-s 44.1 kHz clips (made as benchmarks/batch.py makes them)
with the same model; the local engine runs ``run_batch(engine="local")`` with decoder processes, the Ray engine a
local Ray instance with ``--actors`` scoring actors and decoding tasks beside them. Ray's start-up
(``ray.init``) is timed apart: on a cluster it is paid once, not per job. Each engine runs once to
warm up (model load, actor start-up) on a few files, then on all of them; the clip scores of the
two are compared. With one actor, Ray's files/s is the per-actor throughput that a cluster
multiplies (files are independent), as long as the decoders keep up.

    python benchmarks/batch_ray.py [--files 200] [--model yamnet] [--actors 1] [--workers 1]

A script, never part of the test run. It prints one table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from batch import CLIP_S, make_clips  # benchmarks/ is on sys.path when a script in it runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--model", default="yamnet")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import ray

    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.ray_engine import RayOptions
    from calitag.pipeline.tagger import Tagger

    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(p) for p in make_clips(Path(tmp), args.files)]
        tagger = Tagger.load(args.model, device="cpu", batch_size=args.batch_size, optimize=True)
        run_batch(tagger, paths[:4], workers=args.workers, with_tags=False)  # warm-up
        start = time.perf_counter()
        local = run_batch(tagger, paths, workers=args.workers, with_tags=False)
        local_s = time.perf_counter() - start

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        init_s = time.perf_counter() - start
        try:
            options = RayOptions(actors=args.actors)
            start = time.perf_counter()
            run_batch(tagger, paths[:4], engine="ray", ray=options, with_tags=False)
            warm_s = time.perf_counter() - start
            start = time.perf_counter()
            remote = run_batch(tagger, paths, engine="ray", ray=options, with_tags=False)
            ray_s = time.perf_counter() - start
        finally:
            ray.shutdown()
    mine = {r.path: r.scores for r in local}
    diff = max(float(np.abs(mine[r.path] - r.scores).max()) for r in remote)
    audio_s = args.files * CLIP_S
    print(f"{args.files} clips of {CLIP_S:.0f} s at 44100 Hz, model {args.model}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':<40} {'seconds':>8} {'files/s':>8} {'x real time':>12}")
    print(f"{f'local engine (workers {args.workers})':<40} {local_s:>8.2f} {args.files / local_s:>8.2f} "
          f"{audio_s / local_s:>12.1f}")
    print(f"{f'ray engine ({args.actors} actor(s))':<40} {ray_s:>8.2f} {args.files / ray_s:>8.2f} "
          f"{audio_s / ray_s:>12.1f}")
    print(f"ray / local throughput: {local_s / ray_s:.2f}x   per actor: {args.files / ray_s / args.actors:.2f} files/s   "
          f"max |score difference|: {diff:.2e}")
    print(f"(ray.init {init_s:.1f} s and a 4-file warm-up job {warm_s:.1f} s, not included)")


if __name__ == "__main__":
    main()
