"""Start-up cost of the commands a user runs most: wall clock (median of N runs) next to import time.

    python benchmarks/startup.py [--runs 5] [--clip audio_samples/speech_01.wav]

Each command runs in a fresh interpreter, as a user runs it. The second column is the same command
under ``python -X importtime``: the total import time it reports (the sum over top-level imports),
and the module that took longest; the third says whether torch was imported at all.

Commands:
  help            calitag --help
  tag             calitag tag CLIP (the default model, yamnet; its weights cached beforehand)
  thresholds fit  calitag thresholds fit on AudioSet-sized seeded scores (15,278 x 527, method sgl)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The CLI as the console script runs it, plus a report of whether torch got imported.
RUN_CLI = (
    "import sys\n"
    "from calitag.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:], prog_name='calitag')\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    "sys.stderr.write(f\"\\n#torch={'torch' in sys.modules}\\n\")\n"
    "sys.exit(code)\n"
)


def run(args: list[str], *, importtime: bool = False) -> tuple[float, str]:
    """Wall seconds of one `calitag ARGS` in a fresh interpreter, and its stderr."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", RUN_CLI, *args]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, cwd=REPO)  # the installed calitag
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"calitag {' '.join(args)} failed:\n{process.stderr[-2000:]}")
    return seconds, process.stderr


def import_summary(stderr: str) -> tuple[float, str]:
    """Total import seconds (top-level imports summed) and the slowest top-level import."""
    total, slowest = 0.0, ("", 0)
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) == 1:  # top level: one space of indentation
            cumulative = int(match.group(2))
            total += cumulative
            if cumulative > slowest[1]:
                slowest = (match.group(4), cumulative)
    return total / 1e6, f"{slowest[0]} {slowest[1] / 1e6:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clip", type=Path, default=REPO / "audio_samples" / "speech_01.wav")
    args = parser.parse_args()

    import numpy as np

    from calitag.models.checkpoints import fetch
    from calitag.thresholds.synthetic import synthetic_scores

    fetch("yamnet")  # weights in the cache, so `tag` measures start-up and inference, not a download
    with tempfile.TemporaryDirectory() as tmp:
        scores_path = Path(tmp) / "audioset_sized.npz"
        scores, labels = synthetic_scores(seed=0)
        np.savez(scores_path, val_scores=scores, val_labels=labels)
        commands = {
            "calitag --help": ["--help"],
            "calitag tag (yamnet, one clip)": ["tag", str(args.clip)],
            "calitag thresholds fit (15,278 x 527)": ["thresholds", "fit", str(scores_path), "--json"],
        }
        print(f"{'command':<40} {'wall s (median of ' + str(args.runs) + ')':>22} {'imports s':>10}  "
              f"{'slowest import':<28} torch")
        for label, cli_args in commands.items():
            walls = []
            for _ in range(args.runs):
                seconds, stderr = run(cli_args)
                walls.append(seconds)
            _, traced = run(cli_args, importtime=True)
            total, slowest = import_summary(traced)
            torch_loaded = "yes" if "#torch=True" in stderr else "no"
            print(f"{label:<40} {statistics.median(walls):>22.2f} {total:>10.2f}  {slowest:<28} {torch_loaded}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; `python -c pass` "
          f"{statistics.median(_bare() for _ in range(args.runs)):.2f} s")


def _bare() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
