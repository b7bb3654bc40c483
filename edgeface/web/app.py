"""The web page the daemon serves under ``/ui`` (docs/web.md): live view, unknown faces, people, recent
recognitions, thresholds. ``WebPage(daemon)`` is a frame observer of the run and mounts its routes on the
daemon's HTTP server; ``edgeface run`` passes it to the daemon when ``[web] enabled`` is set.

Every change goes through the same functions as the command line (``edgeface.people``): the gallery is
changed under its lock, then the daemon's labeler is told to read it again before the next frame.

Why one module of about 480 lines: it is one class whose route handlers share its state (the latest frame,
the unknown faces, the gallery) and its lock; the markup lives in ``pages.py`` and ``static/``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import Gallery, open_gallery
from edgeface.people.album import crop_path, faces_dir
from edgeface.people.calibrate import calibrate_faces
from edgeface.people.enroll import change_gallery, enroll_faces, remove_person, remove_photo, rename_person
from edgeface.web import pages
from edgeface.web.guard import Guard
from edgeface.daemon.server import Reply
from edgeface.web.http import Handler, add_routes, arg, field_of, form
from edgeface.web.live import LiveView
from edgeface.web.store import FaceStore, Visit, valid_id
from edgeface.web.watch import FaceWatcher

if TYPE_CHECKING:
    from edgeface.daemon.records import Published
    from edgeface.daemon.run import Daemon
    from edgeface.daemon.server import Request

log = logging.getLogger("edgeface.daemon.web")

PREFIX = pages.PREFIX
FLUSH_EVERY = 1.0  # seconds between writes of the unknown faces kept meanwhile
PRUNE_EVERY = 60.0
DEFAULT_FAR = 0.01
STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
FAILED_SIGN_IN_DELAY = 1.0  # seconds: guessing the token stays slow
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    # Only the page's own files: no inline script, nothing fetched from elsewhere.
    ("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
)


class WebPage:
    """The page and what it keeps; one per run, made by the daemon once its parts exist."""

    def __init__(self, daemon: "Daemon") -> None:
        config = daemon.config
        self.web = config.web
        self.bundle = daemon.bundle
        self.labeler = daemon.pipeline.labeler
        self.gallery_path = self.labeler.gallery_path
        self.cannot_name = self._why_no_naming(config.gallery)
        root = faces_dir(self.gallery_path) if self.gallery_path is not None else None
        self.store = (FaceStore(root, self.web.max_visits, self.web.keep_days, self.web.max_strangers,
                                self.web.strangers_keep_days) if root is not None else None)
        visits = self.store.load_visits() if self.store is not None else []
        self.watcher = FaceWatcher(self.bundle.spec.crop, self.labeler, visits, keep_faces=not self.cannot_name)
        self.live = LiveView()
        if daemon.http is None:
            raise EdgefaceError("[web] needs the HTTP server ([http] enabled)")
        self.guard = Guard(PREFIX, daemon.http.check_token, daemon.http.has_token, self.web.hosts,
                           public=(f"{PREFIX}/login", *(f"{PREFIX}/static/{name}" for name in STATIC)))
        self._notes: collections.OrderedDict[str, tuple[str, str]] = collections.OrderedDict()
        self._notes_lock = threading.Lock()
        self._disk = threading.Lock()  # writes of unknown faces against the actions that delete them
        self._stop = threading.Event()
        self._errors = 0
        add_routes(daemon.http, self._routes(), self.guard.check, SECURITY_HEADERS)
        self._thread = threading.Thread(target=self._keep, name="edgeface-web", daemon=True)
        self._thread.start()
        where = self.store.root if self.store is not None else "nowhere (naming is off)"
        log.info("web: the page is at %s/ on the HTTP server; faces kept in %s", PREFIX, where)

    def _why_no_naming(self, gallery_setting: str) -> str:
        if self.bundle.spec.embedding_size <= 0:
            return ("Naming is off: this bundle's model has no embedding output (train and convert it again with "
                    "this edgeface version).")
        if self.gallery_path is None:
            return f'Naming is off: the daemon runs without a gallery (gallery = "{gallery_setting}").'
        return ""

    # --- the run's side ----------------------------------------------------------------------------------

    def observe(self, image: np.ndarray, item: "Published") -> None:
        self.live.observe(image, item)
        try:
            self.watcher.observe(image, item)
        except Exception:  # the page must never stop the labelling
            self._errors += 1
            if self._errors <= 3:
                log.exception("web: error while keeping faces (frame %d)", item.result.index)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._flush()

    def _keep(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(FLUSH_EVERY):
            try:
                self._flush()
                if time.monotonic() >= next_prune and self.store is not None:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self.store.prune()
            except Exception:
                log.exception("web: error while writing unknown faces")

    def _flush(self) -> None:
        """Write the visits changed since the last call, and delete those retention removes."""
        if self.store is None:
            return
        with self._disk:
            for raw, crops in self.watcher.pending():
                if self.watcher.visit(raw["id"]) is None:  # named or ignored meanwhile
                    continue
                self.store.save_visit(raw, crops)
                self.watcher.written(raw["id"], set(crops))
            expired = self.store.expired(self.watcher.newest_visits())
            for visit in expired:
                self.store.delete_visit(visit.id)
            self.watcher.forget_visits(expired)

    # --- routes ------------------------------------------------------------------------------------------

    def _routes(self) -> dict[tuple[str, str], Handler]:
        get: dict[str, Handler] = {
            "/": self.live_page, "/api/live": self.live_state, "/api/stats": self.stats, "/live.jpg": self.live_jpeg,
            "/unknown": self.unknown_page, "/people": self.people_page, "/recent": self.recent_page,
            "/thresholds": self.thresholds_page, "/login": self.login_page, "/face.jpg": self.face,
            **{f"/static/{name}": self.static for name in STATIC},
        }
        post: dict[str, Handler] = {
            "/unknown": self.unknown_action, "/people": self.people_action, "/recent": self.not_them,
            "/thresholds": self.thresholds_action, "/login": self.sign_in, "/logout": self.sign_out,
        }
        to_page = {("GET", "/"): lambda r: Reply.redirect(f"{PREFIX}/"),
                   ("GET", PREFIX): lambda r: Reply.redirect(f"{PREFIX}/")}
        return {**to_page, **{("GET", PREFIX + p): h for p, h in get.items()},
                **{("POST", PREFIX + p): h for p, h in post.items()}}

    # --- pages ---------------------------------------------------------------------------------------------

    def _frame(self, gallery: Gallery | None = None) -> pages.Frame:
        gallery = gallery if gallery is not None else self._gallery()
        counts = {"unknown": len(self.watcher.newest_visits()), "people": len(gallery) if gallery else 0}
        return pages.Frame(self.guard.csrf, counts, self.guard.has_token, self.retention())

    def retention(self) -> str:
        if self.store is None:
            return "No face is kept on this device (naming is off)."
        w = self.web
        return (f"Faces stay on this device, in {self.store.root} (readable by the daemon's user only). Unknown "
                f"faces are deleted after {w.keep_days:g} days (at most {w.max_visits} visits), strangers' faces "
                f"after {w.strangers_keep_days:g} days (at most {w.max_strangers}); recent recognitions are kept "
                "in memory only.")

    def _gallery(self) -> Gallery | None:
        if self.gallery_path is None:
            return None
        try:
            return open_gallery(self.bundle.model_sha256, self.bundle.spec.embedding_size, self.gallery_path)
        except EdgefaceError as exc:
            log.warning("web: %s", exc)
            return None

    def _note(self, request: "Request") -> tuple[str, str] | None:
        return self._notes.get(arg(request, "note"))

    def _back(self, path: str, kind: str, text: str) -> Reply:
        """Redirect after a POST, with a message shown once on the page it leads to (kept here, not in the URL,
        so that no link can make the page say something it did not)."""
        key = secrets.token_hex(6)
        with self._notes_lock:  # two requests may finish at once
            self._notes[key] = (kind, text)
            while len(self._notes) > 50:
                self._notes.popitem(last=False)
        return Reply.redirect(f"{path}{'&' if '?' in path else '?'}note={key}")

    def live_page(self, request: "Request") -> Reply:
        return Reply.html(pages.live_page(self._frame(), self._live_state(), self.web.live_fps,
                                             self._note(request)))

    def _live_state(self) -> dict[str, Any] | None:
        state = self.live.state()
        if state is not None:
            for face in state["faces"]:
                face["recognition"] = self.watcher.recognition_of(face["track"])
                face["visit"] = self.watcher.visit_of(face["track"])
        return state

    def live_state(self, request: "Request") -> Reply:
        state = self._live_state()
        if state is not None:
            state["rows"] = pages.face_list(self.guard.csrf, state["faces"])
        return Reply.json(state or {"frame": None, "faces": [], "rows": pages.face_list("", [])})

    def live_jpeg(self, request: "Request") -> Reply:
        try:
            index = int(arg(request, "frame", "-1"))
        except ValueError:
            index = -1
        data = self.live.jpeg(index)
        if data is None:
            return Reply.text("no frame yet", 503)
        return Reply.jpeg(data)

    def stats(self, request: "Request") -> Reply:
        """What the page costs and keeps: frames encoded for live views, crops kept, visits."""
        return Reply.json({"live_frames_encoded": self.live.encoded, "crops_kept": self.watcher.kept,
                              "unknown_visits": len(self.watcher.newest_visits()),
                              "recognitions": len(self.watcher.recognitions())})

    def unknown_page(self, request: "Request") -> Reply:
        gallery = self._gallery()
        names = gallery.names if gallery is not None else ()
        html = pages.unknown_page(self._frame(gallery), self.watcher.newest_visits(), names, time.time(),
                                  self._visit_retention(), self.cannot_name, arg(request, "name")[:64],
                                  self._note(request))
        return Reply.html(html)

    def _visit_retention(self) -> str:
        return f"Kept {self.web.keep_days:g} days, at most {self.web.max_visits} visits."

    def people_page(self, request: "Request") -> Reply:
        gallery = self._gallery()
        people = []
        for person in gallery.people if gallery is not None else ():
            photos = []
            for photo in person.photos:
                sha = str(photo.get("sha256", ""))
                path = crop_path(self.gallery_path, sha) if self.gallery_path else None
                photos.append((sha, str(photo.get("file", "")), bool(path and path.is_file())))
            people.append(pages.PersonView(person.name, person.added, photos))
        html = pages.people_page(self._frame(gallery), people, str(self.gallery_path or "none"), self.cannot_name,
                                 self._note(request))
        return Reply.html(html)

    def recent_page(self, request: "Request") -> Reply:
        now = time.time()
        items = [pages.RecognitionView(r.id, r.name, r.score, r.emotion, r.gender, now - r.last, r.sample.best,
                                       r.sample.similarity) for r in self.watcher.recognitions()]
        return Reply.html(pages.recent_page(self._frame(), items, self._note(request)))

    def thresholds_page(self, request: "Request") -> Reply:
        gallery = self._gallery()
        labeler = self.labeler
        view = pages.ThresholdsView(
            labeler.similarity_threshold, labeler.similarity_from, labeler.identity_threshold, labeler.identity_from,
            dict(gallery.calibration) if gallery is not None and gallery.calibration else None,
            bool(gallery is not None and gallery.calibration_is_stale),
            self.store.strangers() if self.store is not None else [], len(gallery) if gallery is not None else 0)
        far = float((gallery.calibration or {}).get("far_target", DEFAULT_FAR)) if gallery is not None else DEFAULT_FAR
        return Reply.html(pages.thresholds_page(self._frame(gallery), view, far, self.web.max_strangers,
                                                   self._note(request)))

    # --- faces ---------------------------------------------------------------------------------------------

    def face(self, request: "Request") -> Reply:
        """``/ui/face.jpg?of=unknown|person|stranger|recent&id=...`` (``&visit=...`` for unknown faces)."""
        of, face_id = arg(request, "of"), arg(request, "id")
        path: Path | None = None
        if of == "recent":
            found = next((r for r in self.watcher.recognitions() if r.id == face_id), None)
            return Reply.jpeg(found.jpeg) if found is not None else Reply.text("no such face", 404)
        if of == "unknown" and self.store is not None:
            visit = self.watcher.visit(arg(request, "visit"))
            sample = next((s for s in visit.samples if s.id == face_id), None) if visit is not None else None
            if sample is not None and sample.jpeg is not None:  # not written yet
                return Reply.jpeg(sample.jpeg)
            path = self.store.visit_crop(arg(request, "visit"), face_id)
        elif of == "person" and self.gallery_path is not None:
            path = crop_path(self.gallery_path, face_id)
        elif of == "stranger" and self.store is not None:
            path = self.store.stranger_crop(face_id)
        if path is None or not path.is_file():
            return Reply.text("no such face", 404)
        return Reply.jpeg(path.read_bytes(), cache=True)

    def static(self, request: "Request") -> Reply:
        name = request.path.rsplit("/", 1)[-1]
        data = resources.files("edgeface.web").joinpath("static", name).read_bytes()
        return Reply(200, data, STATIC[name], {"Cache-Control": "max-age=300"})

    # --- actions -------------------------------------------------------------------------------------------

    def _visit_faces(self, visit: Visit, chosen: set[str]) -> list[tuple[Any, bytes]]:
        faces = []
        for sample in visit.samples:
            if sample.id not in chosen:
                continue
            data = sample.jpeg
            if data is None and self.store is not None:
                path = self.store.visit_crop(visit.id, sample.id)
                data = path.read_bytes() if path is not None and path.is_file() else None
            if data is not None:
                faces.append((sample, data))
        return faces

    def _drop_visit(self, visit_id: str) -> None:
        self.watcher.take_visit(visit_id)
        if self.store is not None:
            self.store.delete_visit(visit_id)

    def unknown_action(self, request: "Request") -> Reply:
        here = f"{PREFIX}/unknown"
        action, visit_id = field_of(request, "action"), field_of(request, "visit")
        with self._disk:
            visit = self.watcher.visit(visit_id) if valid_id(visit_id) else None
            if visit is None:
                return self._back(here, "error", "That visit is no longer kept (named, ignored or expired).")
            if action == "ignore":
                self._drop_visit(visit.id)
                return self._back(here, "ok", "Ignored: its faces were deleted.")
            faces = self._visit_faces(visit, set(form(request).get("face", [])))
            if not faces:
                return self._back(here, "error", "Tick at least one face first.")
            if action == "stranger" and self.store is not None:
                self.store.add_strangers(faces, "marked as a stranger")
                self._drop_visit(visit.id)
                return self._back(here, "ok", f"Kept {len(faces)} faces as a stranger's, for calibration "
                                              "(Thresholds).")
            if action != "name":
                return self._back(here, "error", f"Unknown action {action[:20]!r}.")
            if self.cannot_name:
                return self._back(here, "error", self.cannot_name)
            name = field_of(request, "name")
            when = datetime.fromtimestamp(visit.last, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            records = [{"file": f"camera {when}", "sha256": hashlib.sha256(data).hexdigest(), "visit": visit.id}
                       for _, data in faces]
            try:
                gallery = enroll_faces(self.bundle, name, np.stack([s.embedding for s, _ in faces]),
                                       [data for _, data in faces], records, self.gallery_path)
            except EdgefaceError as exc:
                return self._back(here, "error", str(exc))
            self._drop_visit(visit.id)
        self.labeler.reload_now()
        person = gallery.get(name)
        total = len(person.embeddings) if person is not None else len(faces)
        text = (f"{person.name if person else name}: {len(faces)} faces added ({total} in all). The daemon names "
                "them from the next frame on.")
        if gallery.calibration is not None:
            text += " The people changed since the last calibration: recalibrate (Thresholds)."
        return self._back(here, "ok", text)

    def people_action(self, request: "Request") -> Reply:
        here = f"{PREFIX}/people"
        if self.cannot_name:
            return self._back(here, "error", self.cannot_name)
        action, person = field_of(request, "action"), field_of(request, "person")
        try:
            if action == "remove":
                remove_person(self.bundle, person, self.gallery_path)
                text = f"{person} was removed, with their photos."
            elif action == "remove_photo":
                remove_photo(self.bundle, person, field_of(request, "photo"), self.gallery_path)
                text = f"One photo of {person} was removed."
            elif action == "rename":
                new = field_of(request, "name")
                rename_person(self.bundle, person, new, self.gallery_path)
                text = f"{person} is now {new.strip()}."
            else:
                return self._back(here, "error", f"Unknown action {action[:20]!r}.")
        except EdgefaceError as exc:
            return self._back(here, "error", str(exc))
        self.labeler.reload_now()
        return self._back(here, "ok", text)

    def not_them(self, request: "Request") -> Reply:
        """"Not X": keep the face as a stranger's and take back the naming of its visit if it was done here."""
        back = field_of(request, "back")
        here = back if back.startswith(f"{PREFIX}/") and not back.startswith("//") else f"{PREFIX}/recent"
        found = self.watcher.take_recognition(field_of(request, "recognition"))
        if found is None:
            return self._back(here, "error", "That face is no longer kept; pick it again from Recent.")
        removed = 0
        if found.visit and not self.cannot_name:
            def without_visit(gallery: Gallery) -> Gallery:
                nonlocal removed
                person = gallery.get(found.name)
                for photo in list(person.photos) if person is not None else []:
                    if photo.get("visit") == found.visit:
                        gallery = gallery.without_photo(found.name, str(photo["sha256"]))
                        removed += 1
                return gallery

            try:
                change_gallery(self.bundle, without_visit, self.gallery_path)
            except EdgefaceError as exc:
                return self._back(here, "error", str(exc))
            self.labeler.reload_now()
        if self.store is not None:
            self.store.add_strangers([(found.sample, found.jpeg)], f"not {found.name}")
        text = f"Kept as a stranger's face, not {found.name}'s."
        if removed:
            text += f" The {removed} faces of this visit were taken out of {found.name}'s photos."
        text += " Recalibrate (Thresholds) so that faces like it are not named."
        return self._back(here, "ok", text)

    def thresholds_action(self, request: "Request") -> Reply:
        here = f"{PREFIX}/thresholds"
        if self.store is None:
            return self._back(here, "error", self.cannot_name)
        action = field_of(request, "action")
        if action == "remove_stranger":
            self.store.delete_stranger(field_of(request, "face"))
            return self._back(here, "ok", "That face was forgotten.")
        if action != "recalibrate":
            return self._back(here, "error", f"Unknown action {action[:20]!r}.")
        try:
            far = float(field_of(request, "far", "1")) / 100
        except ValueError:
            far = -1.0
        if not 0.0 <= far <= 0.5:
            return self._back(here, "error", "The share of strangers named must be between 0 and 50 percent.")
        strangers = [s for s, _ in self.store.strangers()]
        try:
            result = calibrate_faces(self.bundle, np.stack([s.embedding for s in strangers]) if strangers else
                                     np.zeros((0, self.bundle.spec.embedding_size), np.float32),
                                     np.array([s.confidence for s in strangers], np.float32), far,
                                     self.gallery_path)
        except EdgefaceError as exc:
            return self._back(here, "error", str(exc))
        self.labeler.reload_now()
        t = result.thresholds
        text = (f"Calibrated on {result.faces} strangers' faces: similarity {t.similarity:.3f}"
                + (f", identity {t.identity:.3f}" if t.identity is not None else "")
                + f"; {t.far:.2%} of them would be named (target {far:.2%}).")
        for warning in result.warnings:
            text += f" Note: {warning}."
        return self._back(here, "ok", text)

    # --- signing in ----------------------------------------------------------------------------------------

    def login_page(self, request: "Request") -> Reply:
        if not self.guard.has_token:
            return Reply.redirect(f"{PREFIX}/")
        return Reply.html(pages.login_page(_local(arg(request, "next"))))

    def sign_in(self, request: "Request") -> Reply:
        cookie = self.guard.sign_in(field_of(request, "token"))
        if cookie is None:
            time.sleep(FAILED_SIGN_IN_DELAY)
            return Reply.html(pages.login_page(_local(field_of(request, "next")), "Wrong token."), 401)
        return Reply.redirect(_local(field_of(request, "next"))).with_headers({"Set-Cookie": cookie})

    def sign_out(self, request: "Request") -> Reply:
        return Reply.redirect(f"{PREFIX}/login").with_headers({"Set-Cookie": self.guard.sign_out()})


def _local(path: str) -> str:
    """A page of this site to go back to, never another site's."""
    return path if path.startswith(f"{PREFIX}/") and "//" not in path and "\\" not in path else f"{PREFIX}/"


def web_page(daemon: "Daemon") -> WebPage | None:
    """The run's web page when its config has ``[web] enabled``, else None: an extension of the daemon
    (``edgeface.daemon.run.Extension``), asked again at each start and SIGHUP reload."""
    return WebPage(daemon) if daemon.config.web.enabled else None
