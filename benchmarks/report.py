"""Size and speed of the HTML calibration report for an AudioSet-sized class list.

    python benchmarks/report.py [--clips 3000] [--classes 500]

Synthetic scores (beta-distributed positives and negatives, 0.3-5 % positives per class, every
class labelled, so every class gets a figure). Prints the seconds to build the report (wall and
this process's CPU), its size, and, where Debian's /usr/bin/chromium and playwright are present,
the seconds headless Chromium takes to load it and to decode every figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser_seconds(path: Path) -> tuple[float, float] | None:
    """(load, all images decoded) seconds in headless Chromium, or None where it is absent."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.is_file():
        return None
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM),
                                                                args=CHROMIUM_ARGS, headless=True,
                                                                viewport={"width": 1366, "height": 800})
        page = context.new_page()
        start = time.perf_counter()
        page.goto(path.as_uri(), wait_until="load")
        loaded = time.perf_counter() - start
        # Figures are lazy-loaded: force them all, as scrolling to the end would.
        page.evaluate("Promise.all(Array.from(document.images).map(i => { i.loading = 'eager'; return i.decode(); }))")
        decoded = time.perf_counter() - start
        context.close()
    return loaded, decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=500)
    args = parser.parse_args()
    from calitag.thresholds.html_report import report

    rng = np.random.default_rng(0)
    labels = rng.random((args.clips, args.classes)) < rng.uniform(0.003, 0.05, args.classes)
    scores = np.where(labels, rng.beta(4, 2, labels.shape), rng.beta(1.2, 6, labels.shape))
    fitted = rng.uniform(0.1, 0.6, args.classes)
    names = [f"class {i}" for i in range(args.classes)]
    report(scores[:50, :2], labels[:50, :2], fitted[:2], class_names=names[:2])  # lazy imports out of the timing
    wall, cpu = time.perf_counter(), time.process_time()
    text = report(scores, labels, fitted, class_names=names, meta={"model": "synthetic"})
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    figures = text.count("data-kind='class'")
    print(f"{args.classes} classes x {args.clips} clips, {figures} class figures")
    print(f"build: {wall:.1f} s wall, {cpu:.1f} s CPU ({1000 * cpu / max(figures, 1):.0f} ms CPU per figure)")
    print(f"size: {len(text.encode()) / 1e6:.2f} MB")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "report.html"
        path.write_text(text, encoding="utf-8")
        seconds = browser_seconds(path)
    if seconds is None:
        print("chromium: not measured (/usr/bin/chromium or playwright absent)")
    else:
        print(f"chromium: loaded in {seconds[0]:.2f} s, every figure decoded after {seconds[1]:.2f} s")


if __name__ == "__main__":
    main()
