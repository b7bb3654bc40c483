"""Where edgeface keeps files between runs: the cache (crops, descriptors) and the device's state (galleries)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$EDGEFACE_CACHE``, else ``$XDG_CACHE_HOME/edgeface``, else ``~/.cache/edgeface``."""
    if os.environ.get("EDGEFACE_CACHE"):
        return Path(os.environ["EDGEFACE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "edgeface"


def default_state_dir() -> Path:
    """Where the device keeps its state: ``$EDGEFACE_STATE_DIR``, else systemd's ``$STATE_DIRECTORY`` (set by
    ``StateDirectory=`` in a unit), else ``$XDG_STATE_HOME/edgeface``, else ``~/.local/state/edgeface``."""
    if os.environ.get("EDGEFACE_STATE_DIR"):
        return Path(os.environ["EDGEFACE_STATE_DIR"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "edgeface"
