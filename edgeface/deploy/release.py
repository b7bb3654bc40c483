"""What goes to every host: a bundle and its daemon config, checked here and named by a hash of both."""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeface.core.errors import ConfigError
from edgeface.daemon.config import HttpConfig, load_config

BUNDLE_NAME = "model.edgeface"
CONFIG_NAME = "edgeface.toml"
SUMS_NAME = "SHA256SUMS"
HEALTH_NAME = "health-url"  # where this release's /healthz is (empty: its config turns HTTP off)
MODEL_SHA_NAME = "model-sha256"  # the model /healthz must report, so an old daemon still running can't pass
# The smallest config that runs: the first camera. Deploy --config to choose another source or sinks.
DEFAULT_CONFIG = f'bundle = "{BUNDLE_NAME}"\nsource = 0\n'


@dataclass(frozen=True)
class Release:
    """What goes to every host: a bundle and a config, named by a hash of both."""

    id: str
    bundle: Path
    config_text: str
    health_url: str | None  # None when the config turns the HTTP server off
    bundle_sha256: str = field(repr=False)
    model_sha256: str = field(default="", repr=False)  # the bundle's model checksum, as /healthz reports it

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(self.config_text.encode()).hexdigest()

    def files(self) -> dict[str, bytes]:
        """The small files of the release (the bundle is copied from :attr:`bundle`)."""
        health = (self.health_url or "").encode()
        model = self.model_sha256.encode()
        sums = (f"{self.bundle_sha256}  {BUNDLE_NAME}\n{self.config_sha256}  {CONFIG_NAME}\n"
                f"{hashlib.sha256(health).hexdigest()}  {HEALTH_NAME}\n"
                f"{hashlib.sha256(model).hexdigest()}  {MODEL_SHA_NAME}\n")
        return {CONFIG_NAME: self.config_text.encode(), HEALTH_NAME: health, MODEL_SHA_NAME: model,
                SUMS_NAME: sums.encode()}


_BUNDLE_LINE = re.compile(r"^[ \t]*bundle[ \t]*=.*$", re.MULTILINE)
_TABLE_LINE = re.compile(r"^[ \t]*\[", re.MULTILINE)
_FIRST_KEY = re.compile(r"^[ \t]*[^#\s]", re.MULTILINE)


def _device_config(text: str, origin: str) -> tuple[str, dict]:
    """The config as the device gets it: ``bundle = "model.edgeface"``, everything else byte for byte."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    def parse(source: str) -> dict:
        try:
            return tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML ({exc})") from None

    original = parse(text)
    head_end = m.start() if (m := _TABLE_LINE.search(text)) else len(text)
    head, tail = text[:head_end], text[head_end:]
    line = f'bundle = "{BUNDLE_NAME}"'
    if "bundle" in original:
        head, count = _BUNDLE_LINE.subn(line, head, count=1)
    else:  # before the first key, below the comments that open the file
        first = _FIRST_KEY.search(head)
        at = first.start() if first else len(head)
        before = head[:at] if head[:at].endswith("\n") or at == 0 else head[:at] + "\n"
        head, count = f"{before}{line}\n{head[at:]}", 1
    device_text = head + tail
    device = parse(device_text) if count else {}
    if device.get("bundle") != BUNDLE_NAME or {k: v for k, v in device.items() if k != "bundle"} != {
            k: v for k, v in original.items() if k != "bundle"}:
        raise ConfigError(f"{origin}: cannot set bundle = \"{BUNDLE_NAME}\" for the device: write the bundle "
                          f"key on a line of its own before any [section]")
    return device_text, original


def _health_url(config: dict, origin: str) -> str | None:
    http = config.get("http", {})
    if not isinstance(http, dict) or http.get("enabled", True) is False:
        return None
    defaults = HttpConfig()
    port = http.get("port", defaults.port)
    if port == 0:
        raise ConfigError(f"{origin}: [http] port = 0 picks a random port, so deploy cannot check /healthz; "
                          f"set a fixed port or pass --health-cmd")
    host = str(http.get("host", defaults.host))
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/healthz"


def prepare_release(bundle: str | Path | None = None, config: str | Path | None = None) -> Release:
    """Check a bundle and a daemon config here, before anything is copied.

    ``bundle`` defaults to the one the config names (relative to the config's folder); ``config`` defaults to
    :data:`DEFAULT_CONFIG` (camera 0). The config is validated with the daemon's own reader.
    """
    from edgeface.core.bundle import load_bundle, sha256_bytes

    origin = str(config) if config is not None else "the default config"
    if config is not None:
        config = Path(config)
        try:
            text = config.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{config}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config}: cannot read ({exc})") from None
    else:
        text = DEFAULT_CONFIG
    device_text, original = _device_config(text, origin)
    if bundle is None:
        named = original.get("bundle")
        if not named or not isinstance(named, str) or config is None:
            raise ConfigError(f"{origin}: names no bundle; pass --bundle PATH")
        bundle = Path(named).expanduser()
        if not bundle.is_absolute():
            bundle = config.resolve().parent / bundle
    bundle = Path(bundle)
    model_sha = load_bundle(bundle).model_sha256  # format, version, checksum: a broken bundle never leaves here
    with tempfile.TemporaryDirectory(prefix="edgeface-deploy-") as tmp:
        Path(tmp, CONFIG_NAME).write_text(device_text, encoding="utf-8")
        Path(tmp, BUNDLE_NAME).symlink_to(bundle.resolve())
        try:
            load_config(Path(tmp, CONFIG_NAME))  # every key and value, as the daemon will read it
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(Path(tmp, CONFIG_NAME)), origin)) from None
    bundle_sha = sha256_bytes(bundle.read_bytes())
    digest = hashlib.sha256()
    for name, sha in ((BUNDLE_NAME, bundle_sha), (CONFIG_NAME, hashlib.sha256(device_text.encode()).hexdigest())):
        digest.update(f"{name}\0{sha}\n".encode())
    return Release(id=digest.hexdigest()[:12], bundle=bundle, config_text=device_text,
                   health_url=_health_url(original, origin), bundle_sha256=bundle_sha, model_sha256=model_sha)
