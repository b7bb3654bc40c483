"""The fault suite: attacks and bad luck tried on the real daemon (docs/security.md lists them and what
happens). Quick ones run in the default tier; slow ones (a broker frozen for 15 s) are marked ``slow``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fault_bundle(tiny_bundles: dict[str, Path]) -> Path:
    return tiny_bundles["int8"]


@pytest.fixture(scope="session")
def fault_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 10 fps of two synthetic people per frame (every frame has faces)."""
    from edgeface.data.synthetic import write_synthetic_video

    path = tmp_path_factory.mktemp("fault-video") / "two.mp4"
    write_synthetic_video(path, people=6, seconds=2, fps=10, faces_per_frame=2, seed=1)
    return path
