"""A hybrid logical clock: stamps that follow the wall clock and never go backwards or repeat.

A stamp is (milliseconds, counter). A local change takes the later of the wall clock and the last stamp (the
counter breaks ties within a millisecond); every stamp received moves the clock past it, so a change made after
seeing another always carries a later stamp, even on a device whose wall clock is behind. Two devices' stamps
are ordered by (milliseconds, counter, device id): a total order every device computes alike.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple


class Stamp(NamedTuple):
    wall_ms: int
    counter: int


ZERO = Stamp(0, 0)


class HybridClock:
    def __init__(self, last: Stamp = ZERO, now: Callable[[], float] = time.time) -> None:
        self.last = Stamp(*last)
        self._now = now

    def now_ms(self) -> int:
        return int(self._now() * 1000)

    def tick(self) -> Stamp:
        """The stamp of a local change: after every stamp made or seen so far."""
        wall = self.now_ms()
        self.last = Stamp(wall, 0) if wall > self.last.wall_ms else Stamp(self.last.wall_ms, self.last.counter + 1)
        return self.last

    def observe(self, stamp: Stamp) -> None:
        """Move past a stamp received from another device (one already checked not to be from the future)."""
        if stamp > self.last:
            self.last = Stamp(*stamp)
