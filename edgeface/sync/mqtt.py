"""The household's records on an MQTT broker: a thin transport around paho, with the daemon's ``[mqtt]`` settings
(host, port, login, TLS).

Topics, under ``<topic>/sync/<embedding id>/`` (devices whose bundles make other embeddings never meet)::

    r/<record key>        the latest record of each element, retained, QoS 1 (``edgeface.sync.records``)
    probe/<device>        a nonce the device sends itself after subscribing: it comes back after the retained
                          records, so it marks the end of the catching up

The transport only moves bytes: it reports ``connected``, each ``message`` (a record's key and payload; empty:
its retained copy was cleared), ``caught_up`` and ``disconnected`` to one callback, on paho's thread.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable

from edgeface.daemon.service import Throttled
from edgeface.daemon.sinks.mqtt import mqtt_client, topic_id

if TYPE_CHECKING:
    from edgeface.daemon.config import MqttConfig

log = logging.getLogger("edgeface.daemon")

Event = tuple  # ("connected",) ("message", key, payload) ("caught_up",) ("disconnected",)


def sync_prefix(topic: str, encoder: str) -> str:
    return f"{topic.rstrip('/')}/sync/{encoder}"


class MqttTransport:
    def __init__(self, config: "MqttConfig", device: str, encoder: str, on_event: Callable[[Event], None]) -> None:
        self.config = config
        self.device_id = topic_id(device)
        self.prefix = sync_prefix(config.topic, encoder)
        self.records = f"{self.prefix}/r/"
        self.probe_topic = f"{self.prefix}/probe/{self.device_id}"
        self._on_event = on_event
        self._nonce = b""
        self.connected = threading.Event()
        self.published = 0
        self.published_bytes = 0
        self.last_error = "not connected yet"
        self._warning = Throttled()
        client = mqtt_client(config, f"edgeface-{self.device_id}-sync")
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._stopping = False

    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self._client.loop_start()

    def publish(self, key: str, payload: bytes) -> None:
        """A record (retained, QoS 1; paho sends it again after a reconnection); an empty payload clears it."""
        self._client.publish(self.records + key, payload, qos=1, retain=True)
        self.published += 1
        self.published_bytes += len(payload)

    def resync(self) -> None:
        """Receive every retained record again (some were dropped unread): subscribing again makes the broker
        send them, and a new probe marks their end."""
        if self.connected.is_set():
            self._on_event(("connected",))
            self._client.subscribe([(self.records + "#", 1), (self.probe_topic, 1)])

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"broker {self.config.host}:{self.config.port} refused the connection: {reason}"
            self._warning.warning("sync: %s; retrying with backoff", self.last_error)
            return
        self.last_error = ""
        self.connected.set()
        self._on_event(("connected",))
        client.subscribe([(self.records + "#", 1), (self.probe_topic, 1)])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any = None) -> None:
        # The broker sends the retained records of a subscription before anything published after it.
        self._nonce = secrets.token_hex(8).encode()
        client.publish(self.probe_topic, self._nonce, qos=1, retain=False)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        topic = message.topic
        if topic == self.probe_topic:
            if message.payload == self._nonce:
                self._on_event(("caught_up",))
        elif topic.startswith(self.records):
            self._on_event(("message", topic[len(self.records):], bytes(message.payload)))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        exc = sys.exc_info()[1]
        kind = "TLS" if isinstance(exc, ssl.SSLError) else "connection"
        self.last_error = f"{kind} to {self.config.host}:{self.config.port} failed: {exc or 'unknown error'}"
        self._warning.warning("sync: %s; retrying with backoff", self.last_error)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            if not self._stopping:
                self.last_error = f"lost the broker ({reason})"
                self._warning.warning("sync: lost the broker %s:%s (%s); reconnecting", self.config.host,
                                      self.config.port, reason)
            self._on_event(("disconnected",))
