"""The fault suite: attacks and bad luck tried on the real daemon and the CLI (docs/security.md lists them and
what happens). Quick ones run in the default tier; slow ones (a broker frozen for 15 s) are marked ``slow``.
Helpers: tests/helpers/faults.py."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from helpers.faults import deflate_zeros


@pytest.fixture(scope="session")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 8-bit grey PNG of 32000 x 32000 pixels, all black: under 1 MB on disk, 1 GB of pixels."""
    side = 32000
    rows = deflate_zeros(side * (side + 1))  # each row: filter byte 0, then the pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    path = tmp_path_factory.mktemp("png-bomb") / "bomb.png"
    path.write_bytes(png)
    return path


@pytest.fixture()
def dataset(tmp_path: Path, synthetic_csv: Path) -> Path:
    """A copy of the synthetic manifest, its images absolute, that a test can add rows to."""
    lines = synthetic_csv.read_text().splitlines()
    rows = [lines[0]] + [f"{synthetic_csv.parent / line.split(',', 1)[0]},{line.split(',', 1)[1]}"
                         for line in lines[1:13]]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def fault_bundle(tiny_bundles: dict[str, Path]) -> Path:
    return tiny_bundles["int8"]


@pytest.fixture(scope="session")
def fault_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 10 fps of two synthetic people per frame (every frame has faces)."""
    from helpers.video_fixtures import synthetic_video

    path = tmp_path_factory.mktemp("fault-video") / "two.mp4"
    synthetic_video(path, faces=2, seconds=2, seed=1)
    return path
