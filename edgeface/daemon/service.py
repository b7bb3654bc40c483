"""Living under systemd: readiness and watchdog over the notify socket, signals, journald-friendly logs.

The notify protocol is a datagram of ``KEY=value`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace); it needs no package. With ``WatchdogSec=``
systemd sets ``$WATCHDOG_USEC`` and expects ``WATCHDOG=1`` at least that often: the run loop pings at half the
interval, so a loop that hangs gets the service restarted.

SIGHUP reads the config file again and loads what it names while the daemon goes on; once that loaded, the
sinks are flushed and the daemon starts over with it. A config, bundle, gallery or source that fails to load
is logged in one line, shown in /healthz (``reload_failed``) and the running state is kept: a reload never
ends the daemon. ``systemctl reload`` sends it.

Exit codes of ``edgeface run``: 0 a finite source ended or a clean stop (SIGTERM, SIGINT); 1 an unexpected
failure at run time (logged with its traceback); 2 bad configuration, bundle, source or listen address;
130 a second SIGTERM/SIGINT during the stop (immediate exit, buffers not flushed).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Mapping

from edgeface.daemon.secrets import redact

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # a second SIGTERM/SIGINT while stopping: immediate exit

# journald reads a "<N>" prefix on each stderr line as the syslog priority (SyslogLevelPrefix=yes, the default).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class SystemdNotifier:
    """sd_notify without libsystemd. Does nothing when not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        self.watchdog_interval = 0.0
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:  # systemd gone or the socket unreachable: nothing to tell, nothing to fail
            return False

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self._last_ping = time.monotonic()

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        """SIGHUP: the run stops and a new one starts; its ``ready`` ends the reload for systemd."""
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def watchdog(self) -> None:
        """Ping if half the watchdog interval has passed (cheap to call every loop turn)."""
        if self.watchdog_interval and time.monotonic() - self._last_ping >= self.watchdog_interval:
            self.notify("WATCHDOG=1")
            self._last_ping = time.monotonic()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def install_stop_handlers(stop: threading.Event, reload: threading.Event | None = None) -> Callable[[], None]:
    """SIGTERM and SIGINT set ``stop`` (the loop finishes its frame and shuts down, flushing the sinks).
    SIGHUP sets ``reload`` (the run loop loads the config again while it goes on), or, without ``reload``,
    stops like SIGTERM. A second stop signal while stopping exits at once with 130. Returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals only reach the main thread; a caller elsewhere stops the run itself

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP and reload is not None:
            reload.set()  # the run loop loads the config again, and logs it
            return
        if stop.is_set():  # asked twice: the user wants out now, unflushed
            os._exit(EXIT_INTERRUPTED)
        logging.getLogger("edgeface.daemon").info("%s: stopping", name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def undo() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo


class Throttled:
    """A warning that may repeat (a full disk, a broker away): logged at most once per ``every`` seconds, with
    how many were held back since the last one, so an output down for days cannot flood the journal."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.held = 0
        self._last = -float("inf")

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self.held += 1
            return
        if self.held:
            message += f" ({self.held} more like this in the last {now - self._last:.0f} s)"
        logging.getLogger("edgeface.daemon").warning(message, *args)
        self._last, self.held = now, 0


class _Formatter(logging.Formatter):
    """Every line with the passwords of URLs in it redacted; under journald with a ``<N>`` priority prefix."""

    def __init__(self, fmt: str, datefmt: str | None = None, journal: bool = False) -> None:
        super().__init__(fmt, datefmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        return f"<{_PRIORITY.get(record.levelno, 6)}>{line}" if self.journal else line


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is logged, not when the handler was made: a caller
    that swaps stderr (a test runner, an embedding program) never leaves the logger writing to a closed file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property always follows sys.stderr
        pass


def setup_logging(level: str = "info") -> logging.Logger:
    """Log to stderr (stdout carries JSON lines): plain lines with priorities under journald, timestamps
    otherwise. Idempotent."""
    logger = logging.getLogger("edgeface.daemon")
    logger.setLevel(level.upper())
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_edgeface", False):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler._edgeface = True  # type: ignore[attr-defined]
    if os.environ.get("JOURNAL_STREAM"):  # journald adds time and unit itself
        handler.setFormatter(_Formatter("%(message)s", journal=True))
    else:
        handler.setFormatter(_Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    return logger
