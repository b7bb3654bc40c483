"""JSON lines: one object per processed frame and one per visit event, to stdout or to a file rotated by size.

A frame's record has ``frame`` and ``faces``; a visit event's has ``event`` (arrived, named, left) and the visit
(docs/daemon.md).
"""

from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path

from edgeface.core.errors import ConfigError
from edgeface.core.fileio import open_private, private_dir
from edgeface.daemon.sinks.base import QueuedSink


class JsonLinesSink(QueuedSink):
    """One JSON object per line, to stdout or to a file rotated by size (``name.1`` ... ``name.N``).

    Each line is whole, once, or not at all: one ``os.write`` of the complete line (no user-space buffer that
    could be flushed half); a write the disk cut short (full) is taken back with ``ftruncate`` and the line is
    retried from its start when space returns. Lines the buffer could not hold meanwhile are counted as dropped.
    """

    name = "jsonl"

    def __init__(self, path: str = "-", publish: str = "every", max_bytes: int = 10_000_000, backups: int = 3,
                 queue: int = 256, unhealthy_after: float = 60.0, frames: bool = True, visits: bool = True) -> None:
        super().__init__(queue, publish, unhealthy_after, frames, visits)
        self.path = None if path == "-" else Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None
        if self.path is not None:
            try:
                private_dir(self.path.parent)
                self._open()
            except OSError as exc:
                raise ConfigError(f"[jsonl] path {self.path}: cannot open for writing ({exc.strerror or exc})") from None
        self.start()

    def _open(self) -> int:
        assert self.path is not None
        if self._fd is None:
            self._fd = open_private(self.path)  # labels say who was seen when: 0600, rotated files too
        return self._fd

    def _send(self, line: str) -> bool:
        data = (line + "\n").encode()
        if self.path is None:
            try:
                fd = sys.stdout.fileno()
            except (AttributeError, ValueError, io.UnsupportedOperation):  # stdout replaced by an object
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                return True
            sys.stdout.flush()  # anything printed before goes first
            _write_all(fd, data)
            return True
        fd = self._open()
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, size)  # a write that failed part-way may still have added bytes
            raise
        if written != len(data):  # the disk filled in the middle of the line: take the part back
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"{self.path}: only {written} of {len(data)} bytes written (disk full?)")
        if size + written >= self.max_bytes:
            self._rotate()
        return True

    def _rotate(self) -> None:
        assert self.path is not None and self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _finish(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """A pipe may take a long line in parts: write the rest until it is all out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
