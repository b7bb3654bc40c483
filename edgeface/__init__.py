"""edgeface: a three-head face model (identity, emotion, gender) from workstation to Raspberry Pi.

The Python API, for programs that embed edgeface (docs/python-api.md)::

    import edgeface

    pipeline = edgeface.load("bundles/home-int8.edgeface")     # bundle, detector, LiteRT engine, gallery
    for face in pipeline.label("photo.jpg"):                    # or an RGB uint8 array
        print(face.box, face.labels.identity.label, face.labels.identity.score)
    for result in pipeline.run(frames, fps=10):                 # RGB arrays; faces tracked, visits kept
        print(result.index, [face.labels.identity.label for face in result.faces])
        for event in result.events:                             # arrived, named, left
            print(event.kind, event.visit["who"])

Importing this package does no work: the names below load their modules when first used, and nothing here
imports TensorFlow (the device side of edgeface never does).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeface.core.version import __version__

if TYPE_CHECKING:
    from edgeface.recognition.pipeline import FacePipeline

# name -> the module that defines it, imported on first use
_LAZY = {
    "HEADS": "edgeface.core.spec",
    "Bundle": "edgeface.core.bundle",
    "load_bundle": "edgeface.core.bundle",
    "read_image": "edgeface.core.imageio",
    "EdgefaceError": "edgeface.core.errors",
    "FaceLabels": "edgeface.core.results",
    "Prediction": "edgeface.core.results",
    "FaceResult": "edgeface.recognition.records",
    "FrameResult": "edgeface.recognition.records",
    "VisitEvent": "edgeface.recognition.visits",
    "FacePipeline": "edgeface.recognition.pipeline",
}

__all__ = ["__version__", "load", *_LAZY]


def load(bundle: str | Path | Any, *, threads: int = 2, detector: str = "", gallery: str | Path | None = "",
         identity_threshold: float | None = None, similarity_threshold: float | None = None,
         camera: str = "camera", **settings: Any) -> FacePipeline:
    """A ready pipeline for a bundle (``.edgeface`` path or a loaded ``Bundle``): ``.label(image)``, ``.run(frames)``.

    ``threads``: LiteRT inference threads. ``detector``: a face detector other than the bundle's own.
    ``gallery``: "" the bundle's gallery of enrolled people in the state folder (if any), None no gallery, or a
    gallery file. Thresholds left None come from the gallery's calibration, then the bundle (docs/identity.md).
    ``camera``: the name visits carry. ``settings``: the daemon's sections as ``edgeface.recognition.settings``
    objects (``tracking=TrackingConfig(...)``, ``recognition=``, ``visits=``, ``detect=``), default as the daemon's.
    """
    from edgeface.core.bundle import Bundle, load_bundle
    from edgeface.recognition.pipeline import FacePipeline
    from edgeface.recognition.settings import DetectConfig

    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    settings.setdefault("detect", DetectConfig(detector=detector))
    return FacePipeline(loaded, threads, identity_threshold=identity_threshold,
                        gallery="none" if gallery is None else str(gallery),
                        similarity_threshold=similarity_threshold, camera=camera, **settings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
