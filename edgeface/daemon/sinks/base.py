"""The interface every sink offers, and the bounded buffer with its worker thread that JSON lines and MQTT share."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Protocol

from edgeface.daemon.records import Published
from edgeface.daemon.service import Throttled


class Sink(Protocol):
    name: str

    def publish(self, item: Published) -> None:
        """Hand over a frame; must return at once."""

    def close(self, timeout: float) -> None:
        """Deliver what is buffered, within ``timeout`` seconds, and release resources."""

    def metrics(self) -> dict[str, float]:
        """Counters for /metrics: at least sent and dropped."""

    def problem(self) -> str | None:
        """Why the sink is not delivering, once that has lasted past its ``unhealthy_after``; None when fine."""

    def status(self) -> dict[str, Any]:
        """The sink as /healthz shows it."""


class QueuedSink:
    """A bounded buffer and a worker thread that calls ``_send``; a failing send is retried with backoff.

    ``_send`` returns True when the record is delivered, False when it was handed over and is counted later
    (MQTT counts a message when the broker acknowledges it: ``_acknowledged``). A record is taken out of the
    buffer only once ``_send`` returns, so a failed send is retried from that same record.
    """

    name = "queued"

    def __init__(self, queue: int, publish_mode: str, unhealthy_after: float = 60.0, frames: bool = True,
                 visits: bool = True) -> None:
        self.publish_mode = publish_mode
        self.frames = frames  # frame records
        self.visits = visits  # visit events
        self.unhealthy_after = unhealthy_after
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self.failing_since: float | None = None  # monotonic time of the first failure since the last delivery
        self._queue: collections.deque[Any] = collections.deque()
        self._limit = queue
        self._cond = threading.Condition()
        self._closing = False
        self._sending: Any = None
        self._deadline = float("inf")
        self._warn = Throttled()
        self._thread = threading.Thread(target=self._run, name=f"edgeface-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, item: Published) -> None:
        if self.frames and item.wanted(self.publish_mode):
            self._put(item.json)
        if self.visits:
            for event in item.events:
                self._put(event)

    def _put(self, payload: Any) -> None:
        with self._cond:
            if len(self._queue) >= self._limit:
                self.dropped += 1
                if self._sending is None or self._queue[0] is not self._sending:
                    self._queue.popleft()
                elif len(self._queue) > 1:  # the oldest is being sent right now: it is not the one lost
                    del self._queue[1]
                else:
                    return
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

    def problem(self) -> str | None:
        since = self.failing_since
        if since is None or time.monotonic() - since < self.unhealthy_after:
            return None
        return f"{self.name}: nothing delivered for {time.monotonic() - since:.0f} s ({self.last_error})"

    def status(self) -> dict[str, Any]:
        """The sink in /healthz: ok or failing, the last error, and its counters."""
        problem = self.problem()
        return {"status": "failing" if problem else "ok", "error": self.last_error or None,
                **{k: int(v) for k, v in self.metrics().items()}}

    def _failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self._warn.warning("%s sink: %s; retrying with backoff, buffering up to %d records",
                           self.name, message, self._limit)

    def _delivered(self, count: int = 1) -> None:
        self.sent += count
        self.failing_since = None

    def _run(self) -> None:
        delay = 0.2
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() > self._deadline:
                    return
                payload = self._sending = self._queue[0]
            try:
                delivered = self._send(payload)
            except Exception as exc:  # an output that fails is retried, never allowed to kill the daemon
                self._failed(str(exc))
                with self._cond:
                    self._sending = None
                    self._cond.wait(min(delay, max(0.0, self._deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            with self._cond:
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()
                self._sending = None
            if delivered:
                self._delivered()

    def _send(self, payload: Any) -> bool:
        raise NotImplementedError

    def _finish(self) -> None:
        pass
