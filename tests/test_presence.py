"""The household's presence from several devices' reports (``edgeface.daemon.presence``), then through a real
mosquitto with two daemons: a camera that saw someone leave does not set them away while another sees them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edgeface.daemon.presence import HouseholdPresence


def report(state: str, camera: str, last_seen: float) -> dict:
    return {"state": state, "name": "Maya", "camera": camera, "last_seen": last_seen, "visit": f"{camera}-1"}


def test_home_while_any_online_device_sees_them() -> None:
    presence = HouseholdPresence()
    for device in ("door", "hall"):
        presence.status(device, True)
    presence.report("door", "maya", report("home", "door", 100.0))
    presence.report("hall", "maya", report("home", "hall", 130.0))
    assert presence.answer("maya") == (report("home", "hall", 130.0), "hall")
    presence.report("hall", "maya", report("not_home", "hall", 160.0))  # she left the hall...
    answer, decider = presence.answer("maya")
    assert answer["state"] == "home" and answer["camera"] == "door" and decider == "door"  # ...not the house
    presence.report("door", "maya", report("not_home", "door", 150.0))
    answer, decider = presence.answer("maya")
    assert (answer["state"], answer["camera"], answer["last_seen"], decider) == ("not_home", "hall", 160.0, "hall")


def test_a_device_gone_offline_keeps_nobody_home() -> None:
    presence = HouseholdPresence()
    presence.status("door", True)
    presence.status("hall", True)
    presence.report("hall", "maya", report("home", "hall", 100.0))
    presence.report("door", "maya", report("not_home", "door", 90.0))
    presence.status("hall", False)  # its last will: it died with her visit open
    answer, decider = presence.answer("maya")
    assert answer["state"] == "not_home" and answer["camera"] == "hall" and decider == "door"


def test_only_the_deciding_device_publishes_and_only_what_the_broker_lacks() -> None:
    devices = {name: HouseholdPresence() for name in ("door", "hall", "garden")}
    for presence in devices.values():
        for name in devices:
            presence.status(name, True)
        presence.report("door", "maya", report("home", "door", 100.0))
        presence.report("hall", "maya", report("not_home", "hall", 120.0))
    due = {name: presence.due(name) for name, presence in devices.items()}
    assert due == {"door": [("maya", report("home", "door", 100.0))], "hall": [], "garden": []}
    assert devices["door"].due("door") == []  # once, until the broker's copy changes
    for presence in devices.values():  # the broker's copy comes back to everyone
        presence.household("maya", report("home", "door", 100.0))
    assert all(presence.due(name) == [] for name, presence in devices.items())
    devices["door"].household("maya", report("not_home", "hall", 120.0))  # somebody set it wrong
    assert devices["door"].due("door") == [("maya", report("home", "door", 100.0))]  # put right again


def test_reports_that_do_not_parse_are_ignored() -> None:
    presence = HouseholdPresence()
    presence.status("door", True)
    for bad in ({"state": "maybe"}, {"state": "home", "last_seen": "noon"}, {"state": "home", "last_seen": True},
                {"state": "home", "last_seen": 1.0, "name": 3, "camera": "door"}):
        presence.report("door", "maya", bad)
    assert presence.answer("maya") is None and presence.people() == {}


# --- two daemons through a real broker ----------------------------------------------------------------------

def camera_config(path: Path, bundle: Path, gallery: Path, source: Path, port: int, device: str, loop: bool,
                  extra: str = "") -> Path:
    """One device of the household: ``source`` at 10 fps (looped or not), visits that leave after 1 s, MQTT to
    ``port`` as ``device`` without frame records."""
    path.write_text(f'bundle = "{bundle}"\nsource = "{source}"\ngallery = "{gallery}"\nthreads = 1\n'
                    f"[capture]\nloop = {str(loop).lower()}\nfps = 10\n[visits]\nleave_after = 1.0\n"
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice = "{device}"\nframes = false\n{extra}'
                    "[http]\nenabled = false\n")
    return path


def ada_alone(bundle: Path, folder: Path) -> tuple[Path, list[np.ndarray]]:
    """Frames of one synthetic person walking about, and a gallery where she is enrolled from them as "Ada
    Lovelace" (a threshold under her own faces; the identity head names nobody)."""
    import edgeface
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import open_gallery
    from edgeface.data.synthetic import make_people
    from helpers.video_fixtures import synthetic_video
    from test_daemon_run import video_frames

    video = folder / "ada.mp4"
    synthetic_video(video, faces=1, seconds=2, seed=3, people=make_people(6, seed=0))
    frames = video_frames(video, count=20)
    embeddings = []
    for result in edgeface.load(bundle, threads=1, gallery=None).run(frames, fps=10, start=0.0):
        if result.samples is not None and len(result.samples.recognised):
            embeddings += list(result.samples.outputs["embedding"][:len(result.samples.recognised)])
    loaded = load_bundle(bundle)
    path = folder / "people.json"
    gallery = open_gallery(loaded.model_sha256, loaded.spec.embedding_size, path)
    gallery = gallery.with_person("Ada Lovelace", np.stack(embeddings[:3]))
    own = float(gallery.similarities(np.stack(embeddings)).max(axis=1).min())
    threshold = max(0.1, own - 0.05)
    gallery.calibrated(threshold, 1.01, {"test": True}, threshold, 1.01).save(path)
    return path, frames


@pytest.mark.system
@pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
                    reason="mosquitto not installed (apt-get install -y mosquitto)")
def test_a_camera_that_saw_her_leave_does_not_set_her_away(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """The garden sees Ada for 0.5 s and its video ends (her visit there leaves); the door sees her all along:
    the household says home, at the door."""
    from helpers.daemon import DaemonProcess
    from helpers.mosquitto import Mosquitto
    from edgeface.core.imageio import write_image
    from test_daemon_mqtt import Subscriber

    gallery, frames = ada_alone(tiny_bundles["int8"], tmp_path)
    garden_frames = tmp_path / "garden"
    garden_frames.mkdir()
    for i, frame in enumerate(frames[:5] + [np.full_like(frames[0], 127)] * 15):
        write_image(garden_frames / f"{i:02d}.jpg", frame)
    door_frames = tmp_path / "door"
    door_frames.mkdir()
    for i, frame in enumerate(frames[:10]):
        write_image(door_frames / f"{i:02d}.jpg", frame)
    broker = Mosquitto(tmp_path).start()
    subscriber = Subscriber(broker.port, ("edgeface/presence/#",))

    def run(name: str, source: Path, loop: bool) -> DaemonProcess:
        return DaemonProcess(["--config", str(camera_config(tmp_path / f"{name}.toml", tiny_bundles["int8"], gallery,
                                                            source, broker.port, name, loop))])

    def ada() -> list[dict]:
        return [json.loads(p) for _, p, _ in subscriber.messages if p and json.loads(p)["name"] == "Ada Lovelace"]

    door = run("door", door_frames, loop=True)
    garden = None
    try:
        door.wait_for(lambda: any(p["state"] == "home" for p in ada()), 60, "Ada home at the door")
        garden = run("garden", garden_frames, loop=False)
        assert garden.finish(60) == 0, garden.log()
        time.sleep(1.0)
        seen = [(p["state"], p["camera"]) for p in ada()]
        assert ("home", "garden") in seen  # the garden saw her after the door did...
        assert seen[-1] == ("home", "door"), seen  # ...and left; she is still home, at the door
    finally:
        door.kill()
        if garden is not None:
            garden.kill()
        subscriber.close()
        broker.stop()
