"""From a batch's model outputs to labels per face, with the people the device knows.

The labeler holds what the identity rule (``edgeface.runtime.identity``) compares faces with: the gallery of
enrolled people (read again when its file changes), the trained people's labels, and the thresholds, which come
from the caller, else the gallery's calibration, else the bundle and ``DEFAULT_SIMILARITY_THRESHOLD``. It
decides photos on their own (``photo_rule``) and gives tracks the rule for a visit's evidence (``visit_rule``,
calibrated per visit, ``edgeface.recognition``). The daemon, ``evaluate``, ``calibrate``, ``identify`` and the
open-set benchmark all call it, so they cannot disagree.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import DEFAULT_SIMILARITY_THRESHOLD, Gallery, GalleryError
from edgeface.core.results import FaceLabels, decode_outputs
from edgeface.core.spec import EMBEDDING_NAME, ModelSpec
from edgeface.runtime.identity import Evidence, IdentityRule, decide, face_evidence

if TYPE_CHECKING:
    from edgeface.core.results import Prediction

# Under the daemon's logger, so that its lines reach the service log.
log = logging.getLogger("edgeface.daemon.identity")

GALLERY_OFF = "none"  # ``gallery = "none"`` in the daemon config: identity head only
RELOAD_CHECK_SECONDS = 2.0
VISIT_MIN_OBSERVATIONS = 3  # faces of a track before it is named (edgeface.recognition gathers them first)


class Labeler:
    """Turns model outputs (N faces) into ``FaceLabels``.

    ``gallery``: enrolled people (optional). ``similarity_threshold``: None takes the gallery's calibrated
    value, else ``DEFAULT_SIMILARITY_THRESHOLD``. ``identity_threshold`` is used as given; ``for_bundle``
    picks it from the flags, the gallery's calibration or the bundle, in that order.
    """

    def __init__(self, spec: ModelSpec, identity_threshold: float = 0.5, gallery: Gallery | None = None,
                 similarity_threshold: float | None = None) -> None:
        from edgeface.core.gallery import check_threshold

        self.spec = spec
        self.identity_threshold = identity_threshold = check_threshold("identity_threshold", identity_threshold)
        if similarity_threshold is not None:
            similarity_threshold = check_threshold("similarity_threshold", similarity_threshold)
        self._explicit_similarity = similarity_threshold
        self._explicit_identity: float | None = identity_threshold
        self._bundle_identity = identity_threshold
        self._watch: tuple[Path, str, Any] | None = None  # (path, model sha, last stat) when reloading
        self._next_check = 0.0
        self._reread = False  # read the gallery again at the next call, changed or not
        self.failure: dict[str, str] | None = None  # the last re-read that failed (/healthz), until one works
        self.similarity_from = self.identity_from = "given"  # where each threshold in use came from
        self.gallery: Gallery | None = None
        self.version = 0  # counts gallery changes: evidence computed against an older gallery is stale
        self.similarity_threshold = DEFAULT_SIMILARITY_THRESHOLD
        self.visit_rule: IdentityRule
        self._set_gallery(gallery)

    @classmethod
    def for_bundle(cls, bundle: Any, identity_threshold: float | None = None,
                   similarity_threshold: float | None = None, gallery: str | Path | None = "",
                   state_dir: str | Path | None = None, reload: bool = True) -> "Labeler":
        """The labeler the device uses for a bundle.

        ``gallery``: "" (default) the bundle's gallery in the state directory, if one exists; ``"none"`` or
        None: no gallery; else a gallery file, which must exist. With ``reload``, a gallery file that changes
        (``edgeface enroll`` / ``people remove`` / ``calibrate`` while the daemon runs) is read again, at most
        every ``RELOAD_CHECK_SECONDS``. Thresholds given here win over the gallery's calibrated ones, which
        win over the bundle's ``identity_threshold`` and ``DEFAULT_SIMILARITY_THRESHOLD``.
        """
        from edgeface.core.gallery import default_gallery_path, read_gallery

        given = bundle.identity_threshold if identity_threshold is None else identity_threshold
        labeler = cls(bundle.spec, given, similarity_threshold=similarity_threshold)
        labeler._explicit_identity = identity_threshold
        labeler._bundle_identity = bundle.identity_threshold
        labeler.identity_from = "given" if identity_threshold is not None else "bundle"
        if gallery is None or str(gallery) == GALLERY_OFF:
            return labeler
        if bundle.spec.embedding_size <= 0:
            if gallery:
                raise GalleryError(f"{bundle.path}: the model has no embedding output, so it cannot use "
                                   f"gallery {gallery}")
            return labeler
        path = Path(gallery) if gallery else default_gallery_path(bundle.model_sha256, state_dir)
        if gallery and not path.is_file():
            raise GalleryError(f"{path}: gallery not found")
        if path.is_file():
            labeler._set_gallery(read_gallery(path, bundle.model_sha256))
        if reload:
            labeler._watch = (path, bundle.model_sha256, _stat(path))
            labeler._next_check = time.monotonic() + RELOAD_CHECK_SECONDS
        return labeler

    def _set_gallery(self, gallery: Gallery | None) -> None:
        if gallery is not None and gallery.embedding_size != self.spec.embedding_size:
            raise GalleryError(f"{gallery.path or 'gallery'}: embeddings of size {gallery.embedding_size}, "
                               f"the model makes {self.spec.embedding_size}")
        # Kept with nobody enrolled when it holds faces said not to be a trained person (or nobody's).
        self.gallery = gallery if gallery is not None and (len(gallery) or gallery.negatives) else None
        calibrated = gallery.similarity_threshold if gallery is not None else None
        if self._explicit_similarity is not None:
            self.similarity_threshold, self.similarity_from = self._explicit_similarity, "given"
        elif calibrated is not None:
            self.similarity_threshold, self.similarity_from = calibrated, "calibrated"
        else:
            self.similarity_threshold, self.similarity_from = DEFAULT_SIMILARITY_THRESHOLD, "default"
        if self._explicit_identity is None:
            gallery_identity = gallery.identity_threshold if gallery is not None else None
            self.identity_threshold, self.identity_from = ((gallery_identity, "calibrated")
                                                           if gallery_identity is not None
                                                           else (float(self._bundle_identity or 0.0), "bundle"))
        visit_similarity = (self._explicit_similarity if self._explicit_similarity is not None else
                            gallery.visit_similarity_threshold if gallery is not None and
                            gallery.visit_similarity_threshold is not None else self.similarity_threshold)
        visit_identity = (self._explicit_identity if self._explicit_identity is not None else
                          gallery.visit_identity_threshold if gallery is not None and
                          gallery.visit_identity_threshold is not None else self.identity_threshold)
        self.visit_rule = IdentityRule(visit_similarity, visit_identity, min_observations=VISIT_MIN_OBSERVATIONS)
        self.version += 1
        if gallery is not None:
            log.info("gallery %s: %d people, similarity threshold %.3f (%s), identity threshold %.3f; "
                     "per visit %.3f and %.3f", gallery.path, len(gallery), self.similarity_threshold,
                     self.similarity_from, self.identity_threshold, visit_similarity, visit_identity)

    @property
    def photo_rule(self) -> IdentityRule:
        """The rule for one face on its own (a photo)."""
        return IdentityRule(self.similarity_threshold, self.identity_threshold)

    @property
    def enrolled(self) -> tuple[str, ...]:
        return self.gallery.names if self.gallery is not None else ()

    @property
    def trained(self) -> tuple[str, ...]:
        return tuple(self.spec.labels["identity"])

    def evidence(self, outputs: Mapping[str, np.ndarray]) -> list[Evidence]:
        """Each face's evidence against the people known now (``edgeface.runtime.identity``)."""
        self._maybe_reload()
        return face_evidence(outputs.get(EMBEDDING_NAME), outputs.get("identity"), self.gallery, self.trained)

    def decide(self, evidence: Evidence, rule: IdentityRule, current: str = "") -> "Prediction":
        return decide(evidence, rule, self.enrolled, self.trained, current)

    @property
    def gallery_path(self) -> Path | None:
        """The gallery file this labeler reads and watches (None: it uses no gallery file)."""
        if self._watch is not None:
            return self._watch[0]
        return self.gallery.path if self.gallery is not None else None

    def refresh(self) -> None:
        """Read the gallery file again if it changed (checked at most every ``RELOAD_CHECK_SECONDS``, or at once
        after ``reload_now``): the pipeline calls this once per frame."""
        self._maybe_reload()

    def reload_now(self) -> None:
        """Read the gallery file again before the next faces are labelled, without waiting for the periodic
        check: whoever just changed it (the web page, in the daemon's process) wants the change used at once.
        Safe to call from another thread: the labelling thread does the reading."""
        self._reread = True
        self._next_check = 0.0

    def _maybe_reload(self) -> None:
        from edgeface.core.gallery import read_gallery

        now = time.monotonic()
        if self._watch is None or now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_SECONDS
        path, sha, seen = self._watch
        current = _stat(path)
        reread, self._reread = self._reread, False
        if current == seen and not reread:
            return
        self._watch = (path, sha, current)
        if current is None:
            log.warning("gallery %s was removed: identity head only from now on", path)
            self._set_gallery(None)
            self.failure = None
            return
        try:
            self._set_gallery(read_gallery(path, sha))
            self.failure = None
        except EdgefaceError as exc:  # keep labelling with the gallery we have; say so once
            if self.failure is None or self.failure["error"] != str(exc):
                log.warning("gallery not reloaded: %s; labelling on with the gallery read before", exc)
                self.failure = {"what": str(path), "error": str(exc),
                                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def __call__(self, outputs: Mapping[str, np.ndarray]) -> list[FaceLabels]:
        """Labels of each face of a batch, each face decided on its own (the photo rule)."""
        self._maybe_reload()
        labels = decode_outputs(outputs, self.spec)
        rule = self.photo_rule
        return [FaceLabels(self.decide(e, rule), label.emotion, label.gender)
                for e, label in zip(self.evidence(outputs), labels)]


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What tells that a file was replaced: inode, size and modification time (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
