"""Settings as frozen dataclass fields that carry their own check and help text.

The daemon's TOML sections and the recognition pipeline's settings are written this way: the default, the valid
range and the one-line help of each setting are written once, here beside the field, and the config reader, the
example config and the docs read them from the field.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

Check = Callable[[Any], "str | None"]


def option(default: Any, check: Check | None = None, help: str = "", secret: bool = False) -> Any:
    """A dataclass field with a default, a check (None or a problem, e.g. "must be in [0, 1]") and its help; a
    ``secret`` value is never shown in a message."""
    return field(default=default, metadata={"check": check, "help": help, "secret": secret})


def in_range(low: float, high: float) -> Check:
    return lambda v: None if v is None or low <= v <= high else f"must be in [{low:g}, {high:g}]"


def one_of(choices: tuple[str, ...]) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"
