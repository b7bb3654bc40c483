"""Reading images. Everything inside edgeface is RGB uint8 (H, W, 3); OpenCV's BGR stays at this edge."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeface.core.errors import ImageError

# The image files edgeface reads from folders (photo sets, enrollment photos, the daemon's folder source).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8, honouring EXIF orientation. Raises ImageError naming the file."""
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    # libjpeg decodes a truncated JPEG with only a warning, filling the rest grey: catch it here.
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-64:].tobytes():
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_image(image_rgb: np.ndarray, suffix: str = ".jpg", quality: int = 90) -> bytes:
    """An RGB uint8 image as the bytes of a file of the format ``suffix`` names (JPEG, PNG)."""
    import cv2

    suffix = suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"cannot encode image as {suffix}")
    return encoded.tobytes()


def write_image(path: str | Path, image_rgb: np.ndarray, quality: int = 90) -> None:
    """Encode an RGB uint8 image to the format its suffix names (JPEG, PNG)."""
    path = Path(path)
    try:
        data = encode_image(image_rgb, path.suffix, quality)
    except ImageError:
        raise ImageError(f"{path}: cannot encode image as {path.suffix}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
