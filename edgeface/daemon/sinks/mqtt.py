"""MQTT, with Home Assistant discovery.

MQTT topics (``<topic>`` defaults to ``edgeface``, ``<device>`` to the host name)::

    <topic>/<device>/status   "online" / "offline", retained; "offline" is also the last will
    <topic>/<device>/frame    a frame's JSON record, as in JSON lines (not retained)
    <topic>/<device>/state    retained summary: faces, identities, and the largest face's labels

With ``discovery = true`` Home Assistant sensors (faces, people, identity, emotion, gender) are announced under
``<discovery_prefix>/sensor/<device>_*/config`` (retained), all tied to the status topic for availability.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from edgeface.core.errors import DependencyError
from edgeface.daemon.records import FrameResult, Published
from edgeface.daemon.sinks.base import QueuedSink

if TYPE_CHECKING:
    from edgeface.daemon.config import MqttConfig

log = logging.getLogger("edgeface.daemon")


class MqttSink(QueuedSink):
    """paho-mqtt: the client's own thread connects and reconnects; ours feeds it only while it is connected."""

    name = "mqtt"

    def __init__(self, config: "MqttConfig", device: str, model_name: str = "edgeface") -> None:
        super().__init__(config.queue, config.publish)
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise DependencyError("MQTT needs paho-mqtt: pip install paho-mqtt") from None
        self.config = config
        self.device = device
        self.model_name = model_name
        self.base = f"{config.topic.rstrip('/')}/{device}"
        self.status_topic = f"{self.base}/status"
        self.connected = threading.Event()
        self.connects = 0
        self._last_state: str | None = None
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id or f"edgeface-{device}")
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        if config.tls:
            client.tls_set()
        client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(config.queue)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._mqtt = mqtt
        # connect_async + loop_start: a broker that is down at start is retried by paho's thread, not fatal.
        client.connect_async(config.host, config.port, keepalive=config.keepalive)
        client.loop_start()
        self.start()

    def publish(self, item: Published) -> None:
        if item.wanted(self.publish_mode):
            self._put((f"{self.base}/frame", item.json, self.config.qos, False))
        if item.changed:
            state = json.dumps(self.state(item.result), separators=(",", ":"))
            self._put((f"{self.base}/state", state, 1, True))

    @staticmethod
    def state(result: FrameResult) -> dict[str, Any]:
        """The retained summary Home Assistant reads: counts, names, and the largest face's labels."""
        faces = result.faces
        primary = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None
        return {
            "time": round(result.time, 3),
            "faces": len(faces),
            "identities": sorted({f.labels.identity.label for f in faces}),
            "identity": primary.labels.identity.label if primary else "none",
            "emotion": primary.labels.emotion.label if primary else "none",
            "gender": primary.labels.gender.label if primary else "none",
        }

    def _send(self, message: tuple[str, str, int, bool]) -> None:
        if not self.connected.wait(0.5):
            raise ConnectionError(f"broker {self.config.host}:{self.config.port} not connected")
        topic, payload, qos, retain = message
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} failed ({self._mqtt.error_string(info.rc)})")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("mqtt: broker %s:%s refused the connection (%s)", self.config.host, self.config.port, reason)
            return
        self.connects += 1
        log.info("mqtt: connected to %s:%s", self.config.host, self.config.port)
        client.publish(self.status_topic, "online", qos=1, retain=True)
        if self.config.discovery:
            for topic, payload in self.discovery_messages():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if self.connected.is_set():
            log.warning("mqtt: lost the broker %s:%s (%s); reconnecting", self.config.host, self.config.port, reason)
        self.connected.clear()

    def discovery_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Home Assistant MQTT discovery: one sensor per summary field, available while the daemon is online."""
        device = {"identifiers": [f"edgeface_{self.device}"], "name": f"edgeface {self.device}",
                  "manufacturer": "edgeface", "model": self.model_name}
        sensors = {
            "faces": ("Faces", "{{ value_json.faces }}"),
            "people": ("People", "{{ value_json.identities | join(', ') }}"),
            "identity": ("Identity", "{{ value_json.identity }}"),
            "emotion": ("Emotion", "{{ value_json.emotion }}"),
            "gender": ("Gender", "{{ value_json.gender }}"),
        }
        messages = []
        for key, (title, template) in sensors.items():
            payload: dict[str, Any] = {
                "name": title, "unique_id": f"edgeface_{self.device}_{key}", "state_topic": f"{self.base}/state",
                "value_template": template, "availability_topic": self.status_topic, "device": device,
            }
            if key == "faces":
                payload["state_class"] = "measurement"
            messages.append((f"{self.config.discovery_prefix}/sensor/{self.device}_{key}/config", payload))
        return messages

    def _finish(self) -> None:
        # A clean stop says "offline" itself (the will is only sent when the connection dies).
        if self.connected.is_set():
            info = self._client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(0.5)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "connected": float(self.connected.is_set()), "connects": self.connects}
