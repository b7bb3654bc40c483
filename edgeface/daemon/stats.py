"""What a run has done: frame and face counters, time per stage, and the process's own figures from /proc."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from edgeface.recognition.records import FrameResult

STAGES = ("capture", "detect", "crop", "infer", "track", "publish")


class RunStats:
    """Counters and per-stage time sums of a run (read by /healthz, /metrics and the status line)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.processed = 0
        self.faces = 0
        self.faces_current = 0
        self.recognised = 0  # faces that went through the model (the rest kept their track's labels)
        self.events = dict.fromkeys(("arrived", "named", "left"), 0)
        self.stage_sum = dict.fromkeys(STAGES, 0.0)
        self.first_processed: float | None = None
        self.last_processed: float | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=30)

    def record(self, result: "FrameResult", timings: Mapping[str, float]) -> None:
        now = time.monotonic()
        self.processed += 1
        self.faces += len(result.faces)
        self.faces_current = len(result.faces)
        self.recognised += len(result.samples.recognised) if result.samples is not None else 0
        for event in result.events:
            self.events[event.kind] = self.events.get(event.kind, 0) + 1
        for stage, seconds in timings.items():
            self.stage_sum[stage] = self.stage_sum.get(stage, 0.0) + seconds
        if self.first_processed is None:
            self.first_processed = now
        self.last_processed = now
        self._recent.append(now)

    def summary(self) -> dict[str, Any]:
        """The run in numbers: mean fps from first to last frame, mean milliseconds per stage."""
        span = (self.last_processed or 0.0) - (self.first_processed or 0.0)
        return {
            "frames": self.processed, "faces": self.faces, "recognised": self.recognised,
            "visits": dict(self.events),
            "fps": round((self.processed - 1) / span, 2) if span > 0 else None,
            "stage_ms": {s: round(1000 * v / self.processed, 2) for s, v in self.stage_sum.items()}
            if self.processed else {},
        }

    @property
    def fps(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else 0.0


def process_status(pid: int | str = "self") -> dict[str, int]:
    """Resident memory, peak resident memory, threads and open files of a process, from /proc (Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return {
            "rss_bytes": int(fields["VmRSS"].split()[0]) * 1024,
            "peak_rss_bytes": int(fields["VmHWM"].split()[0]) * 1024,
            "threads": int(fields["Threads"]),
            "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        }
    except (OSError, KeyError, ValueError):
        return {}
