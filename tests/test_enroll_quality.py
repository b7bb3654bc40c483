"""The enrollment quality checks on real photos (../shared celeba-299): ordinary photos pass, blurred ones don't.

The thresholds (40 px, sharpness 40) were chosen on celeba-299 (docs/identity.md); this guards them against a
change of detector, crop or measure that would start refusing ordinary photos or accepting blurred ones.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edgeface.data.manifest import load_dataset
from edgeface.core.imageio import read_image, write_image
from edgeface.people.enroll import FaceEmbedder

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def real_photos(celeba_csv: Path) -> list[Path]:
    samples = load_dataset(celeba_csv).samples
    return [s.image for s in samples[::150]]  # 42 photos of many people, spread over the file


def test_ordinary_photos_pass_and_blurred_ones_are_refused(tiny_bundles: dict[str, Path], real_photos: list[Path],
                                                           tmp_path: Path) -> None:
    import cv2

    embedder = FaceEmbedder(tiny_bundles["int8"])
    plain = Counter(embedder.check_photo(p).status for p in real_photos)
    assert plain["ok"] >= 0.9 * len(real_photos), plain  # 97% of 1,000 random photos passed when chosen
    blurred = []
    for i, photo in enumerate(real_photos):
        path = tmp_path / f"blurred{i}.jpg"
        write_image(path, cv2.GaussianBlur(read_image(photo), (0, 0), 3.0))
        blurred.append(path)
    statuses = Counter(embedder.check_photo(p).status for p in blurred)
    assert statuses["blurry"] >= 0.8 * sum(statuses.values()) - statuses["no_face"], statuses
    assert statuses["ok"] <= 0.1 * len(blurred), statuses
