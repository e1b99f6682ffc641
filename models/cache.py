"""The model cache, generic part: where it is, file digests, verified-file stamps, placing files.

Nothing here knows a model: checkpoints.py maps registry entries onto these helpers. The cache
folder is, in order of precedence, the ``cache_dir`` argument (``--cache-dir``), ``$CALITAG_CACHE``,
``$XDG_CACHE_HOME/calitag``, ``~/.cache/calitag``. Nothing is read or written at import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from calitag._fileio import atomic_output, write_atomic
from calitag.errors import CacheError, CheckpointError, ChecksumError, DownloadError

logger = logging.getLogger(__name__)

ENV_CACHE = "CALITAG_CACHE"
CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0
ProgressCallback = Callable[[int, int], None]


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


def check_cache_root(folder: Path) -> Path:
    """``folder`` if it is usable as the cache root: absent (made when a file is placed), or a folder that can be
    listed.

    Raises
    ------
    CacheError
        A name the file system refuses (too long, a part that is a file) or a folder that cannot be listed
        (permissions); the message names the folder and the settings to change.
    """
    hint = f"set ${ENV_CACHE} or --cache-dir to a folder you can read and write"
    try:
        with os.scandir(folder):
            pass
    except (FileNotFoundError, NotADirectoryError):  # made (or refused, with its own message) when a file is placed
        return folder
    except OSError as err:
        raise CacheError(f"cannot use cache folder {folder}: {err.strerror or err}: {hint}") from None
    return folder


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


def write_stamp(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now: size, mtime) has the sha256 ``sha256``."""
    try:
        write_atomic(_stamp_path(path), _stamp_of(path, sha256))
    except OSError as err:  # a read-only cache still works, it just re-hashes
        logger.debug("cannot write %s: %s", _stamp_path(path), err)


def known_sha256(path: str | Path) -> str | None:
    """The sha256 of ``path`` recorded by a fresh verification stamp, without hashing; None if unknown."""
    path = Path(path)
    try:
        recorded = _stamp_path(path).read_text()
        sha256 = recorded.split(" ", 1)[0]
        return sha256 if recorded == _stamp_of(path, sha256) else None
    except OSError:
        return None


def verified(
    path: str | Path, *, sha256: str | None, size_bytes: int | None = None, md5: str | None = None, what: str = ""
) -> bool:
    """True when ``path`` exists and matches; hashed in full only when its stamp is missing or stale.

    Returns
    -------
    bool
        False when ``path`` is not a file; True when it matches (or ``sha256`` is None).

    Raises
    ------
    ChecksumError
        When the file differs from the expected one.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if sha256 is None:
        return True
    try:
        if _stamp_path(path).read_text() == _stamp_of(path, sha256.lower()):
            return True
    except OSError:
        pass
    verify_file(path, sha256=sha256, size_bytes=size_bytes, md5=md5, what=what or path.name)
    write_stamp(path, sha256.lower())
    return True


# --- placing files in the cache -----------------------------------------------------------------


def writable_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) and check that files can be written in it.

    Raises
    ------
    CacheError
        When a part of the path is a file, or the folder cannot be created or written (read-only
        file system, permissions); the message names the cache settings to change.
    """
    folder = Path(folder)
    hint = f"set ${ENV_CACHE} or --cache-dir to a writable folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CacheError(f"cache folder {folder} is not a folder (a file has that name): {hint}") from None
    except NotADirectoryError:
        raise CacheError(f"cache folder {folder}: a part of that path is a file, not a folder: {hint}") from None
    except OSError as err:
        raise CacheError(f"cannot create cache folder {folder}: {err.strerror}: {hint}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CacheError(f"cache folder {folder} is not writable: {hint}")
    return folder


def link_into_place(tmp: Path, dest: Path) -> None:
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


def copy_verified(
    source: Path, dest: Path, *, sha256: str | None, size_bytes: int | None = None, md5: str | None = None
) -> Path:
    """Copy ``source`` to ``dest`` under a temporary name, verify the copy, link it into place and stamp it.

    Raises
    ------
    ChecksumError
        When the copy is not the expected file (nothing is left in the cache).
    CheckpointError
        When ``dest`` already exists (it is never replaced).
    """
    writable_folder(dest.parent)
    digest, check_md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    try:
        with atomic_output(dest, replace=False, mode=0o644) as out, open(source, "rb") as handle:
            while block := handle.read(CHUNK_BYTES):
                out.write(block)
                digest.update(block)
                check_md5.update(block)
                size += len(block)
            what = f"{dest.name} file"
            if size_bytes is not None and size != size_bytes:
                raise ChecksumError(f"{source}: not the expected {what}: expected {size_bytes} bytes, got {size}")
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise ChecksumError(
                    f"{source}: sha256 mismatch for {what}: expected {sha256}, got {digest.hexdigest()}; "
                    "the file is corrupt or not the published one"
                )
            if md5 is not None and check_md5.hexdigest() != md5.lower():
                raise ChecksumError(f"{source}: md5 mismatch for {what}: expected {md5}, got {check_md5.hexdigest()}")
    except FileExistsError:
        raise CheckpointError(
            f"{dest} already exists and was left as it is; move it away to place a new file there"
        ) from None
    write_stamp(dest, digest.hexdigest())
    return dest


class _CallbackBar:
    """The part of tqdm's interface pooch drives, reporting to ``on_progress(done, total)``."""

    def __init__(self, on_progress: ProgressCallback) -> None:
        self.on_progress, self.total, self.done = on_progress, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        self.on_progress(self.done, self.total)

    def reset(self) -> None:
        self.done = 0

    def close(self) -> None:
        self.on_progress(self.done, self.total or self.done)


def download(
    url: str, dest: Path, *, sha256: str, size_bytes: int | None = None, md5: str | None = None,
    on_progress: ProgressCallback | None = None, timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download ``url`` into ``dest`` with pooch (sha256 checked by pooch, size and md5 here).

    The file is fetched into a temporary folder beside ``dest`` and linked into place only once
    verified; an existing ``dest`` is never replaced.

    Raises
    ------
    DownloadError
        When the download fails (no network, HTTP error); the caller says what to do instead.
    ChecksumError
        When the downloaded file is not the expected one.
    """
    import pooch  # imported only to download

    writable_folder(dest.parent)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        bar = _CallbackBar(on_progress) if on_progress else False
        try:
            fetched = pooch.retrieve(
                url, known_hash=f"sha256:{sha256.lower()}", fname=dest.name, path=tmp, progressbar=bar,
                downloader=pooch.HTTPDownloader(progressbar=bar, timeout=timeout_s),
            )
        except ValueError as err:  # pooch's hash mismatch
            raise ChecksumError(f"{url}: the downloaded file is not the published one: {err}") from err
        except Exception as err:  # requests' connection, timeout and HTTP errors
            raise DownloadError(f"download from {url} failed: {err}") from err
        verify_file(fetched, sha256=None, size_bytes=size_bytes, md5=md5, what=dest.name)
        link_into_place(Path(fetched), dest)
    write_stamp(dest, sha256.lower())
    return dest
