"""Detect and align the face in every photo of a dataset, once: crops are cached on disk.

The cache key covers the detector, the crop geometry, the crop size and each file's path, size and
modification time, so a second training run (or an evaluation of the same photos) does not detect again,
and a changed photo is detected anew.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from edgeface.core.errors import ImageError
from edgeface.core.fileio import write_atomic
from edgeface.core.paths import default_cache_dir
from edgeface.core.spec import CropSpec
from edgeface.data.manifest import Sample
from edgeface.faces.align import align_face_and_shape
from edgeface.faces.detect import FaceDetector, create_detector, primary_face

CropStatus = Literal["ok", "multiple", "no_face", "unreadable"]
CACHE_VERSION = 3  # 2: primary_face passes over the detector's weak guesses; 3: the mouths' shapes kept


@dataclass(frozen=True)
class CropSet:
    """One aligned crop per sample that has a face.

    ``status[i]`` says what happened to ``samples[i]``: ``ok`` (one face), ``multiple`` (several faces; the
    subject's, by ``primary_face``, was used), ``no_face`` or ``unreadable`` (no crop). ``crops`` holds the crops of the samples
    whose status is ``ok`` or ``multiple``, in sample order; ``index`` maps crop rows back to samples.
    ``shapes``: each crop's mouth shape (``edgeface.faces.geometry``), None when the crop is not aligned on
    landmarks.
    """

    samples: tuple[Sample, ...]
    status: tuple[CropStatus, ...]
    crops: np.ndarray  # (M, S, S, 3) uint8
    messages: tuple[str, ...]  # per sample: why it has no crop ("" when it has one)
    shapes: np.ndarray | None = None  # (M, MOUTH_SHAPE_SIZE) float32

    @property
    def index(self) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.status) if s in ("ok", "multiple")], dtype=np.int64)

    @property
    def cropped_samples(self) -> list[Sample]:
        return [self.samples[i] for i in self.index]

    def summary(self) -> Counter[str]:
        return Counter(self.status)

    def skipped(self) -> list[tuple[Sample, str]]:
        """Samples without a crop and why (for the 'nothing dropped silently' listing)."""
        return [(s, m) for s, st, m in zip(self.samples, self.status, self.messages) if st in ("no_face", "unreadable")]


def _cache_key(samples: Sequence[Sample], crop: CropSpec, size: int, detector_name: str) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{detector_name}|{crop}|{size}\n".encode())
    for s in samples:
        try:
            stat = s.image.stat()
            digest.update(f"{s.image}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{s.image}|missing\n".encode())
    return digest.hexdigest()[:24]


def crop_samples(samples: Sequence[Sample], crop: CropSpec, size: int, detector: FaceDetector | None = None,
                 cache_dir: Path | None | Literal[False] = None, progress: bool = False) -> CropSet:
    """Detect, align and crop the main face of each sample's photo (cached unless ``cache_dir=False``)."""
    from edgeface.core.imageio import read_image

    samples = tuple(samples)
    detector_name = detector.name if detector is not None else crop.detector
    cache_path = None
    if cache_dir is not False:
        key = _cache_key(samples, crop, size, detector_name)
        cache_path = Path(cache_dir or default_cache_dir()) / "crops" / key
        cached = _load(cache_path, samples)
        if cached is not None:
            return cached
    if detector is None:
        detector = create_detector(crop.detector)
    crops = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    shapes: list[np.ndarray] = []
    status: list[CropStatus] = []
    messages: list[str] = []
    count = 0
    iterator: object = samples
    if progress:
        from edgeface.core.progress import progress_bar
        iterator = progress_bar(samples, desc="detecting faces", unit="img")
    for sample in iterator:  # type: ignore[attr-defined]
        try:
            image = read_image(sample.image)
        except ImageError as exc:
            status.append("unreadable")
            messages.append(str(exc))
            continue
        faces = [f for f in detector.detect(image) if f.height >= crop.min_face]
        face = primary_face(faces)
        if face is None:
            status.append("no_face")
            messages.append(f"{sample.image}: no face found")
            continue
        crops[count], shape = align_face_and_shape(image, face, crop, size)
        if shape is not None:
            shapes.append(shape)
        count += 1
        status.append("multiple" if len(faces) > 1 else "ok")
        messages.append("")
    result = CropSet(samples, tuple(status), crops[:count].copy(), tuple(messages),
                     np.stack(shapes) if crop.landmarks and len(shapes) == count and count else None)
    if cache_path is not None:
        _save(cache_path, result)
    return result


def _save(path: Path, crops: CropSet) -> None:
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(path / "crops.npy", lambda handle: np.save(handle, crops.crops))
    shapes = crops.shapes
    if shapes is not None:
        write_atomic(path / "shapes.npy", lambda handle: np.save(handle, shapes))
    status = json.dumps({"status": crops.status, "messages": crops.messages}).encode()
    write_atomic(path / "status.json", lambda handle: handle.write(status))


def _load(path: Path, samples: tuple[Sample, ...]) -> CropSet | None:
    try:
        meta = json.loads((path / "status.json").read_text())
        array = np.load(path / "crops.npy", mmap_mode="r")
        shapes = np.load(path / "shapes.npy") if (path / "shapes.npy").is_file() else None
    except (OSError, ValueError):
        return None
    if len(meta["status"]) != len(samples):
        return None
    return CropSet(samples, tuple(meta["status"]), np.asarray(array), tuple(meta["messages"]), shapes)
