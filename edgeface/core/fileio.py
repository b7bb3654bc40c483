"""Atomic file writes, shared by bundles, galleries and caches, and file checksums."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's contents (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, write: Callable[[BinaryIO], object], durable: bool = False,
                 mode: int = 0o644) -> Path:
    """Write ``path`` through a temporary file of this process's own in the same folder, then rename.

    Readers see the old file or the whole new one, never a part; two processes writing the same path at once
    (two trainings filling one cache entry) each leave a whole file and neither fails. ``durable`` syncs the
    data to disk before the rename, so a power cut (a Pi) leaves the old or the new file, never zeros. The file
    is readable by all (0644) unless ``mode`` says otherwise: mkstemp's 0600 would hide a bundle or gallery from
    the Pi's service user. Face crops are written 0600 (``edgeface.people.album``).
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
