"""The interface every sink offers, and the bounded buffer with its worker thread that JSON lines and MQTT share."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Protocol

from edgeface.daemon.records import Published

log = logging.getLogger("edgeface.daemon")


class Sink(Protocol):
    name: str

    def publish(self, item: Published) -> None:
        """Hand over a frame; must return at once."""

    def close(self, timeout: float) -> None:
        """Deliver what is buffered, within ``timeout`` seconds, and release resources."""

    def metrics(self) -> dict[str, float]:
        """Counters for /metrics: at least sent and dropped."""


class QueuedSink:
    """A bounded buffer and a worker thread that calls ``_send``; a failing send is retried with backoff."""

    name = "queued"

    def __init__(self, queue: int, publish_mode: str) -> None:
        self.publish_mode = publish_mode
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._limit = queue
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"edgeface-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, item: Published) -> None:
        if item.wanted(self.publish_mode):
            self._put(item.json)

    def _put(self, payload: Any) -> None:
        with self._cond:
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(payload)
            self._cond.notify()

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        self._thread.join(max(0.0, timeout))
        with self._cond:  # whatever could not be delivered in time is lost: count it
            self.dropped += len(self._queue)
            self._queue.clear()
        self._finish()

    def metrics(self) -> dict[str, float]:
        return {"sent": self.sent, "dropped": self.dropped, "errors": self.errors, "queued": len(self._queue)}

    def _run(self) -> None:
        delay = 0.2
        last_warning = -float("inf")
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() > self._deadline:
                    return
                payload = self._queue[0]
            try:
                self._send(payload)
            except Exception as exc:  # an output that fails is retried, never allowed to kill the daemon
                self.errors += 1
                if time.monotonic() - last_warning > 60:  # an output down for days must not flood the journal
                    last_warning = time.monotonic()
                    log.warning("%s sink: %s; retrying with backoff, buffering up to %d records",
                                self.name, exc, self._limit)
                with self._cond:
                    self._cond.wait(min(delay, max(0.0, self._deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            with self._cond:
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()
            self.sent += 1

    def _send(self, payload: Any) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass
