"""Daemon configuration: a TOML file plus flag overrides, checked once, before anything starts.

Every problem is one ``ConfigError`` line naming the file, the section and the key. Relative paths in the file
(``bundle``, ``source``, ``[jsonl] path``, ``[snapshots] dir``) are resolved against the file's folder; relative
paths given as flags against the working directory. ``docs/daemon.md`` is the reference; ``example.toml`` beside
this module shows every key with its default.
"""

from __future__ import annotations

import dataclasses
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from edgeface.core import reader
from edgeface.core.errors import ConfigError
from edgeface.core.gallery import THRESHOLD_RANGES
from edgeface.core.options import in_range as _range
from edgeface.core.options import one_of as _one_of
from edgeface.core.options import option as _opt
from edgeface.core.reader import shown, text_problem
from edgeface.recognition.settings import DetectConfig, RecognitionConfig, TrackingConfig, VisitConfig

PUBLISH_MODES = ("every", "change")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class CaptureConfig:
    loop: bool = _opt(False, help="restart a video file or folder at its end (demos, deploy health checks)")
    width: int = _opt(0, _range(0, 8192), "camera frame width; 0 keeps the camera's default")
    height: int = _opt(0, _range(0, 8192), "camera frame height; 0 keeps the camera's default")
    fps: float = _opt(0.0, _range(0, 240), "camera frame rate to ask for; for files, play at this rate (0: as fast "
                                          "as the pipeline takes frames)")
    drop_stale: str = _opt("auto", _one_of(("auto", "yes", "no")),
                           "auto: live sources keep only the newest frame, files and folders hand over every frame")
    retry_max: float = _opt(10.0, _range(0.1, 3600), "longest wait between reconnection attempts, seconds")


@dataclass(frozen=True)
class JsonlConfig:
    enabled: bool | None = _opt(None, help="default: on (to stdout) when no other sink is configured")
    path: str = _opt("-", help="'-' for stdout, or a file (rotated by size)")
    publish: str = _opt("every", _one_of(PUBLISH_MODES), "every frame with faces, or only when labels change")
    frames: bool = _opt(True, help="write a record per frame (its faces and their labels)")
    visits: bool = _opt(True, help="write visit events (arrived, named, left)")
    max_bytes: int = _opt(10_000_000, _range(1000, 1 << 40), "rotate the file when it grows past this")
    backups: int = _opt(3, _range(0, 100), "rotated files to keep")
    queue: int = _opt(256, _range(1, 100_000), "records held while the output is slow; older ones are dropped")
    unhealthy_after: float = _opt(60.0, _range(1, 86400), "/healthz is 503 once writing has failed this long")


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool | None = _opt(None, help="default: on when host is set")
    host: str = _opt("", help="broker host name")
    port: int = _opt(1883, _range(1, 65535), "broker port")
    username: str = _opt("", help="")
    password: str = _opt("", help="in the file itself; prefer password_file, the systemd credential "
                                  "mqtt-password or $EDGEFACE_MQTT_PASSWORD", secret=True)
    password_file: str = _opt("", help="a file holding the password")
    client_id: str = _opt("", help="default: edgeface-<device>")
    device: str = _opt("", help="device id in topics; default: the host name")
    topic: str = _opt("edgeface", help="topic prefix: <topic>/<device>/...")
    qos: int = _opt(1, _range(0, 2), "QoS of frame messages; 1: counted as sent when the broker acknowledges "
                                     "them, resent after a reconnection; 0: counted when written to the socket")
    publish: str = _opt("change", _one_of(PUBLISH_MODES), "every frame with faces, or only when labels change")
    frames: bool = _opt(True, help="publish frame records on <topic>/<device>/frame")
    visits: bool = _opt(True, help="publish visit events on <topic>/<device>/visit and each known person's "
                                   "presence on <topic>/presence/<person>")
    keepalive: int = _opt(30, _range(5, 3600), "seconds")
    tls: bool = _opt(False, help="connect with TLS (on by itself when ca_certs or certfile is set)")
    ca_certs: str = _opt("", help="CA certificates (PEM) the broker's certificate must chain to; "
                                  "default: the system's")
    certfile: str = _opt("", help="client certificate (PEM), for brokers that require one")
    keyfile: str = _opt("", help="the client certificate's private key (PEM); default: inside certfile")
    unhealthy_after: float = _opt(60.0, _range(1, 86400), "/healthz is 503 once the broker has been away "
                                                          "(refused, unreachable, not acknowledging) this long")
    discovery: bool = _opt(False, help="publish Home Assistant MQTT discovery configs")
    discovery_prefix: str = _opt("homeassistant", help="Home Assistant discovery prefix")
    queue: int = _opt(1000, _range(1, 1_000_000), "messages held while the broker is away; more are dropped")


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = _opt(True, help="serve /healthz, /labels and /metrics")
    host: str = _opt("127.0.0.1", help="address to listen on; 0.0.0.0 exposes it to the network")
    port: int = _opt(8321, _range(0, 65535), "port (0: any free port, logged at start)")
    stale_after: float = _opt(10.0, _range(0.5, 3600), "/healthz is 503 when no frame was processed this long")
    token_file: str = _opt("", help="a file holding the bearer token every path but /healthz then requires; "
                                    "default: the systemd credential http-token, else $EDGEFACE_HTTP_TOKEN")
    hosts: str = _opt("", help="host names the server answers to besides IP addresses, localhost and this "
                               "machine's name (comma-separated): a guard against DNS rebinding")
    timeout: float = _opt(10.0, _range(1, 3600), "a connection with no traffic for this long is closed (s)")
    max_connections: int = _opt(256, _range(8, 900), "open connections at most; at the cap the longest idle "
                                                     "one is closed (below 1,024: paho-mqtt uses select())")


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = _opt(False, help="serve the web page on the HTTP server (live view, unknown faces, people, "
                                     "thresholds) and keep the faces nobody could name; off: no page, no face kept")
    max_visits: int = _opt(100, _range(1, 10_000), "unknown faces: kept from at most this many visits (one card per "
                                                   "person); the oldest visits go first")
    keep_days: float = _opt(7.0, _range(0.01, 3650), "unknown faces older than this many days are deleted")
    max_strangers: int = _opt(500, _range(0, 100_000), "strangers' and 'not X' faces kept (calibration, the "
                                                          "rule's evidence); the oldest go first")
    strangers_keep_days: float = _opt(90.0, _range(0.01, 3650), "strangers' faces older than this are deleted")
    live_fps: float = _opt(4.0, _range(0.2, 30), "frames per second the open live view asks for")
    hosts: str = _opt("", help="the older name of [http] hosts (both are used)")


@dataclass(frozen=True)
class SnapshotConfig:
    dir: str = _opt("", help="write frames with faces here; empty (the default): never write any image")
    interval: float = _opt(10.0, _range(0.0, 86400), "seconds between snapshots")
    max_files: int = _opt(100, _range(1, 1_000_000), "oldest snapshots are deleted past this count")


@dataclass(frozen=True)
class ServiceConfig:
    log_level: str = _opt("info", _one_of(LOG_LEVELS), "")
    status_interval: float = _opt(60.0, _range(0.0, 86400), "seconds between status lines in the log (0: never)")
    max_frames: int = _opt(0, _range(0, 1 << 40), "stop after this many processed frames (0: never)")


SECTIONS: dict[str, type] = {
    "capture": CaptureConfig, "detect": DetectConfig, "tracking": TrackingConfig,
    "recognition": RecognitionConfig, "visits": VisitConfig, "jsonl": JsonlConfig,
    "mqtt": MqttConfig, "http": HttpConfig, "web": WebConfig, "snapshots": SnapshotConfig,
    "service": ServiceConfig,
}
TOP_LEVEL = ("bundle", "source", "threads", "identity_threshold", "gallery", "similarity_threshold")


@dataclass(frozen=True)
class DaemonConfig:
    bundle: Path
    source: str
    threads: int = 2
    identity_threshold: float | None = None  # None: the gallery's calibrated one, else the bundle's
    gallery: str = ""  # enrolled people: "" the bundle's gallery in the state dir, "none" off, or a file
    similarity_threshold: float | None = None  # None: the gallery's calibrated one, else the default
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    visits: VisitConfig = field(default_factory=VisitConfig)
    jsonl: JsonlConfig = field(default_factory=JsonlConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    web: WebConfig = field(default_factory=WebConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    origin: str = "flags"  # where the settings came from, for messages

    @property
    def mqtt_on(self) -> bool:
        return self.mqtt.enabled if self.mqtt.enabled is not None else bool(self.mqtt.host)

    @property
    def jsonl_on(self) -> bool:
        return self.jsonl.enabled if self.jsonl.enabled is not None else not self.mqtt_on

    @property
    def device(self) -> str:
        return self.mqtt.device or socket.gethostname().split(".")[0] or "edgeface"


# --- reading -----------------------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 256 << 10  # a config is a few KB; 1 MB of TOML takes seconds to parse (more on a Pi)


def read_toml(path: Path) -> dict[str, Any]:
    """The config file, read by the device's one reader (bounded in size and depth, one-line errors)."""
    return reader.read_toml(path, MAX_CONFIG_BYTES, ConfigError, "config file")


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> DaemonConfig:
    """The file at ``path`` (optional), with ``overrides`` on top: keys ``"bundle"`` or ``"http.port"``.

    Values from the file have their relative paths resolved against its folder; override values are used as
    given (the CLI passes absolute paths).
    """
    raw: dict[str, Any] = {}
    base: Path | None = None
    origin = "flags"
    if path is not None:
        path = Path(path)
        raw = read_toml(path)
        base = path.resolve().parent
        origin = str(path)
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    _check_keys(raw, origin)
    if base is not None:
        _resolve_paths(raw, base, origin)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        target[name] = value
    return _build(raw, origin)


def _check_keys(raw: Mapping[str, Any], origin: str) -> None:
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{key}] must be a table (a [{key}] section)")
            known = [f.name for f in dataclasses.fields(SECTIONS[key])]
            for name in value:
                if name not in known:
                    raise ConfigError(f"{origin}: unknown key {shown(name)} in [{key}] (known: {', '.join(known)})")
        elif key not in TOP_LEVEL:
            raise ConfigError(f"{origin}: unknown key {shown(key)} (known: {', '.join(TOP_LEVEL + tuple(SECTIONS))})")


def looks_like_path(source: str) -> bool:
    """A source that names a file or folder (not a camera index, URL or picamera2)."""
    return not (source.isdigit() or "://" in source or source.split(":")[0] == "picamera2")


def expand_user(value: str, where: str = "") -> Path:
    """``~`` and ``~user`` expanded; a user that does not exist, or a NUL byte, is one ConfigError line."""
    problem = text_problem(value)
    if problem:
        raise ConfigError(f"{where}{shown(value)}: {problem}")
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~user of a user this system does not have
        raise ConfigError(f"{where}{value}: no such user's home folder") from None


def _resolve_paths(raw: dict[str, Any], base: Path, origin: str) -> None:
    def resolve(value: Any, where: str) -> Any:
        if isinstance(value, str) and value and value != "-" and not expand_user(value, f"{origin}: {where} ").is_absolute():
            return str(base / value)
        return value

    if "bundle" in raw:
        raw["bundle"] = resolve(raw["bundle"], "bundle")
    if isinstance(raw.get("gallery"), str) and raw["gallery"] != "none":
        raw["gallery"] = resolve(raw["gallery"], "gallery")
    if isinstance(raw.get("source"), str) and looks_like_path(raw["source"]) and not raw["source"].startswith("/dev/"):
        raw["source"] = resolve(raw["source"], "source")
    for section, key in (("jsonl", "path"), ("snapshots", "dir"), ("http", "token_file"), ("mqtt", "password_file"),
                         ("mqtt", "ca_certs"), ("mqtt", "certfile"), ("mqtt", "keyfile")):
        if key in raw.get(section, {}):
            raw[section][key] = resolve(raw[section][key], f"[{section}] {key}")


def _type_name(kind: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _coerce(value: Any, kind: Any, where: str, secret: bool = False) -> Any:
    """Check ``value`` against a field's type; int is accepted for float, nothing else is converted. Text
    has no control characters (a NUL byte in a path) and at most 4,096 characters."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is Path and isinstance(value, (str, Path)):
        return expand_user(str(value), f"{where} ")
    if isinstance(value, str) and kind is str:
        problem = text_problem(value)
        if problem:
            raise ConfigError(f"{where} {problem}" + ("" if secret else f", got {shown(value)}"))
        return value
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where} must be {_type_name(kind)}" + ("" if secret else f", got {shown(value)}"))


def _make(cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        label = f"{where} {f.name}"
        secret = bool(f.metadata.get("secret"))
        value = _coerce(values[f.name], hints[f.name], label, secret)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{label} {problem}" + ("" if secret else f", got {shown(value)}"))
        kwargs[f.name] = value
    return cls(**kwargs)


def _build(raw: Mapping[str, Any], origin: str) -> DaemonConfig:
    if not raw.get("bundle"):
        raise ConfigError(f"{origin}: no bundle given (set bundle = \"model.edgeface\" or pass --bundle)")
    if raw.get("source") in (None, ""):
        raise ConfigError(f"{origin}: no source given (set source = 0, a device, file, folder or URL, or pass --source)")
    source = raw["source"]
    if isinstance(source, bool) or not isinstance(source, (int, str)):
        raise ConfigError(f"{origin}: source must be a camera index, a path or a URL, got {shown(source)}")
    if isinstance(source, str) and text_problem(source):
        raise ConfigError(f"{origin}: source {text_problem(source)}")
    if isinstance(source, int) and source < 0:
        raise ConfigError(f"{origin}: camera index must be 0 or more, got {source}")
    sections = {name: _make(cls, raw.get(name, {}), f"{origin}: [{name}]") for name, cls in SECTIONS.items()}
    top = _make(_Top, {k: raw[k] for k in ("bundle", "threads", "identity_threshold", "gallery",
                                           "similarity_threshold") if k in raw}, f"{origin}:")
    config = DaemonConfig(bundle=top.bundle, source=str(source), threads=top.threads,
                          identity_threshold=top.identity_threshold, gallery=top.gallery,
                          similarity_threshold=top.similarity_threshold, origin=origin, **sections)
    if config.mqtt_on and not config.mqtt.host:
        raise ConfigError(f"{origin}: [mqtt] is enabled but has no host")
    if config.web.enabled and not config.http.enabled:
        raise ConfigError(f"{origin}: [web] is enabled but [http] is not: the page is served by the HTTP server")
    if config.jsonl_on and config.jsonl.path != "-" and Path(config.jsonl.path).is_dir():
        raise ConfigError(f"{origin}: [jsonl] path {config.jsonl.path} is a folder; give a file name")
    if config.snapshots.dir and Path(config.snapshots.dir).exists() and not Path(config.snapshots.dir).is_dir():
        raise ConfigError(f"{origin}: [snapshots] dir {config.snapshots.dir} is a file, not a folder")
    if config.mqtt_on:
        _check_mqtt(config.mqtt, origin)
    return config


def _check_mqtt(mqtt: MqttConfig, origin: str) -> None:
    if mqtt.password and mqtt.password_file:
        raise ConfigError(f"{origin}: [mqtt] password and password_file are both set; keep one (password_file)")
    if mqtt.keyfile and not mqtt.certfile:
        raise ConfigError(f"{origin}: [mqtt] keyfile is set without certfile")
    for key in ("password_file", "ca_certs", "certfile", "keyfile"):
        value = getattr(mqtt, key)
        if value and not expand_user(value, f"{origin}: [mqtt] {key} ").is_file():
            raise ConfigError(f"{origin}: [mqtt] {key} {value}: no such file")


@dataclass(frozen=True)
class _Top:
    bundle: Path = _opt(Path())
    threads: int = _opt(2, _range(1, 64), "")
    identity_threshold: float | None = _opt(None, _range(*THRESHOLD_RANGES["identity_threshold"]), "")
    gallery: str = _opt("", help="")
    similarity_threshold: float | None = _opt(None, _range(*THRESHOLD_RANGES["similarity_threshold"]), "")
