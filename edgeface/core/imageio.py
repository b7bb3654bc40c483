"""Reading images. Everything inside edgeface is RGB uint8 (H, W, 3); OpenCV's BGR stays at this edge."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgeface.core.errors import ImageError
from edgeface.core.fileio import MiB, read_input

# The image files edgeface reads from folders (photo sets, enrollment photos, the daemon's folder source).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# A 50-megapixel phone photo fits; decoding takes about 3 bytes a pixel, twice (BGR, then RGB). A PNG of
# 32000 x 32000 pixels compresses to under 1 MB: without this check it would take 6 GB to decode.
MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_BYTES = 128 * MiB
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the frame's size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, PNG, BMP or WebP header, without decoding; None for another format or a
    header too short to tell."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker == 0xFF:  # fill byte
                    i += 1
                elif marker in _JPEG_SOF:
                    height, width = struct.unpack(">HH", data[i + 5:i + 9])
                    return width, height
                elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
                    i += 2
                else:
                    i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
            return None
        if data[:2] == b"BM":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 header: 16-bit sizes
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return width & 0x3FFF, height & 0x3FFF
            if chunk == b"VP8L":
                bits = struct.unpack("<I", data[21:25])[0]
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    except struct.error:
        return None
    return None


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8, honouring EXIF orientation. Raises ImageError naming the file.

    Only regular files of at most MAX_IMAGE_BYTES, in a format whose header gives the size (JPEG, PNG, BMP,
    WebP) of at most MAX_IMAGE_PIXELS, reach the decoder.
    """
    import cv2

    path = Path(path)
    raw = read_input(path, MAX_IMAGE_BYTES, ImageError)
    if not raw:
        raise ImageError(f"{path}: empty file")
    # libjpeg decodes a truncated JPEG with only a warning, filling the rest grey: catch it here.
    if raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in raw[-64:]:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")
    size = image_size(raw)
    if size is None:
        raise ImageError(f"{path}: not a decodable image (not a JPEG, PNG, BMP or WebP, or its header is damaged)")
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"{path}: {width}x{height} pixels is more than the {MAX_IMAGE_PIXELS / 1e6:g} "
                         f"megapixels an image may have: scale it down")
    data = np.frombuffer(raw, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1]})") from None
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
