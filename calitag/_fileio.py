"""Atomic file output: the one place that writes a file under a temporary name and moves it into place.

Used by every stage that writes (thresholds files, score caches, event tables, model cache), so that a
killed process never leaves a half-written file under the final name. :func:`check_output` is the one rule
every writing command applies to its output path before doing any work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from calitag.errors import OutputError, TaggingError


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


# --- reading inputs: bounded, regular files only -------------------------------------------------

#: Largest label file, score CSV or other text input read whole, in bytes (a label file of ~5 million rows).
MAX_TEXT_BYTES = 256 << 20
#: Largest thresholds or post-processing JSON file, in bytes (a 527-class file with every field is ~0.2 MB).
MAX_JSON_BYTES = 64 << 20
#: Largest total of the arrays of one .npy/.npz input once loaded (uncompressed), in bytes.
MAX_ARRAY_BYTES = 1 << 30
# JSON integers beyond this magnitude are refused: nothing calitag reads needs more than 64 bits.
_MAX_JSON_INT = 1 << 63


def _kind_of(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size_text(n_bytes: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n_bytes >= 1 << shift:
            return f"{n_bytes / (1 << shift):.1f} {unit}"
    return f"{n_bytes} bytes"


def _open_regular(name: str, *, what: str, error: type[TaggingError]) -> IO[bytes]:
    """``name`` opened for reading without blocking (a FIFO without a writer does not hang), if it is a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except FileNotFoundError as err:
        raise error(f"{what} not found: {name}") from err
    except OSError as err:
        raise error(f"cannot read {what} {name}: {err.strerror or err}") from err
    mode = os.fstat(fd).st_mode  # checked on the open file: no other file can take its place meanwhile
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"cannot read {what} {name}: it is {_kind_of(mode)}; expected a regular file")
    return os.fdopen(fd, "rb")


def read_input(path: str | os.PathLike, *, what: str, error: type[TaggingError],
               max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of an input file: the one bounded reader of label, score, thresholds and post-processing files.

    The file is opened without blocking (a FIFO without a writer does not hang), then checked on its
    open descriptor: it must be a regular file (not a device such as ``/dev/zero``, a FIFO or a folder)
    of at most ``max_bytes``; at most ``max_bytes`` are read even if it grows meanwhile.

    Parameters
    ----------
    path : path-like
        The file.
    what : str
        What the file is, for messages (e.g. ``"label file"``).
    error : type of TaggingError
        The error to raise (LabelsError, ScoresError, ThresholdsError, ...).
    max_bytes : int
        The largest size accepted.

    Returns
    -------
    bytes

    Raises
    ------
    TaggingError
        Of type ``error``: a missing or unreadable file, not a regular file, or larger than ``max_bytes``.
    """
    name = os.fspath(path)
    with _open_regular(name, what=what, error=error) as handle:
        size = os.fstat(handle.fileno()).st_size
        too_big = f"{what} {name} is larger than {_size_text(max_bytes)}, the most calitag reads for one"
        if size > max_bytes:
            raise error(f"{too_big} (it holds {_size_text(size)}); split it or check that it is the right file")
        try:
            # As much as fstat says (one more byte tells a growing file), never a max_bytes buffer up front.
            data = handle.read(size + 1)
            if len(data) > size:
                data += handle.read(max_bytes + 1 - len(data))
        except OSError as err:
            raise error(f"cannot read {what} {name}: {err.strerror or err}") from err
    if len(data) > max_bytes:
        raise error(f"{too_big} (it grew while being read)")
    return data


class _OutOfRange:
    """A JSON number that no calitag field can hold (kept as text until its key is known)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _json_float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else _OutOfRange(text)


def _json_int(text: str) -> int | _OutOfRange:
    # Only short digit strings are converted: Python refuses (ValueError) those over 4300 digits.
    if len(text.lstrip("-")) > 19:
        return _OutOfRange(text)
    value = int(text)
    return value if -_MAX_JSON_INT <= value < _MAX_JSON_INT else _OutOfRange(text)


def _find_out_of_range(document: Any) -> tuple[str, str] | None:
    """(key path, number text) of the first number of ``document`` that is out of range, else None."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _OutOfRange):
            return where or "the document", value.text
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def parse_json(text: str | bytes, *, source: str, what: str, error: type[TaggingError]) -> Any:
    """Parse a JSON input, refusing numbers no field can hold: a float that overflows (``1e400``) or an integer
    beyond 64 bits (a 5,000-digit one included), with one error naming the file and the key.

    Raises
    ------
    TaggingError
        Of type ``error``: not JSON, nested too deeply, or a number out of range.
    """
    try:
        document = json.loads(text, parse_float=_json_float, parse_int=_json_int)
    except json.JSONDecodeError as err:
        raise error(f"{what} {source} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise error(f"{what} {source} is not UTF-8 text") from err
    except RecursionError as err:
        raise error(f"{what} {source} nests JSON too deeply to read: it is not a calitag {what}") from err
    found = _find_out_of_range(document)
    if found is not None:
        key, number = found
        shown = number if len(number) <= 24 else f"{number[:12]}...{number[-4:]} ({len(number)} characters)"
        raise error(f"{source}: {key} is {shown}, out of range: expected a finite number (64-bit float or integer)")
    return document


def _npy_header(handle: IO[bytes], *, where: str, error: type[TaggingError]) -> tuple[tuple[int, ...], Any, int]:
    """(shape, dtype, bytes the data takes) from the header of a .npy stream, read before any allocation."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(handle)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    except (ValueError, EOFError, OSError) as err:
        raise error(f"cannot read {where}: {err}") from err
    if dtype.hasobject:
        raise error(f"{where} holds Python objects (dtype {dtype}): calitag reads numbers and strings only, never pickles")
    return tuple(shape), dtype, math.prod(shape) * dtype.itemsize


def _check_declared(where: str, shape: tuple[int, ...], n_bytes: int, available: int, *,
                    error: type[TaggingError]) -> None:
    if n_bytes > available:
        raise error(f"{where} declares an array of shape {shape} ({_size_text(n_bytes)}) but holds only "
                    f"{_size_text(available)}: the file is damaged or not what it claims")


def load_arrays(path: str | os.PathLike, *, what: str, error: type[TaggingError],
                max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, Any]:
    """The arrays of a .npy (key ``""``) or .npz input, checked before anything is allocated or inflated.

    Every array's header (shape, dtype) is read first: its data must fit in the bytes the file (or the
    npz member, by its declared uncompressed size) holds, and all of them together in ``max_bytes``. So a
    192-byte file that declares a 10^6 x 10^6 matrix, or an npz that inflates to gigabytes, is refused
    before any allocation. Object arrays (pickles) are refused.

    Parameters
    ----------
    path : path-like
        A .npy or .npz file (told apart by its content, not its name).
    what : str
        What the file is, for messages (e.g. ``"score file"``).
    error : type of TaggingError
        The error to raise.
    max_bytes : int
        The largest total size of the loaded arrays.

    Returns
    -------
    dict
        Array name -> numpy.ndarray (``""`` for a .npy file).

    Raises
    ------
    TaggingError
        Of type ``error``: not a regular file, damaged, an array larger than its file holds, over ``max_bytes``.
    """
    import zipfile

    import numpy as np

    name = os.fspath(path)
    with _open_regular(name, what=what, error=error) as handle:
        size = os.fstat(handle.fileno()).st_size
        if handle.read(4) != b"PK\x03\x04":
            handle.seek(0)
            shape, _, n_bytes = _npy_header(handle, where=f"{what} {name}", error=error)
            _check_declared(f"{what} {name}", shape, n_bytes, size - handle.tell(), error=error)
            _check_total(f"{what} {name}", n_bytes, max_bytes, error=error)
            handle.seek(0)
            try:
                return {"": np.load(handle, allow_pickle=False)}
            except (OSError, ValueError, EOFError) as err:
                raise error(f"cannot read {what} {name}: {err}") from err
        handle.seek(0)
        try:
            with zipfile.ZipFile(handle) as archive:
                members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
                _check_total(f"{what} {name}", sum(info.file_size for info in members), max_bytes, error=error)
                arrays = {}
                for info in members:
                    where = f"{what} {name} (array {info.filename[:-4]!r})"
                    with archive.open(info) as member:
                        shape, _, n_bytes = _npy_header(member, where=where, error=error)
                        _check_declared(where, shape, n_bytes, info.file_size - member.tell(), error=error)
                    with archive.open(info) as member:
                        arrays[info.filename[:-4]] = np.lib.format.read_array(member, allow_pickle=False)
                return arrays
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
            raise error(f"cannot read {what} {name} as .npz: {err}") from err


def _check_total(where: str, n_bytes: int, max_bytes: int, *, error: type[TaggingError]) -> None:
    if n_bytes > max_bytes:
        raise error(f"{where} holds {_size_text(n_bytes)} of arrays, more than the {_size_text(max_bytes)} calitag "
                    "loads from one file; split it or check that it is the right file")
