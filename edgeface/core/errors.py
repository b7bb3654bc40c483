"""Errors users see. Every message is one line that says what is wrong and where."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with its control characters (a newline in a file name, an escape sequence) written as escapes,
    so that what came from a file cannot break a message over lines or drive the terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class EdgefaceError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""

    exit_code = 2

    def __str__(self) -> str:
        return one_line(super().__str__())


class DataError(EdgefaceError):
    """A dataset, CSV row or image is unusable."""


class ImageError(DataError):
    """An image file cannot be read or decoded."""


class BundleError(EdgefaceError):
    """A bundle is missing, truncated, tampered with, or of an unknown format version."""


class ModelError(EdgefaceError):
    """A model file cannot be loaded or does not have the expected inputs and outputs."""


class ConfigError(EdgefaceError):
    """A configuration file or flag has an invalid value."""


class DependencyError(EdgefaceError):
    """An optional dependency needed for the chosen feature is not installed."""
