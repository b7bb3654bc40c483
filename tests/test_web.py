"""The web page without a browser: who may use it, what it keeps and for how long, and each of its actions on
the real daemon (``edgeface run --web``, tiny int8 bundle, a video of synthetic people the model was not
trained on). The browser test (test_web_browser.py) covers the same page in chromium."""

from __future__ import annotations

import hashlib
import html
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from helpers.daemon import DaemonProcess

from edgeface.core.errors import ConfigError
from edgeface.core.gallery import read_gallery
from edgeface.daemon.access import Access
from edgeface.daemon.config import load_config
from edgeface.daemon.http import Reply, Request
from edgeface.daemon.server import Router
from edgeface.web.guard import check_form
from edgeface.web.store import FaceSample, FaceStore

if TYPE_CHECKING:
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.web.state import PageState

# --- forms from the page only (the server's own check, tests/test_daemon_access.py, covers host and token) ----

CSRF = "0123456789abcdef0123456789abcdef"


def request(method: str = "GET", path: str = "/ui/", host: str = "127.0.0.1:8321", body: str = "",
            **headers: str) -> Request:
    return Request(method, path, {}, {"host": host, **{k.replace("_", "-"): v for k, v in headers.items()}},
                   body.encode())


def test_forms_need_the_page_s_token_and_its_origin() -> None:
    form = f"csrf={CSRF}&action=ignore"
    assert check_form(request("POST", "/ui/unknown", body="action=ignore"), CSRF).status == 403
    assert check_form(request("POST", "/ui/unknown", body="csrf=wrong&action=ignore"), CSRF).status == 403
    assert check_form(request("POST", "/ui/unknown", body="csrf=%C3%A9"), CSRF).status == 403
    other = check_form(request("POST", "/ui/unknown", body=form, origin="http://attacker.example"), CSRF)
    assert other.status == 403 and b"another site" in other.body
    assert check_form(request("POST", "/ui/unknown", body=form, origin="http://[::1"), CSRF).status == 403
    assert check_form(request("POST", "/ui/unknown", body=form, origin="http://127.0.0.1:8321"), CSRF) is None
    assert check_form(request("POST", "/ui/unknown", body=form), CSRF) is None  # no Origin: the form token decides


# --- what is kept, and for how long ------------------------------------------------------------------------


def sample(face_id: str, when: float, visit: str = "") -> FaceSample:
    return FaceSample(face_id, when, np.ones(4, np.float32) / 2, 0.3, 120.0, 90.0, visit=visit)


def test_retention_deletes_old_and_extra_faces(tmp_path: Path) -> None:
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.web.unknowns import StrangerCards

    store = FaceStore(tmp_path / "g.faces", max_visits=2, keep_days=1, max_strangers=2, strangers_keep_days=2)
    now = time.time()
    groups = StrangerGroups()
    for i, age in enumerate((10, 5, 1, 2 * 86400)):  # four visits: v0 and v1 of one person, then two others
        groups.assign(f"v{i}", np.eye(3, 4)[min(max(i - 1, 0), 2)], now - age, threshold=0.8)
    assert [g.count for g in groups.newest()] == [1, 2, 1]
    cards = StrangerCards(groups, store)
    cards.sync()
    for i, age in enumerate((10, 5, 1, 2 * 86400)):
        cards.arrived(f"v{i}", next(g.id for g in groups.groups.values() if f"v{i}" in g.visits))
        assert cards.add(f"v{i}", FaceSample(f"f{i}", now - age, np.ones(4, np.float32), 0.3, 120.0, 90.0, b"jpeg"))
    assert not cards.add("v0", FaceSample("f0", now, np.ones(4, np.float32), 0.3, 120.0, 90.0, b"jpeg"))  # twice
    cards.flush(now)
    # Retention: the third newest visit (v0) and the 2-day-old one (v3, its group unseen for 2 days) are gone.
    assert [(len(c.samples), c.visits) for c in cards.groups()] == [(1, 1), (1, 2)]
    back = StrangerCards.load(StrangerGroups(), store)  # the next run reads them back, with their ids
    assert {c.id: [s.id for s in c.samples] for c in back.groups()} == \
        {c.id: [s.id for s in c.samples] for c in cards.groups()}
    assert back.groups()[1].samples[0].embedding.shape == (4,) and back.groups()[1].samples[0].visit == "v1"

    store.add_strangers([(sample("s1", now - 3 * 86400), b"a")], "not Ada", "Ada")  # past strangers_keep_days
    assert store.strangers() == []
    store.add_strangers([(sample(f"s{i}", now - i), b"x") for i in (2, 3, 4)], "a stranger")
    assert [f.sample.id for f in store.strangers()] == ["s2", "s3"]  # newest first, at most max_strangers
    assert (store.strangers()[0].reason, store.strangers()[0].of) == ("a stranger", "")

    assert {oct(p.stat().st_mode & 0o777) for p in store.root.rglob("*") if p.is_file()} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in [store.root, *store.root.rglob("*")] if p.is_dir()} == {"0o700"}
    kept = cards.groups()[0].id
    for bad in ("..", "../v1", "a/b", "", "x" * 65, "V1"):  # ids from a request never reach a path
        assert store.group_crop(bad, "f1") is None and store.group_crop(kept, bad) is None
        assert store.stranger_crop(bad) is None
        store.delete_group(bad)
        store.delete_stranger(bad)
    assert (store.unknown / kept).is_dir()


def test_a_visit_folder_of_an_earlier_edgeface_becomes_a_group(tmp_path: Path) -> None:
    from edgeface.people.album import write_private
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.web.unknowns import StrangerCards

    store = FaceStore(tmp_path / "g.faces", max_visits=10, keep_days=1, max_strangers=10, strangers_keep_days=2)
    now = time.time()
    old = {"id": "1000-3", "track": 3, "first": now - 60, "last": now - 50,
           "samples": [sample("f1", now - 55).to_dict()]}
    write_private(store.unknown / "1000-3" / "visit.json", json.dumps(old).encode())
    write_private(store.unknown / "1000-3" / "f1.jpg", b"\xff\xd8old")
    write_private(store.unknown / "broken" / "visit.json", b"{")
    strangers = StrangerGroups()
    cards = StrangerCards.load(strangers, store)
    (card,) = cards.groups()
    assert card.visits == 1 and [s.visit for s in card.samples] == ["1000-3"] and card.id in strangers.groups
    assert cards.crop(card.id, "f1") == b"\xff\xd8old"
    assert sorted(p.name for p in store.unknown.iterdir()) == [card.id]  # the broken one was deleted


class Visits:
    """The recognition pipeline's visits and stranger groups (the real ``VisitBook`` and ``StrangerGroups``) for
    frames a test makes up: each face's visit id once it arrived, and the frame's visit events."""

    def __init__(self, strangers: "StrangerGroups", leave_after: float = 1.0) -> None:
        from edgeface.recognition.settings import VisitConfig
        from edgeface.recognition.visits import VisitBook

        self.book = VisitBook(VisitConfig(leave_after=leave_after, min_frames=3), "door", strangers)
        self.tracks: set[int] = set()

    def frame(self, now: float, faces: list[tuple[int, str, np.ndarray]]) -> tuple[list[str], tuple]:
        """``faces``: (track, name or "unknown", embedding) each."""
        from edgeface.recognition.visits import TrackView

        views = [TrackView(track, who, 0.4, 1.0, None, e / np.linalg.norm(e)) for track, who, e in faces]
        present = {track for track, _, _ in faces}
        events = self.book.update(now, views, sorted(self.tracks - present), same_person=0.8)
        self.tracks = present
        visits = [self.book.visit_of(track) for track, _, _ in faces]
        return [v.id if v is not None and v.arrived else "" for v in visits], tuple(events)


def test_only_sharp_big_unknown_faces_are_kept_on_their_group_s_card() -> None:
    import cv2

    from edgeface.core.results import FaceLabels, Prediction
    from edgeface.core.spec import CropSpec, ModelSpec
    from edgeface.daemon.records import Published
    from edgeface.data.synthetic import composite_frame, make_people, render_head
    from edgeface.faces.detect import Face
    from edgeface.recognition.records import FaceResult, FaceSamples, FrameResult
    from edgeface.recognition.strangers import StrangerGroups
    from edgeface.runtime.labeler import Labeler
    from edgeface.web import watch
    from edgeface.web.unknowns import FACES_PER_VISIT, StrangerCards

    rng = np.random.default_rng(0)
    head = render_head(make_people(1, seed=0)[0], "neutral", rng, width=400)
    frame, (big_at, small_at) = composite_frame((480, 640), [(head, (200.0, 220.0, 140.0)),
                                                             (head, (500.0, 220.0, 30.0))], rng)
    big, small = (Face(tuple(at["box"]), 0.9, tuple(map(tuple, at["eyes"]))) for at in (big_at, small_at))
    assert big.height > 100 and small.height < 40  # enroll's gate: 40 px
    blurry = cv2.GaussianBlur(frame, (0, 0), 6.0)
    spec = ModelSpec(labels={"identity": ("Jimmy", "Maya"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=64, embedding_size=4)
    strangers = StrangerGroups()
    cards = StrangerCards(strangers, None)
    watcher = watch.FaceWatcher(CropSpec(), Labeler(spec), cards)
    visits = Visits(strangers)
    look = {1: [1.0, 0, 0, 0], 2: [0, 1.0, 0, 0], 3: [0, 0, 1.0, 0], 4: [1.0, 0, 0, 0], 5: [1.0, 0.1, 0, 0]}

    def show(when: float, image: np.ndarray, faces: list[tuple[Face, int, str]]) -> None:
        ids, events = visits.frame(when, [(track, name, np.asarray(look[track])) for _, track, name in faces])
        results = tuple(FaceResult(f.box, track, FaceLabels(Prediction(name, 0.4), Prediction("happy", 0.9),
                                                              Prediction("male", 0.8)), visit)
                        for (f, track, name), visit in zip(faces, ids))
        n = len(faces)
        outputs = {"identity": np.tile([[0.4, 0.6]], (n, 1)),
                   "embedding": np.asarray([look[track] for _, track, _ in faces], np.float32).reshape(n, 4)}
        samples = FaceSamples(tuple(f for f, _, _ in faces), tuple(range(n)), np.zeros((n, 64, 64, 3), np.uint8),
                              outputs)
        watcher.observe(image, Published(FrameResult(when, 0, results, samples=samples if n else None,
                                                     events=events), True))

    start = 1000.0

    def lit(k: int) -> np.ndarray:  # the scene a little brighter each frame: each frame's crop differs
        return np.clip(frame.astype(np.int16) + k, 0, 255).astype(np.uint8)

    for k in range(12):  # 1.2 s of one sharp face (track 1), one small face (2), a named one (3)
        show(start + 0.1 * k, lit(k), [(big, 1, "unknown"), (small, 2, "unknown"), (big, 3, "Maya")])
    (card,) = cards.groups()  # the small face's group has no face: no card
    assert card.visits == 1 and len(card.samples) == 2  # from its 3rd frame on, one crop per 0.5 s
    show(start + 1.6, lit(2), [(big, 1, "unknown")])  # a crop identical to one kept (a looping file) adds nothing
    assert len(card.samples) == 2
    twice = card.samples[0]
    card.samples.append(twice)  # even if a card held one crop twice, it is enrolled once
    assert [s.id for s, _ in cards.faces(card, {twice.id})] == [twice.id]
    card.samples.pop()
    assert card.samples[0].sharpness >= 40 and card.samples[0].height == pytest.approx(big.height)
    assert [(r.track, r.name) for r in watcher.recognitions()] == [(3, "Maya")]
    for k in range(12):  # track 4: the same face, blurred: its visit joins the group, its faces stay out
        show(start + 3 + 0.1 * k, blurry, [(big, 4, "unknown")])  # (track 1's visit left at 2.6 s)
    assert [(c.id, c.visits, len(c.samples)) for c in cards.groups()] == [(card.id, 2, 2)]
    for k in range(40):  # 4 s later, track 5: the same person again, sharp: a third visit on the same card
        show(start + 8 + 0.1 * k, lit(20 + k), [(big, 5, "unknown")])
    assert [(c.id, c.visits) for c in cards.groups()] == [(card.id, 3)]
    assert len(card.samples) == 2 + FACES_PER_VISIT and len({s.visit for s in card.samples}) == 2
    assert card.samples[0].visit.endswith("-1") and card.samples[-1].visit.endswith("-5")


# --- every route, in process ---------------------------------------------------------------------------------
# The page as the daemon mounts it, on a Router of the daemon's server, with the real tiny bundle, its labeler
# and gallery under a temporary state folder; each request is built, dispatched and its reply read, with no
# socket and no subprocess. Frames reach the page as the pipeline hands them over (boxes, tracks, labels and
# the model's outputs per face), drawn from synthetic people.


class Scene:
    """Two synthetic heads side by side, as the pipeline would report them: each face its track, its name, its
    visit (the pipeline's own visits and stranger groups decide them, ``Visits``) and an embedding of the model's
    size (slot 0 and 1 far apart)."""

    def __init__(self, page: "PageState") -> None:
        from edgeface.data.synthetic import composite_frame, make_people, render_head
        from edgeface.faces.detect import Face

        rng = np.random.default_rng(0)
        heads = [render_head(look, "neutral", rng, width=400) for look in make_people(2, seed=0)]
        self.image, placed = composite_frame((480, 640), [(heads[0], (170.0, 220.0, 140.0)),
                                                          (heads[1], (470.0, 220.0, 140.0))], rng)
        self.boxes = [Face(tuple(at["box"]), 0.9, tuple(map(tuple, at["eyes"]))) for at in placed]
        self.embeddings = np.eye(2, page.bundle.spec.embedding_size, dtype=np.float32)
        self.visits = Visits(page.unknowns.strangers)  # type: ignore[attr-defined]
        self.index = 0

    def show(self, page: "PageState", when: float, faces: list[tuple[int, int, str]]) -> None:
        """One frame at ``when`` with ``faces`` (slot 0 or 1, track, name or "unknown") to the page's watcher and
        live view, as ``WebPage.observe`` passes it."""
        from edgeface.core.results import FaceLabels, Prediction
        from edgeface.daemon.records import Published
        from edgeface.recognition.records import FaceResult, FaceSamples, FrameResult

        ids, events = self.visits.frame(when, [(track, name, self.embeddings[slot]) for slot, track, name in faces])
        results = tuple(FaceResult(self.boxes[slot].box, track, FaceLabels(
            Prediction(name, 0.4), Prediction("happy", 0.9), Prediction("male", 0.8)), visit)
            for (slot, track, name), visit in zip(faces, ids))
        n = len(faces)
        outputs = {"identity": np.tile([[0.4, 0.6]], (n, 1)),
                   "embedding": np.stack([self.embeddings[slot] for slot, _, _ in faces]) if n else np.zeros((0, 2))}
        samples = FaceSamples(tuple(self.boxes[slot] for slot, _, _ in faces), tuple(range(n)),
                              np.zeros((n, 64, 64, 3), np.uint8), outputs)
        item = Published(FrameResult(when, self.index, results, samples=samples if n else None, events=events), True)
        image = self.image ^ np.uint8(self.index % 251)  # each frame a little different, as a camera's are
        self.index += 1
        page.live.observe(image, item)
        page.watcher.observe(image, item)

    def visit(self, page: "PageState", start: float, faces: list[tuple[int, int, str]], seconds: float = 2.0) -> None:
        """``faces`` in view for ``seconds`` at 10 frames a second."""
        for k in range(int(seconds * 10)):
            self.show(page, start + 0.1 * k, faces)


class InProcess:
    """A browser's side of the page, in process: requests dispatched through the server's Router, the sign-in
    cookie kept, forms sent with the page's form token."""

    def __init__(self, router: Router, host: str = "127.0.0.1:8321") -> None:
        self.router = router
        self.host = host
        self.cookies: dict[str, str] = {}

    def send(self, method: str, target: str, fields: list[tuple[str, str]] | None = None, **headers: str) -> Reply:
        path, _, query = target.partition("?")
        body = urllib.parse.urlencode(fields).encode() if fields is not None else b""
        sent = {"host": self.host, **({"content-type": "application/x-www-form-urlencoded"} if fields else {}),
                **({"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}),
                **{k.replace("_", "-"): v for k, v in headers.items()}}
        reply = self.router.dispatch(Request(method, path, urllib.parse.parse_qs(query), sent, body, "127.0.0.1"))
        cookie = reply.headers.get("Set-Cookie")
        if cookie:
            name, _, value = cookie.split(";")[0].partition("=")
            self.cookies[name] = value
            if "Max-Age=0" in cookie:
                del self.cookies[name]
        return reply

    def get(self, target: str) -> Reply:
        return self.send("GET", target)

    def page(self, target: str) -> str:
        reply = self.get(target)
        assert reply.status == 200 and reply.content_type.startswith("text/html"), (reply.status, reply.body[:300])
        return reply.body.decode()

    def post(self, path: str, fields: list[tuple[str, str]]) -> str:
        """Send a form from ``path``'s page (with its form token) and follow the redirect: the outcome's note."""
        csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', self.page(path)).group(1)
        reply = self.send("POST", path, [("csrf", csrf), *fields])
        assert reply.status == 303, (reply.status, reply.body[:300])
        return note(self.page(reply.headers["Location"]))


@pytest.fixture()
def page(tiny_bundles: dict[str, Path], tmp_path: Path) -> "PageState":
    from edgeface.core.bundle import load_bundle
    from edgeface.daemon.config import WebConfig
    from edgeface.runtime.labeler import Labeler
    from edgeface.web.state import PageState

    bundle = load_bundle(tiny_bundles["int8"])
    labeler = Labeler.for_bundle(bundle, state_dir=tmp_path / "state")
    return PageState.open(bundle, labeler, WebConfig(enabled=True))


def mounted(page: "PageState", token: str | None = None) -> InProcess:
    from edgeface.web.routes import mount

    router = Router(Access(token))
    mount(router, page)
    return InProcess(router)


def test_live_routes_in_process(page: "PageState") -> None:
    client = mounted(page)
    assert [client.get(p).headers["Location"] for p in ("/", "/ui")] == ["/ui/", "/ui/"]
    assert "waiting for the first frame" in client.page("/ui/")
    assert client.get("/ui/live.jpg").status == 503
    assert json.loads(client.get("/ui/api/live").body)["frame"] is None

    scene = Scene(page)
    scene.visit(page, 1000.0, [(0, 1, "unknown"), (1, 2, "Maya")], seconds=1.0)
    live = json.loads(client.get("/ui/api/live").body)
    assert live["frame"] == 9 and (live["width"], live["height"]) == (640, 480)
    by_track = {face["track"]: face for face in live["faces"]}
    assert by_track[1]["visit"] and by_track[1]["group"] in page.unknowns.strangers.groups  # type: ignore[attr-defined]
    assert by_track[2]["recognition"]
    assert "Name them" in live["rows"] and "Not Maya" in live["rows"]
    jpeg = client.get("/ui/live.jpg?frame=9")
    assert jpeg.status == 200 and jpeg.body[:2] == b"\xff\xd8" and jpeg.content_type == "image/jpeg"
    assert client.get("/ui/live.jpg?frame=nonsense").status == 200  # the newest frame
    assert "frame 9" in client.page("/ui/")
    stats = json.loads(client.get("/ui/api/stats").body)
    assert stats == {"live_frames_encoded": 1, "crops_kept": stats["crops_kept"], "unknown_groups": 1,
                     "recognitions": 1} and stats["crops_kept"] >= 3
    assert client.get("/ui/live.jpg?frame=9").headers["X-Frame-Options"] == "DENY"  # on every answer


def cards_on(text: str) -> dict[str, list[str]]:
    """The Unknown page's cards: {group id: its face ids}."""
    return {m.group(1): re.findall(r'name="face" value="([0-9a-f]+)"', m.group(2))
            for m in re.finditer(r'<article class="card" id="group-([^"]+)">(.*?)</article>', text, re.S)}


def test_unknown_routes_in_process(page: "PageState") -> None:
    client = mounted(page)
    assert "No unknown faces kept" in client.page("/ui/unknown")
    scene = Scene(page)
    now = time.time()
    scene.visit(page, now - 30, [(0, 1, "unknown"), (1, 2, "unknown")], seconds=2.0)
    scene.visit(page, now - 20, [(0, 3, "unknown")], seconds=2.0)  # the first person again: a second visit
    scene.show(page, now, [])  # both left: their visits end
    page.unknowns.flush()
    text = client.page("/ui/unknown?name=Bo")
    cards = cards_on(text)
    (first, first_faces), (second, second_faces) = sorted(cards.items(), key=lambda kv: -len(kv[1]))
    assert len(first_faces) == 8 and len(second_faces) == 4 and 'value="Bo"' in text  # 4 faces a visit
    assert text.index(f'id="group-{first}"') < text.index(f'id="group-{second}"')  # newest first
    heads = re.findall(r'<strong class="visits">([^<]*)</strong>', text)
    assert re.fullmatch(r"2 visits · last seen 1\d s ago, first 3\d s ago", heads[0]) and \
        re.fullmatch(r"1 visit · last seen 2\d s ago", heads[1]), heads  # its last face, 28 s ago
    for face in first_faces:  # each crop is served, from memory or from disk
        assert client.get(f"/ui/face.jpg?of=unknown&group={first}&id={face}").body[:2] == b"\xff\xd8"

    assert client.post("/ui/unknown", [("group", first), ("action", "name"), ("name", "Bo")]) == \
        "error: Tick at least one face first."
    assert client.post("/ui/unknown", [("group", first), ("action", "dance"), ("face", first_faces[0])]) == \
        "error: Unknown action 'dance'."
    told = client.post("/ui/unknown", [("group", first), ("action", "name"), ("name", "Bo"),
                                       *[("face", f) for f in first_faces[::2]]])  # two of each visit
    assert told == "ok: Bo: 4 faces from 2 visits added (4 in all). The daemon names them from the next frame on."
    gallery = page.gallery()
    photos = gallery.get("Bo").photos
    assert gallery.names == ("Bo",) and {p["stranger"] for p in photos} == {first}
    assert len({p["visit"] for p in photos}) == 2 and all(p["visit"].startswith("door-") for p in photos)
    assert not (page.store.unknown / first).exists()
    scene.show(page, time.time(), [])  # the pipeline lets the group go at its next frame
    assert first not in page.unknowns.strangers.groups
    assert client.post("/ui/unknown", [("group", first), ("action", "ignore")]).startswith(
        "error: That group is no longer kept")

    # "A stranger": the faces go to the gallery as the rule's evidence (nobody's) and to calibration; the group
    # stays, marked, so that this person's next visits make no card.
    told = client.post("/ui/unknown", [("group", second), ("action", "stranger"),
                                       *[("face", f) for f in second_faces]])
    assert told.startswith("ok: Kept 4 faces as a stranger's: faces like these are named after nobody")
    assert len(page.store.strangers()) == 4 and page.unknowns.count() == 0
    negatives = page.gallery().negatives
    assert sorted(n.id for n in negatives) == sorted(second_faces) and {n.of for n in negatives} == {""}
    scene.visit(page, time.time(), [(1, 4, "unknown")], seconds=2.0)  # the stranger comes back
    page.unknowns.flush()
    assert "No unknown faces kept" in client.page("/ui/unknown")
    assert page.unknowns.strangers.groups[second].count == 2  # their visit joined the marked group

    # A restart reads back the marked group (still no card) and its ids.
    from edgeface.web.state import PageState

    again = PageState.open(page.bundle, page.labeler, page.config)
    assert again.unknowns.count() == 0 and second in again.unknowns.strangers.groups


def test_people_routes_in_process(page: "PageState") -> None:
    from edgeface.people.enroll import enroll_faces

    client = mounted(page)
    assert "Nobody is enrolled yet" in client.page("/ui/people")
    crops = [bytes([0xFF, 0xD8, i]) for i in range(3)]
    records = [{"file": f"photo{i}.jpg", "sha256": hashlib.sha256(c).hexdigest()} for i, c in enumerate(crops)]
    embeddings = np.eye(3, page.bundle.spec.embedding_size, dtype=np.float32)
    enroll_faces(page.bundle, "Ada", embeddings, crops, records, page.gallery_path)
    text = client.page("/ui/people")
    assert text.count('class="crop"') == 3 and "Ada" in text
    assert client.get(f"/ui/face.jpg?of=person&id={records[0]['sha256']}").body == crops[0]

    assert client.post("/ui/people", [("person", "Ada"), ("action", "remove_photo"),
                                      ("photo", records[0]["sha256"])]) == "ok: One photo of Ada was removed."
    assert client.get(f"/ui/face.jpg?of=person&id={records[0]['sha256']}").status == 404
    assert client.post("/ui/people", [("person", "Ada"), ("action", "rename"), ("name", "Ada L")]) == \
        "ok: Ada is now Ada L."
    assert client.post("/ui/people", [("person", "Zed"), ("action", "remove")]).startswith(
        "error: 'Zed' is not enrolled")
    assert client.post("/ui/people", [("person", "Ada L"), ("action", "juggle")]) == "error: Unknown action 'juggle'."
    assert client.post("/ui/people", [("person", "Ada L"), ("action", "remove")]) == \
        "ok: Ada L was removed, with their photos."
    assert "Nobody is enrolled yet" in client.page("/ui/people")


def test_recent_routes_in_process(page: "PageState") -> None:
    """"Not Maya" on a face: kept as negative evidence of Maya (the rule names nobody Maya from a face nearer it
    than Maya's own) and for calibration; Maya's naming from this person's card is taken back."""
    from edgeface.people.enroll import enroll_faces

    client = mounted(page)
    assert "Nobody was named yet" in client.page("/ui/recent")
    scene = Scene(page)
    start = time.time() - 5
    scene.visit(page, start, [(1, 7, "unknown")], seconds=2.0)  # a stranger's card...
    page.unknowns.flush()
    ((group, faces),) = cards_on(client.page("/ui/unknown")).items()
    assert client.post("/ui/unknown", [("group", group), ("action", "name"), ("name", "Maya"),
                                       *[("face", f) for f in faces]]).startswith("ok: Maya: 4 faces")
    scene.visit(page, start + 2, [(1, 7, "Maya")], seconds=1.0)  # ...named Maya: the same visit goes on
    (recognition,) = page.watcher.recognitions()
    assert recognition.stranger == group and recognition.visit.startswith("door-")
    text = client.page("/ui/recent")
    assert "Maya" in text and f'value="{recognition.id}"' in text
    assert client.get(f"/ui/face.jpg?of=recent&id={recognition.id}").body == recognition.jpeg
    told = client.post("/ui/recent", [("recognition", recognition.id), ("back", "//attacker.example/")])
    assert told.startswith("ok: Kept 2 faces of this visit as not Maya's")  # and back to Recent, not elsewhere
    assert told.endswith("The 4 faces enrolled from this person's card were taken out of Maya's photos.")
    assert [(f.reason, f.of) for f in page.store.strangers()] == [("not Maya", "Maya")] * 2
    gallery = page.gallery()
    assert gallery.names == () and {n.of for n in gallery.negatives} == {"Maya"} and len(gallery.negatives) == 2
    assert client.post("/ui/recent", [("recognition", recognition.id), ("back", "/ui/")]) == \
        "error: That face is no longer kept; pick it again from Recent."

    # Maya enrolled from her own photo: her face is named, the face said not to be her is not (the rule).
    size = page.bundle.spec.embedding_size
    not_maya = scene.embeddings[1]
    maya = np.zeros(size, np.float32)
    maya[1], maya[2] = 0.9, np.sqrt(1 - 0.81)  # 0.9 similar to the face said not to be her
    enroll_faces(page.bundle, "Maya", maya[None], [b"\xff\xd8m"],
                 [{"file": "m.jpg", "sha256": hashlib.sha256(b"\xff\xd8m").hexdigest()}], page.gallery_path)
    page.gallery_changed()
    heads = {head: np.full((2, len(names)), 1 / len(names), np.float32)
             for head, names in page.bundle.spec.labels.items()}
    labels = page.labeler(heads | {"embedding": np.stack([maya, not_maya])})
    assert page.labeler.similarity_threshold < 0.9
    assert [face.identity.label for face in labels] == ["Maya", "unknown"]
    assert client.post("/ui/thresholds", [("action", "remove_stranger"), ("face", page.store.strangers()[0].sample.id)]
                       ) == "ok: That face was forgotten."
    assert len(page.gallery().negatives) == 1 and len(page.store.strangers()) == 1  # from both


def test_thresholds_routes_in_process(page: "PageState") -> None:
    from edgeface.people.enroll import enroll_faces

    client = mounted(page)
    text = client.page("/ui/thresholds")
    assert "Never calibrated" in text and "Enroll somebody first" in text
    size = page.bundle.spec.embedding_size
    enroll_faces(page.bundle, "Ada", np.eye(1, size, dtype=np.float32), [b"\xff\xd8a"],
                 [{"file": "a.jpg", "sha256": hashlib.sha256(b"\xff\xd8a").hexdigest()}], page.gallery_path)
    rng = np.random.default_rng(1)
    strangers = [FaceSample(f"s{i}", time.time() - i, rng.normal(size=size).astype(np.float32), 0.3, 100.0, 90.0,
                            visit=f"door-{i // 4}") for i in range(20)]  # 5 visits of 4 faces
    page.keep_negatives("", [(s, b"\xff\xd8" + s.id.encode()) for s in strangers], "a stranger")  # as the page does
    assert client.get("/ui/face.jpg?of=stranger&id=s3").body == b"\xff\xd8s3"
    for far in ("60", "nan", "-1", "x"):
        assert client.post("/ui/thresholds", [("action", "recalibrate"), ("far", far)]) == \
            "error: The share of strangers named must be between 0 and 50 percent."
    told = client.post("/ui/thresholds", [("action", "recalibrate"), ("far", "5")])
    assert told.startswith("ok: Calibrated on 20 strangers' faces from 5 visits: similarity "), told
    assert " per face, " in told and " per visit; " in told
    units = np.stack([s.embedding / np.linalg.norm(s.embedding) for s in strangers])
    # At 5% at most one of the 20 would be named: the faces, kept as negatives too, do not veto themselves.
    assert page.gallery().similarity_threshold > np.sort(units[:, 0])[-2]
    labels = page.bundle.spec.labels
    page.labeler({head: np.full((1, len(names)), 1 / len(names), np.float32) for head, names in labels.items()}
                 | {"embedding": np.eye(1, size, dtype=np.float32)})  # the next frame
    assert page.labeler.similarity_from == "calibrated"
    text = client.page("/ui/thresholds")
    assert "Calibrated 20" in text and "(5 visits, " in text and text.count("<figcaption>a stranger<") == 20
    gallery = page.gallery()
    assert gallery.visit_similarity_threshold is not None  # the per-visit rule is calibrated too
    assert page.labeler.visit_rule.similarity_threshold == pytest.approx(gallery.visit_similarity_threshold)
    assert client.post("/ui/thresholds", [("action", "remove_stranger"), ("face", "s3")]) == \
        "ok: That face was forgotten."
    assert client.get("/ui/face.jpg?of=stranger&id=s3").status == 404 and len(page.store.strangers()) == 19
    assert client.post("/ui/thresholds", [("action", "shrug")]) == "error: Unknown action 'shrug'."


def test_sign_in_routes_in_process(page: "PageState") -> None:
    token = "correct horse battery staple"
    client = mounted(page, token)
    reply = client.get("/ui/people")
    assert reply.status == 303 and reply.headers["Location"] == "/ui/login?next=/ui/people"
    assert client.get("/").headers["Location"] == "/ui/login?next=/ui/"
    assert client.get("/ui/api/live").status == 401  # the script's requests get no redirect
    assert client.get("/ui/face.jpg?of=recent&id=x").status == 401
    form = client.page("/ui/login?next=/ui/people")
    assert 'name="next" value="/ui/people"' in form
    wrong = client.send("POST", "/ui/login", [("token", "guess"), ("next", "/ui/people")])
    assert wrong.status == 401 and b"Wrong token." in wrong.body and not client.cookies
    right = client.send("POST", "/ui/login", [("token", token), ("next", "/ui/people")])
    assert right.status == 303 and right.headers["Location"] == "/ui/people"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    session = client.cookies["edgeface_session"]
    assert token not in cookie and len(session) >= 40  # a session id, never the token
    assert "Sign out" in client.page("/ui/people")
    out = client.send("POST", "/ui/logout", [("csrf", page.csrf)])
    assert out.status == 303 and out.headers["Location"] == "/ui/login" and not client.cookies
    client.cookies["edgeface_session"] = session  # a copy of the cookie, kept by whoever had it
    assert client.get("/ui/people").status == 303  # revoked
    del client.cookies["edgeface_session"]
    bearer = client.send("GET", "/ui/people", authorization=f"Bearer {token}")  # scripts
    assert bearer.status == 200 and "Sign out" not in bearer.body.decode()
    for next_path in ("//attacker.example/", "https://attacker.example/", "/ui/\\attacker", "/elsewhere",
                      "/ui/\r\nSet-Cookie: x=1", "/ui/\u20ac", "/ui/people\x00"):
        back = client.send("POST", "/ui/login", [("token", token), ("next", next_path)])
        assert back.headers["Location"] == "/ui/", next_path  # never another site, never a split header

    for _ in range(10):  # 10 wrong in a row (a right one forgets the earlier ones), then 429
        assert client.send("POST", "/ui/login", [("token", "guess")]).status == 401
    limited = client.send("POST", "/ui/login", [("token", token)])
    wait = int(limited.headers["Retry-After"])
    assert limited.status == 429 and 1 <= wait <= 6 and f"try again in {wait} s".encode() in limited.body
    assert mounted(page).get("/ui/login").headers["Location"] == "/ui/"  # no token: nothing to sign in to


def test_assets_and_guard_in_process(page: "PageState") -> None:
    client = mounted(page)
    css, js = client.get("/ui/static/page.css"), client.get("/ui/static/page.js")
    assert css.content_type.startswith("text/css") and js.content_type.startswith("text/javascript")
    assert b"addEventListener" in js.body and css.headers["Cache-Control"] == "max-age=300"
    for query in ("of=unknown&group=..&id=..", "of=person&id=../../gallery", "of=stranger&id=%2e%2e",
                  "of=elsewhere&id=x", "of=recent&id=nope", ""):
        assert client.get(f"/ui/face.jpg?{query}").status == 404, query
    assert client.send("POST", "/ui/people", [("action", "remove"), ("person", "x")]).status == 403  # no form token
    assert client.send("POST", "/ui/people", [("csrf", page.csrf), ("action", "x")],
                       origin="http://attacker.example").status == 403
    assert InProcess(client.router, host="attacker.example").get("/ui/").status == 421
    assert client.send("POST", "/ui/people", [("csrf", page.csrf), ("x", "y" * 70_000)]).status == 413
    assert client.send("POST", "/ui/people", [("csrf", page.csrf)], content_type="application/json").status == 415
    assert client.send("DELETE", "/ui/people").status == 405
    assert client.get("/ui/nothing").status == 404


def test_the_page_needs_the_http_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] is enabled but \[http\] is not"):
        load_config(None, {"bundle": "b.edgeface", "source": "0", "web.enabled": True, "http.enabled": False})
    assert load_config(None, {"bundle": "b.edgeface", "source": "0"}).web.enabled is False  # off by default


# --- the real daemon ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_strangers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s at 10 fps of two synthetic people side by side, neither among the tiny model's six."""
    from helpers.video_fixtures import synthetic_video

    path = tmp_path_factory.mktemp("web-video") / "two.avi"
    synthetic_video(path, faces=2, seconds=6, seed=2)
    return path


class Page:
    """A client of the page that keeps nothing between requests but what a browser's form would send."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace")

    def post(self, path: str, fields: list[tuple[str, str]]) -> str:
        """Send a form (with the page's form token) and follow the redirect: the page that shows the outcome."""
        csrf = re.search(r'name="csrf" content="([0-9a-f]+)"', self.get(path)[1]).group(1)
        data = urllib.parse.urlencode([("csrf", csrf), *fields]).encode()
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data), timeout=30) as response:
            return response.read().decode()

    def cards(self) -> dict[str, list[str]]:
        """Strangers' cards on the page: {group id: its face ids}."""
        return cards_on(self.get("/ui/unknown")[1])


def note(page_html: str) -> str:
    found = re.search(r'<p class="note (ok|error)" role="status">(.*?)</p>', page_html)
    assert found is not None, page_html[:3000]
    return found.group(1) + ": " + html.unescape(found.group(2))


def names_after(daemon: DaemonProcess, since: float, track: int | None = None) -> list[str]:
    """The identities the daemon printed for frames captured after ``since`` (of one track's face only)."""
    return [face["identity"]["label"] for r in daemon.records() if r["time"] > since for face in r["faces"]
            if track is None or face["track"] == track]


def test_page_is_off_unless_asked(tiny_bundles: dict[str, Path], two_strangers: Path, tmp_path: Path) -> None:
    daemon = DaemonProcess(["--bundle", str(tiny_bundles["int8"]), "--source", str(two_strangers), "--loop",
                            "--fps", "20", "--http-port", "0"], env={"EDGEFACE_STATE_DIR": str(tmp_path / "state")})
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: len(daemon.records()) >= 20, 30, "20 frames")
        assert Page(port).get("/ui/")[0] == 404 and Page(port).get("/")[0] == 404
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
    assert not (tmp_path / "state").exists()  # no face kept anywhere


def test_every_action_through_the_running_daemon(tiny_bundles: dict[str, Path], two_strangers: Path,
                                                 tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = DaemonProcess(["--bundle", str(tiny_bundles["int8"]), "--source", str(two_strangers), "--loop",
                            "--fps", "10", "--web", "--http-port", "0"], env={"EDGEFACE_STATE_DIR": str(state)})
    try:
        page = Page(daemon.http_port())
        assert page.get("/")[0] == 200  # redirected to the page
        cards = daemon.wait_for(lambda: (lambda c: c if len(c) == 2 and all(len(f) >= 4 for f in c.values())
                                         else None)(page.cards()), 30, "two cards with 4 faces each")
        (first, first_faces), (second, second_faces) = sorted(cards.items())
        faces_dir = next((state / "galleries").glob("*.faces"))

        # Name one person's card with three of its crops; mark the other "a stranger".
        told = note(page.post("/ui/unknown", [("group", first), ("action", "name"), ("name", "Bo"),
                                              *[("face", f) for f in first_faces[:3]]]))
        named_at = time.time()
        assert told.startswith("ok: Bo: 3 faces from 1 visit added (3 in all)")
        gallery = json.loads(next((state / "galleries").glob("*.json")).read_text())
        photos = gallery["people"][0]["photos"]
        assert [p["stranger"] for p in photos] == [first] * 3
        assert all((faces_dir / "people" / f"{p['sha256']}.jpg").is_file() for p in photos)
        assert not (faces_dir / "unknown" / first).exists()  # the named visit's other crops are gone
        told = note(page.post("/ui/unknown", [("group", second), ("action", "stranger"),
                                              *[("face", f) for f in second_faces]]))
        assert told.startswith(f"ok: Kept {len(second_faces)} faces as a stranger's")
        assert note(page.post("/ui/unknown", [("group", second), ("action", "ignore")])).startswith(
            "error: That group is no longer kept")
        assert page.cards() == {}  # both cards are done: no new card while those people stay in view
        gallery = json.loads(next((state / "galleries").glob("*.json")).read_text())
        assert sorted(n["id"] for n in gallery["negatives"]) == sorted(second_faces)  # the rule's evidence

        bo = int(photos[0]["visit"].rsplit("-", 1)[1])  # the pipeline's visit ids end in the track
        daemon.wait_for(lambda: len(names_after(daemon, named_at)) >= 20, 20, "10 frames after naming")
        assert set(names_after(daemon, named_at, bo)) == {"Bo"}

        # Recalibrate on the stranger's faces: at 0% none of them may be named; Bo still is.
        told = note(page.post("/ui/thresholds", [("action", "recalibrate"), ("far", "0")]))
        calibrated_at = time.time()
        assert told.startswith(f"ok: Calibrated on {len(second_faces)} strangers' faces"), told
        assert "0.00% of the faces and 0.00% of the visits would be named (target 0.00%)" in told
        thresholds = page.get("/ui/thresholds")[1]
        assert "calibrated" in thresholds and "Calibrated 20" in thresholds
        daemon.wait_for(lambda: len(names_after(daemon, calibrated_at)) >= 20, 20, "10 frames after calibrating")
        gallery = read_gallery(next((state / "galleries").glob("*.json")))
        kept = np.stack([json.loads(f.read_text())["embedding"] for f in (faces_dir / "strangers").glob("*.json")])
        assert gallery.similarity_threshold is not None
        assert gallery.similarities(kept).max() < gallery.similarity_threshold  # none of the stored strangers passes
        assert set(names_after(daemon, calibrated_at, bo)) == {"Bo"}

        # People: rename (the page escapes what it shows), remove one photo, remove the person.
        odd = '<img src=x onerror="alert(1)">'
        assert note(page.post("/ui/people", [("person", "Bo"), ("action", "rename"), ("name", odd)])) == \
            f"ok: Bo is now {odd}."
        people = page.get("/ui/people")[1]
        assert odd not in people and html.escape(odd) in people
        renamed_at = time.time()
        daemon.wait_for(lambda: len(names_after(daemon, renamed_at)) >= 10, 20, "frames after renaming")
        assert odd in names_after(daemon, renamed_at)  # the daemon uses the new name without a restart
        assert note(page.post("/ui/people", [("person", odd), ("action", "remove_photo"),
                                             ("photo", photos[0]["sha256"])])).startswith("ok: One photo")
        assert not (faces_dir / "people" / f"{photos[0]['sha256']}.jpg").exists()
        assert note(page.post("/ui/people", [("person", "Zed"), ("action", "remove")])).startswith(
            "error: 'Zed' is not enrolled")
        assert note(page.post("/ui/people", [("person", odd), ("action", "remove")])).startswith("ok: ")
        assert list((faces_dir / "people").iterdir()) == []  # their crops went with them
        assert "Nobody is enrolled yet" in page.get("/ui/people")[1]

        # Faces are served only from their folders.
        assert page.get(f"/ui/face.jpg?of=stranger&id={second_faces[0]}")[0] == 200
        for query in ("of=unknown&group=..&id=..", "of=person&id=../../gallery", "of=stranger&id=%2e%2e",
                      "of=elsewhere&id=x"):
            assert page.get(f"/ui/face.jpg?{query}")[0] == 404, query
        stats = json.loads(page.get("/ui/api/stats")[1])
        assert stats["live_frames_encoded"] == 0  # no live view was opened
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()


def test_household_route_in_process(page: "PageState") -> None:
    """The household's people with where each was last seen: from the presence reports (here fed as the MQTT
    sink feeds them), beside the people enrolled on this device."""
    import dataclasses

    from edgeface.daemon.presence import HouseholdPresence
    from edgeface.daemon.sinks.mqtt import person_id
    from edgeface.people.enroll import enroll_faces

    client = mounted(page)
    text = client.page("/ui/household")
    assert "Nobody yet." in text and "set [mqtt] host" in text and "turn [sync] on" in text
    crop = bytes([0xFF, 0xD8, 1])
    enroll_faces(page.bundle, "Ada", np.eye(1, page.bundle.spec.embedding_size, dtype=np.float32), [crop],
                 [{"file": "ada.jpg", "sha256": hashlib.sha256(crop).hexdigest()}], page.gallery_path)
    presence = HouseholdPresence()
    presence.status("hall", True)
    presence.report("hall", person_id("Ada"), {"state": "home", "name": "Ada", "camera": "hall",
                                              "last_seen": time.time() - 30, "visit": "hall-1"})
    presence.report("door", person_id("Bob"), {"state": "not_home", "name": "Bob", "camera": "front door",
                                               "last_seen": time.time() - 7200, "visit": "door-1"})
    client = mounted(dataclasses.replace(page, presence=presence.people, shared=True))
    text = client.page("/ui/household")
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><th>([^<]+)</th>(.*?)</tr>", text)}
    assert "shares its people" in text and "set [mqtt] host" not in text
    assert re.search(r"<td>home</td><td>hall</td><td class=\"num\">30 s ago</td><td>enrolled here", rows["Ada"])
    assert re.search(r"<td>away</td><td>front door</td><td class=\"num\">2 h ago</td><td><span class=muted>seen",
                     rows["Bob"])
