"""A newcomer's failures are one clear line, and the commands' small inconsistencies are gone (issue 26)."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from calitag._extras import TORCH_CPU_INDEX, install_hint
from calitag._names import MAX_SHOWN, unknown_names_hint
from calitag.cli import main

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_torch_advice_names_the_cpu_wheel_index():
    """The torch install advice pins torch from PyTorch's CPU index (no CUDA build) and never names PyPI's calitag."""
    hint = install_hint("torch")
    assert f"--index-url {TORCH_CPU_INDEX}" in hint and TORCH_CPU_INDEX.endswith("/whl/cpu")
    assert "calitag[torch]" not in hint


def test_report_without_its_extra_fails_in_one_line_before_writing(yamnet_cached, tmp_path, monkeypatch, audio_samples):
    """`calibrate --report` without matplotlib exits 1 with one line naming the report extra; no th.json is written."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "matplotlib" else real(name, *a, **k))
    out = tmp_path / "th.json"
    result = invoke("calibrate", str(audio_samples), "--labels", str(audio_samples / "labels.csv"), "--out", str(out),
                    "--report", str(tmp_path / "r.html"))
    assert result.exit_code == 1 and not out.exists()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and 'pip install -e ".[report]"' in errors[0] and "Traceback" not in result.output


def test_batch_refuses_out_dash(tmp_path, monkeypatch, audio_samples):
    """`batch --out -` is refused with the reason, and no file named `-` appears."""
    monkeypatch.chdir(tmp_path)
    result = invoke("batch", str(audio_samples), "--out", "-")
    assert result.exit_code == 2 and "--out -" in result.output
    assert not (tmp_path / "-").exists()


def test_tag_recursive_enters_sub_folders(yamnet_cached, tmp_path, audio_samples):
    """`tag --recursive DIR` tags the audio files of DIR's sub-folders; without it they are left out."""
    (tmp_path / "sub").mkdir()
    shutil.copy(audio_samples / "speech_01.wav", tmp_path / "top.wav")
    shutil.copy(audio_samples / "music_01.wav", tmp_path / "sub" / "inner.wav")
    flat = invoke("tag", str(tmp_path))
    deep = invoke("tag", "--recursive", str(tmp_path))
    assert deep.exit_code == 0 and "inner.wav: Music" in deep.output and "top.wav: Speech" in deep.output
    assert "inner.wav" not in flat.output.replace("(--recursive to enter it)", "")


def test_progress_never_prints_nan_nor_more_than_the_total(capsys):
    """Before any audio is scored the ETA is `unknown`; decoded audio past the headers' total raises the total."""
    from calitag.cli._common import Progress
    from calitag.pipeline.engine import BatchProgress

    bar = Progress(3, "tagging", every_s=0.0, audio_total_s=62.0)
    bar(BatchProgress(done=0, total=3, failed=0, elapsed_s=11.0, audio_s=0.0, audio_total_s=62.0))
    bar(BatchProgress(done=2, total=3, failed=0, elapsed_s=22.0, audio_s=63.4, audio_total_s=62.0))
    lines = capsys.readouterr().err.splitlines()
    assert "ETA unknown" in lines[0] and "nan" not in " ".join(lines)
    assert lines[1].startswith("63/63 s of audio")


def test_unknown_names_hint_is_short_with_close_matches():
    """Unknown names get close matches; past MAX_SHOWN they are counted, so 521 class names never fill a line."""
    known = [f"class {i}" for i in range(521)] + ["Alarm clock"]
    hint = unknown_names_hint(["Alarm clok", *[f"x{i}" for i in range(20)]], known)
    assert "'Alarm clok' (did you mean 'Alarm clock'?)" in hint
    assert f"and {21 - MAX_SHOWN} more" in hint and len(hint) < 300


def test_calibrate_events_wrong_label_suggests_close_matches(yamnet_cached, tmp_path, audio_samples):
    """A DESED label given to yamnet is one short error line with a close match, not every class name."""
    scapes = audio_samples / "soundscapes"
    result = invoke("calibrate-events", str(scapes), "--events", str(scapes / "strong_labels_tune.tsv"),
                    "--model", "yamnet", "--out", str(tmp_path / "sed.json"))
    error = next(line for line in result.output.splitlines() if line.startswith("error:"))
    assert result.exit_code == 1 and "'Alarm_bell_ringing' (did you mean" in error and len(error) < 400


def test_kfold_with_rare_classes_warns_nothing():
    """Stratified K folds over clips whose rarest classes have fewer clips than folds raise no library warning."""
    from calitag.thresholds.splits import kfold_splits

    targets = np.zeros((12, 3), dtype=np.float32)
    targets[:8, 0] = 1
    targets[8:10, 1] = 1   # 2 clips of class 1 for 3 folds
    targets[10:11, 2] = 1  # 1 clip of class 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folds = list(kfold_splits(targets, n_folds=3, seed=0))
    held = np.sort(np.concatenate([held for _, held in folds]))
    assert len(folds) == 3 and np.array_equal(held, np.arange(12))


def test_thresholds_fit_reads_the_calibrate_score_cache(yamnet_cached, tmp_path, audio_samples):
    """The score cache `calibrate` leaves fits with the clip label file: every labeled clip, the labeled classes."""
    out = tmp_path / "th.json"
    assert invoke("calibrate", str(audio_samples), "--labels", str(audio_samples / "labels.csv"),
                  "--out", str(out)).exit_code == 0
    cache = tmp_path / "th.yamnet.scores.npz"
    refused = invoke("thresholds", "fit", str(cache))
    fitted = invoke("thresholds", "fit", str(cache), "--labels", str(audio_samples / "labels.csv"),
                    "--method", "exact", "--out", str(tmp_path / "th_exact.json"))
    assert refused.exit_code == 2 and "--labels" in refused.output
    assert fitted.exit_code == 0 and "on 45 clips x 7 classes" in fitted.output
    assert (tmp_path / "th_exact.json").is_file()
