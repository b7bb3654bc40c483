"""People sync without a broker: records and their checks, merging, the gallery records make and the records a
changed gallery makes, and a device around its connections (``helpers.household``'s simulated broker)."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from edgeface.core.errors import ConfigError
from edgeface.sync.clock import HybridClock, Stamp
from edgeface.sync.peer import DAY_MS
from edgeface.sync.records import Record, Refused, encode_embedding, mac, open_record, seal
from edgeface.sync.replica import Replica, canonical
from helpers.household import ENCODER, KEY, MODEL, SIZE, SimHousehold, check_converged

NOW = 1_800_000_000_000


def unit(seed: int, k: int = 1) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(k, SIZE))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def face_record(pid: str = "a" * 16, fid: str = "b" * 64, **changes) -> Record:
    data = {"embedding": encode_embedding(unit(0)[0]), "photo": {"file": "x.jpg", "sha256": fid}, "added": "t",
            "order": 0}
    return Record(f"face/{pid}/{fid}", Stamp(NOW, 0), "door", {**data, **changes})


FACE_KEY = "face/" + "a" * 16 + "/" + "b" * 64


def opened(payload: bytes, key: str | None = None) -> Record:
    """The record ``payload`` carries, as a device would open it from the topic of its own key (of a face when
    the payload does not say)."""
    try:
        key = key or json.loads(payload.split(b" ", 1)[1])["key"]
    except (IndexError, ValueError, KeyError, TypeError, RecursionError):
        key = FACE_KEY
    return open_record(key, payload, KEY, ENCODER, SIZE, 24576, NOW, 300_000)


def sealed_body(body: bytes) -> bytes:
    """A message with the right MAC around any body."""
    return mac(KEY, body).encode() + b" " + body


# --- records ------------------------------------------------------------------------------------------------

def test_a_record_travels_and_comes_back_the_same() -> None:
    record = face_record()
    assert opened(seal(record, ENCODER, KEY)) == record
    tombstone = Record("person/" + "a" * 16, Stamp(NOW, 3), "hall", None)
    assert opened(seal(tombstone, ENCODER, KEY)) == tombstone


@pytest.mark.parametrize("tamper, reason", [
    (lambda p: p.replace(b'"door"', b'"hall"'), "auth"),  # changed after it was sealed
    (lambda p: seal(face_record(), ENCODER, b"another household's key!"), "auth"),
    (lambda p: b"0" * 64 + p[64:], "auth"),
    (lambda p: p[:10], "auth"),
    (lambda p: b"x" * 60_000, "too_large"),
    (lambda p: seal(face_record(embedding=encode_embedding(np.ones(SIZE + 1))), ENCODER, KEY), "malformed"),
    (lambda p: seal(face_record(embedding=encode_embedding(np.full(SIZE, np.nan))), ENCODER, KEY), "malformed"),
    (lambda p: seal(Record("person/" + "a" * 16, Stamp(NOW, 0), "door", {"name": "unknown", "added": ""}),
                    ENCODER, KEY), "malformed"),
    (lambda p: seal(face_record(crop=base64.b64encode(b"GIF89a...").decode()), ENCODER, KEY), "malformed"),
    (lambda p: seal(Record("setting/similarity_threshold", Stamp(NOW, 0), "door", {"value": 7.0}), ENCODER, KEY),
     "malformed"),
    (lambda p: seal(face_record(), "dlib-0123456789abcdef", KEY), "malformed"),  # another embedding
    (lambda p: sealed_body(b"[" * 5000 + b"]" * 5000), "malformed"),  # nested deeper than the parser goes
    (lambda p: sealed_body(b'{"v": 1}'), "malformed"),
    (lambda p: seal(Record("person/" + "a" * 16, Stamp(NOW + 3_600_000, 0), "door", {"name": "Eve", "added": ""}),
                    ENCODER, KEY), "future"),
])
def test_records_that_must_not_be_applied_are_refused(tamper, reason: str) -> None:
    payload = tamper(seal(face_record(), ENCODER, KEY))
    with pytest.raises(Refused) as refused:
        opened(payload)
    assert refused.value.reason == reason
    assert "\n" not in str(refused.value)


def test_a_record_moved_to_another_topic_is_refused() -> None:
    with pytest.raises(Refused, match="published on the topic of") as refused:
        opened(seal(face_record(), ENCODER, KEY), key=FACE_KEY.replace("b", "c"))
    assert refused.value.reason == "malformed"


# --- merging and the gallery ----------------------------------------------------------------------------------

def test_merging_is_the_same_in_any_order() -> None:
    pid = "1" * 16
    records = [Record(f"person/{pid}", Stamp(NOW, 0), "a", {"name": "Maya", "added": "t"}),
               Record(f"person/{pid}", Stamp(NOW + 5, 0), "b", {"name": "Maia", "added": "t"}),
               Record(f"person/{pid}", Stamp(NOW + 5, 0), "c", {"name": "May", "added": "t"}),
               face_record(pid, "2" * 64), face_record(pid, "3" * 64),
               Record(f"face/{pid}/{'3' * 64}", Stamp(NOW + 9, 0), "a", None)]
    galleries = set()
    for order in itertools.permutations(records):
        replica = Replica("x", SIZE, records=order)
        galleries.add(json.dumps(canonical(replica.materialize(MODEL)[0])))
    assert len(galleries) == 1
    (gallery,) = [json.loads(g) for g in galleries]
    assert [p["name"] for p in gallery["people"]] == ["May"]  # the later stamp; the device id breaks the tie
    assert len(gallery["people"][0]["embeddings"]) == 1  # the removed face stays removed


def test_a_removed_person_stays_removed_and_takes_their_faces_and_negatives() -> None:
    pid = "1" * 16
    replica = Replica("hall", SIZE, records=[
        Record(f"person/{pid}", Stamp(NOW, 0), "door", {"name": "Maya", "added": "t"}), face_record(pid)])
    replica.merge(Record(f"person/{pid}", Stamp(NOW + 1, 0), "hall", None))
    renamed_later = Record(f"person/{pid}", Stamp(NOW + 9, 0), "door", {"name": "Maia", "added": "t"})
    assert not replica.merge(renamed_later)  # a removal is for good: the id never comes back
    assert len(replica.materialize(MODEL)[0]) == 0
    garden = Replica("garden", SIZE, records=replica.records.values())
    assert garden.orphans() == []  # the face's embedding is cleaned up by who wrote it or removed her:
    door = Replica("door", SIZE, records=replica.records.values())
    assert [r.deleted for r in door.orphans()] == [True]
    assert [r.deleted for r in replica.orphans()] == [True]


def test_two_devices_enrolling_one_name_make_one_person(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door, hall, garden = household.devices
    for device in household.devices:
        household.connect(device)
        household.deliver(device)
    for device, seed in ((door, 1), (hall, 2)):  # at the same time, before either hears of the other
        device.gallery().with_person("Maya", unit(seed, 2), household.photos(2)).save(device.path)
        household.step(device)
    household.settle()
    gallery = check_converged(household)
    assert gallery.names == ("Maya",) and len(gallery.people[0].embeddings) == 4
    garden.gallery().renamed("Maya", "Maya S.").save(garden.path)  # renaming her renames both records
    household.step(garden)
    household.settle()
    assert check_converged(household).names == ("Maya S.",)
    hall.gallery().without("Maya S.").save(hall.path)
    household.step(hall)
    household.settle()
    assert len(check_converged(household)) == 0
    assert not any(b'"embedding"' in payload for key, payload in household.retained.items()
                   if key.startswith("face/"))  # nothing of hers left on the broker


def test_renaming_keeps_the_persons_id_and_negatives(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door, hall, _ = household.devices
    for device in household.devices:
        household.connect(device)
    gallery = door.gallery().with_person("Maya", unit(1, 2), household.photos(2))
    gallery.with_negatives("Maya", unit(3), ["face-1"], "not Maya").with_negatives("", unit(4), ["face-2"],
                                                                                  "a stranger").save(door.path)
    household.step(door)
    household.settle()
    maya = check_converged(household).people[0]
    hall.gallery().renamed("Maya", "Maia").save(hall.path)
    household.step(hall)
    household.settle()
    gallery = check_converged(household)
    assert gallery.people[0].id == maya.id and gallery.people[0].name == "Maia"
    assert {(n.id, n.of) for n in gallery.negatives} == {("face-1", "Maia"), ("face-2", "")}


def test_changes_made_offline_are_published_on_reconnecting(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door, hall, garden = household.devices
    for device in household.devices:
        household.connect(device)
    household.settle()
    household.disconnect(garden)
    garden.gallery().with_person("Noor", unit(1), household.photos(1)).save(garden.path)
    household.step(garden)
    door.gallery().with_person("Kofi", unit(2), household.photos(1)).save(door.path)
    household.step(door)
    household.deliver(hall)
    household.step(hall)
    assert hall.gallery().names == ("Kofi",)
    household.settle()
    assert set(check_converged(household).names) == {"Noor", "Kofi"}


def test_a_broker_that_lost_everything_gets_it_back(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door = household.devices[0]
    for device in household.devices:
        household.connect(device)
    door.gallery().with_person("Ada", unit(1, 2), household.photos(2)).save(door.path)
    household.step(door)
    household.settle()
    for device in household.devices:
        household.disconnect(device)
    household.retained.clear()  # restarted without persistence
    household.settle()
    assert check_converged(household).names == ("Ada",)
    assert len(household.retained) == 4  # the epoch, Ada, her two faces: published again


def test_a_cleared_record_is_put_back(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door, hall, _ = household.devices
    for device in household.devices:
        household.connect(device)
    door.gallery().with_person("Ada", unit(1), household.photos(1)).save(door.path)
    household.step(door)
    household.settle()
    key = next(k for k in household.retained if k.startswith("person/"))
    household._send(key, b"")  # somebody with write access to the broker, without the key
    household.settle()
    assert key in household.retained and check_converged(household).names == ("Ada",)


def test_a_device_away_longer_than_removals_are_kept_forgets_who_was_removed(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path, lifetime_days=30)
    door, hall, garden = household.devices
    for device in household.devices:
        household.connect(device)
    door.gallery().with_person("Ada", unit(1), household.photos(1)).with_person(
        "Alan", unit(2), household.photos(1)).save(door.path)
    household.step(door)
    household.settle()
    household.disconnect(garden)
    door.gallery().without("Ada").save(door.path)
    household.step(door)
    household.settle([door, hall])
    household.now_ms += 40 * DAY_MS
    for device in (door, hall):  # the tombstones expire and leave the broker
        device.peer.housekeeping(household.now_ms)
        household.publish(device)
    household.settle([door, hall])
    assert not any(b'"data":null' in payload for payload in household.retained.values())
    garden.gallery().with_person("Lea", unit(3), household.photos(1)).save(garden.path)  # while away
    household.step(garden)
    assert set(garden.gallery().names) == {"Ada", "Alan", "Lea"}
    household.settle()
    assert set(check_converged(household).names) == {"Alan", "Lea"}  # Ada not back, Lea kept


def test_a_device_joining_adds_who_the_household_lacks_and_takes_the_rest(tmp_path: Path) -> None:
    household = SimHousehold(tmp_path)
    door, hall, garden = household.devices
    for device in (door, hall):
        household.connect(device)
    door.gallery().with_person("Ada", unit(1), household.photos(1)).save(door.path)
    household.step(door)
    household.settle()
    household.disconnect(garden)
    # garden had its own people before it joined: Ada under another id, and Omar
    garden.gallery().with_person("ada", unit(2), household.photos(1)).with_person(
        "Omar", unit(3), household.photos(1)).save(garden.path)
    garden.peer.joined = False
    household.settle()
    gallery = check_converged(household)
    assert set(gallery.names) == {"Ada", "Omar"} and len(gallery.get("Ada").embeddings) == 2


def test_the_clock_never_goes_back() -> None:
    wall = [1000.0]
    clock = HybridClock(now=lambda: wall[0])
    first = clock.tick()
    wall[0] = 999.0  # the wall clock stepped back (NTP)
    assert clock.tick() > first
    clock.observe(Stamp(5_000_000, 7))
    assert clock.tick() > Stamp(5_000_000, 7)


# --- configuration and the bundle's embedding ---------------------------------------------------------------

def test_the_household_key_comes_from_a_secret_and_must_be_long(tmp_path: Path, monkeypatch) -> None:
    from edgeface.daemon.secrets import household_key

    monkeypatch.delenv("EDGEFACE_SYNC_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="no household key"):
        household_key()
    (tmp_path / "key").write_text("short\n")
    with pytest.raises(ConfigError, match="16 or more"):
        household_key(str(tmp_path / "key"))
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "sync-key").write_text("0123456789abcdef0123\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    assert household_key() == b"0123456789abcdef0123"


@pytest.mark.parametrize("text, message", [
    ('[sync]\nenabled = true\n', "[sync] is enabled but [mqtt] is not"),
    ('gallery = "none"\n[mqtt]\nhost = "b"\n[sync]\nenabled = true\n', 'gallery = "none"'),
    ('[mqtt]\nhost = "b"\n[sync]\nenabled = true\nkey_file = "nothere"\n', "key_file"),
    ('[sync]\nremovals_days = 0\n', "removals_days"),
])
def test_sync_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    from edgeface.daemon.config import load_config

    config = tmp_path / "edgeface.toml"
    config.write_text('bundle = "b.edgeface"\nsource = 0\n' + text)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_household_key_is_read_while_the_config_loads(tiny_bundles: dict[str, Path], tmp_path: Path,
                                                          monkeypatch) -> None:
    """With the bundle, the gallery and the HTTP token (edgeface.daemon.run.load): a SIGHUP whose key became
    too short fails to load, and the running daemon goes on with the key it has (harden's reload rule)."""
    from edgeface.core.imageio import write_image
    from edgeface.daemon.config import load_config
    from edgeface.daemon.run import load

    monkeypatch.delenv("EDGEFACE_SYNC_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "frames").mkdir()
    write_image(tmp_path / "frames" / "0.jpg", np.full((48, 64, 3), 127, np.uint8))
    key = tmp_path / "household.key"
    key.write_text(KEY.decode() + "\n")
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{tiny_bundles["int8"]}"\nsource = "{tmp_path / "frames"}"\n[http]\nenabled = false\n'
                      f'[mqtt]\nhost = "127.0.0.1"\n[sync]\nenabled = true\nkey_file = "{key}"\n')
    monkeypatch.setenv("EDGEFACE_STATE_DIR", str(tmp_path / "state"))
    assert load(load_config(config)).sync_key == KEY
    key.write_text("short\n")
    with pytest.raises(ConfigError, match="household key has 5 characters"):
        load(load_config(config))


def test_the_embedding_is_dlibs_unless_training_moved_it_and_kept_it(tmp_path: Path) -> None:
    """Devices share faces between bundles whose embedding is dlib's own descriptor: training that moved the
    descriptor makes it the model's, unless every head on it went back to its exact fit (the pretrained
    backbone restored, edgeface.train.choice)."""
    from edgeface.train.config import TrainConfig
    from edgeface.train.model import ATTRIBUTES, DESCRIPTOR
    from edgeface.train.trainer import descriptor_moved

    config = TrainConfig(data=tmp_path, out=tmp_path, backbone="dlib-resnet")
    probe, trained = {"kept": "probe", "why": ""}, {"kept": "trained", "why": ""}
    assert not descriptor_moved(config, {ATTRIBUTES}, {"identity": probe, "emotion": trained, "gender": probe})
    assert not descriptor_moved(config, {DESCRIPTOR}, {"identity": probe, "emotion": trained, "gender": probe})
    assert descriptor_moved(config, {DESCRIPTOR}, {"identity": trained, "emotion": probe, "gender": trained})


def test_the_embedding_id_of_a_bundle(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """Recorded at conversion (the tiny model's own, shared by its precisions); an older bundle's is its
    source model's."""
    from edgeface.core.bundle import EMBEDDING_ID, load_bundle, write_bundle
    from edgeface.core.errors import BundleError

    bundles = [load_bundle(path) for path in tiny_bundles.values()]
    ids = {b.embedding_id for b in bundles}
    assert len(ids) == 1 and EMBEDDING_ID.fullmatch(ids.pop())
    first = bundles[0]
    older = {k: v for k, v in first.manifest.items() if k not in ("embedding", "model_sha256", "model_bytes",
                                                                   "format", "format_version", "created",
                                                                   "edgeface_version", "precision", "spec",
                                                                   "model_file", "float_heads")}
    old = load_bundle(write_bundle(tmp_path / "old.edgeface", first.model_bytes, first.spec, first.precision, older))
    assert old.embedding_id == first.embedding_id  # the source model's digest
    del older["source_model"]
    oldest = load_bundle(write_bundle(tmp_path / "oldest.edgeface", first.model_bytes, first.spec,
                                      first.precision, older))
    assert oldest.embedding_id == f"model-{first.model_sha256[:16]}"
    forged = write_bundle(tmp_path / "forged.edgeface", first.model_bytes, first.spec, first.precision,
                          {**older, "embedding": {"id": "model-../../etc"}})
    with pytest.raises(BundleError, match=r"forged.edgeface: bundle.json: embedding.id = 'model-../../etc': must be dlib- or "):
        load_bundle(forged)  # refused by the manifest's reader, field named


def test_a_damaged_state_file_means_joining_again_and_the_gallery_waits(tiny_bundles: dict[str, Path],
                                                                       tmp_path: Path, caplog) -> None:
    """A state file that does not parse is left aside with one warning; until the device has caught up with
    the household (here: never, the broker is not there) its gallery file is left as it is."""
    from helpers.ports import free_port
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import default_gallery_path, open_gallery
    from edgeface.daemon.config import MqttConfig, SyncConfig
    from edgeface.sync.household import HouseholdSync, state_path
    from edgeface.sync.mqtt import MqttTransport

    bundle = load_bundle(tiny_bundles["int8"])
    path = default_gallery_path(bundle.model_sha256, tmp_path)
    gallery = open_gallery(bundle.model_sha256, bundle.spec.embedding_size, path)
    gallery.with_person("Ada", unit(1, 1).repeat(bundle.spec.embedding_size // SIZE, axis=1)).save(path)
    before = path.read_bytes()
    state_path(path).write_text('{"format": "edgeface-sync-state", "version": 1, "records": [' * 3000)
    mqtt = MqttConfig(host="127.0.0.1", port=free_port())
    with caplog.at_level("WARNING", logger="edgeface.daemon"):
        sync = HouseholdSync(SyncConfig(enabled=True, check_interval=0.05), KEY, bundle, path, "door",
                             lambda on_event: MqttTransport(mqtt, "door", bundle.embedding_id, on_event)).start()
        try:
            import time

            time.sleep(0.5)
            assert not sync.peer.joined and path.read_bytes() == before
            assert sync.status()["connected"] is False
        finally:
            sync.close()
    warnings = [r.getMessage() for r in caplog.records if "this device joins the household again" in r.getMessage()]
    assert len(warnings) == 1 and "nested more than 32 levels deep" in warnings[0]  # the device's one reader
