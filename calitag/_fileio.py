"""Atomic file output: the one place that writes a file under a temporary name and moves it into place.

Used by every stage that writes (thresholds files, score caches, event tables, model cache), so that a
killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _default_mode() -> int:
    # What open() would give a new file: 0o666 minus the process umask (os.umask can only be read by setting it).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, binary: bool = True, replace: bool = True, mode: int | None = None
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success move it to ``path``, on error remove it.

    Parameters
    ----------
    path : path-like
        The final file name. Its folder must exist.
    binary : bool
        Open the temporary file in binary (default) or text mode (UTF-8, ``\\n`` newlines).
    replace : bool
        Replace an existing ``path`` (default). With ``replace=False`` the file is linked into place and
        ``FileExistsError`` is raised if ``path`` appeared meanwhile; nothing existing is ever overwritten.
    mode : int, optional
        Permission bits of the result; by default those a new file gets from ``open`` (0o666 minus the umask),
        not the 0o600 of a temporary file.

    Raises
    ------
    FileExistsError
        With ``replace=False``, when ``path`` exists.
    OSError
        When the folder is missing or not writable, or the disk is full; the temporary file is removed.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.fchmod(fd, _default_mode() if mode is None else mode)
        handle = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(
    path: str | os.PathLike, data: bytes | str, *, replace: bool = True, mode: int | None = None
) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; see :func:`atomic_output`."""
    with atomic_output(path, binary=isinstance(data, bytes), replace=replace, mode=mode) as handle:
        handle.write(data)
