"""One device's side of the protocol, without I/O: what to do with the gallery file, with each record received,
and around each connection to the broker. ``edgeface.sync.household`` adds the file, the lock and MQTT; the
property tests drive this with a simulated broker.

The broker keeps the latest record of every element (retained). Around a connection:

1. **Catching up.** On (re)connecting, the device receives every record the broker keeps (the burst), then a
   probe it sent itself marks the burst's end (``caught_up``). Whatever it holds that the broker lacks (changes
   made while offline, or a broker that lost its records) or holds older, it publishes.
2. **Joining.** The first time, the gallery file's people that the household does not know yet are added to it
   (``Replica.changes(adopt=True)``); from then on the file is the household's.
3. **Away longer than removals are remembered** (``lifetime``): a record the device still holds but the broker
   no longer keeps was removed while it was away (its tombstone has expired since), so it is dropped rather
   than published again; unless the broker has lost everything (no epoch record), when it is published.
4. **While connected**, each change is published as it is made; a record whose retained copy is cleared is
   published again if it is still live (nobody may silently delete the household's people), or dropped if it
   is a tombstone past its lifetime.
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable, Mapping

from edgeface.core.gallery import Gallery
from edgeface.sync.clock import HybridClock, Stamp
from edgeface.sync.records import EPOCH_KEY, Record, parse_body
from edgeface.sync.replica import EMPTY, Provenance, Replica, canonical

DAY_MS = 86_400_000


class Peer:
    def __init__(self, device: str, embedding_size: int, model_sha256: str, lifetime_ms: int,
                 clock: HybridClock | None = None, records: Iterable[Record] = (), pending: Iterable[str] = (),
                 joined: bool = False, last_connected_ms: int = 0) -> None:
        self.replica = Replica(device, embedding_size, clock, records)
        self.model_sha256 = model_sha256
        self.lifetime_ms = lifetime_ms
        self.pending = set(pending)  # keys of records written here that the broker has not shown back yet
        self.joined = joined
        self.last_connected_ms = last_connected_ms
        self.base: Gallery | None = None  # the gallery last made here (what the file should hold)
        self.provenance: Provenance = EMPTY
        self.burst: dict[str, tuple[int, int, str]] | None = None  # while catching up: what the broker holds
        self.outgoing: list[Record] = []
        self.clearing: list[str] = []  # keys whose retained copies are to be removed from the broker
        self.caught_up_once = False  # this session: adopt at the next step
        if joined:  # what the file held when the device last wrote it, before any record arrives now
            self.base, self.provenance = self.replica.materialize(model_sha256)

    @property
    def clock(self) -> HybridClock:
        return self.replica.clock

    @property
    def device(self) -> str:
        return self.replica.device

    # --- the connection -------------------------------------------------------------------------------------

    def connected(self) -> None:
        self.burst = {}

    def disconnected(self, now_ms: int) -> None:
        if self.burst is None:  # was caught up: connected until now
            self.last_connected_ms = max(self.last_connected_ms, now_ms)
        self.burst = None

    def alive(self, now_ms: int) -> None:
        """Still connected and caught up at ``now_ms`` (called from time to time)."""
        if self.burst is None and self.caught_up_once:
            self.last_connected_ms = max(self.last_connected_ms, now_ms)

    def receive(self, record: Record) -> bool:
        """A record from the broker (already checked); True when it changed the replica."""
        if self.burst is not None:
            self.burst[record.key] = record.version
        held = self.replica.records.get(record.key)
        changed = self.replica.merge(record)
        if record.key in self.pending and (held is None or record.version >= held.version or changed):
            self.pending.discard(record.key)  # ours came back, or somebody else's replaced it
        return changed

    def cleared(self, key: str, now_ms: int) -> None:
        """The broker's copy of ``key`` was removed (an empty retained message)."""
        held = self.replica.records.get(key)
        if held is None:
            return
        if held.deleted and now_ms - held.stamp.wall_ms > self.lifetime_ms // 2:
            self.replica.drop(key)  # a tombstone near or past its end: let it go
        else:
            self.outgoing.append(held)  # still the household's: put it back

    def caught_up(self, now_ms: int) -> None:
        """The burst is over: drop what was removed while away too long, publish what the broker lacks."""
        seen = self.burst or {}
        self.burst = None
        self._expire(now_ms)
        away = now_ms - self.last_connected_ms
        if self.joined and self.last_connected_ms and away > self.lifetime_ms and EPOCH_KEY in seen:
            for key in [k for k in self.replica.records if k not in seen and k not in self.pending]:
                self.replica.drop(key)
        if self.replica.epoch() is None:
            self.replica.stamp(EPOCH_KEY, {"id": secrets.token_hex(16)})
        self.outgoing += [r for k, r in self.replica.records.items() if seen.get(k) != r.version]
        self.last_connected_ms = now_ms
        self.caught_up_once = True

    def housekeeping(self, now_ms: int) -> None:
        """Expire old tombstones (from time to time, while connected)."""
        self._expire(now_ms)

    def _expire(self, now_ms: int) -> None:
        for key in self.replica.expired(now_ms, self.lifetime_ms):
            self.clearing.append(key)
            self.pending.discard(key)

    # --- the gallery file -----------------------------------------------------------------------------------

    def step(self, current: Gallery, file_changed: bool) -> Gallery | None:
        """Take the file's changes (``current``, changed by someone else since the last step), then return the
        gallery the file must now hold, or None when it already does (or the device has not joined yet)."""
        if not self.joined:
            if not self.caught_up_once:
                return None  # the household's records are not known yet: leave the file alone
            self._local(self.replica.changes(None, EMPTY, current, adopt=True))
            self.joined = True
        elif file_changed:
            self._local(self.replica.changes(self.base, self.provenance, current))
        self._local(self.replica.orphans())
        gallery, self.provenance = self.replica.materialize(self.model_sha256, current.path)
        self.base = gallery
        return gallery if canonical(gallery) != canonical(current) else None

    def _local(self, records: list[Record]) -> None:
        self.outgoing += records
        self.pending.update(r.key for r in records)

    def take_outgoing(self) -> tuple[list[Record], list[str]]:
        """Records to publish (the latest of each element) and keys to clear, emptied."""
        latest = {r.key: self.replica.records.get(r.key, r) for r in self.outgoing}
        out, clearing = [r for r in latest.values() if r.key in self.replica.records], self.clearing
        self.outgoing, self.clearing = [], []
        return out, clearing

    # --- the state file -------------------------------------------------------------------------------------

    def state(self, encoder: str) -> dict[str, Any]:
        return {"clock": list(self.clock.last), "pending": sorted(self.pending), "joined": self.joined,
                "last_connected_ms": self.last_connected_ms,
                "records": [r.body(encoder).decode("utf-8") for r in self.replica.records.values()]}

    @classmethod
    def restore(cls, raw: Mapping[str, Any], device: str, embedding_size: int, model_sha256: str,
                lifetime_ms: int, encoder: str, max_crop_bytes: int) -> "Peer":
        """A peer from its ``state`` read back (every record checked as if it came from the broker, but for
        its MAC: the file is the device's own); ValueError, KeyError, TypeError or ``Refused`` when damaged."""
        clock = raw["clock"]
        records = [parse_body(str(body).encode("utf-8"), encoder, embedding_size, max_crop_bytes)
                   for body in raw["records"]]
        return cls(device, embedding_size, model_sha256, lifetime_ms,
                   HybridClock(Stamp(int(clock[0]), int(clock[1]))), records,
                   pending=[str(k) for k in raw["pending"]], joined=bool(raw["joined"]),
                   last_connected_ms=int(raw["last_connected_ms"]))
