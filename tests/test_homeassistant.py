"""Home Assistant's own code reads what edgeface publishes: a real Home Assistant core (its MQTT integration set
up through its config flow on a test mosquitto) beside the real daemon on a device named "front door", with Ada
enrolled and a stranger in the video. Checked through Home Assistant's websocket API: every entity edgeface
announces exists, its states read as meant, a removed person's entity goes, and Home Assistant logs no warning.

Home Assistant runs from its own venv (``.ci/homeassistant.sh`` builds it once, under ~/.cache/edgeface); the
tier is ``-m homeassistant`` (``make test-homeassistant``), skipped with the reason when the venv cannot be built.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from helpers.daemon import DaemonProcess
from helpers.home_assistant import HomeAssistant, home_assistant_venv
from helpers.mosquitto import Mosquitto
from test_daemon_mqtt import Subscriber, _household_config, household, visit_video  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.homeassistant, pytest.mark.system,
              pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
                                 reason="mosquitto not installed (apt-get install -y mosquitto)")]

SENSORS = ("faces", "people", "identity", "emotion", "gender")
NO_DATA = {"unknown", "unavailable", ""}  # Home Assistant's states for "no value"


@pytest.fixture(scope="module")
def home_assistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HomeAssistant, Mosquitto]]:
    venv, why = home_assistant_venv()
    if venv is None:
        pytest.skip(f"Home Assistant could not be built: {why}")
    folder = tmp_path_factory.mktemp("home-assistant")
    broker = Mosquitto(folder).start()
    hass = HomeAssistant(venv, folder / "config")
    try:
        hass.start()
        hass.set_up_mqtt(broker.port)
        hass.wait_for(lambda: any(e["logger"].startswith("homeassistant.components.mqtt")
                                  and "Connected to MQTT server" in e["message"] for e in hass.log_entries()),
                      30, "Home Assistant connected to the broker")
        yield hass, broker
    finally:
        hass.stop()
        broker.stop()


def announced(subscriber: Subscriber) -> dict[str, dict]:
    """The discovery configs edgeface published, by unique id (the last word on each topic)."""
    configs: dict[str, str] = {}
    for topic, payload, _ in subscriber.messages:
        if topic.startswith("homeassistant/") and topic.endswith("/config"):
            configs[topic] = payload
    return {c["unique_id"]: {**c, "topic": t} for t, p in configs.items() if p for c in [json.loads(p)]}


def problems(hass: HomeAssistant, since: int) -> list[str]:
    """Warnings and errors Home Assistant logged after entry ``since``."""
    return [f"{e['level']} [{e['logger']}] {e['message']}" for e in hass.log_entries()[since:]
            if e["level"] in ("WARNING", "ERROR", "CRITICAL")]


def run_daemon(config: Path, timeout: float = 120) -> DaemonProcess:
    daemon = DaemonProcess(["--config", str(config)])
    try:
        assert daemon.finish(timeout) == 0, daemon.log()
    finally:
        daemon.kill()
    return daemon


def test_home_assistant_reads_visits_and_presence(home_assistant: tuple[HomeAssistant, Mosquitto], household: dict,
                                                  visit_video: Path, tmp_path: Path) -> None:
    """The video (Ada, then a stranger beside her) played at 10 fps, twice: the first run announces the entities
    (Home Assistant creates them from the retained discovery configs), the second is read as it happens."""
    hass, broker = home_assistant
    logged = len(hass.log_entries())
    subscriber = Subscriber(broker.port, ("edgeface/#", "homeassistant/#"))
    config = _household_config(tmp_path, household, visit_video, broker.port, "[capture]\nfps = 10\n")
    try:
        run_daemon(config)
        configs = announced(subscriber)
        assert {c["topic"].split("/")[1] for c in configs.values()} == {"sensor", "event", "device_tracker"}
        entities = hass.wait_for(lambda: (lambda e: e if set(configs) <= set(e) else None)(hass.entities()), 30,
                                 "Home Assistant to create every entity edgeface announced")
        start, began = len(hass.changes), datetime.now(timezone.utc)
        daemon = run_daemon(config)
        time.sleep(1.0)  # the last messages on their way through Home Assistant
    finally:
        subscriber.close()
    assert not any("lost the broker" in line for line in daemon.stderr), daemon.log()

    def history(unique_id: str) -> list[dict]:
        return [c["new_state"] for c in hass.changes[start:]
                if c["entity_id"] == entities[unique_id] and c["new_state"] is not None]

    # The summary's sensors: a value while the daemon is online (never "unknown"), unavailable once it is off.
    for key in SENSORS:
        states = [s["state"] for s in history(f"edgeface_front_door_{key}")]
        assert states and states[-1] == "unavailable", (key, states)
        online = states[states.index(next(s for s in states if s != "unavailable")):-1]
        assert online and not set(online) & NO_DATA, (key, states)
        if key == "faces":
            assert max(int(s) for s in online) == 2, states  # the video's two people
    identities = {s["state"] for s in history("edgeface_front_door_identity")}
    people = {s["state"] for s in history("edgeface_front_door_people")}
    assert "unrecognised" in identities and "Ada Lovelace, unrecognised" in people, (identities, people)

    # The stranger's visit fired the event entity: arrived, then left.
    fired = {s["state"]: s["attributes"]["event_type"] for s in history("edgeface_front_door_stranger")
             if s["state"] not in NO_DATA and datetime.fromisoformat(s["state"]) > began}  # state: when it fired
    fired = [kind for _, kind in sorted(fired.items())]
    assert fired == ["arrived", "left"], fired

    # Ada's presence: home while she is at the door, not_home once her visit ended; seen by the front door.
    ada = next(u for u, c in configs.items() if c["topic"].startswith("homeassistant/device_tracker/")
               and c["name"] == "Ada Lovelace")
    tracker = history(ada)
    assert [s["state"] for s in tracker][-2:] == ["home", "not_home"], tracker
    assert tracker[-1]["attributes"]["camera"] == "front door" and tracker[-1]["attributes"]["source_type"] == "router"
    # Home Assistant names an entity of a device after both: "<device> <entity>"
    assert hass.states()[entities[ada]]["attributes"]["friendly_name"] == "edgeface household Ada Lovelace"
    assert problems(hass, logged) == []


def test_home_assistant_removes_a_removed_person(home_assistant: tuple[HomeAssistant, Mosquitto], household: dict,
                                                 visit_video: Path, tmp_path: Path) -> None:
    """Removing Ada while the daemon runs removes her entity from Home Assistant, quietly."""
    from typer.testing import CliRunner

    from edgeface.cli import app

    hass, broker = home_assistant
    logged = len(hass.log_entries())
    gallery = tmp_path / "people.json"
    gallery.write_bytes(Path(household["gallery"]).read_bytes())
    config = _household_config(tmp_path, {**household, "gallery": gallery}, visit_video, broker.port,
                               "[capture]\nloop = true\nfps = 10\n")
    subscriber = Subscriber(broker.port, ("homeassistant/#",))
    daemon = DaemonProcess(["--config", str(config)])
    try:
        def ada() -> str | None:
            return next((u for u, c in announced(subscriber).items() if c.get("name") == "Ada Lovelace"), None)

        unique_id = daemon.wait_for(ada, 60, "Ada's presence entity announced")
        entity_id = hass.wait_for(lambda: hass.entities().get(unique_id), 30, "Ada's entity in Home Assistant")
        hass.wait_for(lambda: hass.states().get(entity_id, {}).get("state") == "home", 60, "Ada home")
        removed = CliRunner().invoke(app, ["people", "remove", "Ada Lovelace", "--bundle", str(household["bundle"]),
                                           "--gallery", str(gallery)])
        assert removed.exit_code == 0, removed.output
        hass.wait_for(lambda: unique_id not in hass.entities(), 30, "Ada's entity removed from Home Assistant")
        assert entity_id not in hass.states()
        # Her presence cleared (no state: not "home" any more), then the entity removed from the state machine
        assert [s and s["state"] for s in hass.history(entity_id)][-2:] == ["unknown", None]
        time.sleep(1.0)  # the daemon runs on: nothing it sends afterwards may bring her back or warn
        assert unique_id not in hass.entities()
        code, _ = daemon.stop()
        assert code == 0, daemon.log()
    finally:
        daemon.kill()
        subscriber.close()
    sensors = hass.entities()
    assert all(f"edgeface_front_door_{key}" in sensors for key in SENSORS)
    time.sleep(1.0)
    assert problems(hass, logged) == []


def test_home_assistant_follows_a_person_across_two_cameras(home_assistant: tuple[HomeAssistant, Mosquitto],
                                                            tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """Two devices, one household (issue 31): the door sees Ada all along, the garden sees her for 0.5 s and its
    video ends. Home Assistant's one tracker for her reads home at the garden, then home at the door again (a
    camera that saw her leave does not set her away), and nothing is logged as a problem."""
    from edgeface.core.imageio import write_image
    from test_presence import ada_alone, camera_config

    hass, broker = home_assistant
    logged = len(hass.log_entries())
    gallery, frames = ada_alone(tiny_bundles["int8"], tmp_path)
    sources = {"door": frames[:10], "garden": frames[:5] + [np.full_like(frames[0], 127)] * 15}
    for name, shown in sources.items():
        (tmp_path / name).mkdir()
        for i, frame in enumerate(shown):
            write_image(tmp_path / name / f"{i:02d}.jpg", frame)
    subscriber = Subscriber(broker.port, ("homeassistant/#",))

    def run(name: str, loop: bool) -> DaemonProcess:
        return DaemonProcess(["--config", str(camera_config(tmp_path / f"{name}.toml", tiny_bundles["int8"], gallery,
                                                            tmp_path / name, broker.port, name, loop,
                                                            "discovery = true\n"))])

    door = run("door", loop=True)
    garden = None
    try:
        unique_id = door.wait_for(lambda: next((u for u, c in announced(subscriber).items()
                                                if c.get("name") == "Ada Lovelace"), None), 60, "Ada's tracker")
        entity_id = hass.wait_for(lambda: hass.entities().get(unique_id), 30, "Ada's tracker in Home Assistant")

        def where() -> tuple[str, str]:
            state = hass.states().get(entity_id, {})
            return state.get("state", ""), state.get("attributes", {}).get("camera", "")

        hass.wait_for(lambda: where() == ("home", "door"), 60, "Ada home, at the door")
        garden = run("garden", loop=False)
        assert garden.finish(60) == 0, garden.log()
        time.sleep(2.0)  # the garden's visit has left; the household's answer on its way through Home Assistant
        seen = [(s["state"], s["attributes"].get("camera")) for s in hass.history(entity_id) if s]
        assert ("home", "garden") in seen, seen  # the garden saw her after the door did...
        assert where() == ("home", "door"), seen  # ...and she left it: still home, at the door
    finally:
        door.kill()
        if garden is not None:
            garden.kill()
        subscriber.close()
    assert problems(hass, logged) == []
