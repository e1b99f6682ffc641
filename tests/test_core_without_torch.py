"""The core (YAMNet, thresholds files and commands, --help) runs without importing torch; torch models say what to install."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calitag._extras import TORCH_CPU_INDEX, TORCH_REQUIREMENT
from calitag.models.registry import get_spec

REPO = Path(__file__).resolve().parent.parent

# Runs `calitag ARGS...` in a fresh interpreter and writes what it imported to $CALITAG_PROBE.
# With CALITAG_BLOCK_TORCH=1, `import torch` fails there as it does where torch is not installed.
PROBE = r"""
import importlib.abc, json, os, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

if os.environ.get("CALITAG_BLOCK_TORCH") == "1":
    sys.meta_path.insert(0, NoTorch())
from calitag.cli import main
try:
    main(sys.argv[1:], prog_name="calitag")
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open(os.environ["CALITAG_PROBE"], "w") as handle:
    json.dump({"code": code, "modules": sorted(m for m in ("torch", "numpy", "scipy", "librosa", "sklearn")
                                               if m in sys.modules)}, handle)
"""


def run_calitag(tmp_path: Path, *args: str, block_torch: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
    """Run the CLI in a subprocess; return its probe (exit code, heavy modules imported) and the process."""
    probe = tmp_path / "probe.json"
    env = {**os.environ, "CALITAG_PROBE": str(probe), "CALITAG_BLOCK_TORCH": "1" if block_torch else "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                             cwd=REPO, timeout=600)
    return json.loads(probe.read_text()), process


def imports_torch_at_module_level(path: Path) -> bool:
    """Whether a module has a top-level `import torch` / `from torch ...` statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def test_help_imports_nothing_heavy(tmp_path):
    """`calitag --help` lists the commands without importing torch, numpy or scipy."""
    probe, process = run_calitag(tmp_path, "--help")
    assert probe == {"code": 0, "modules": []}
    assert "calibrate-events" in process.stdout


def test_thresholds_evaluate_runs_without_torch(tmp_path, tagger_like_scores):
    """`calitag thresholds evaluate` works where torch cannot be imported, and never tries to."""
    from calitag.thresholds.io import Thresholds

    scores, labels, names = tagger_like_scores
    np.savez(tmp_path / "scores.npz", val_scores=scores, val_labels=labels, classes=np.array(names))
    Thresholds(values=np.full(len(names), 0.4), class_names=names).save(tmp_path / "th.json")
    probe, process = run_calitag(tmp_path, "thresholds", "evaluate", str(tmp_path / "scores.npz"),
                                 "--thresholds", str(tmp_path / "th.json"), "--json", block_torch=True)
    assert probe["code"] == 0, process.stderr
    assert "torch" not in probe["modules"]
    assert json.loads(process.stdout)["split"] == "val"


def test_torch_model_without_torch_names_the_extra(tmp_path, audio_samples):
    """Asking for a torch model where torch is missing exits 1 with one line: the pinned torch from the CPU index, then the
    checkout's torch extra (calitag is not on PyPI), no traceback."""
    probe, process = run_calitag(tmp_path, "tag", str(audio_samples / "speech_01.wav"), "--model", "debug",
                                 block_torch=True)
    assert probe["code"] == 1
    assert f"pip install {TORCH_REQUIREMENT} --index-url {TORCH_CPU_INDEX}, then pip install -e \".[torch]\"" in process.stderr
    assert "calitag[torch]" not in process.stderr and "Traceback" not in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1


def test_missing_package_of_an_architecture_names_the_extra(monkeypatch):
    """A model whose architecture needs a package that is not installed (h5py for the CRNN's weights) raises
    MissingDependencyError naming the torch extra, not a bare ImportError."""
    from calitag.errors import MissingDependencyError
    from calitag.models.backends import build_model

    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` fails as where it is not installed
    monkeypatch.delitem(sys.modules, "calitag.models.keras_h5", raising=False)
    spec = dataclasses.replace(get_spec("crnn-dcase2019"), builder="calitag.models.keras_h5:read_keras_weights")
    with pytest.raises(MissingDependencyError, match=r"'crnn-dcase2019' needs h5py.*the torch extra.*\.\[torch\]"):
        build_model(spec, None)


@pytest.mark.skipif(get_spec("yamnet").runtime == "torch",
                    reason="YAMNet is registered with the torch frontend here (runtime 'numpy' comes with its "
                           "numpy frontend)")
def test_tag_with_yamnet_never_imports_torch(tmp_path, yamnet_cached, audio_samples):
    """`calitag tag` with the default model tags a clip without importing torch."""
    probe, process = run_calitag(tmp_path, "tag", str(audio_samples / "speech_01.wav"), block_torch=True)
    assert probe["code"] == 0, process.stderr
    assert "torch" not in probe["modules"] and "Speech" in process.stdout


@pytest.mark.skipif(imports_torch_at_module_level(REPO / "thresholds" / "solvers.py"),
                    reason="the threshold solvers import torch at module level here (numpy SGL not merged)")
def test_thresholds_fit_never_imports_torch(tmp_path, tagger_like_scores):
    """`calitag thresholds fit` (SGL, fast engine) runs without importing torch."""
    scores, labels, names = tagger_like_scores
    np.savez(tmp_path / "scores.npz", val_scores=scores, val_labels=labels, classes=np.array(names))
    probe, process = run_calitag(tmp_path, "thresholds", "fit", str(tmp_path / "scores.npz"), "--json",
                                 block_torch=True)
    assert probe["code"] == 0, process.stderr
    assert "torch" not in probe["modules"]
