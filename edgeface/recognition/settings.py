"""The recognition pipeline's settings: the daemon's ``[detect]``, ``[tracking]``, ``[recognition]`` and
``[visits]`` sections, and what ``edgeface.load`` takes. Each default is written here once."""

from __future__ import annotations

from dataclasses import dataclass

from edgeface.core.options import in_range, option

# Frame times are unix seconds (about 1.8e9): their differences carry float rounding of a microsecond or so, and
# 1.4 - 0.4 < 1.0 anyway. Durations are compared within this tolerance, so that the same video gives the same
# schedule whatever clock its frames were stamped with (the daemon's, or the Python API's).
TIME_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DetectConfig:
    detector: str = option("", help="face detector; empty: the one the bundle was trained with")
    min_score: float = option(0.5, in_range(0.05, 1.0), "detector confidence below which a face is ignored")
    min_face: int = option(0, in_range(0, 4096), "ignore faces smaller than this (pixels); 0: the bundle's value")
    max_faces: int = option(8, in_range(1, 64), "at most this many faces per frame (the largest)")


@dataclass(frozen=True)
class TrackingConfig:
    iou: float = option(0.3, in_range(0.01, 0.99), "a face continues a track when its box overlaps where the track "
                                                    "was heading this much")
    lost_after: float = option(0.5, in_range(0.0, 60.0), "seconds without a detection after which a track is "
                                                        "lost (then found again only by its face)")
    reid_seconds: float = option(3.0, in_range(0.0, 600.0), "a lost track is kept this long: a face found near "
                                                           "where it was, with a matching embedding, continues it")
    reid_distance: float = option(2.0, in_range(0.0, 100.0), "how far from where a lost track was (in face "
                                                            "widths) its face may come back")


@dataclass(frozen=True)
class RecognitionConfig:
    budget: int = option(2, in_range(1, 64), "faces recognised per frame (landmarks, encoder, heads) besides new "
                                            "ones; the other faces keep their track's last results")
    gather: int = option(5, in_range(1, 100), "faces of a new track recognised (one per frame) before it is "
                                             "called unknown when nobody matched")
    refresh: float = option(1.0, in_range(0.0, 3600.0), "seconds between two recognitions of a track already "
                                                       "decided (emotion changes within a visit)")
    better_view: float = option(1.3, in_range(1.0, 100.0), "recognise a track again as soon as its face's quality "
                                                          "beats its best so far by this factor")


@dataclass(frozen=True)
class VisitConfig:
    leave_after: float = option(30.0, in_range(0.0, 86400.0), "a visit ends when its person has not been seen "
                                                             "for this many seconds")
    min_frames: int = option(3, in_range(1, 1000), "frames a face must be seen in before it makes a visit (a "
                                                  "one-frame false detection makes none)")
    crops: bool = option(False, help="put the visit's best face (JPEG, base64) in visit records: faces then leave "
                                     "the device (JSON lines file, MQTT broker)")
