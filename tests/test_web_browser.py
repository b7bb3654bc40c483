"""The web page in a real browser: a stranger seen on two visits makes one card; name it, read that name in
the daemon's output; say "Not <name>" and the daemon says unknown again.

The real ``edgeface run --web`` (tiny int8 bundle, a bearer token, visits that end 1 s after their person left)
on a looping video of one synthetic person the model was not trained on, who walks out for 2 s at the end of
each loop; Debian's chromium, headless, through chromedriver (tests/helpers/browser.py). Each page is saved at
phone and desktop widths in artifacts/screenshots/ for a person to look at (not committed).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers.browser import DESKTOP, PHONE, chromium, screenshot, use_screen
from helpers.daemon import REPO, DaemonProcess

pytestmark = pytest.mark.system

SHOTS = REPO / "artifacts" / "screenshots"
TOKEN = "correct horse battery staple"
NAME = "Ada Lovelace"


@pytest.fixture(scope="module")
def stranger_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """At 10 fps, 12 s of one synthetic person who is not among the tiny model's six, then 2 s of the empty
    room: looped, each pass is a visit of its own."""
    import cv2

    from helpers.video_fixtures import synthetic_video

    folder = tmp_path_factory.mktemp("web-video")
    synthetic_video(folder / "person.avi", faces=1, seconds=12, seed=1)
    source = cv2.VideoCapture(str(folder / "person.avi"))
    frames = []
    while (frame := source.read()[1]) is not None:
        frames.append(frame)
    source.release()
    path = folder / "stranger.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames + [np.full_like(frames[0], 128)] * 20:
        out.write(frame)
    out.release()
    return path


def api(port: int, path: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def labels_after(daemon: DaemonProcess, since: float) -> list[str]:
    """The identity of every face in the frames captured after ``since`` (the daemon's JSON lines)."""
    return [face["identity"]["label"] for record in daemon.records() if record["time"] > since
            for face in record["faces"]]


def text(driver, css: str) -> str:
    """The text of the first element ``css`` matches, read in one step: the live view's script replaces its
    boxes every frame and its list when a label changes, so an element found first may be gone when read."""
    return driver.execute_script("var e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
                                 css)


def click(driver, css: str) -> str:
    """Click the first element ``css`` matches, again if the script replaced it meanwhile; return its text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def attempt(d) -> str | None:
        try:
            element = d.find_element(By.CSS_SELECTOR, css)
            label = element.text
            element.click()
            return label
        except StaleElementReferenceException:
            return None

    return WebDriverWait(driver, 20).until(attempt)


def shoot(driver, name: str) -> None:
    for tag, screen in (("phone", PHONE), ("desktop", DESKTOP)):
        use_screen(driver, screen)
        driver.refresh()
        time.sleep(0.3)
        screenshot(driver, SHOTS / f"{name}-{tag}.png", screen)


def test_name_an_unknown_face_in_the_browser(tiny_bundles: dict[str, Path], stranger_video: Path,
                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    config = tmp_path / "edgeface.toml"
    # identity_threshold above 1: the tiny model (trained anew each run) may take the stranger for one of its own
    # trained people (a CI run saw "Maya"); only the people named on the page may name anybody here.
    config.write_text("identity_threshold = 1.01\n[visits]\nleave_after = 1.0\n")
    daemon = DaemonProcess(["--config", str(config), "--bundle", str(tiny_bundles["int8"]), "--source",
                            str(stranger_video), "--loop", "--fps", "10", "--web", "--http-port", "0"],
                           env={"EDGEFACE_STATE_DIR": str(tmp_path / "state"), "EDGEFACE_HTTP_TOKEN": TOKEN})
    try:
        port = daemon.http_port()
        base = f"http://127.0.0.1:{port}"
        daemon.wait_for(lambda: len(daemon.records()) >= 20, 30, "20 frames")
        assert set(labels_after(daemon, 0)) == {"unknown"}  # nobody is enrolled: the daemon cannot name them
        assert api(port, "/ui/api/stats")["live_frames_encoded"] == 0  # no page open: no frame encoded

        with chromium() as driver:
            wait = WebDriverWait(driver, 20)
            use_screen(driver, PHONE)
            # 1. The token: the page asks for it, then keeps it in a cookie for its own paths.
            driver.get(f"{base}/")
            wait.until(ready.presence_of_element_located((By.ID, "token")))
            assert driver.current_url.startswith(f"{base}/ui/login")
            shoot(driver, "0-sign-in")
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "form button.primary").click()

            # 2. Live: the newest frame with the face's box and its labels, refreshed while the page is open.
            wait.until(lambda d: d.execute_script(
                "var i = document.getElementById('live-image'); return i && i.naturalWidth > 0 && "
                "document.querySelectorAll('#live-boxes .box.unknown').length > 0"))
            first = text(driver, "#live-status")
            wait.until(lambda d: text(d, "#live-status") != first)  # refreshed while the page is open
            assert "unknown" in text(driver, "#live-boxes .box span")
            shoot(driver, "1-live-unknown")
            assert api(port, "/ui/api/stats")["live_frames_encoded"] >= 2

            # 3. Unknown faces: one card for the person, once they came back (their second visit), its crops
            # ticked; name them while they are in view.
            driver.get(f"{base}/ui/unknown")

            def second_visit(d) -> bool:
                d.refresh()
                return text(d, "article.card .visits").startswith("2 visits") and any(
                    face.get("group") for face in api(port, "/ui/api/live")["faces"])

            WebDriverWait(driver, 40, poll_frequency=0.5).until(second_visit)
            cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
            assert len(cards) == 1, driver.page_source[:2000]
            crops = cards[0].find_elements(By.CSS_SELECTOR, "label.crop input[type=checkbox]")
            assert len(crops) >= 4 and all(c.is_selected() for c in crops)
            wait.until(lambda d: all(d.execute_script("return arguments[0].naturalWidth", img) > 0
                                     for img in d.find_elements(By.CSS_SELECTOR, "article.card img")))
            use_screen(driver, PHONE)
            screenshot(driver, SHOTS / "2-unknown-card-phone.png", PHONE)  # no reload: the person is in view
            card = driver.find_element(By.CSS_SELECTOR, "article.card")
            crops = card.find_elements(By.CSS_SELECTOR, "label.crop input[type=checkbox]:checked")
            card.find_element(By.NAME, "name").send_keys(NAME)
            card.find_element(By.CSS_SELECTOR, "button[value=name]").click()
            note = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".note.ok"))).text
            named_at = time.time()
            assert note.startswith(f"{NAME}: {len(crops)} faces from "), note
            assert not driver.find_elements(By.CSS_SELECTOR, "article.card")  # the card is gone

            # 4. The running daemon names them from the next frames on, without a restart.
            daemon.wait_for(lambda: len(labels_after(daemon, named_at)) >= 10, 20, "10 frames after naming")
            after = labels_after(daemon, named_at)
            assert after.count(NAME) == len(after), after

            # 5. "Not Ada" from the live view, while this visit lasts: the naming of the card this visit was on is
            # taken back, the visit's faces are kept as evidence that they are not Ada (and for calibration), and
            # the daemon says "unknown" again.
            driver.get(f"{base}/ui/")
            wait.until(lambda d: NAME in text(d, "#live-faces") and f"Not {NAME}" in text(d, "#live-faces button.warn"))
            use_screen(driver, PHONE)
            screenshot(driver, SHOTS / "4-live-named-phone.png", PHONE)
            assert click(driver, "#live-faces button.warn") == f"Not {NAME}"
            note = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".note"))).text
            undone_at = time.time()
            assert f"The {len(crops)} faces enrolled from this person's card were taken out of {NAME}'s photos" \
                in note, note
            daemon.wait_for(lambda: len(labels_after(daemon, undone_at)) >= 5, 20, "5 frames after 'not'")
            assert set(labels_after(daemon, undone_at)) == {"unknown"}
            shoot(driver, "3-not-named")

            # 6. The other pages: the thresholds with the faces kept as "not Ada", nobody enrolled, the recent.
            driver.get(f"{base}/ui/thresholds")
            kept = driver.find_elements(By.CSS_SELECTOR, ".negatives figure.crop")
            assert kept and all(f.find_element(By.TAG_NAME, "figcaption").text == f"not {NAME}" for f in kept)
            assert len(driver.find_elements(By.CSS_SELECTOR, ".negatives figure.crop img")) == len(kept)
            shoot(driver, "5-thresholds-not")
            driver.get(f"{base}/ui/people")
            assert "Nobody is enrolled yet" in driver.find_element(By.TAG_NAME, "main").text
            shoot(driver, "6-people")
            driver.get(f"{base}/ui/recent")
            shoot(driver, "7-recent")

        code, _ = daemon.stop()
        assert code == 0, daemon.log()
    finally:
        daemon.kill()
    crops_dir = next((tmp_path / "state" / "galleries").glob("*.faces"))
    assert oct(crops_dir.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in crops_dir.rglob("*") if p.is_file()} == {"0o600"}
