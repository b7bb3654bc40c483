"""What the page's routes share: the run's parts it works on (bundle, labeler, gallery), what it keeps of the
frames (unknown faces, recent recognitions, the live frame), and the messages a form's answer leaves for the
next page. One ``PageState`` per run; each resource of ``edgeface.web.routes`` is a small class over it.

Every change to the people goes through the same functions as the command line (``edgeface.people``): the
gallery is changed under its lock, then ``gallery_changed`` tells the labeler to read it again before the
next frame.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import Gallery, open_gallery
from edgeface.daemon.http import Reply
from edgeface.people.album import faces_dir
from edgeface.web import pages
from edgeface.web.live import LiveView
from edgeface.web.store import FaceStore
from edgeface.web.unknowns import Unknowns, VisitUnknowns
from edgeface.web.watch import FaceWatcher

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle
    from edgeface.daemon.config import WebConfig
    from edgeface.daemon.http import Request
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
    unknowns: Unknowns  # what the Unknown page lists
    live: LiveView = field(default_factory=LiveView)
    notes: Notes = field(default_factory=Notes)
    csrf: str = field(default_factory=lambda: secrets.token_hex(16))  # the page's form token, new at each start

    @classmethod
    def open(cls, bundle: "Bundle", labeler: "Labeler", config: "WebConfig",
             gallery_setting: str = "") -> "PageState":
        """The state for a run of ``bundle`` with ``labeler`` (whose gallery the page changes); unknown faces
        kept by earlier runs are read back."""
        gallery_path = labeler.gallery_path
        cannot_name = why_no_naming(bundle, gallery_path, gallery_setting)
        store = (FaceStore(faces_dir(gallery_path), config.max_visits, config.keep_days, config.max_strangers,
                           config.strangers_keep_days) if gallery_path is not None else None)
        visits = store.load_visits() if store is not None else []
        watcher = FaceWatcher(bundle.spec.crop, labeler, visits, keep_faces=not cannot_name)
        return cls(bundle, labeler, config, gallery_path, cannot_name, store, watcher,
                   VisitUnknowns(watcher, store))

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
                f"faces are deleted after {c.keep_days:g} days (at most {c.max_visits} visits), strangers' faces "
                f"after {c.strangers_keep_days:g} days (at most {c.max_strangers}); recent recognitions are kept "
                "in memory only.")

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
