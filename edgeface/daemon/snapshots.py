"""Frames with faces saved to a folder, only when the user asked for it (privacy: off by default)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.core.errors import ConfigError
from edgeface.core.fileio import open_private, private_dir
from edgeface.daemon.records import Published
from edgeface.daemon.service import Throttled


class SnapshotWriter:
    """Frames with faces, written only when the user configured a folder (privacy: off by default); a
    ``FrameObserver`` of the run.

    A snapshot is a JPEG and its JSON record, both whole or neither: each is written to a temporary name and
    renamed into place only when complete, so a full disk leaves no empty or cut file. Failures are counted
    and warned about once a minute.
    """

    def __init__(self, folder: Path, interval: float, max_files: int) -> None:
        self.folder = folder
        self.interval = interval
        self.max_files = max_files
        self._last = -float("inf")
        self.written = 0
        self.failed = 0
        self.last_error = ""
        self._warn = Throttled()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"[snapshots] dir {folder} is a file, not a folder")
        try:
            private_dir(folder)  # frames of the people at home: the daemon's user's alone (0700, files 0600)
        except FileExistsError:
            raise ConfigError(f"[snapshots] dir {folder} is a file, not a folder") from None
        except OSError as exc:
            raise ConfigError(f"[snapshots] dir {folder}: cannot create ({exc.strerror or exc})") from None

    def observe(self, image: np.ndarray, item: Published) -> None:
        now = time.monotonic()
        if not item.result.faces or now - self._last < self.interval:
            return
        self._last = now
        stem = self.folder / f"snapshot-{int(item.result.time * 1000)}-{item.result.index}"
        try:
            self._write(stem, image, item.json)
            self.written += 1
            files = sorted(self.folder.glob("snapshot-*.jpg"), key=lambda p: p.stat().st_mtime)
            for old in files[:max(0, len(files) - self.max_files)]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except Exception as exc:  # a full disk must not stop the labelling
            self.failed += 1
            self.last_error = str(exc)
            self._warn.warning("snapshot %s not written: %s", stem.name, exc)

    @staticmethod
    def _write(stem: Path, image: np.ndarray, record: str) -> None:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError("cannot encode the frame as JPEG")
        parts = ((stem.with_suffix(".jpg"), jpeg.tobytes()), (stem.with_suffix(".json"), (record + "\n").encode()))
        temporary = [path.with_name(f".{path.name}.part") for path, _ in parts]
        try:
            for (_, data), part in zip(parts, temporary):
                with os.fdopen(open_private(part, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
                    handle.write(data)
            for (path, _), part in zip(parts, temporary):
                os.replace(part, path)
        finally:
            for part in temporary:
                part.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return {"written": self.written, "failed": self.failed, "error": self.last_error or None}

    def close(self) -> None:
        pass
