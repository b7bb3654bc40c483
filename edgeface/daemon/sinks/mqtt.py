"""MQTT, with Home Assistant discovery.

MQTT topics (``<topic>`` defaults to ``edgeface``; ``<device>`` is the device id, ``<person>`` a person's name,
both made safe for topics and Home Assistant ids by ``topic_id`` / ``person_id``)::

    <topic>/<device>/status    "online" / "offline", retained; "offline" is also the last will
    <topic>/<device>/frame     a frame's JSON record, as in JSON lines (not retained)
    <topic>/<device>/state     retained summary: faces, identities, and the largest face's labels
    <topic>/<device>/visit     visit events (arrived, named, left), as in JSON lines (not retained)
    <topic>/<device>/stranger  {"event_type": "arrived" | "left", ...the visit}: an unknown person's visit
    <topic>/presence/<person>  retained: {"state": "home" | "not_home", "name", "camera", "last_seen", "visit"}

With ``discovery = true`` Home Assistant gets, retained under ``<discovery_prefix>``: sensors for the summary
(faces, people, identity, emotion, gender) and an event entity for strangers, per device, tied to its status
topic for availability; and a presence entity (device tracker) per person the device knows (enrolled or
trained), created when they are enrolled and removed when they are removed. The summary's identity never says
``unknown`` (Home Assistant's word for "no data"): a face nobody matched is ``unrecognised``, no face ``nobody``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import ssl
import sys
import threading
import time
import unicodedata
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeface.core.errors import ConfigError, DependencyError
from edgeface.core.results import UNKNOWN
from edgeface.daemon.records import Published
from edgeface.daemon.secrets import read_secret
from edgeface.daemon.service import Throttled
from edgeface.daemon.sinks.base import QueuedSink

if TYPE_CHECKING:
    from edgeface.daemon.config import MqttConfig
    from edgeface.recognition.records import FrameResult

log = logging.getLogger("edgeface.daemon")

MQTT_PASSWORD_CREDENTIAL, MQTT_PASSWORD_ENV = "mqtt-password", "EDGEFACE_MQTT_PASSWORD"
UNRECOGNISED, NOBODY = "unrecognised", "nobody"  # the summary's identity for an unknown face, and for no face
SENSORS = {
    "faces": ("Faces", "{{ value_json.faces }}"),
    "people": ("People", "{{ value_json.identities | join(', ') }}"),
    "identity": ("Identity", "{{ value_json.identity }}"),
    "emotion": ("Emotion", "{{ value_json.emotion }}"),
    "gender": ("Gender", "{{ value_json.gender }}"),
}


def topic_id(text: str) -> str:
    """A device id as a topic level and a Home Assistant discovery id (letters, digits, ``_`` and ``-`` only:
    Home Assistant ignores discovery topics with anything else, a space included)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "edgeface"


def person_id(name: str) -> str:
    """A person's name as a topic level and a Home Assistant id: a readable ASCII part plus a digest of the
    name, so that two names never share one ("Zoë" and "Zoe", "Ada Lovelace" and "ada_lovelace")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    readable = re.sub(r"[^a-z0-9]+", "_", ascii_name).strip("_")[:32]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]
    return f"{readable}_{digest}" if readable else digest


class MqttSink(QueuedSink):
    """paho-mqtt: the client's own thread connects and reconnects; ours feeds it only while it is connected.

    A message counts as sent when the broker acknowledges it (QoS 1 and 2; QoS 0: when written to the
    socket). At most ``INFLIGHT`` messages wait for their acknowledgement; paho keeps them across a lost
    connection and sends them again after it (the subscriber may then see one twice: QoS 1 is at least once).
    Behind them up to ``[mqtt] queue`` records wait in the buffer; past that the oldest is dropped and counted,
    and so is whatever is neither acknowledged nor sent at stop.
    """

    name = "mqtt"
    INFLIGHT = 100

    def __init__(self, config: "MqttConfig", device: str, model_name: str = "edgeface",
                 people: Callable[[], Sequence[str]] = tuple) -> None:
        super().__init__(config.queue, config.publish, config.unhealthy_after, config.frames, config.visits)
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise DependencyError("MQTT needs paho-mqtt: pip install paho-mqtt") from None
        self.config = config
        self.device = device
        self.device_id = topic_id(device)
        self.model_name = model_name
        self.prefix = config.topic.rstrip("/")
        self.base = f"{self.prefix}/{self.device_id}"
        self.status_topic = f"{self.base}/status"
        self._people = people  # who the device knows now (enrolled and trained), asked at each frame
        self._announced: tuple[str, ...] = ()  # the people whose presence entities were announced
        self._people_lock = threading.Lock()
        self._stopping = False
        self.connected = threading.Event()
        self.connects = 0
        self.failing_since = time.monotonic()  # not connected yet: the clock of unhealthy_after starts now
        self.last_error = "not connected yet"
        self._inflight: dict[int, float] = {}  # message id -> when it was handed to paho
        # acknowledged before publish() returned their id (or not ours: "online", discovery), kept a few seconds
        self._early: dict[int, float] = {}
        self._ack_lock = threading.Lock()
        self._connect_warning = Throttled()
        self._connect_error = ""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=config.client_id or f"edgeface-{self.device_id}")
        if config.username:
            client.username_pw_set(config.username, mqtt_password(config))
        if config.tls or config.ca_certs or config.certfile:
            try:
                client.tls_set(ca_certs=config.ca_certs or None, certfile=config.certfile or None,
                               keyfile=config.keyfile or None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a key that is not the cert's
                raise ConfigError(f"[mqtt] TLS files: {exc}") from None
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(self.INFLIGHT)
        client.max_queued_messages_set(0)  # bounded by INFLIGHT and our buffer, not by paho
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._mqtt = mqtt
        # connect_async + loop_start: a broker that is down at start is retried by paho's thread, not fatal.
        client.connect_async(config.host, config.port, keepalive=config.keepalive)
        client.loop_start()
        self.start()

    def publish(self, item: Published) -> None:
        if self.frames and item.wanted(self.publish_mode):
            self._put((f"{self.base}/frame", item.json, self.config.qos, False))
        if item.changed:
            state = json.dumps(self.state(item.result), separators=(",", ":"))
            self._put((f"{self.base}/state", state, 1, True))
        if self.visits:
            for event, line in zip(item.result.events, item.events):
                self._put((f"{self.base}/visit", line, self.config.qos, False))
                for message in self.event_messages(event.kind, event.visit, event.previous):
                    self._put(message)
        self._follow_people()

    @staticmethod
    def state(result: "FrameResult") -> dict[str, Any]:
        """The retained summary Home Assistant reads: counts, names, and the largest face's labels."""
        faces = result.faces
        primary = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None

        def shown(label: str) -> str:
            return UNRECOGNISED if label == UNKNOWN else label

        return {
            "time": round(result.time, 3),
            "faces": len(faces),
            "identities": sorted({shown(f.labels.identity.label) for f in faces}) or [NOBODY],
            "identity": shown(primary.labels.identity.label) if primary else NOBODY,
            "emotion": shown(primary.labels.emotion.label) if primary else NOBODY,
            "gender": shown(primary.labels.gender.label) if primary else NOBODY,
        }

    def event_messages(self, kind: str, visit: dict[str, Any], previous: str = "") -> list[tuple[str, str, int, bool]]:
        """What a visit event changes besides its own record: the person's presence (retained), or for an
        unknown visit the stranger event."""
        who = visit.get("who", UNKNOWN)
        messages = []
        if previous and previous not in (UNKNOWN, who):  # the visit was taken for someone else before
            messages.append(self._presence(previous, "not_home", visit))
        if who == UNKNOWN:
            if kind in ("arrived", "left") or previous:
                payload = {"event_type": "left" if kind == "left" else "arrived", **visit}
                messages.append((f"{self.base}/stranger", json.dumps(payload, separators=(",", ":")), 1, False))
        else:
            messages.append(self._presence(who, "not_home" if kind == "left" else "home", visit))
        return messages

    def _presence(self, name: str, state: str, visit: dict[str, Any]) -> tuple[str, str, int, bool]:
        payload = {"state": state, "name": name, "camera": self.device, "last_seen": visit.get("last_seen"),
                   "visit": visit.get("visit")}
        return (f"{self.prefix}/presence/{person_id(name)}", json.dumps(payload, separators=(",", ":")), 1, True)

    def _follow_people(self) -> None:
        """Announce the presence entities of people enrolled since, and remove those of people removed."""
        if not self.config.discovery:
            return
        people = tuple(sorted(set(self._people())))
        with self._people_lock:
            if people == self._announced:
                return
            added = [p for p in people if p not in self._announced]
            removed = [p for p in self._announced if p not in people]
            self._announced = people
        for name in added:
            topic, payload = self._tracker_config(name)
            self._put((topic, json.dumps(payload), 1, True))
        for name in removed:
            topic, _ = self._tracker_config(name)
            # Their presence first (Home Assistant's entity reads it as no state), then an empty retained config
            # removes the entity: in this order Home Assistant never gets a message for an entity half removed.
            self._put((f"{self.prefix}/presence/{person_id(name)}", "", 1, True))
            self._put((topic, "", 1, True))

    def _send(self, message: tuple[str, str, int, bool]) -> bool:
        if not self.connected.wait(0.5):
            raise ConnectionError(f"broker {self.config.host}:{self.config.port} not connected ({self.last_error})")
        deadline = time.monotonic() + 0.5
        while len(self._inflight) >= self.INFLIGHT:  # the broker is slow or frozen: hold the rest here
            if time.monotonic() > deadline:
                oldest = time.monotonic() - min(self._inflight.values(), default=time.monotonic())
                raise ConnectionError(f"{len(self._inflight)} messages unacknowledged, the oldest for {oldest:.0f} s")
            time.sleep(0.01)
        topic, payload, qos, retain = message
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS and not (qos > 0 and info.rc == self._mqtt.MQTT_ERR_NO_CONN):
            # (a QoS 1/2 message paho could not send yet is kept by paho and sent after reconnecting)
            raise ConnectionError(f"publish to {topic} failed ({self._mqtt.error_string(info.rc)})")
        with self._ack_lock:
            if self._early.pop(info.mid, None) is not None:
                self._delivered()
            else:
                self._inflight[info.mid] = time.monotonic()
        return False  # counted when acknowledged

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any = None, properties: Any = None) -> None:
        with self._ack_lock:
            if self._inflight.pop(mid, None) is None:
                now = time.monotonic()
                self._early = {m: t for m, t in self._early.items() if now - t < 5.0}
                self._early[mid] = now
                return
        self._delivered()

    def problem(self) -> str | None:
        oldest = min(self._inflight.values(), default=None)
        if self.connected.is_set() and oldest is not None and time.monotonic() - oldest > self.unhealthy_after:
            return (f"mqtt: broker {self.config.host}:{self.config.port} has not acknowledged a message for "
                    f"{time.monotonic() - oldest:.0f} s")
        return super().problem()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_failed(f"broker {self.config.host}:{self.config.port} refused the connection: {reason}")
            return
        self.connects += 1
        self.last_error = self._connect_error = ""
        self.failing_since = None
        log.info("mqtt: connected to %s:%s", self.config.host, self.config.port)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        if self.config.discovery:
            with self._people_lock:
                self._announced = tuple(sorted(set(self._people())))
            for topic, payload in self.discovery_messages():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self.connected.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls this from its `except OSError` (TLS errors are OSErrors too)
        kind = "TLS" if isinstance(exc, ssl.SSLError) else "connection"
        self._connect_failed(f"{kind} to {self.config.host}:{self.config.port} failed: {exc or 'unknown error'}")

    def _failed(self, message: str) -> None:
        if self.connected.is_set():
            super()._failed(message)
        else:  # waiting for the broker: the connection's own messages said why, once
            self.errors += 1

    def _connect_failed(self, message: str) -> None:
        """Logged when it first happens or changes, then once a minute with a count; shown in /healthz."""
        if message != self._connect_error:
            self._connect_warning = Throttled()
        self.last_error = self._connect_error = message
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self._connect_warning.warning("mqtt: %s; retrying with backoff (up to 30 s)", message)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self._stopping:
            log.info("mqtt: disconnected from %s:%s", self.config.host, self.config.port)
        elif self.connected.is_set():
            log.warning("mqtt: lost the broker %s:%s (%s); reconnecting", self.config.host, self.config.port, reason)
            self.last_error = f"lost the broker ({reason})"
            self.failing_since = time.monotonic()
        self.connected.clear()

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant MQTT discovery: the summary's sensors and the stranger event (available while the
        daemon is online), and a presence entity for each person announced."""
        device = {"identifiers": [f"edgeface_{self.device_id}"], "name": f"edgeface {self.device}",
                  "manufacturer": "edgeface", "model": self.model_name}
        available = {"availability_topic": self.status_topic, "device": device}
        prefix = self.config.discovery_prefix
        messages = []
        for key, (title, template) in SENSORS.items():
            payload: dict[str, Any] = {
                "name": title, "unique_id": f"edgeface_{self.device_id}_{key}", "state_topic": f"{self.base}/state",
                "value_template": template, **available}
            if key == "faces":
                payload["state_class"] = "measurement"
            messages.append((f"{prefix}/sensor/{self.device_id}_{key}/config", payload))
        messages.append((f"{prefix}/event/{self.device_id}_stranger/config", {
            "name": "Stranger", "unique_id": f"edgeface_{self.device_id}_stranger",
            "state_topic": f"{self.base}/stranger", "event_types": ["arrived", "left"], **available}))
        messages += [self._tracker_config(name) for name in self._announced]
        return messages

    def _tracker_config(self, name: str) -> tuple[str, dict[str, Any]]:
        """A person's presence entity: one per person for the whole household (every device of the same topic
        prefix announces the same one), home or away, with the camera that saw them last."""
        key = person_id(name)
        topic = f"{self.prefix}/presence/{key}"
        return (f"{self.config.discovery_prefix}/device_tracker/edgeface/{key}/config", {
            "name": name, "unique_id": f"edgeface_person_{key}", "state_topic": topic,
            # Removing the person clears this topic (an empty payload) while Home Assistant still has the entity:
            # it reads as no state ('None', its reset payload) and no attributes, not as broken JSON (a warning
            # and a template error in its log).
            "value_template": "{{ value_json.state if value_json is defined else 'None' }}",
            "json_attributes_topic": topic,
            "json_attributes_template": "{{ value if value_json is defined else '{}' }}",
            "payload_home": "home", "payload_not_home": "not_home", "source_type": "router",
            "device": {"identifiers": ["edgeface_household"], "name": "edgeface household",
                       "manufacturer": "edgeface"}})

    def _finish(self) -> None:
        deadline = time.monotonic() + 0.5
        while self._inflight and self.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # acknowledgements on their way
        with self._ack_lock:
            self.dropped += len(self._inflight)  # handed over, never acknowledged: lost
            self._inflight.clear()
        # A clean stop says "offline" itself (the will is only sent when the connection dies).
        self._stopping = True
        if self.connected.is_set():
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(0.5)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "inflight": len(self._inflight), "connected": float(self.connected.is_set()),
                "connects": self.connects}


def mqtt_password(config: "MqttConfig") -> str | None:
    """``[mqtt] password`` if set, else ``password_file``, the systemd credential, the environment variable."""
    return config.password or read_secret("[mqtt] password", config.password_file, MQTT_PASSWORD_CREDENTIAL,
                                          MQTT_PASSWORD_ENV)
