"""The face crops of enrolled people, kept beside their gallery so that a person can see whom they enrolled.

A gallery holds embeddings only. Each enrolled photo's aligned face is also kept as a small JPEG named by the
photo's SHA-256 (the one its gallery record carries), in a folder beside the gallery file::

    <state dir>/galleries/<model>.json                     the gallery (embeddings, names, thresholds)
    <state dir>/galleries/<model>.faces/people/<sha256>.jpg  enrolled faces (this module)
    <state dir>/galleries/<model>.faces/unknown/, strangers/  faces the camera saw (``edgeface.web.store``)

Faces are biometric data: the ``.faces`` folder and every folder in it are made 0700 and every file 0600, so
only the user the daemon runs as can read them. Nothing here sends anything anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from edgeface.core.fileio import private_dir as _private_dir, write_private
from edgeface.core.reader import SHA256_HEX

if TYPE_CHECKING:
    from edgeface.core.gallery import Gallery

FACES_SUFFIX = ".faces"


def faces_dir(gallery_path: Path) -> Path:
    """``<gallery stem>.faces`` beside the gallery file: all face images that belong to this gallery."""
    return gallery_path.with_name(gallery_path.stem + FACES_SUFFIX)


def private_dir(path: Path) -> Path:
    """A folder of faces: made 0700 (parents too), and set to 0700 if it exists (it holds faces only)."""
    return _private_dir(path, tighten=True)


def crop_path(gallery_path: Path, sha256: object) -> Path | None:
    """Where the crop of the enrolled photo ``sha256`` is kept; None when ``sha256`` is not a SHA-256 (64
    lowercase hex digits), so that neither a request nor a gallery file can point outside the folder."""
    if not isinstance(sha256, str) or not SHA256_HEX.fullmatch(sha256):
        return None
    return faces_dir(gallery_path) / "people" / f"{sha256}.jpg"


def save_crop(gallery_path: Path, sha256: str, face: np.ndarray | bytes) -> Path | None:
    """Keep an enrolled photo's face (an RGB crop, or JPEG bytes already encoded)."""
    from edgeface.core.imageio import encode_image

    path = crop_path(gallery_path, sha256)
    if path is None:
        return None
    data = face if isinstance(face, bytes) else encode_image(face, ".jpg", 90)
    private_dir(path.parent)
    return write_private(path, data)


def referenced(gallery: "Gallery") -> set[str]:
    """The SHA-256 of every photo the gallery still names."""
    return {str(p.get("sha256")) for person in gallery.people for p in person.photos}


def prune_crops(gallery_path: Path, gallery: "Gallery", candidates: Iterable[str] | None = None) -> int:
    """Delete the crops of photos the gallery no longer names (``candidates``: only these digests; None: every
    crop in the folder). Returns how many were deleted. Only ``<sha256>.jpg`` files in the crops folder are
    ever deleted, whatever a gallery record or a caller says (``crop_path``)."""
    folder = faces_dir(gallery_path) / "people"
    if not folder.is_dir():
        return 0
    keep = referenced(gallery)
    digests = candidates if candidates is not None else [p.stem for p in folder.glob("*.jpg")]
    deleted = 0
    for digest in digests:
        path = crop_path(gallery_path, digest)
        if path is not None and digest not in keep and (path.is_symlink() or path.is_file()):
            path.unlink()  # a link itself, never what it points at
            deleted += 1
    return deleted
