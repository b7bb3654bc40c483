"""The one description of a model's inputs and outputs that every stage reads.

Training writes it next to ``model.keras`` (``metadata.json``), conversion copies it into the bundle, and the
Pi runtime reads it from there. Crop geometry, input size, pixel scaling and label order therefore cannot
disagree between training, calibration, evaluation and the device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

from edgeface.core.errors import ModelError

HEADS: tuple[str, ...] = ("identity", "emotion", "gender")

# Fixed vocabularies of the two attribute heads. Identity labels are whatever people the user trained on.
EMOTIONS: tuple[str, ...] = ("happy", "neutral")
GENDERS: tuple[str, ...] = ("female", "male")
ATTRIBUTE_LABELS: dict[str, tuple[str, ...]] = {"emotion": EMOTIONS, "gender": GENDERS}

MAX_LABELS = 100_000  # labels of one head (identity: the people trained on)
MAX_LABEL_LENGTH = 256
SIGNATURE = "serving_default"  # the TFLite signature a bundle's model is run through
INPUT_NAME = "image"
EMBEDDING_NAME = "embedding"
# Outputs named FEATURES_PREFIX + a feature name carry the features a head reads, for its last layer computed in
# float on the device (edgeface.core.bundle.FloatHead).
FEATURES_PREFIX = "features_"
# A float head may read the mouth's shape instead (edgeface.faces.geometry): numbers measured on the face mesh's
# landmarks next to the crop, not a model output.
MOUTH_SHAPE = "mouth_shape"
MOUTH_SHAPE_SIZE = 6
# Alignment points a crop can be fitted on, with how many of them it may use: the detector's keypoints
# (BlazeFace: eyes, nose tip, mouth) or the face mesh's five points.
LANDMARK_POINTS: dict[str, tuple[int, int]] = {"": (2, 4), "mesh5": (5, 5)}


@dataclass(frozen=True)
class CropSpec:
    """Where the face lands in an aligned crop, as fractions of the crop side.

    By default the crop is aligned on the eyes alone (``eye_distance``, ``eye_line``); the defaults leave room
    for the mouth (emotion) and some hair (gender), a little looser than the usual 112x112 recognition
    template. ``keypoints`` instead gives where alignment points land, and the crop is the similarity transform
    that fits them best (least squares): how a backbone trained on another aligner's crops gets the crops it
    knows. The points are the detector's first keypoints (BlazeFace order: the subject's right eye, left eye,
    nose tip, mouth centre), or with ``landmarks = "mesh5"`` the face mesh's five points in dlib's order
    (``edgeface.faces.landmarks``).
    """

    eye_distance: float = 0.30  # distance between the eye centres / crop width
    eye_line: float = 0.40  # height of the eye line / crop height
    detector: str = "blazeface"  # which detector made the keypoints the crop is aligned on
    min_face: int = 20  # faces whose box is smaller than this (pixels) are ignored
    keypoints: tuple[tuple[float, float], ...] = ()  # (x, y) per point; () = eyes at the above
    landmarks: str = ""  # "": the detector's keypoints; "mesh5": the face mesh's five points (dlib's)

    def __post_init__(self) -> None:
        if not 0.05 <= self.eye_distance <= 0.8:
            raise ModelError(f"crop eye_distance must be in [0.05, 0.8], got {self.eye_distance}")
        if not 0.1 <= self.eye_line <= 0.7:
            raise ModelError(f"crop eye_line must be in [0.1, 0.7], got {self.eye_line}")
        try:
            keypoints = tuple((float(x), float(y)) for x, y in self.keypoints)
        except (TypeError, ValueError):
            raise ModelError(f"crop keypoints must be (x, y) pairs, got {self.keypoints!r}") from None
        if self.landmarks not in LANDMARK_POINTS:
            raise ModelError(f"crop landmarks must be one of {', '.join(repr(k) for k in LANDMARK_POINTS)}, "
                             f"got {self.landmarks!r}")
        low, high = LANDMARK_POINTS[self.landmarks]
        if self.landmarks and not keypoints:
            raise ModelError(f"crop landmarks {self.landmarks!r} need their keypoints' positions")
        if keypoints and not (low <= len(keypoints) <= high and all(0 <= v <= 1 for p in keypoints for v in p)):
            raise ModelError(f"crop keypoints must be {low} to {high} (x, y) pairs in [0, 1], got {list(keypoints)}")
        object.__setattr__(self, "keypoints", keypoints)

    def targets(self) -> tuple[tuple[float, float], ...]:
        """Where the keypoints the crop is aligned on land, as fractions: ``keypoints``, or the two eyes."""
        if self.keypoints:
            return self.keypoints
        half = self.eye_distance / 2
        return ((0.5 - half, self.eye_line), (0.5 + half, self.eye_line))


@dataclass(frozen=True)
class ModelSpec:
    """Inputs, outputs and preprocessing of a three-head face model."""

    labels: Mapping[str, tuple[str, ...]]
    input_size: int = 224
    # The model takes RGB float pixels scaled to [0, 1]; the backbone's own preprocessing is inside the graph.
    input_range: tuple[float, float] = (0.0, 1.0)
    color: str = "RGB"
    crop: CropSpec = field(default_factory=CropSpec)
    backbone: str = "mobilenetv2"
    embedding_size: int = 0  # 0 when the model has no embedding output

    def __post_init__(self) -> None:
        missing = [h for h in HEADS if h not in self.labels]
        if missing:
            raise ModelError(f"model spec has no labels for head(s) {', '.join(missing)}")
        for head, labels in self.labels.items():
            if len(labels) < 2:
                raise ModelError(f"head {head!r} needs at least 2 labels, got {list(labels)}")
            if len(set(labels)) != len(labels):
                raise ModelError(f"head {head!r} has duplicate labels: {list(labels)}")
        if not 32 <= self.input_size <= 1024:
            raise ModelError(f"input_size must be in [32, 1024], got {self.input_size}")
        if self.color != "RGB":
            raise ModelError(f"only RGB input is supported, got {self.color!r}")

    @property
    def num_classes(self) -> dict[str, int]:
        return {head: len(self.labels[head]) for head in HEADS}

    def with_(self, **changes: Any) -> "ModelSpec":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {head: list(self.labels[head]) for head in HEADS}
        data["input_range"] = list(self.input_range)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelSpec":
        """A spec as ``to_dict`` wrote it (a bundle's manifest, a model's metadata), every field checked: one
        ``ModelError`` line naming the field."""
        from edgeface.core.reader import Table

        spec = Table(data, "", ModelError)
        labels = spec.table("labels")
        crop = spec.table("crop", default={})
        crop.only([f.name for f in dataclasses.fields(CropSpec)])
        keypoints = crop.items("keypoints", 8, default=[])
        points = keypoints.each(_pair)
        scale = spec.items("input_range", 2)
        if len(scale) != 2:
            spec.fail("input_range", "must be two numbers")
        low, high = scale.each(_number)
        try:
            return cls(
                labels={head: tuple(labels.items(head, MAX_LABELS).texts(MAX_LABEL_LENGTH)) for head in HEADS},
                input_size=spec.integer("input_size", 32, 1024),
                input_range=(low, high),
                color=spec.text("color", 16, default="RGB"),
                crop=CropSpec(eye_distance=crop.number("eye_distance", 0.05, 0.8, default=CropSpec.eye_distance),
                              eye_line=crop.number("eye_line", 0.1, 0.7, default=CropSpec.eye_line),
                              detector=crop.text("detector", 64, default=CropSpec.detector),
                              min_face=crop.integer("min_face", 0, 4096, default=CropSpec.min_face),
                              keypoints=tuple(points),
                              landmarks=crop.text("landmarks", 16, default=CropSpec.landmarks)),
                backbone=spec.text("backbone", 64, default="unknown"),
                embedding_size=spec.integer("embedding_size", 0, 4096, default=0),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"invalid model spec: {type(exc).__name__}: {exc}") from None


def _number(value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{label} must be a finite number, not {value!r:.40}")
    return float(value)


def _pair(value: Any, label: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ModelError(f"{label} must be an (x, y) pair")
    x, y = (_number(v, label) for v in value)
    return x, y
