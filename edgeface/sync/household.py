"""The device's side of people sync, at work in the daemon: the gallery file, its lock, the state file, MQTT.

A thread of its own takes what the transport reports (``edgeface.sync.mqtt``), checks each record
(``edgeface.sync.records``: a record that fails is refused, counted and logged once a minute per reason), and
every ``check_interval`` seconds, or at once when records came in, takes a step under the gallery's lock
(``edgeface.core.gallery.locked``, the lock every other writer of the file takes): the file's changes since the
last step become records, the records make the gallery again, and the file is written when it differs (the
daemon's labeler is told to read it at once). The records held, the clock and what is still to be published
are kept beside the gallery (``<gallery>.sync.json``, 0600), so a restart loses nothing.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edgeface.core.errors import ConfigError, EdgefaceError
from edgeface.core.fileio import file_signature, write_private
from edgeface.core.gallery import Gallery, GalleryError, empty_gallery, locked, read_gallery
from edgeface.core.reader import read_json
from edgeface.daemon.metrics import metric_lines
from edgeface.daemon.service import Throttled
from edgeface.people.album import crop_path, prune_crops, referenced, save_crop
from edgeface.sync.peer import DAY_MS, Peer
from edgeface.sync.records import (
    JPEG_MAGIC,
    REFUSALS,
    Refused,
    crop_bytes,
    open_record,
    seal,
)

if TYPE_CHECKING:
    from edgeface.core.bundle import Bundle
    from edgeface.daemon.config import SyncConfig
    from edgeface.daemon.run import Daemon

log = logging.getLogger("edgeface.daemon")

STATE_FORMAT = "edgeface-sync-state"
STATE_VERSION = 1
MAX_STATE_BYTES = 256 << 20
MAX_QUEUED_BYTES = 64 << 20  # records received and not yet looked at; more are dropped and fetched again
ALIVE_EVERY = 60.0
HOUSEKEEPING_EVERY = 3600.0


class Transport(Protocol):
    connected: threading.Event
    published: int
    published_bytes: int
    last_error: str

    def start(self) -> None: ...

    def publish(self, key: str, payload: bytes) -> None: ...

    def resync(self) -> None: ...

    def stop(self) -> None: ...


def state_path(gallery_path: Path) -> Path:
    return gallery_path.with_name(gallery_path.stem + ".sync.json")


class HouseholdSync:
    """One device's people kept in step with its household's; a frame observer of the daemon (it watches no
    frame: ``close`` stops it) and a reporter of its own figures."""

    name = "sync"

    def __init__(self, config: "SyncConfig", key: bytes, bundle: "Bundle", gallery_path: Path, device: str,
                 transport: Callable[[Callable[[tuple], None]], Transport],
                 on_change: Callable[[], None] = lambda: None, now: Callable[[], float] = time.time) -> None:
        from edgeface.daemon.sinks.mqtt import topic_id

        self.config = config
        self.key = key
        self.model_sha256 = bundle.model_sha256
        self.embedding_size = bundle.spec.embedding_size
        self.encoder = bundle.embedding_id
        self.path = gallery_path
        self.state_file = state_path(gallery_path)
        self.device = topic_id(device)
        self._on_change = on_change
        self._now = now
        self.lifetime_ms = int(config.removals_days * DAY_MS)
        self.peer = self._load_state()
        self.peer.replica.crop_source = self._crop if config.crops else None
        self.received = self.applied = self.local_changes = self.writes = self.dropped = 0
        self.refused = {reason: 0 for reason in REFUSALS}
        self._refusal_warnings = {reason: Throttled() for reason in REFUSALS}
        self._file_warning = Throttled()
        self._events: collections.deque[tuple] = collections.deque()
        self._queued_bytes = 0
        self._lost = False  # records were dropped: catch up again
        self._cond = threading.Condition()
        self._stop = False
        self._written: Any = "unknown"  # the file's signature after this thread's last step
        self._dirty = True
        self._state_dirty = False
        self.caught_up = False
        self.transport = transport(self._event)
        self._thread = threading.Thread(target=self._run, name="edgeface-sync", daemon=True)

    # --- the daemon's side -----------------------------------------------------------------------------------

    def start(self) -> "HouseholdSync":
        self.transport.start()
        self._thread.start()
        log.info("sync: sharing people as %s with the household on %s (embedding %s)", self.device,
                 getattr(self.transport, "prefix", "the broker"), self.encoder)
        return self

    def observe(self, image: Any, item: Any) -> None:
        pass

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(2.0)
        self.transport.stop()

    def status(self) -> dict[str, Any]:
        return {"connected": self.transport.connected.is_set(), "caught_up": self.caught_up,
                "error": self.transport.last_error or None, "embedding": self.encoder,
                "records": len(self.peer.replica.records), "pending": len(self.peer.pending),
                "people": len(self.peer.base.people) if self.peer.base is not None else None,
                "refused": dict(self.refused)}

    def prometheus(self) -> list[str]:
        lines: list[str] = []
        for name, kind, help, value in (
                ("connected", "gauge", "1 while connected to the broker.", float(self.transport.connected.is_set())),
                ("caught_up", "gauge", "1 once the household's records were received since connecting.",
                 float(self.caught_up)),
                ("records", "gauge", "Records held (people, faces, negatives, settings, removals).",
                 len(self.peer.replica.records)),
                ("pending", "gauge", "Changes made here that the broker has not shown back yet.",
                 len(self.peer.pending)),
                ("received_total", "counter", "Records received and accepted.", self.received),
                ("applied_total", "counter", "Records received that changed this device's people.", self.applied),
                ("local_changes_total", "counter", "Records made from changes to this device's gallery file.",
                 self.local_changes),
                ("published_total", "counter", "Messages published (records, and removals of old ones).",
                 self.transport.published),
                ("published_bytes_total", "counter", "Bytes of the messages published.",
                 self.transport.published_bytes),
                ("gallery_writes_total", "counter", "Times the gallery file was written with the household's "
                                                    "changes.", self.writes),
                ("dropped_total", "counter", "Records dropped unread (too many at once) and fetched again.",
                 self.dropped)):
            lines += metric_lines(f"edgeface_sync_{name}", kind, help, value)
        lines += metric_lines("edgeface_sync_refused_total", "counter",
                              "Records refused (never applied), by reason.",
                              {f'reason="{reason}"': count for reason, count in self.refused.items()})
        return lines

    # --- events, on the transport's thread ------------------------------------------------------------------

    def _event(self, event: tuple) -> None:
        with self._cond:
            size = len(event[2]) if event[0] == "message" else 0
            if size and self._queued_bytes + size > MAX_QUEUED_BYTES:
                self.dropped += 1
                self._lost = True
                return
            self._queued_bytes += size
            self._events.append(event)
            self._cond.notify()

    # --- the thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_alive = time.monotonic() + ALIVE_EVERY
        next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY
        while True:
            with self._cond:
                if not self._events and not self._stop:
                    self._cond.wait(self.config.check_interval)
                events = list(self._events)
                self._events.clear()
                self._queued_bytes = 0
                stopping, lost, self._lost = self._stop, self._lost, False
            try:
                for event in events:
                    self._handle(event)
                if self.peer.burst is None and (self._dirty or file_signature(self.path) != self._written):
                    self._step()
                self._publish()
                now = time.monotonic()
                if now >= next_alive:
                    next_alive = now + ALIVE_EVERY
                    self.peer.alive(self._now_ms())
                    self._state_dirty = True
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_EVERY
                    self.peer.housekeeping(self._now_ms())
                    self._state_dirty = True
                if self._state_dirty:
                    self._save_state()
                if lost:
                    log.warning("sync: records came in faster than they could be read; fetching them again")
                    self.transport.resync()
            except Exception as exc:  # never let the thread die: the daemon goes on labelling
                self._file_warning.warning("sync: %s: %s", type(exc).__name__, exc)
            if stopping:
                if self._state_dirty:
                    self._save_state()
                return

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    def _handle(self, event: tuple) -> None:
        kind = event[0]
        self._state_dirty = True
        if kind == "connected":
            self.caught_up = False
            self.peer.connected()
        elif kind == "caught_up":
            self.peer.caught_up(self._now_ms())
            self.caught_up = True
            self._dirty = True
            log.info("sync: caught up with the household (%d records held, %d people)",
                     len(self.peer.replica.records), len(self.peer.base.people) if self.peer.base else 0)
        elif kind == "disconnected":
            self.caught_up = False
            self.peer.disconnected(self._now_ms())
        elif kind == "message":
            self._message(event[1], event[2])

    def _message(self, key: str, payload: bytes) -> None:
        if not payload:
            self.peer.cleared(key, self._now_ms())
            self._dirty = True
            return
        try:
            record = open_record(key, payload, self.key, self.encoder, self.embedding_size,
                                 self.config.max_crop_bytes, self._now_ms(), int(self.config.max_clock_skew * 1000))
        except Refused as refused:
            self.refused[refused.reason] += 1
            self._refusal_warnings[refused.reason].warning("sync: refused a record on %r (%s): %s", key[:100],
                                                           refused.reason, refused)
            return
        self.received += 1
        if self.peer.receive(record):
            self.applied += 1
            self._dirty = True

    def _step(self) -> None:
        """The file's changes into records, the records into the file; under the gallery's lock."""
        with locked(self.path):
            signature = file_signature(self.path)
            try:
                current = (read_gallery(self.path, self.model_sha256) if signature is not None
                           else empty_gallery(self.model_sha256, self.embedding_size, self.path))
            except GalleryError as exc:
                self._file_warning.warning("sync: the gallery is not readable, so nothing is shared until it is "
                                           "fixed: %s", exc)
                self._written, self._dirty = signature, False
                return
            before = len(self.peer.outgoing)
            # A gallery file deleted is not a way to remove people (`edgeface people remove` is): the
            # household's people are written back rather than removed from every device.
            gallery = self.peer.step(current, signature is not None and signature != self._written)
            self.local_changes += max(0, len(self.peer.outgoing) - before)
            if gallery is not None:
                self._save_crops(gallery)
                gallery.save(self.path)
                prune_crops(self.path, gallery, referenced(current) - referenced(gallery))
                self.writes += 1
            self._written, self._dirty = file_signature(self.path), False
            self._state_dirty = True
        if gallery is not None:
            self._on_change()

    def _publish(self) -> None:
        records, clearing = self.peer.take_outgoing()
        if not self.transport.connected.is_set():
            return  # published after the next catching up: what the broker lacks then
        for record in records:
            self.transport.publish(record.key, seal(record, self.encoder, self.key))
        for key in clearing:
            self.transport.publish(key, b"")

    # --- crops ----------------------------------------------------------------------------------------------

    def _crop(self, sha256: str) -> bytes | None:
        """An enrolled face's crop to send with it (``[sync] crops``), when it is a JPEG within the bound."""
        path = crop_path(self.path, sha256)
        try:
            data = path.read_bytes() if path is not None and path.is_file() else b""
        except OSError:
            return None
        return data if data.startswith(JPEG_MAGIC) and len(data) <= self.config.max_crop_bytes else None

    def _save_crops(self, gallery: Gallery) -> None:
        if not self.config.crops:
            return
        wanted = referenced(gallery)
        for record in self.peer.replica.records.values():
            if record.kind != "face" or record.deleted or "crop" not in record.data:  # type: ignore[operator]
                continue
            sha = record.key.split("/")[2]
            path = crop_path(self.path, sha)
            if sha in wanted and path is not None and not path.exists():
                save_crop(self.path, sha, crop_bytes(record.data))  # type: ignore[arg-type]

    # --- the state file -------------------------------------------------------------------------------------

    def _load_state(self) -> Peer:
        fresh = Peer(self.device, self.embedding_size, self.model_sha256, self.lifetime_ms)
        if not self.state_file.exists():
            return fresh
        try:
            raw = read_json(self.state_file, MAX_STATE_BYTES, ConfigError, "sync state")
            if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT or raw.get("version") != STATE_VERSION:
                raise ValueError("not a sync state file of this version")
            if raw.get("encoder") != self.encoder:
                raise ValueError(f"kept for embedding {str(raw.get('encoder'))[:40]}, not this bundle's")
            return Peer.restore(raw, self.device, self.embedding_size, self.model_sha256, self.lifetime_ms,
                                self.encoder, self.config.max_crop_bytes)
        except (EdgefaceError, Refused, ValueError, TypeError, KeyError, IndexError) as exc:
            log.warning("sync: %s not read (%s); this device joins the household again", self.state_file, exc)
            return fresh

    def _save_state(self) -> None:
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "encoder": self.encoder,
                 **self.peer.state(self.encoder)}
        write_private(self.state_file, json.dumps(state, separators=(",", ":")).encode("utf-8"))
        self._state_dirty = False


def household_sync(daemon: "Daemon") -> HouseholdSync | None:
    """The run's people sync when its config has ``[sync] enabled``, else None: an extension of the daemon
    (``edgeface.daemon.run.Extension``), made again at each start and SIGHUP reload."""
    config = daemon.config
    if not config.sync.enabled:
        return None
    from edgeface.sync.mqtt import MqttTransport

    labeler = daemon.pipeline.labeler
    path = labeler.gallery_path
    if path is None:
        raise ConfigError("[sync] is enabled but the daemon has no gallery: this bundle's model has no embedding "
                          "output, so nobody can be enrolled or shared")
    key = daemon.loaded.sync_key
    assert key is not None  # read by edgeface.daemon.run.load when [sync] is enabled
    encoder = daemon.bundle.embedding_id
    return HouseholdSync(config.sync, key, daemon.bundle, path, config.device,
                         lambda on_event: MqttTransport(config.mqtt, config.device, encoder, on_event),
                         on_change=labeler.reload_now).start()


__all__ = ["HouseholdSync", "household_sync", "state_path"]
