"""Number formatting for the text tables of ``evaluate``, ``bench`` and ``report``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def ms(value: float | None) -> str:
    """Milliseconds with about three significant digits: 0.115, 2.51, 11.3, 112."""
    if value is None:
        return ""
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def right_align(rows: Sequence[list[Any]], columns: Sequence[int], header: Sequence[str] = ()) -> None:
    """Right-justify the (string) cells of ``columns`` in place, so numbers line up by their last digit
    (with ``header``, under the right end of their column title)."""
    for col in columns:
        width = max([len(str(row[col])) for row in rows] + ([len(header[col])] if header else []))
        for row in rows:
            row[col] = str(row[col]).rjust(width)
