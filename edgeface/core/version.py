"""The version of edgeface: bundles, reports and /metrics record it; pyproject.toml reads it."""

__version__ = "0.1.0"
