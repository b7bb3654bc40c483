"""MQTT with a real Debian mosquitto started by the test and a real paho subscriber: the broker is down when
the daemon starts, comes up, goes down mid-run and comes back; retained availability, last will and Home
Assistant discovery are checked as a subscriber sees them."""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import numpy as np

from helpers.daemon import DaemonProcess, http_get, metric
from helpers.mosquitto import Mosquitto
from helpers.ports import free_port
from helpers.video_fixtures import synthetic_video

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
                                 reason="mosquitto not installed (apt-get install -y mosquitto)")]

DEVICE = "testpi"


class Subscriber:
    """A paho client that records every message under the daemon's topics and Home Assistant's."""

    def __init__(self, port: int, topics: tuple[str, ...] = (f"edgeface/{DEVICE}/#", "homeassistant/#")) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.time_ns()}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe([(topic, 1) for topic in topics])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test's subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def topics(self, suffix: str) -> list[tuple[str, str, bool]]:
        with self._lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mqtt-video") / "two.mp4"
    synthetic_video(path, faces=2, seconds=2, seed=1)
    return path


def _config(tmp_path: Path, bundle: Path, video: Path, port: int) -> Path:
    config = tmp_path / "edgeface.toml"
    config.write_text(f"""bundle = "{bundle}"
source = "{video}"
[capture]
loop = true
fps = 20
[mqtt]
host = "127.0.0.1"
port = {port}
device = "{DEVICE}"
publish = "every"
discovery = true
[http]
port = 0
""")
    return config


def test_mqtt_through_broker_outages(tiny_bundles: dict[str, Path], video: Path, tmp_path: Path) -> None:
    port = free_port()
    broker = Mosquitto(tmp_path, port)
    daemon = DaemonProcess(["--config", str(_config(tmp_path, tiny_bundles["int8"], video, port))])
    subscriber = None
    try:
        # Broker down at start: the daemon runs, labels, and reports the sink as not connected.
        http = daemon.http_port()
        daemon.wait_for(lambda: http_get(http, "/healthz")[0] == 200, 60, "healthy without a broker")
        assert metric(http_get(http, "/metrics")[1], "edgeface_sink_connected", 'sink="mqtt"') == 0
        assert daemon.stdout == []  # MQTT configured: nothing on stdout

        broker.start()
        subscriber = Subscriber(port)
        daemon.wait_for(lambda: len(subscriber.topics("/frame")) >= 5, 60, "frames over MQTT")
        status = subscriber.topics("/status")
        assert status and status[-1][1] == "online"
        frame = json.loads(subscriber.topics("/frame")[-1][1])
        assert set(frame) == {"time", "frame", "faces"} and frame["faces"]
        state = json.loads(subscriber.topics("/state")[-1][1])
        assert state["faces"] >= 1 and state["identities"]
        from edgeface.core.bundle import load_bundle

        people = load_bundle(tiny_bundles["int8"]).spec.labels["identity"]  # the trained people: no gallery
        expected = 5 + 1 + len(people)  # the summary's sensors, the stranger event, a presence entity each
        late = Subscriber(port)  # status, state and discovery are retained: a newcomer gets them at once
        daemon.wait_for(lambda: len(late.topics("/config")) == expected, 10, "retained discovery")
        retained = {t.rsplit("/", 1)[-1] for t, _, r in late.messages
                    if r and t.startswith(f"edgeface/{DEVICE}/") and "/presence/" not in t}
        late.close()
        assert retained == {"status", "state"}  # (and this device's presence reports, once it named somebody)
        assert {"identity", "emotion", "gender"} <= set(state)
        discovery = {t: json.loads(p) for t, p, _ in subscriber.topics("/config")}
        assert {f"homeassistant/sensor/{DEVICE}_{k}/config" for k in ("faces", "people", "identity", "emotion",
                                                                         "gender")} < set(discovery)
        sensor = discovery[f"homeassistant/sensor/{DEVICE}_identity/config"]
        assert sensor["state_topic"] == f"edgeface/{DEVICE}/state"
        assert sensor["availability_topic"] == f"edgeface/{DEVICE}/status"

        # Broker gone mid-run: labelling goes on; then it returns and messages flow again.
        subscriber.close()
        broker.stop()
        before = metric(http_get(http, "/metrics")[1], "edgeface_frames_processed_total")
        daemon.wait_for(lambda: metric(http_get(http, "/metrics")[1], "edgeface_sink_connected",
                                       'sink="mqtt"') == 0, 30, "the daemon to notice the broker left")
        time.sleep(1.0)
        assert metric(http_get(http, "/metrics")[1], "edgeface_frames_processed_total") > before
        assert daemon.proc.poll() is None
        broker.start()
        subscriber = Subscriber(port)
        daemon.wait_for(lambda: len(subscriber.topics("/frame")) >= 3, 60, "frames after the broker came back")
        assert metric(http_get(http, "/metrics")[1], "edgeface_sink_connects_total", 'sink="mqtt"') >= 2

        # A clean stop says offline (retained) itself.
        code, elapsed = daemon.stop()
        assert code == 0 and elapsed < 2.0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and subscriber.topics("/status")[-1][1] != "offline":
            time.sleep(0.05)
        assert subscriber.topics("/status")[-1][1] == "offline"
    finally:
        daemon.kill()
        if subscriber is not None:
            subscriber.close()
        broker.stop()


def test_mqtt_last_will_marks_a_killed_daemon_offline(tiny_bundles: dict[str, Path], video: Path,
                                                      tmp_path: Path) -> None:
    port = free_port()
    broker = Mosquitto(tmp_path, port).start()
    daemon = DaemonProcess(["--config", str(_config(tmp_path, tiny_bundles["int8"], video, port))])
    subscriber = Subscriber(port)
    try:
        daemon.wait_for(lambda: any(p == "online" for _, p, _ in subscriber.topics("/status")), 60, "online")
        daemon.kill()  # SIGKILL: no goodbye; the broker sends the will
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and subscriber.topics("/status")[-1][1] != "offline":
            time.sleep(0.05)
        assert subscriber.topics("/status")[-1][1] == "offline"
        # Retained: a client arriving later learns the daemon is offline.
        late = Subscriber(port)
        time.sleep(0.5)
        assert [(p, r) for _, p, r in late.topics("/status")] == [("offline", True)]
        late.close()
    finally:
        daemon.kill()
        subscriber.close()
        broker.stop()


# (tests/test_homeassistant.py runs Home Assistant itself on these messages; these checks are its quick proxy.)
# Home Assistant's own rules (homeassistant/components/mqtt/discovery.py and const.py): a discovery topic is
# <prefix>/<component>/[<node_id>/]<object_id>/config with ids of [a-zA-Z0-9_-] (anything else, a space
# included, is ignored with a warning), and these states mean "no data" rather than a value.
HA_DISCOVERY_TOPIC = re.compile(r"homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
                                r"(?P<object_id>[a-zA-Z0-9_-]+)/config")
HA_NO_DATA = {"unknown", "unavailable", "None", ""}
HA_REQUIRED = {"sensor": {"state_topic"}, "event": {"state_topic", "event_types"},
               "device_tracker": {"state_topic"}}
TEMPLATE = re.compile(r"\{\{ value_json\.(\w+)( \| join\(', '\))? \}\}")


def render(template: str, payload: str) -> str:
    """The value templates edgeface announces (``{{ value_json.key }}``, optionally ``| join(', ')``)."""
    match = TEMPLATE.fullmatch(template)
    assert match, f"a template this test cannot render: {template}"
    value = json.loads(payload)[match.group(1)]
    return ", ".join(value) if match.group(2) else str(value)


@pytest.fixture(scope="module")
def visit_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two of the people the tiny model was trained on (its embedding tells them apart)."""
    from edgeface.data.synthetic import make_people

    path = tmp_path_factory.mktemp("visit-video") / "door.mp4"
    synthetic_video(path, faces=2, seconds=4, seed=3, people=make_people(6, seed=0))
    return path


@pytest.fixture(scope="module")
def household(tiny_bundles: dict[str, Path], visit_video: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A gallery where one of the video's two people is enrolled as "Ada Lovelace" from her own frames, with a
    per-visit threshold between her faces and the other person's; the other person is a stranger."""
    import edgeface
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import open_gallery
    from edgeface.eval.video import read_video

    frames = list(read_video(visit_video))
    embeddings: dict[int, list[np.ndarray]] = {}
    pipeline = edgeface.load(tiny_bundles["int8"], threads=1, gallery=None)
    for result in pipeline.run(frames, fps=10, start=0.0):
        samples = result.samples
        for k, i in enumerate(samples.recognised if samples is not None else ()):
            embeddings.setdefault(result.faces[i].track, []).append(samples.outputs["embedding"][k])
    (ada, ada_faces), (_, other_faces) = sorted(embeddings.items())[:2]
    bundle = load_bundle(tiny_bundles["int8"])
    path = tmp_path_factory.mktemp("household") / "people.json"
    gallery = open_gallery(bundle.model_sha256, bundle.spec.embedding_size, path)
    gallery = gallery.with_person("Ada Lovelace", np.stack(ada_faces[:3]))
    own = gallery.similarities(np.stack(ada_faces)).max(axis=1).min()
    other = gallery.similarities(np.stack(other_faces)).max(axis=1).max()
    assert own > other + 0.02, f"the fixture's two people are not apart ({own:.3f} vs {other:.3f})"
    threshold = float((own + other) / 2)
    gallery.calibrated(threshold, 1.01, {"test": True}, threshold, 1.01).save(path)  # 1.01: the head names nobody
    return {"gallery": path, "bundle": tiny_bundles["int8"]}


def _household_config(tmp_path: Path, household: dict, video: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "edgeface.toml"
    config.write_text(f"""bundle = "{household['bundle']}"
source = "{video}"
gallery = "{household['gallery']}"
threads = 1
[mqtt]
host = "127.0.0.1"
port = {port}
device = "front door"
discovery = true
[http]
enabled = false
{extra}""")
    return config


def test_visits_presence_and_home_assistant_entities(household: dict, visit_video: Path, tmp_path: Path) -> None:
    """A finite video with Ada and a stranger, on a device named "front door": visit events, Ada's presence
    (home, then not_home when the video ends), the stranger's event, and every discovery message as Home
    Assistant's own rules read it."""
    broker = Mosquitto(tmp_path).start()
    subscriber = Subscriber(broker.port, ("edgeface/#", "homeassistant/#"))
    daemon = DaemonProcess(["--config", str(_household_config(tmp_path, household, visit_video, broker.port,
                                                               "[visits]\ncrops = true\n"))])
    try:
        assert daemon.finish(120) == 0, daemon.log()
        time.sleep(0.5)  # the last messages on their way to the subscriber
    finally:
        daemon.kill()
        subscriber.close()
        broker.stop()
    device_id = "front_door"
    visits = [json.loads(p) for t, p, _ in subscriber.messages if t == f"edgeface/{device_id}/visit"]
    kinds = [(v["event"], v["who"]) for v in visits]
    assert ("arrived", "Ada Lovelace") in kinds and ("arrived", "unknown") in kinds, kinds
    assert ("left", "Ada Lovelace") in kinds and ("left", "unknown") in kinds, kinds
    ada = next(v for v in visits if v["who"] == "Ada Lovelace")
    assert ada["camera"] == "front door" and ada["seconds_to_name"] <= 0.5
    assert base64.b64decode(ada["crop"])[:2] == b"\xff\xd8"  # [visits] crops: the best face as a JPEG
    presence = [json.loads(p) for t, p, r in subscriber.messages if t.startswith("edgeface/presence/") and p]
    assert [p["state"] for p in presence if p["name"] == "Ada Lovelace"][-2:] == ["home", "not_home"]
    assert all(p["camera"] == "front door" for p in presence)
    strangers = [json.loads(p) for t, p, _ in subscriber.messages if t == f"edgeface/{device_id}/stranger"]
    assert [s["event_type"] for s in strangers] == ["arrived", "left"]

    configs = {t: json.loads(p) for t, p, _ in subscriber.messages if t.endswith("/config") and p}
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    components = set()
    for topic, config in configs.items():
        match = HA_DISCOVERY_TOPIC.fullmatch(topic)
        assert match, f"Home Assistant ignores this discovery topic: {topic}"
        components.add(match["component"])
        assert HA_REQUIRED[match["component"]] <= set(config), (topic, config)
        if match["component"] == "event":
            assert {s["event_type"] for s in strangers} <= set(config["event_types"])
    assert components == {"sensor", "event", "device_tracker"}
    tracker = next(c for c in configs.values() if c.get("name") == "Ada Lovelace")
    assert tracker["state_topic"].startswith("edgeface/presence/")
    states = [p for t, p, _ in subscriber.messages if t == f"edgeface/{device_id}/state"]
    rendered = {render(c["value_template"], p) for c in configs.values()
                if c["state_topic"].endswith("/state") for p in states}
    assert "unrecognised" in rendered and not rendered & HA_NO_DATA, rendered
    assert not any("lost the broker" in line for line in daemon.stderr)  # a clean end is not a lost broker


def test_presence_entities_follow_the_people_enrolled(household: dict, visit_video: Path, tmp_path: Path) -> None:
    """Removing a person while the daemon runs removes their presence entity (an empty retained config); a
    clean stop logs no lost broker."""
    from typer.testing import CliRunner

    from edgeface.cli import app

    broker = Mosquitto(tmp_path).start()
    subscriber = Subscriber(broker.port, ("edgeface/#", "homeassistant/#"))
    gallery = tmp_path / "people.json"
    gallery.write_bytes(Path(household["gallery"]).read_bytes())
    config = _household_config(tmp_path, {**household, "gallery": gallery}, visit_video, broker.port,
                               "[capture]\nloop = true\nfps = 20\n")
    daemon = DaemonProcess(["--config", str(config)])
    try:
        def ada_config() -> list[str]:
            return [p for t, p, _ in subscriber.messages if t.startswith("homeassistant/device_tracker/")
                    and (not p or json.loads(p)["name"] == "Ada Lovelace")]

        daemon.wait_for(lambda: ada_config(), 60, "Ada's presence entity")
        removed = CliRunner().invoke(app, ["people", "remove", "Ada Lovelace", "--bundle", str(household["bundle"]),
                                           "--gallery", str(gallery)])
        assert removed.exit_code == 0, removed.output
        daemon.wait_for(lambda: ada_config()[-1] == "", 20, "Ada's presence entity removed")
        code, elapsed = daemon.stop()
        assert code == 0 and elapsed < 2.0
    finally:
        daemon.kill()
        subscriber.close()
        broker.stop()
    assert not any("lost the broker" in line for line in daemon.stderr), daemon.log()
