"""Enroll people from photos into a bundle's gallery, on the device (numpy, OpenCV, LiteRT).

Every photo goes through the same steps as a camera frame (detect, align with the bundle's crop geometry,
embed with the bundle's model). Enrollment photos must also pass quality checks, because one bad enrolled
photo makes a person match strangers:

* **no face**: the detector finds none;
* **several faces**: two or more faces with detector score >= ``CONFIDENT_SCORE`` (ambiguous: whose is it?);
  weaker extra detections are mostly false positives on real photos and are ignored;
* **too small**: the face box is under ``MIN_FACE_PX`` pixels tall (it would be magnified into the crop);
* **blurry**: the variance of the Laplacian of the grey aligned face (the central 80x80 of a 112x112 crop,
  whatever the model's input size) is under ``MIN_SHARPNESS``.

The thresholds let about 99% of ordinary portrait photos through and stop faces blurred by more than a couple
of pixels (docs/identity.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from edgeface.core.errors import DataError, ImageError
from edgeface.core.fileio import file_sha256
from edgeface.core.gallery import (
    Gallery,
    GalleryError,
    check_name,
    default_gallery_path,
    locked,
    open_gallery,
)
from edgeface.core.imageio import IMAGE_SUFFIXES
from edgeface.core.spec import EMBEDDING_NAME, CropSpec
from edgeface.faces.detect import Face, FaceDetector, primary_face
from edgeface.people.album import prune_crops, referenced, save_crop

MIN_FACE_PX = 40
MIN_SHARPNESS = 40.0
CONFIDENT_SCORE = 0.75
SHARPNESS_SIZE = 112

PhotoStatus = Literal["ok", "unreadable", "no_face", "several_faces", "too_small", "blurry", "duplicate"]


@dataclass(frozen=True)
class PhotoCheck:
    """What became of one photo: ``status`` ``ok`` with its face and crop, or why not (``message``)."""

    path: Path
    status: PhotoStatus
    message: str = ""
    face: Face | None = None
    sharpness: float | None = None
    crop: np.ndarray | None = field(default=None, repr=False)  # aligned model-input crop (S, S, 3) uint8

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def sharpness(image: np.ndarray, face: Face, crop: CropSpec) -> float:
    """Variance of the Laplacian of the grey aligned face, measured at a fixed size so it does not depend on
    the model's input size; the crop's border (hair, background) is left out."""
    from edgeface.faces.align import align_face

    return crop_sharpness(align_face(image, face, crop, SHARPNESS_SIZE))


def crop_sharpness(face: np.ndarray) -> float:
    """``sharpness`` of a face already aligned at ``SHARPNESS_SIZE`` (RGB): the web page keeps that crop too."""
    import cv2

    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    margin = (SHARPNESS_SIZE - 80) // 2
    centre = grey[margin + 4:margin + 84, margin:margin + 80]  # eyes to chin: shifted down a little
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def pick_face(faces: Sequence[Face]) -> tuple[Face | None, int]:
    """The face a photo is about (``primary_face``: the rule training and evaluation use too) and how many
    confident faces it has."""
    confident = sum(f.score >= CONFIDENT_SCORE for f in faces)
    return primary_face(faces), confident


class FaceEmbedder:
    """A bundle's detector and model: photos in, checked faces and embeddings out."""

    def __init__(self, bundle: Any, num_threads: int | None = None,
                 detector: FaceDetector | None = None) -> None:
        from edgeface.core.bundle import Bundle, load_bundle
        from edgeface.faces.detect import create_detector
        from edgeface.runtime.engine import LiteRTEngine

        self.bundle: Bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.spec = self.bundle.spec
        if self.spec.embedding_size <= 0:
            raise GalleryError(f"{self.bundle.path}: the model has no embedding output, so nobody can be "
                               "enrolled (train and convert it again with this edgeface version)")
        self.detector = detector or create_detector(self.spec.crop.detector)
        self.engine = LiteRTEngine.from_bundle(self.bundle, num_threads=num_threads)

    def check_photo(self, path: str | Path, quality: bool = True) -> PhotoCheck:
        """Detect and align the photo's face; with ``quality``, apply the enrollment checks too."""
        from edgeface.core.imageio import read_image
        from edgeface.faces.align import align_face

        path = Path(path)
        try:
            image = read_image(path)
        except ImageError as exc:
            return PhotoCheck(path, "unreadable", str(exc))
        face, confident = pick_face(self.detector.detect(image))
        if face is None:
            return PhotoCheck(path, "no_face", f"{path}: no face found")
        if quality:
            if confident > 1:
                return PhotoCheck(path, "several_faces",
                                  f"{path}: {confident} faces; use a photo of the person alone", face)
            if face.height < MIN_FACE_PX:
                return PhotoCheck(path, "too_small", f"{path}: face too small ({face.height:.0f} px tall, "
                                                     f"need {MIN_FACE_PX})", face)
        sharp = sharpness(image, face, self.spec.crop)
        if quality and sharp < MIN_SHARPNESS:
            return PhotoCheck(path, "blurry", f"{path}: face too blurry (sharpness {sharp:.0f}, need "
                                              f"{MIN_SHARPNESS:.0f})", face, sharp)
        crop = align_face(image, face, self.spec.crop, self.spec.input_size)
        return PhotoCheck(path, "ok", "", face, sharp, crop)

    def predict(self, crops: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Model outputs (probabilities per head and ``embedding``) for crops, in batches."""
        from edgeface.runtime.engine import predict_batched

        size = self.spec.input_size
        return predict_batched(self.engine, np.asarray(crops, np.uint8).reshape(-1, size, size, 3), batch_size)

    def photos(self, paths: Sequence[Path], quality: bool = True
               ) -> tuple[list[PhotoCheck], dict[str, np.ndarray]]:
        """Check every photo; model outputs for those that passed, in order."""
        checks = [self.check_photo(p, quality) for p in paths]
        ok = [c.crop for c in checks if c.ok]
        size = self.spec.input_size
        # an ok photo has its crop, which mypy cannot tell from its status
        outputs = self.predict(np.stack(ok) if ok else np.zeros((0, size, size, 3), np.uint8))  # type: ignore[arg-type]
        return checks, outputs


def expand_photos(items: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders replaced by the images inside them (recursively, sorted)."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(path)
    return out


def gallery_for(bundle: Any, gallery_path: str | Path | None = None, state_dir: str | Path | None = None
                ) -> tuple[Gallery, Path]:
    """The bundle's gallery (empty when there is none yet) and where it is stored."""
    from edgeface.core.bundle import Bundle, load_bundle

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    path = Path(gallery_path) if gallery_path else default_gallery_path(bundle.model_sha256, state_dir)
    return open_gallery(bundle.model_sha256, bundle.spec.embedding_size, path), path


# --- enroll ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnrollResult:
    name: str
    checks: tuple[PhotoCheck, ...]
    enrolled: int  # photos added now
    gallery: Gallery
    path: Path
    trained_name: bool  # the name is also a person of the model's identity head

    @property
    def rejected(self) -> list[PhotoCheck]:
        return [c for c in self.checks if not c.ok]


def enroll(bundle: Any, name: str, photos: Sequence[str | Path], gallery_path: str | Path | None = None,
           state_dir: str | Path | None = None, replace_existing: bool = False,
           embedder: FaceEmbedder | None = None) -> EnrollResult:
    """Add a person (or more photos of them) to the bundle's gallery. Photos that fail a check are reported in
    the result and not enrolled; the gallery is written only when at least one photo passed."""
    name = check_name(name)
    embedder = embedder or FaceEmbedder(bundle)
    paths = expand_photos(photos)
    if not paths:
        raise DataError("no photos given")
    checks, outputs = embedder.photos(paths)
    gallery, path = gallery_for(embedder.bundle, gallery_path, state_dir)
    with locked(path):
        gallery, _ = gallery_for(embedder.bundle, path)  # again under the lock: another enroll may have run
        person = gallery.get(name)
        known = set() if person is None or replace_existing else {p.get("sha256") for p in person.photos}
        keep: list[int] = []
        records: list[dict[str, str]] = []
        final: list[PhotoCheck] = []
        row = 0
        for check in checks:
            if not check.ok:
                final.append(check)
                continue
            digest = file_sha256(check.path)
            if digest in known:
                final.append(PhotoCheck(check.path, "duplicate", f"{check.path}: already enrolled for {name}",
                                        check.face, check.sharpness))
            else:
                known.add(digest)
                keep.append(row)
                records.append({"file": check.path.name, "sha256": digest})
                final.append(check)
            row += 1
        if keep:
            for record, check in zip(records, (c for c in final if c.ok)):
                save_crop(path, record["sha256"], check.crop)  # type: ignore[arg-type]
            before = referenced(gallery)
            gallery = gallery.with_person(name, outputs[EMBEDDING_NAME][keep], records, replace_existing)
            gallery.save(path)
            prune_crops(path, gallery, before - referenced(gallery))  # --replace drops the earlier photos
    trained = name.casefold() in {n.casefold() for n in embedder.spec.labels["identity"]}
    return EnrollResult(name, tuple(final), len(keep), gallery, path, trained)


def change_gallery(bundle: Any, change: Callable[[Gallery], Gallery], gallery_path: str | Path | None = None,
                   state_dir: str | Path | None = None) -> tuple[Gallery, Path]:
    """Apply ``change`` to the bundle's gallery under its lock and save it; the crops of photos it no longer
    names are deleted. Returns the new gallery and its path."""
    gallery, path = gallery_for(bundle, gallery_path, state_dir)
    with locked(path):
        gallery, _ = gallery_for(bundle, path)  # again under the lock: another process may have changed it
        changed = change(gallery)
        changed.save(path)
        prune_crops(path, changed, referenced(gallery) - referenced(changed))
    return changed, path


def remove_person(bundle: Any, name: str, gallery_path: str | Path | None = None,
                  state_dir: str | Path | None = None) -> Gallery:
    """Forget a person: their embeddings and their face crops."""
    return change_gallery(bundle, lambda g: g.without(name), gallery_path, state_dir)[0]


def remove_photo(bundle: Any, name: str, sha256: str, gallery_path: str | Path | None = None,
                 state_dir: str | Path | None = None) -> Gallery:
    """Forget one enrolled photo of a person (embedding and crop); the person goes with their last photo."""
    return change_gallery(bundle, lambda g: g.without_photo(name, sha256), gallery_path, state_dir)[0]


def rename_person(bundle: Any, name: str, new_name: str, gallery_path: str | Path | None = None,
                  state_dir: str | Path | None = None) -> Gallery:
    return change_gallery(bundle, lambda g: g.renamed(name, new_name), gallery_path, state_dir)[0]


def enroll_faces(bundle: Any, name: str, embeddings: np.ndarray, crops: Sequence[bytes],
                 records: Sequence[Mapping[str, str]], gallery_path: str | Path | None = None,
                 state_dir: str | Path | None = None) -> Gallery:
    """Add faces that were already detected, aligned and embedded (the daemon's own, from the web page) to a
    person: ``embeddings`` (K, D), their JPEG ``crops`` and gallery ``records`` (``file``, ``sha256``, ...)."""
    name = check_name(name)
    if not (len(embeddings) == len(crops) == len(records)) or not len(records):
        raise GalleryError(f"{name}: {len(embeddings)} embeddings, {len(crops)} crops and {len(records)} records")
    _, path = gallery_for(bundle, gallery_path, state_dir)
    for record, crop in zip(records, crops):
        save_crop(path, record["sha256"], crop)
    return change_gallery(bundle, lambda g: g.with_person(name, embeddings, records), path)[0]
