"""Drive the real ``edgeface run`` in a subprocess: start it, read its output as it comes, talk HTTP to it,
signal it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """``python -m edgeface run ARGS``; stdout and stderr are collected line by line on threads."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, read_stdout: bool = True,
                 cwd: Path = REPO, open_files: tuple[int, int] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        limit = None
        if open_files is not None:  # (soft, hard) RLIMIT_NOFILE of the daemon, set in the child before exec
            import resource

            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files)  # noqa: E731
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeface", "run", *args], cwd=cwd, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True)]
        if read_stdout:  # a test of a stalled reader leaves stdout unread on purpose
            self._threads.append(threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True))
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n" + self.log())
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log())

    def http_port(self, timeout: float = 60.0) -> int:
        def find() -> int | None:
            for line in self.stderr:
                match = re.search(r"serving .* on http://[\d.]+:(\d+)", line)
                if match:
                    return int(match.group(1))
            return None

        return int(self.wait_for(find, timeout, "the HTTP server"))  # type: ignore[arg-type]

    def records(self) -> list[dict]:
        """The frame records written to stdout (JSON lines), in order."""
        return [r for r in self.lines() if "frame" in r]

    def events(self) -> list[dict]:
        """The visit events written to stdout (arrived, named, left), in order."""
        return [r for r in self.lines() if "event" in r]

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in list(self.stdout)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; return (exit code, seconds until exit). Output threads are drained."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        elapsed = time.monotonic() - start
        for thread in self._threads:
            thread.join(5)
        return code, elapsed

    def finish(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(self.stderr[-30:])

    def summary(self) -> dict:
        """The end-of-run summary the daemon logs at exit (frames, fps, ms per stage, peak RSS)."""
        return read_summary(self.stderr)


def read_summary(stderr_lines: Iterable[str]) -> dict:
    """The ``summary {...}`` line of a daemon's log, parsed."""
    line = next(line for line in stderr_lines if " summary {" in line)
    return json.loads(line.split(" summary ", 1)[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def status_when_listening(port: int, path: str) -> int | None:
    """``path``'s HTTP status, or None while nothing listens on ``port`` (a reload restarts the server)."""
    try:
        return http_get(port, path)[0]
    except OSError:  # URLError included: connection refused or reset
        return None


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample from a Prometheus text exposition (``labels`` as written, e.g. ``sink="jsonl"``)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    raise KeyError(f"{key} not in metrics")
