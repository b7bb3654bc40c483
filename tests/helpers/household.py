"""A household of simulated devices for the sync tests: each a real ``Peer`` with a real gallery file, all on a
simulated broker that keeps retained records, loses what is sent to a disconnected device, and delivers what
it sends in any order. The property tests drive random changes through it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeface.core.gallery import Gallery, GalleryError, empty_gallery, read_gallery
from edgeface.sync.peer import DAY_MS, Peer
from edgeface.sync.records import Record, open_record, seal, supersedes
from edgeface.sync.replica import canonical, person_face_ids

KEY = b"household-key-for-the-tests-0123"
ENCODER = "model-0123456789abcdef"
SIZE = 8
MODEL = "0" * 64
NAMES = ["Ada", "Grace", "Alan", "Maya", "Noor", "Ines", "Kofi", "Lea", "Omar", "Zoe", "ada", "Mäya"]


@dataclass
class SimDevice:
    name: str
    path: Path
    peer: Peer
    connected: bool = False
    inbox: list[tuple] = field(default_factory=list)
    written: object = None

    def gallery(self) -> Gallery:
        return read_gallery(self.path)

    def signature(self) -> object:
        stat = self.path.stat()
        return stat.st_ino, stat.st_mtime_ns, stat.st_size


class SimHousehold:
    def __init__(self, folder: Path, devices: int = 3, seed: int = 0, lifetime_days: float = 30.0) -> None:
        self.random = random.Random(seed)
        self.rng = np.random.default_rng(seed)
        self.now_ms = 1_800_000_000_000
        self.retained: dict[str, bytes] = {}
        self.published: list[Record] = []  # every record ever sent, for the tests' own bookkeeping
        self.messages = 0
        self.devices = []
        for i in range(devices):
            path = folder / f"device{i}" / "gallery.json"
            path.parent.mkdir(parents=True)
            empty_gallery(MODEL, SIZE, path).save()
            peer = Peer(f"device{i}", SIZE, MODEL, int(lifetime_days * DAY_MS))
            peer.clock._now = lambda: self.now_ms / 1000  # every device on the simulation's clock
            self.devices.append(SimDevice(f"device{i}", path, peer))

    # --- the broker -------------------------------------------------------------------------------------

    def connect(self, device: SimDevice) -> None:
        if device.connected:
            return
        device.connected = True
        burst = list(self.retained.items())
        self.random.shuffle(burst)
        device.inbox = [("connected",)] + [("message", k, p) for k, p in burst] + [("caught_up",)]

    def restart(self, device: SimDevice) -> None:
        """The device's daemon stops and starts again: its peer is made again from its state file's content."""
        self.disconnect(device)
        raw = json.loads(json.dumps(device.peer.state(ENCODER)))
        lifetime = device.peer.lifetime_ms
        device.peer = Peer.restore(raw, device.name, SIZE, MODEL, lifetime, ENCODER, 24576)
        device.peer.clock._now = lambda: self.now_ms / 1000
        device.written = None  # a new daemon has not seen the file yet

    def disconnect(self, device: SimDevice) -> None:
        if device.connected:
            device.connected = False
            device.inbox = []  # whatever was on its way is lost
            device.peer.disconnected(self.now_ms)

    def publish(self, device: SimDevice) -> None:
        records, clearing = device.peer.take_outgoing()
        if not device.connected:
            return  # published after the next catching up
        for record in records:
            payload = seal(record, ENCODER, KEY)
            self.published.append(record)
            self._send(record.key, payload)
        for key in clearing:
            self._send(key, b"")

    def _send(self, key: str, payload: bytes) -> None:
        self.messages += 1
        if payload:
            self.retained[key] = payload
        else:
            self.retained.pop(key, None)
        for other in self.devices:
            if other.connected:
                other.inbox.append(("message", key, payload))

    def deliver(self, device: SimDevice, count: int | None = None, reorder: bool = True) -> None:
        """Deliver up to ``count`` messages, in any order within a connection (never past its first event or
        its end of catching up)."""
        count = len(device.inbox) if count is None else count
        for _ in range(count):
            if not device.inbox:
                return
            index = 0
            if reorder and device.inbox[0][0] == "message":
                end = next((i for i, e in enumerate(device.inbox) if e[0] != "message"), len(device.inbox))
                index = self.random.randrange(end)
            event = device.inbox.pop(index)
            if event[0] == "connected":
                device.peer.connected()
            elif event[0] == "caught_up":
                device.peer.caught_up(self.now_ms)
                self.step(device)
            elif not event[2]:
                device.peer.cleared(event[1], self.now_ms)
            else:
                device.peer.receive(open_record(event[1], event[2], KEY, ENCODER, SIZE, 24576, self.now_ms,
                                                300_000))

    # --- a device's gallery file --------------------------------------------------------------------------

    def step(self, device: SimDevice) -> None:
        if device.peer.burst is not None:
            return  # catching up: the file waits for the end of it
        current = device.gallery()
        gallery = device.peer.step(current, device.signature() != device.written)
        if gallery is not None:
            gallery.save(device.path)
        device.written = device.signature()
        self.publish(device)

    def change(self, device: SimDevice) -> str:
        """One random change to the device's gallery file, as another process would make it; what it was."""
        gallery = device.gallery()
        people = list(gallery.people)
        r = self.random.random()
        try:
            if not people or r < 0.25:
                name, k = self.random.choice(NAMES), self.random.randint(1, 3)
                gallery = gallery.with_person(name, self.faces(k), self.photos(k))
                what = f"enroll {name}"
            elif r < 0.40:
                person = self.random.choice(people)
                gallery = gallery.with_person(person.name, self.faces(1), self.photos(1))
                what = f"add a face to {person.name}"
            elif r < 0.50:
                person = self.random.choice(people)
                sha = self.random.choice(person.photos)["sha256"] if person.photos else ""
                gallery = gallery.without_photo(person.name, str(sha))
                what = f"forget a face of {person.name}"
            elif r < 0.62:
                person = self.random.choice(people)
                name = self.random.choice(NAMES) + self.random.choice(["", " B."])
                gallery = gallery.renamed(person.name, name)
                what = f"rename {person.name} to {name}"
            elif r < 0.72:
                person = self.random.choice(people)
                gallery = gallery.without(person.name)
                what = f"remove {person.name}"
            elif r < 0.86:
                of = self.random.choice([p.name for p in people] + ["", "Trained Person"])
                gallery = gallery.with_negatives(of, self.faces(1), [f"n{self.rng.integers(1 << 40):x}"],
                                                 f"not {of}" if of else "a stranger")
                what = f"not {of or 'anybody'}"
            elif r < 0.92 and gallery.negatives:
                gallery = gallery.without_negatives([self.random.choice(gallery.negatives).id])
                what = "forget a negative"
            else:
                value = round(self.random.uniform(0.3, 0.9), 3)
                gallery = gallery.calibrated(value, None, {"far_target": 0.01}, value, None)
                what = f"calibrate {value}"
        except GalleryError as exc:
            return f"refused: {exc}"
        gallery.save(device.path)
        return what

    def faces(self, k: int) -> np.ndarray:
        rows = self.rng.normal(size=(k, SIZE))
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def photos(self, k: int) -> list[dict[str, str]]:
        return [{"file": "photo.jpg", "sha256": self.rng.bytes(32).hex()} for _ in range(k)]

    # --- until everything is delivered -------------------------------------------------------------------

    def settle(self, devices: list[SimDevice] | None = None, rounds: int = 50) -> None:
        """Connect ``devices`` (default: all) and deliver until nothing is left to send."""
        devices = self.devices if devices is None else devices
        for device in devices:
            self.connect(device)
        for _ in range(rounds):
            for device in devices:
                self.deliver(device)
                self.step(device)
            if not any(d.inbox for d in devices):
                for device in devices:
                    self.step(device)
                if not any(d.inbox for d in devices):
                    return
        raise AssertionError("the household did not settle")

    def latest(self) -> dict[str, Record]:
        """The winning version of every element ever published."""
        out: dict[str, Record] = {}
        for record in self.published:
            held = out.get(record.key)
            if held is None or supersedes(record, held):
                out[record.key] = record
        return out


def check_converged(household: SimHousehold) -> Gallery:
    """Every device holds the same people; nobody the household kept is missing, nobody is there twice."""
    galleries = [d.gallery() for d in household.devices]
    first = canonical(galleries[0])
    for device, gallery in zip(household.devices, galleries):
        assert canonical(gallery) == first, f"{device.name} differs from device0"
    gallery = galleries[0]
    names = [p.name.casefold() for p in gallery.people]
    assert len(names) == len(set(names)), f"a name twice: {names}"
    ids = [p.id for p in gallery.people]
    assert len(ids) == len(set(ids))
    # Nobody lost: every person whose latest record is live and who has a live face is in the gallery,
    # pooled into one person (with those of the same name), with each of their live faces.
    latest = household.latest()
    alive = {k.split("/")[1] for k, r in latest.items() if r.kind == "person" and not r.deleted}
    faces = {(k.split("/")[1], k.split("/")[2]) for k, r in latest.items() if r.kind == "face" and not r.deleted}
    provenance = household.devices[0].peer.provenance
    placed = {member: rep for rep, members in provenance.people.items() for member in members}
    for pid, fid in faces:
        if pid in alive:
            assert pid in placed, f"person {pid} was lost"
            person = next(p for p in gallery.people if p.id == placed[pid])
            assert fid in person_face_ids(person), f"a face of {person.name} was lost"
    assert set(placed) <= alive
    return gallery
