"""Frames with faces saved to a folder, only when the user asked for it (privacy: off by default)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from edgeface.daemon.records import Published

log = logging.getLogger("edgeface.daemon")


class SnapshotWriter:
    """Frames with faces, written only when the user configured a folder (privacy: off by default); a
    ``FrameObserver`` of the run."""

    def __init__(self, folder: Path, interval: float, max_files: int) -> None:
        self.folder = folder
        self.interval = interval
        self.max_files = max_files
        self._last = -float("inf")
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)

    def observe(self, image: np.ndarray, item: Published) -> None:
        from edgeface.core.imageio import write_image

        now = time.monotonic()
        if not item.result.faces or now - self._last < self.interval:
            return
        self._last = now
        stem = self.folder / f"snapshot-{int(item.result.time * 1000)}-{item.result.index}"
        try:
            write_image(stem.with_suffix(".jpg"), image)
            stem.with_suffix(".json").write_text(item.json + "\n")
            self.written += 1
            files = sorted(self.folder.glob("snapshot-*.jpg"), key=lambda p: p.stat().st_mtime)
            for old in files[:max(0, len(files) - self.max_files)]:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        except Exception as exc:  # a full disk must not stop the labelling
            log.warning("snapshot %s not written: %s", stem, exc)

    def close(self) -> None:
        pass
