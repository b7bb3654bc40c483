"""Errors users see. Every message is one line that says what is wrong and where."""

from __future__ import annotations


class EdgefaceError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""

    exit_code = 2


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
