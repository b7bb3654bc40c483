"""What the page's routes share: the run's parts it works on (bundle, labeler, gallery, the pipeline's stranger
groups), what it keeps of the frames (strangers' cards, recent recognitions, the live frame), and the messages a
form's answer leaves for the next page. One ``PageState`` per run; each resource of ``edgeface.web.routes`` is a
small class over it.

Every change to the people goes through the same functions as the command line (``edgeface.people``): the
gallery is changed under its lock, then ``gallery_changed`` tells the labeler to read it again before the
next frame. Faces said to be nobody's ("a stranger") or not somebody's ("not X") go to the gallery as the
identity rule's negative evidence and to the store for calibration (``keep_negatives``), and leave both with
the same retention (``prune_negatives``).
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import Gallery, open_gallery
from edgeface.daemon.http import Reply
from edgeface.people.album import faces_dir
from edgeface.people.enroll import change_gallery
from edgeface.web import pages
from edgeface.web.live import LiveView
from edgeface.web.store import FaceSample, FaceStore
from edgeface.web.unknowns import StrangerCards, Unknowns
from edgeface.web.watch import FaceWatcher

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle
    from edgeface.daemon.config import WebConfig
    from edgeface.daemon.http import Request
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.runtime.labeler import Labeler

log = logging.getLogger("edgeface.daemon.web")

PREFIX = pages.PREFIX
MAX_NOTES = 50
MAX_NOTE_CHARS = 400  # an error may quote what a form sent: bounded


class Notes:
    """Messages shown once on the page a form's answer leads to, kept here under a random key rather than in
    the URL, so that no link can make the page say something it did not."""

    def __init__(self) -> None:
        self._notes: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._lock = threading.Lock()  # two requests may finish at once

    def add(self, kind: str, text: str) -> str:
        key = secrets.token_hex(6)
        with self._lock:
            self._notes[key] = (kind, text[:MAX_NOTE_CHARS])
            while len(self._notes) > MAX_NOTES:
                self._notes.popitem(last=False)
        return key

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            return self._notes.get(key)


@dataclass
class PageState:
    """The page of one run: see the module docstring. ``open`` makes it from the run's parts."""

    bundle: "Bundle"
    labeler: "Labeler"
    config: "WebConfig"
    gallery_path: Path | None
    cannot_name: str  # why naming is off ("" when it is on), shown on the pages that name
    store: FaceStore | None  # unknown and strangers' faces on disk (None when naming is off)
    watcher: FaceWatcher
    unknowns: Unknowns  # what the Unknown page lists: a card per stranger group
    live: LiveView = field(default_factory=LiveView)
    notes: Notes = field(default_factory=Notes)
    csrf: str = field(default_factory=lambda: secrets.token_hex(16))  # the page's form token, new at each start

    @classmethod
    def open(cls, bundle: "Bundle", labeler: "Labeler", config: "WebConfig", gallery_setting: str = "",
             strangers: "StrangerGroups | None" = None) -> "PageState":
        """The state for a run of ``bundle`` with ``labeler`` (whose gallery the page changes) and the pipeline's
        stranger groups ``strangers`` (a pipeline's ``FacePipeline.strangers``); the groups and faces kept by
        earlier runs are read back and join ``strangers``, so their ids stay what they were."""
        from edgeface.recognition.strangers import StrangerGroups

        gallery_path = labeler.gallery_path
        cannot_name = why_no_naming(bundle, gallery_path, gallery_setting)
        store = (FaceStore(faces_dir(gallery_path), config.max_visits, config.keep_days, config.max_strangers,
                           config.strangers_keep_days) if gallery_path is not None and not cannot_name else None)
        cards = StrangerCards.load(strangers if strangers is not None else StrangerGroups(), store)
        watcher = FaceWatcher(bundle.spec.crop, labeler, cards, keep_faces=not cannot_name)
        return cls(bundle, labeler, config, gallery_path, cannot_name, store, watcher, cards)

    def gallery(self) -> Gallery | None:
        """The gallery as it is on disk now (None without one, or when it cannot be read: logged)."""
        if self.gallery_path is None:
            return None
        try:
            return open_gallery(self.bundle.model_sha256, self.bundle.spec.embedding_size, self.gallery_path)
        except EdgefaceError as exc:
            log.warning("web: %s", exc)
            return None

    def gallery_changed(self) -> None:
        """The daemon names with the changed gallery from its next frame on."""
        self.labeler.reload_now()

    def keep_negatives(self, of: str, faces: list[tuple[FaceSample, bytes]], reason: str,
                       take_back: tuple[str, str] = ("", "")) -> int:
        """Keep ``faces`` (each with its crop) as evidence that they are not ``of`` (a name, or "" for nobody
        enrolled: a stranger): in the gallery, where the identity rule uses them from the next frame on, and in
        the store, for calibration. With ``take_back`` (a visit id and the stranger group it was in), the photos
        of ``of`` enrolled on this page from that visit or that group's card are forgotten first: the card was
        named wrongly. Returns how many photos were taken back; raises ``EdgefaceError``."""
        visit, group = take_back
        assert self.store is not None and self.gallery_path is not None
        removed = 0

        def change(gallery: Gallery) -> Gallery:
            nonlocal removed
            person = gallery.get(of) if of and (visit or group) else None
            for photo in list(person.photos) if person is not None else []:
                if (visit and photo.get("visit") == visit) or (group and photo.get("stranger") == group):
                    gallery = gallery.without_photo(of, str(photo["sha256"]))
                    removed += 1
            return gallery.with_negatives(of, np.stack([sample.embedding for sample, _ in faces]),
                                          [sample.id for sample, _ in faces], reason)

        change_gallery(self.bundle, change, self.gallery_path)
        self.store.add_strangers(faces, reason, of)
        self.gallery_changed()
        return removed

    def forget_negative(self, face_id: str) -> None:
        """A stranger's or "not X" face forgotten: out of the rule's evidence and the calibration set."""
        assert self.store is not None and self.gallery_path is not None
        gallery = self.gallery()
        if gallery is not None and any(n.id == face_id for n in gallery.negatives):
            change_gallery(self.bundle, lambda g: g.without_negatives([face_id]), self.gallery_path)
            self.gallery_changed()
        self.store.delete_stranger(face_id)

    def prune_negatives(self) -> None:
        """Retention of strangers' and "not X" faces (``max_strangers``, ``strangers_keep_days``): in the store
        and in the gallery."""
        if self.store is None:
            return
        self.store.prune()
        gallery = self.gallery()
        limits = (self.config.max_strangers, self.config.strangers_keep_days)
        if gallery is not None and gallery.pruned(*limits) is not gallery:
            change_gallery(self.bundle, lambda g: g.pruned(*limits), self.gallery_path)
            self.gallery_changed()

    def frame(self, request: "Request", gallery: Gallery | None = None) -> pages.Frame:
        """What every page shows around its content; ``gallery`` when the caller has read it already. A
        browser signed in (a session let the request through) is offered to sign out."""
        gallery = gallery if gallery is not None else self.gallery()
        counts = {"unknown": self.unknowns.count(), "people": len(gallery) if gallery else 0}
        return pages.Frame(self.csrf, counts, bool(request.session), self.retention())

    def retention(self) -> str:
        if self.store is None:
            return "No face is kept on this device (naming is off)."
        c = self.config
        return (f"Faces stay on this device, in {self.store.root} (readable by the daemon's user only). Unknown "
                f"faces are deleted after {c.keep_days:g} days (from at most {c.max_visits} visits), strangers' "
                f"and \"not X\" faces after {c.strangers_keep_days:g} days (at most {c.max_strangers}); recent "
                "recognitions are kept in memory only.")

    def note(self, request: "Request") -> tuple[str, str] | None:
        """The message a form's answer left for this page (``?note=``), if any."""
        return self.notes.get(request.arg("note"))

    def back(self, path: str, kind: str, text: str) -> Reply:
        """The answer to a form: back to ``path``, which shows ``text`` once (``kind``: ok or error)."""
        return Reply.redirect(f"{path}{'&' if '?' in path else '?'}note={self.notes.add(kind, text)}")


def why_no_naming(bundle: "Bundle", gallery_path: Path | None, gallery_setting: str) -> str:
    if bundle.spec.embedding_size <= 0:
        return ("Naming is off: this bundle's model has no embedding output (train and convert it again with "
                "this edgeface version).")
    if gallery_path is None:
        return f'Naming is off: the daemon runs without a gallery (gallery = "{gallery_setting}").'
    return ""
