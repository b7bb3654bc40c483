"""Progress bars for long work (tqdm), quiet when output is not a terminal or when disabled."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal: bars and live counters only make sense there."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def progress_bar(items: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
                 enabled: bool | None = None) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar on stderr. ``EDGEFACE_PROGRESS=0`` turns bars off everywhere."""
    if enabled is None:
        enabled = os.environ.get("EDGEFACE_PROGRESS", "1") != "0" and is_terminal(sys.stderr)
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but the runtime must not die for a progress bar
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
