"""Reading inputs safely (regular files only, bounded, UTF-8 checked), atomic writes, private files and
folders, and file checksums, shared by bundles, galleries, configs, caches and the daemon's outputs."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from edgeface.core.errors import EdgefaceError


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's contents (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MiB = 1024 * 1024


def read_input(path: str | Path, limit: int, error: type[EdgefaceError] = EdgefaceError, what: str = "file") -> bytes:
    """A whole input file, read only if it is a regular file of at most ``limit`` bytes.

    A FIFO would block forever and a device never end, so both are refused, without blocking (opened
    non-blocking, checked with fstat). Every failure is ``error`` with one line that names the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # a NUL byte in the name
        raise error(f"{str(path)!r}: the path contains a NUL byte") from None
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):  # checked before fdopen, which refuses a folder with its own error
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path}: is a folder, not a {what}")
        raise error(f"{path}: not a regular file ({_kind(info.st_mode)}): give a {what}")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise error(f"{path}: {info.st_size / MiB:.1f} MB, more than the {limit / MiB:g} MB a {what} may have")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while being read
        raise error(f"{path}: more than the {limit / MiB:g} MB a {what} may have")
    return data


def read_text_input(path: str | Path, limit: int, error: type[EdgefaceError] = EdgefaceError,
                    what: str = "file") -> str:
    """:func:`read_input`, decoded as UTF-8 (a byte-order mark is dropped); bytes that are not UTF-8 are one
    ``error`` line naming the line they are on."""
    data = read_input(path, limit, error, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save the {what} as UTF-8") from None


def require_regular_file(path: str | Path, error: type[EdgefaceError] = EdgefaceError, what: str = "file") -> None:
    """Refuse what is not a regular file before something opens it blocking (a FIFO) or reads it forever (a
    device); a missing file is left for the reader to report."""
    try:
        info = os.stat(path)
    except ValueError:
        raise error(f"{str(path)!r}: the path contains a NUL byte") from None
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: not a regular file ({_kind(info.st_mode)}): give a {what}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def write_atomic(path: Path, write: Callable[[BinaryIO], object], durable: bool = False,
                 mode: int = 0o644) -> Path:
    """Write ``path`` through a temporary file of this process's own in the same folder, then rename.

    Readers see the old file or the whole new one, never a part; two processes writing the same path at once
    (two trainings filling one cache entry) each leave a whole file and neither fails. ``durable`` syncs the
    data to disk before the rename, so a power cut (a Pi) leaves the old or the new file, never zeros. ``mode``:
    0644 (the default) lets the Pi's service user read a bundle another user wrote; private data passes 0600.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# What the daemon keeps (galleries, face crops, labels, snapshots, locks) is its user's alone, whatever the
# umask it was started with: run by hand (umask 022) as under systemd (UMask=0077).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(folder: Path, tighten: bool = False) -> Path:
    """``folder`` and its missing parents created 0700, whatever the umask (``mkdir -p`` leaves the parents
    0755 and the umask may take bits off). A folder that exists is left as it is (it may be the user's home),
    unless ``tighten``: then this user's own folder is set to 0700 (a folder that holds only private data)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for part in reversed(missing):
        try:
            part.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by another process: made private the same way
            pass
        os.chmod(part, PRIVATE_DIR_MODE)
    target = missing[0] if missing else folder
    if tighten and not missing:
        info = os.stat(target)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
            os.chmod(target, PRIVATE_DIR_MODE)
    return target


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A file descriptor on ``path``, created 0600 if missing; a file of this user's that others could read
    (an older version's, or created under another umask) is made 0600 too. ``flags`` are ``os.open``'s."""
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE_MODE)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` atomically as a 0600 file, its folder made 0700 if missing (:func:`private_dir`)."""
    private_dir(path.parent)
    return write_atomic(path, lambda handle: handle.write(data), durable=durable, mode=PRIVATE_FILE_MODE)
