"""Atomic file output: the one place that writes a file under a temporary name and moves it into place.

Used by every stage that writes (thresholds files, score caches, event tables, model cache), so that a
killed process never leaves a half-written file under the final name. :func:`check_output` is the one rule
every writing command applies to its output path before doing any work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from calitag.errors import OutputError


def _default_mode() -> int:
    # What open() would give a new file: 0o666 minus the process umask (os.umask can only be read by setting it).
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class WriteError(OutputError, OSError):
    """A file could not be written (a full disk, permissions, a read-only file system): one line naming the file
    and what to do, and still an OSError with the cause's ``errno`` for callers that fall back on OSError."""

    @classmethod
    def of(cls, err: OSError, target: Path) -> WriteError:
        hint = ("; free some space and run the command again" if err.errno in (errno.ENOSPC, errno.EDQUOT)
                else "")
        made = cls(f"cannot write {target}: {err.strerror or err}{hint}")
        made.errno, made.strerror = err.errno, err.strerror
        return made

    def __str__(self) -> str:
        return str(self.args[0])  # the message, not OSError's "[Errno N] strerror"


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
    WriteError
        (an OutputError and an OSError) When the folder is missing or not writable, or the disk is full; the
        temporary file is removed.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as err:
        raise WriteError.of(err, target) from err
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
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, (FileExistsError, WriteError)):
            raise WriteError.of(err, target) from err
        raise


def write_atomic(
    path: str | os.PathLike, data: bytes | str, *, replace: bool = True, mode: int | None = None
) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; see :func:`atomic_output`."""
    with atomic_output(path, binary=isinstance(data, bytes), replace=replace, mode=mode) as handle:
        handle.write(data)


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):  # realpath, unlike Path.resolve, never raises on a loop
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    kind: str,
    is_kind: Callable[[Path], bool] | None = None,
    force: bool = False,
) -> Path:
    """Check, before any work, that a command may write ``path``: the one overwrite rule of every writing command.

    ``path`` must not be one of the command's inputs (same resolved path or same inode), even with ``force``; its
    folder must exist; an existing ``path`` must be a file of the command's own kind (``is_kind``) unless ``force``.

    Parameters
    ----------
    path : path-like
        The output file.
    inputs : iterable of path-like
        Files the command reads (audio files, label files, score files, checkpoints).
    kind : str
        What the command writes, for messages (e.g. ``"thresholds file"``).
    is_kind : callable or None
        Tells whether an existing file is the command's own kind of output, which may be replaced; None: no
        existing file is (it is replaced only with ``force``).
    force : bool
        Replace an existing file of any kind (never an input).

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    OutputError
        When ``path`` is an input, a folder, in a missing folder, or an existing file of another kind without ``force``.
    """
    target = Path(path)
    for source in inputs:
        if _same_file(target, Path(source)):
            raise OutputError(f"refusing to write {target}: it is an input of this command ({source}); "
                              "choose another output file")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: folder {folder} does not exist; create it first")
    check_writable(folder, what=str(target))
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; expected a file name")
    if (target.exists() or target.is_symlink()) and not force:
        if is_kind is None or not target.is_file() or not is_kind(target):
            what = f"it is not a {kind}" if is_kind is not None else "it exists"
            raise OutputError(f"refusing to overwrite {target}: {what}; pass --force to replace it, "
                              "or choose another output file")
    return target


def check_writable(folder: str | os.PathLike, *, what: str) -> None:
    """Check that files can be created in ``folder`` by creating and removing one (permission bits say nothing for
    root, ACLs or a read-only mount).

    Raises
    ------
    OutputError
        When a file cannot be created there; the message names ``what`` was to be written and why.
    """
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".calitag-write-check-")
    except OSError as err:
        raise OutputError(f"cannot write {what}: cannot create a file in {folder} ({err.strerror or err}); "
                          "choose a folder you can write") from None
    os.close(fd)
    os.unlink(probe)


def is_json_object_with(path: str | os.PathLike, keys: Iterable[str], *, max_bytes: int = 64 << 20) -> bool:
    """Whether ``path`` holds one JSON object with all of ``keys`` (False for anything unreadable or larger)."""
    import json

    try:
        if os.path.getsize(path) > max_bytes:
            return False
        with open(path, "rb") as handle:
            document = json.loads(handle.read())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and all(key in document for key in keys)
