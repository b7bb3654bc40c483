"""The page's own thread: writes the unknown faces kept meanwhile every second and deletes what retention
removes, so that the pipeline thread (``observe``) never waits for a disk."""

from __future__ import annotations

import logging
import threading
import time

from edgeface.web.store import FaceStore
from edgeface.web.unknowns import Unknowns

log = logging.getLogger("edgeface.daemon.web")

FLUSH_EVERY = 1.0  # seconds between writes of the unknown faces kept meanwhile
PRUNE_EVERY = 60.0  # seconds between checks of the strangers' faces' retention


class Keeper:
    def __init__(self, unknowns: Unknowns, store: FaceStore | None) -> None:
        self.unknowns = unknowns
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="edgeface-web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, then write what is left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.unknowns.flush()

    def _keep(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(FLUSH_EVERY):
            try:
                self.unknowns.flush()
                if time.monotonic() >= next_prune and self.store is not None:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self.store.prune()
            except Exception:
                log.exception("web: error while writing unknown faces")
