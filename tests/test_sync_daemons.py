"""People sync through a real mosquitto between real daemons on loopback, each with its own state folder: a
person enrolled with the CLI on one device, or named on its web page in a real browser (chromium), is named by
the others; renames, removals and strangers' faces reach every device (enrolled faces' crops only to devices of
a household that shares them); a device stopped during changes catches up when it starts again; the broker
restarted (with persistence) loses nothing; a forged record is refused, counted and changes nobody."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers.daemon import DaemonProcess, http_get, metric
from helpers.mosquitto import Mosquitto
from edgeface.cli import app
from edgeface.core.bundle import load_bundle
from edgeface.core.gallery import default_gallery_path, read_gallery
from edgeface.people.album import crop_path

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
                                 reason="mosquitto not installed (apt-get install -y mosquitto)")]

DEVICES = ("door", "hall", "garden")
KEY = "the-household-key-0123456789abcdef"
TOKEN = "correct horse battery staple"
NAME = "Ada Lovelace"
runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Photos of 3 people the tiny model was not trained on, and a folder of frames: the first person for
    0.4 s, then nobody for 0.6 s (a camera loops over it)."""
    from edgeface.core.imageio import write_image
    from helpers.video_fixtures import new_people_photos

    folder = tmp_path_factory.mktemp("household-photos")
    new, out = new_people_photos(folder, per_person=4)
    frames = folder / "frames"
    frames.mkdir()
    for i in range(10):
        if i < 4:
            (frames / f"{i:02d}.jpg").write_bytes(out[new[0].name][0].read_bytes())
        else:
            write_image(frames / f"{i:02d}.jpg", np.full((240, 320, 3), 127, np.uint8))
    out["frames"] = [frames]
    return out


class Visits:
    """Every visit event of every device, as an MQTT subscriber sees them."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.events: list[tuple[str, str, str]] = []  # (device, event, who)
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-visits-{time.time_ns()}")
        self.client.on_connect = lambda c, *_: c.subscribe("edgeface/+/visit", 1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client, userdata, message) -> None:
        event = json.loads(message.payload)
        with self.lock:
            self.events.append((message.topic.split("/")[1], event["event"], event["who"]))

    def named(self, device: str, who: str) -> bool:
        with self.lock:
            return any(d == device and w == who for d, _, w in self.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Device:
    def __init__(self, name: str, folder: Path, bundle: Path, frames: Path, port: int, crops: bool = True,
                 web: bool = False) -> None:
        self.name, self.web = name, web
        self.state = folder / name / "state"
        self.bundle = bundle
        self.config = folder / name / "edgeface.toml"
        self.config.parent.mkdir(parents=True)
        (folder / "household.key").write_text(KEY + "\n")
        # identity_threshold above 1: the tiny model's trained people (a model trained anew each session) never
        # name anybody, so who is named comes from the household's people alone.
        self.config.write_text(f"""bundle = "{bundle}"
source = "{frames}"
threads = 1
identity_threshold = 1.01
[capture]
loop = true
fps = 10
[visits]
leave_after = 1.0
[mqtt]
host = "127.0.0.1"
port = {port}
device = "{name}"
frames = false
[sync]
enabled = true
key_file = "{folder / 'household.key'}"
check_interval = 0.2
crops = {str(crops).lower()}
[http]
port = 0
[web]
enabled = {str(web).lower()}
""")
        self.gallery_path = default_gallery_path(load_bundle(bundle).model_sha256, self.state)
        self.process: DaemonProcess | None = None
        self.http = 0

    def start(self) -> "Device":
        token = {"EDGEFACE_HTTP_TOKEN": TOKEN} if self.web else {}  # /metrics stays open on the others
        self.process = DaemonProcess(["--config", str(self.config)], env={"EDGEFACE_STATE_DIR": str(self.state),
                                                                          **token})
        return self

    def wait_caught_up(self, times: int = 1) -> None:
        assert self.process is not None
        self.process.wait_for(lambda: sum("sync: caught up" in line for line in self.process.stderr) >= times, 90,
                              f"{self.name} to catch up with the household")
        self.http = self.process.http_port()

    def people(self) -> tuple[str, ...]:
        return read_gallery(self.gallery_path).names if self.gallery_path.is_file() else ()

    def gallery(self):
        return read_gallery(self.gallery_path)

    def metrics(self) -> str:
        return http_get(self.http, "/metrics")[1]

    def cli(self, *args: object) -> None:
        result = runner.invoke(app, [str(a) for a in args] + ["--bundle", str(self.bundle), "--state-dir",
                                                              str(self.state)])
        assert result.exit_code == 0, result.output


def stop_all(visits: Visits, devices: list[Device], broker: Mosquitto) -> None:
    visits.close()
    for device in devices:
        if device.process is not None:
            device.process.kill()
    broker.stop()


def wait(what: str, predicate, timeout: float = 20.0, devices: list[Device] = ()) -> float:
    """Seconds until ``predicate()`` holds (fails after ``timeout``, with the devices' logs)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    logs = "\n".join(d.process.log()[-3000:] for d in devices if d.process is not None)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def test_named_on_one_web_page_in_the_browser_named_by_the_other_device(tiny_bundles: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """Two cameras on a looping video of somebody nobody enrolled; on the door's web page (chromium) their face
    is named: the hall names them too, and the door's Household page shows them home, seen by a camera."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    from helpers.browser import chromium
    from helpers.video_fixtures import synthetic_video

    video = tmp_path / "stranger.avi"
    synthetic_video(video, faces=1, seconds=6, seed=1)  # one person the tiny model was not trained on
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    door, hall = devices = [Device(name, tmp_path, tiny_bundles["int8"], video, broker.port, web=name == "door")
                            for name in DEVICES[:2]]
    visits = Visits(broker.port)
    try:
        for device in devices:
            device.start().wait_caught_up()
        with chromium() as driver:
            ui = f"http://127.0.0.1:{door.http}/ui"
            page = WebDriverWait(driver, 20)
            driver.get(f"{ui}/login")
            page.until(ready.presence_of_element_located((By.ID, "token"))).send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "form button.primary").click()
            page.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#live-image"))
            card = WebDriverWait(driver, 60, poll_frequency=1).until(  # a card once the visit has good crops
                lambda d: d.get(f"{ui}/unknown") or next(iter(d.find_elements(By.CSS_SELECTOR, "article.card")), None))
            card.find_element(By.NAME, "name").send_keys(NAME)
            card.find_element(By.CSS_SELECTOR, "button[value=name]").click()
            assert page.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".note.ok"))).text.startswith(NAME)

            took = wait("the hall to have them", lambda: hall.people() == (NAME,), 10, devices)
            assert took < 2.0, f"the change took {took:.1f} s to reach the hall"
            wait("the hall to name them", lambda: visits.named("hall", NAME), 30, devices)

            def household_row() -> str:
                driver.get(f"{ui}/household")
                rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "table tr") if NAME in r.text]
                return rows[0] if rows and " home " in f" {rows[0]} " else ""

            row = WebDriverWait(driver, 30, poll_frequency=0.5).until(lambda d: household_row())
            assert "enrolled here" in row and any(f" {d.name} " in f" {row} " for d in devices), row
            assert "shares its people" in driver.page_source
    finally:
        stop_all(visits, devices, broker)


def test_three_daemons_share_their_people(tiny_bundles: dict[str, Path], photos: dict[str, list[Path]],
                                          tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    bundle = tiny_bundles["int8"]
    door, hall, garden = devices = [Device(name, tmp_path, bundle, photos["frames"][0], broker.port,
                                           crops=name != "garden") for name in DEVICES]
    priya, sofia, kenji = (name for name in photos if name != "frames")
    visits = Visits(broker.port)
    try:
        for device in devices:
            device.start()
        for device in devices:
            device.wait_caught_up()

        # Enrolled on the door with the CLI: every device has her, and names her when she comes.
        door.cli("enroll", "--name", priya, *photos[priya][:3])
        took = wait("Priya on every device", lambda: all(d.people() == (priya,) for d in devices), 10, devices)
        assert took < 2.0, f"the change took {took:.1f} s to reach the 3 devices"
        wait("the hall and the garden to name her", lambda: visits.named("hall", priya) and
             visits.named("garden", priya), 30, devices)
        ids = {d.gallery().people[0].id for d in devices}
        assert len(ids) == 1  # the same person everywhere
        # Crops travel only where the household shares them: the hall shows her faces, the garden has none.
        shas = [p["sha256"] for p in door.gallery().people[0].photos]
        crops = {d.name: [crop_path(d.gallery_path, sha) for sha in shas] for d in devices}
        assert all(c.read_bytes() == crops["door"][i].read_bytes() for i, c in enumerate(crops["hall"]))
        assert not any(c.exists() for c in crops["garden"])

        # Renamed in the hall; a stranger's face kept in the garden: everywhere.
        hall.cli("people", "rename", priya, "Priya K.")
        from edgeface.people.enroll import FaceEmbedder, change_gallery

        checks, outputs = FaceEmbedder(bundle).photos(photos[kenji][:1], quality=False)
        change_gallery(bundle, lambda g: g.with_negatives("", outputs["embedding"], ["kenji-face-1"], "a stranger"),
                       state_dir=garden.state)
        wait("the rename and the stranger everywhere", lambda: all(
            d.people() == ("Priya K.",) and [n.id for n in d.gallery().negatives] == ["kenji-face-1"]
            for d in devices), 10, devices)
        wait("the renamed person named", lambda: visits.named("door", "Priya K."), 30, devices)

        # The garden stops; meanwhile Priya is removed at the door and Sofia enrolled in the hall.
        assert garden.process.stop()[0] == 0
        door.cli("people", "remove", "Priya K.")
        hall.cli("enroll", "--name", sofia, *photos[sofia][:2])
        wait("the door and the hall to agree", lambda: door.people() == hall.people() == (sofia,), 10, devices)
        assert garden.people() == ("Priya K.",)
        garden.start()
        garden.wait_caught_up()
        wait("the garden to catch up", lambda: garden.people() == (sofia,), 10, devices)
        assert not any(n.of for n in garden.gallery().negatives)  # the stranger's face stayed, nobody's

        # The broker restarts (persistence on): a device that was never there gets everything.
        broker.stop()
        broker.start()
        late = Device("shed", tmp_path, bundle, photos["frames"][0], broker.port).start()
        devices.append(late)
        late.wait_caught_up()
        wait("the new device to have the household", lambda: late.people() == (sofia,) and
             [n.id for n in late.gallery().negatives] == ["kenji-face-1"], 10, devices)
        hall.gallery_path.unlink()  # not a way to remove anybody: the household's people come back
        wait("the hall's gallery written back", lambda: hall.people() == (sofia,), 10, devices)
        assert all(d.people() == (sofia,) for d in devices)

        # A forged record (wrong key) and one from a broken clock: refused, counted, nobody changed.
        forge(broker.port, bundle)
        wait("every device to refuse both", lambda: all(
            metric(d.metrics(), "edgeface_sync_refused_total", 'reason="auth"') >= 1 and
            metric(d.metrics(), "edgeface_sync_refused_total", 'reason="future"') >= 1 for d in devices),
             10, devices)
        assert all(d.people() == (sofia,) for d in devices)
        for device in devices:
            assert sum("sync: refused a record" in line for line in device.process.stderr) == 2
            assert metric(device.metrics(), "edgeface_sync_connected") == 1
    finally:
        stop_all(visits, devices, broker)


def forge(port: int, bundle: Path) -> None:
    """Publish, as somebody on the broker without the household key, a person named Mallory; and, with the
    key, a record stamped an hour ahead (a device whose clock is wrong)."""
    import paho.mqtt.client as mqtt

    from edgeface.sync.clock import Stamp
    from edgeface.sync.records import Record, seal

    encoder = load_bundle(bundle).embedding_id
    topic = f"edgeface/sync/{encoder}/r/person/{'f' * 16}"
    record = Record(f"person/{'f' * 16}", Stamp(int(time.time() * 1000), 0), "mallory",
                    {"name": "Mallory", "added": ""})
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-forger")
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, seal(record, encoder, b"not the household's key"), qos=1,
                   retain=True).wait_for_publish(5)
    ahead = Record(record.key, Stamp(int(time.time() * 1000) + 3_600_000, 0), "broken", record.data)
    client.publish(topic, seal(ahead, encoder, KEY.encode()), qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()

