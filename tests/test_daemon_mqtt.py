"""MQTT with a real Debian mosquitto started by the test and a real paho subscriber: the broker is down when
the daemon starts, comes up, goes down mid-run and comes back; retained availability, last will and Home
Assistant discovery are checked as a subscriber sees them."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from daemon_helpers import DaemonProcess, Mosquitto, free_port, http_get, metric
from video_fixtures import synthetic_video

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
                                 reason="mosquitto not installed (apt-get install -y mosquitto)")]

DEVICE = "testpi"


class Subscriber:
    """A paho client that records every message under the daemon's topics and Home Assistant's."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe([(f"edgeface/{DEVICE}/#", 1), ("homeassistant/#", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

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
        retained = {t.rsplit("/", 1)[-1] for t, _, r in late.messages if r and t.startswith(f"edgeface/{DEVICE}/")}
        late.close()
        assert retained == {"status", "state"}
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
