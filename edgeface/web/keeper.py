"""The page's own thread: every second it writes the stranger groups and the faces kept meanwhile and deletes
what their retention removes; every minute it applies the retention of strangers' and "not X" faces (in the
store and in the gallery). The pipeline thread (``observe``) never waits for a disk."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeface.web.state import PageState

log = logging.getLogger("edgeface.daemon.web")

FLUSH_EVERY = 1.0  # seconds between writes of the groups and faces kept meanwhile
PRUNE_EVERY = 60.0  # seconds between checks of the strangers' faces' retention


class Keeper:
    def __init__(self, state: "PageState") -> None:
        self.state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="edgeface-web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, then write what is left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.state.unknowns.flush()

    def _keep(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(FLUSH_EVERY):
            try:
                self.state.unknowns.flush()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self.state.prune_negatives()
            except Exception:
                log.exception("web: error while writing the faces kept")
