"""JSON lines: one object per processed frame, to stdout or to a file rotated by size."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeface.core.errors import ConfigError
from edgeface.daemon.sinks.base import QueuedSink


class JsonLinesSink(QueuedSink):
    """One JSON object per line, to stdout or to a file rotated by size (``name.1`` ... ``name.N``)."""

    name = "jsonl"

    def __init__(self, path: str = "-", publish: str = "every", max_bytes: int = 10_000_000, backups: int = 3,
                 queue: int = 256) -> None:
        super().__init__(queue, publish)
        self.path = None if path == "-" else Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._handle = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"[jsonl] path {self.path}: cannot open for writing ({exc.strerror or exc})") from None
        self.start()

    def _send(self, line: str) -> None:
        if self.path is None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            return
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(line + "\n")
        self._handle.flush()
        if self._handle.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        assert self.path is not None and self._handle is not None
        self._handle.close()
        self._handle = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self.path is None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
