"""The web page without a browser: who may use it, what it keeps and for how long, and each of its actions on
the real daemon (``edgeface run --web``, tiny int8 bundle, a video of synthetic people the model was not
trained on). The browser test (test_web_browser.py) covers the same page in chromium."""

from __future__ import annotations

import html
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from daemon_helpers import DaemonProcess

from edgeface.core.errors import ConfigError
from edgeface.daemon.config import load_config
from edgeface.daemon.server import Request
from edgeface.web.guard import Guard
from edgeface.web.store import FaceSample, FaceStore, Visit

# --- who may use the page ----------------------------------------------------------------------------------


def request(method: str = "GET", path: str = "/ui/", host: str = "127.0.0.1:8321", body: str = "",
            **headers: str) -> Request:
    return Request(method, path, {}, {"host": host, **{k.replace("_", "-"): v for k, v in headers.items()}},
                   body.encode())


def test_only_the_device_s_own_names_are_answered() -> None:
    guard = Guard("/ui", lambda token: True, False, hosts="frontdoor.lan, Cam.Example")
    for host in ("127.0.0.1:8321", "[::1]:8321", "192.168.1.7", "localhost:8321", "frontdoor.lan:80",
                 "cam.example"):
        assert guard.check(request(host=host)) is None, host
    refused = guard.check(request(host="attacker.example:8321"))  # a name pointed at the device: DNS rebinding
    assert refused is not None and refused.status == 421


def test_forms_need_the_page_s_token_and_its_origin() -> None:
    guard = Guard("/ui", lambda token: True, False)
    form = f"csrf={guard.csrf}&action=ignore"
    assert guard.check(request("POST", "/ui/unknown", body="action=ignore")).status == 403
    assert guard.check(request("POST", "/ui/unknown", body="csrf=wrong&action=ignore")).status == 403
    other = request("POST", "/ui/unknown", body=form, origin="http://attacker.example")
    assert guard.check(other).status == 403 and b"another site" in guard.check(other).body
    assert guard.check(request("POST", "/ui/unknown", body=form, origin="http://127.0.0.1:8321")) is None
    assert guard.check(request("POST", "/ui/unknown", body=form)) is None  # no Origin: the form token decides
    assert Guard("/ui", lambda token: True, False).csrf != guard.csrf  # a new one at each start


def test_the_token_comes_from_the_header_or_the_sign_in_cookie() -> None:
    token = "s3cret; with=odd chars"
    guard = Guard("/ui", lambda given: given == token, True, public=("/ui/login", "/ui/static/page.css"))
    page = guard.check(request(path="/ui/people"))
    assert page.status == 303 and page.headers["Location"] == "/ui/login?next=/ui/people"
    assert guard.check(request(path="/ui/api/live")).status == 401  # the script's requests get no redirect
    assert guard.check(request(path="/ui/login")) is None and guard.check(request(path="/ui/static/page.css")) is None
    assert guard.check(request(path="/ui/people", authorization=f"Bearer {token}")) is None
    assert guard.sign_in("wrong") is None and guard.sign_in("") is None
    cookie = guard.sign_in(token)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert token not in cookie  # encoded: any token makes a valid cookie
    value = cookie.split(";")[0]
    assert guard.check(request(path="/ui/people", cookie=value)) is None
    assert guard.check(request(path="/ui/people", cookie="edgeface_session=bm9wZQ==")).status == 303
    assert guard.check(request(path="/ui/people", cookie="edgeface_session=%%%")).status == 303


# --- what is kept, and for how long ------------------------------------------------------------------------


def sample(face_id: str, when: float) -> FaceSample:
    return FaceSample(face_id, when, np.ones(4, np.float32) / 2, 0.3, 120.0, 90.0)


def test_retention_deletes_old_and_extra_faces(tmp_path: Path) -> None:
    store = FaceStore(tmp_path / "g.faces", max_visits=2, keep_days=1, max_strangers=2, strangers_keep_days=2)
    now = time.time()
    visits = [Visit(f"v{i}", i, now - age, now - age, [sample(f"f{i}", now - age)])
              for i, age in enumerate((10, 5, 1, 2 * 86400))]
    for visit in visits:
        store.save_visit(visit.to_dict(), {f"f{visit.track}": b"jpeg"})
    assert [v.id for v in store.expired(visits, now)] == ["v0", "v3"]  # the third newest, and the 2-day-old one
    back = {v.id: v for v in store.load_visits()}
    assert set(back) == {"v0", "v1", "v2", "v3"} and back["v1"].samples[0].embedding.shape == (4,)

    store.add_strangers([(sample("s1", now - 3 * 86400), b"a")], "not Ada")  # past strangers_keep_days
    assert store.strangers() == []
    store.add_strangers([(sample(f"s{i}", now - i), b"x") for i in (2, 3, 4)], "marked as a stranger")
    assert [s.id for s, _ in store.strangers()] == ["s2", "s3"]  # newest first, at most max_strangers
    assert store.strangers()[0][1] == "marked as a stranger"

    assert {oct(p.stat().st_mode & 0o777) for p in store.root.rglob("*") if p.is_file()} == {"0o600"}
    assert {oct(p.stat().st_mode & 0o777) for p in [store.root, *store.root.rglob("*")] if p.is_dir()} == {"0o700"}
    for bad in ("..", "../v1", "a/b", "", "x" * 65, "V1"):  # ids from a request never reach a path
        assert store.visit_crop(bad, "f1") is None and store.visit_crop("v1", bad) is None
        assert store.stranger_crop(bad) is None
        store.delete_visit(bad)
        store.delete_stranger(bad)
    assert (store.unknown / "v1").is_dir()


def test_only_sharp_big_unknown_faces_are_kept_one_visit_per_track() -> None:
    import cv2

    from edgeface.core.results import FaceLabels, Prediction
    from edgeface.core.spec import CropSpec, ModelSpec
    from edgeface.daemon.records import Published
    from edgeface.recognition.records import FaceResult, FaceSamples, FrameResult
    from edgeface.data.synthetic import composite_frame, make_people, render_head
    from edgeface.faces.detect import Face
    from edgeface.runtime.labeler import Labeler
    from edgeface.web import watch

    rng = np.random.default_rng(0)
    head = render_head(make_people(1, seed=0)[0], "neutral", rng, width=400)
    frame, (big_at, small_at) = composite_frame((480, 640), [(head, (200.0, 220.0, 140.0)),
                                                             (head, (500.0, 220.0, 30.0))], rng)
    big, small = (Face(tuple(at["box"]), 0.9, tuple(map(tuple, at["eyes"]))) for at in (big_at, small_at))
    assert big.height > 100 and small.height < 40  # enroll's gate: 40 px
    blurry = cv2.GaussianBlur(frame, (0, 0), 6.0)
    spec = ModelSpec(labels={"identity": ("Jimmy", "Maya"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=64, embedding_size=4)
    watcher = watch.FaceWatcher(CropSpec(), Labeler(spec))

    def show(when: float, image: np.ndarray, faces: list[tuple[Face, int, str]]) -> None:
        results = tuple(FaceResult(f.box, track, FaceLabels(Prediction(name, 0.4), Prediction("happy", 0.9),
                                                              Prediction("male", 0.8))) for f, track, name in faces)
        n = len(faces)
        outputs = {"identity": np.tile([[0.4, 0.6]], (n, 1)), "embedding": np.tile([[1.0, 0, 0, 0]], (n, 1))}
        samples = FaceSamples(tuple(f for f, _, _ in faces), tuple(range(n)), np.zeros((n, 64, 64, 3), np.uint8),
                              outputs)
        watcher.observe(image, Published(FrameResult(when, 0, results, samples=samples if n else None), True))

    start = 1000.0
    for k in range(12):  # 1.2 s of one sharp face (track 1), one small face (2), a named one (3)
        show(start + 0.1 * k, frame, [(big, 1, "unknown"), (small, 2, "unknown"), (big, 3, "Maya")])
    visits = watcher.newest_visits()
    assert [v.track for v in visits] == [1]  # the small face made no card
    assert len(visits[0].samples) == 2  # from its 3rd frame on, one crop per 0.5 s
    assert visits[0].samples[0].sharpness >= 40 and visits[0].samples[0].height == pytest.approx(big.height)
    assert [(r.track, r.name) for r in watcher.recognitions()] == [(3, "Maya")]
    for k in range(12):  # track 4: the same face, blurred
        show(start + 2 + 0.1 * k, blurry, [(big, 4, "unknown")])
    assert [v.track for v in watcher.newest_visits()] == [1]
    show(start + 10, frame, [])  # everybody left: their visits end and are written at the next flush
    assert watcher._open == {} and {raw["id"] for raw, _ in watcher.pending()} == {visits[0].id}


def test_the_page_needs_the_http_server(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] is enabled but \[http\] is not"):
        load_config(None, {"bundle": "b.edgeface", "source": "0", "web.enabled": True, "http.enabled": False})
    assert load_config(None, {"bundle": "b.edgeface", "source": "0"}).web.enabled is False  # off by default


# --- the real daemon ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_strangers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s at 10 fps of two synthetic people side by side, neither among the tiny model's six."""
    from video_fixtures import synthetic_video

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
        """Unknown visits on the page: {visit id: its face ids}."""
        text = self.get("/ui/unknown")[1]
        return {m.group(1): re.findall(r'name="face" value="([0-9a-f]+)"', m.group(2))
                for m in re.finditer(r'<article class="card" id="visit-([^"]+)">(.*?)</article>', text, re.S)}


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

        # Name one visit with three of its crops; keep the other as a stranger's faces.
        told = note(page.post("/ui/unknown", [("visit", first), ("action", "name"), ("name", "Bo"),
                                              *[("face", f) for f in first_faces[:3]]]))
        named_at = time.time()
        assert told.startswith("ok: Bo: 3 faces added (3 in all)")
        gallery = json.loads(next((state / "galleries").glob("*.json")).read_text())
        photos = gallery["people"][0]["photos"]
        assert [p["visit"] for p in photos] == [first] * 3
        assert all((faces_dir / "people" / f"{p['sha256']}.jpg").is_file() for p in photos)
        assert not (faces_dir / "unknown" / first).exists()  # the named visit's other crops are gone
        told = note(page.post("/ui/unknown", [("visit", second), ("action", "stranger"),
                                              *[("face", f) for f in second_faces]]))
        assert told == f"ok: Kept {len(second_faces)} faces as a stranger's, for calibration (Thresholds)."
        assert note(page.post("/ui/unknown", [("visit", second), ("action", "ignore")])).startswith(
            "error: That visit is no longer kept")
        assert page.cards() == {}  # both visits are done: no new card while those tracks stay in view

        bo, stranger = (int(visit.split("-")[1]) for visit in (first, second))  # visit ids end in the track
        daemon.wait_for(lambda: len(names_after(daemon, named_at)) >= 20, 20, "10 frames after naming")
        assert set(names_after(daemon, named_at, bo)) == {"Bo"}

        # Recalibrate on the stranger's faces: at 0% none of them may be named; Bo still is.
        told = note(page.post("/ui/thresholds", [("action", "recalibrate"), ("far", "0")]))
        calibrated_at = time.time()
        assert told.startswith(f"ok: Calibrated on {len(second_faces)} strangers' faces"), told
        assert "0.00% of them would be named (target 0.00%)" in told
        thresholds = page.get("/ui/thresholds")[1]
        assert "calibrated" in thresholds and "Calibrated 20" in thresholds
        daemon.wait_for(lambda: len(names_after(daemon, calibrated_at)) >= 20, 20, "10 frames after calibrating")
        gallery = json.loads(next((state / "galleries").glob("*.json")).read_text())
        enrolled = np.asarray(gallery["people"][0]["embeddings"])
        kept = np.stack([json.loads(f.read_text())["embedding"] for f in (faces_dir / "strangers").glob("*.json")])
        kept /= np.linalg.norm(kept, axis=1, keepdims=True)
        assert (kept @ enrolled.T).max() < gallery["similarity_threshold"]  # none of the stored strangers passes
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
        for query in ("of=unknown&visit=..&id=..", "of=person&id=../../gallery", "of=stranger&id=%2e%2e",
                      "of=elsewhere&id=x"):
            assert page.get(f"/ui/face.jpg?{query}")[0] == 404, query
        stats = json.loads(page.get("/ui/api/stats")[1])
        assert stats["live_frames_encoded"] == 0  # no live view was opened
        assert daemon.stop()[0] == 0
    finally:
        daemon.kill()
