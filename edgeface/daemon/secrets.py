"""Secrets the daemon reads (the HTTP token, the MQTT password) and credentials kept out of what it shows.

A secret comes from, in this order: a file named in the config, the systemd credential of its name
(``$CREDENTIALS_DIRECTORY/<name>``, installed with ``LoadCredential=``), or an environment variable. A file is
read whole, surrounding white space removed. ``redact`` takes the password out of every URL in a text
(``rtsp://user:pass@cam/`` -> ``rtsp://user:***@cam/``) and the value of query parameters that look like
secrets; the daemon passes everything it logs or serves through it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from edgeface.core.errors import ConfigError

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
MAX_SECRET_BYTES = 4096

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/@:]*):([^\s/@]*)@")
_QUERY_SECRET = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|token|access_token|auth|key|apikey|api_key"
                           r"|secret|signature|sig)=)([^&;#\s\"']*)")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` and secret-looking query values
    replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}***", text)


def read_secret(what: str, file: str = "", credential: str = "", env: str = "",
                environ: Mapping[str, str] | None = None, min_chars: int = 1) -> str | None:
    """The secret ``what`` (for messages, e.g. ``[http] token``) from ``file``, else the systemd credential
    ``credential``, else the environment variable ``env``; None when none of them is set. A file that is
    missing, unreadable, empty or larger than 4 KiB, or a secret shorter than ``min_chars``, is a
    ``ConfigError`` naming where it came from (never the secret)."""
    environ = os.environ if environ is None else environ
    if file:
        return _long_enough(_read_file(Path(file).expanduser(), what), f"{what} in {file}", min_chars)
    directory = environ.get(CREDENTIALS_DIRECTORY, "")
    if credential and directory and (Path(directory) / credential).is_file():
        where = f"{what} (systemd credential {credential})"
        return _long_enough(_read_file(Path(directory) / credential, where), where, min_chars)
    if env and environ.get(env, "").strip():
        return _long_enough(environ[env].strip(), f"{what} from ${env}", min_chars)
    return None


def _long_enough(value: str, where: str, min_chars: int) -> str:
    if len(value) < min_chars:
        raise ConfigError(f"{where}: shorter than {min_chars} characters, too short to be a secret; make a random "
                          "one (edgeface deploy --http-token generate, or: openssl rand -base64 32)")
    return value


def _read_file(path: Path, what: str) -> str:
    try:
        if not path.is_file():
            raise ConfigError(f"{what}: {path} is not a file")
        if path.stat().st_size > MAX_SECRET_BYTES:
            raise ConfigError(f"{what}: {path} is larger than {MAX_SECRET_BYTES} bytes; it should hold one secret")
        value = path.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
