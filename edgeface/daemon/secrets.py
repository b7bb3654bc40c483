"""Secrets the daemon reads (the HTTP token, the MQTT password) and credentials kept out of what it shows.

A secret comes from, in this order: a file named in the config, the systemd credential of its name
(``$CREDENTIALS_DIRECTORY/<name>``, installed with ``LoadCredential=``), or an environment variable. A file is
read whole (a regular file of at most 4 KiB, UTF-8), surrounding white space removed. ``redact`` takes the
password out of every URL in a text (``rtsp://user:pass@cam/`` -> ``rtsp://user:***@cam/``) and the value of
query parameters that look like secrets; the daemon passes everything it logs, serves or prints through it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from edgeface.core.errors import ConfigError
from edgeface.core.fileio import read_text_input

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
MAX_SECRET_BYTES = 4096

# A URL's authority: the scheme, then everything up to the first / ? # or white space. Its userinfo is what
# comes before the last @ in it (a password may hold an @: "user:p@ss@cam").
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s\"'<>`]*)")
# A query parameter or key=value pair whose name says it holds a secret: password, passwd, pwd, token,
# access_token, api-key, client_secret, X-Amz-Signature, auth, session, credential...
_SECRET_NAME = r"[^\s=&;#?\"'<>`]*(?:pass|pwd|token|secret|key|auth|sig|session|cred)[^\s=&;#?\"'<>`]*"
_QUERY_SECRET = re.compile(rf"(?i)([?&;]{_SECRET_NAME}=)([^&;#\s\"'<>`]*)")


def _redact_url(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index >= 0:
            end = min(end, index)
    at = rest.rfind("@", 0, end)
    if at < 0 and ":" in rest[:end]:
        # "user:pa/ss@cam": a password holding a / (or ? #) the URL did not escape; the authority then seems
        # to end inside it. The last @ before any ? or # ends the userinfo (a path with an @ is redacted too:
        # shown less, never a secret shown).
        query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, query)
    if at < 0:
        return match.group(0)
    userinfo, host = rest[:at], rest[at + 1:]
    user, colon, _ = userinfo.partition(":")
    # user:password keeps the user name; a lone user name may be a token (https://TOKEN@host/): hidden too.
    return f"{scheme}{user}:***@{host}" if colon else f"{scheme}***@{host}"


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL hidden (``rtsp://user:pass@cam/`` -> ``rtsp://user:***@cam/``,
    ``https://TOKEN@host/`` -> ``https://***@host/``), and the values of query parameters whose names say
    they are secrets (``?token=``, ``&password=``...) replaced by ``***``."""
    text = _URL.sub(_redact_url, text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}***", text)


def holds_secret(text: str) -> bool:
    """Whether ``text`` (a URL given on a command line) holds a password or a secret-looking parameter."""
    return redact(text) != text


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


def read_secret_option(option: str, value: str, min_chars: int = 1) -> str:
    """The secret in the FILE a command-line option names. A value that names no file is not shown in the
    error: it may be the secret itself, typed where its file was expected (and already in the shell's
    history and, while the command ran, in the process list)."""
    if not value or not os.path.lexists(value):
        raise ConfigError(f"{option}: no such file (the value given is not shown, in case it is the secret "
                          f"itself: write the secret to a file only you can read and give {option} that file)")
    return read_secret(option, file=value, min_chars=min_chars) or ""


def _long_enough(value: str, where: str, min_chars: int) -> str:
    if len(value) < min_chars:
        raise ConfigError(f"{where}: shorter than {min_chars} characters, too short to be a secret; make a random "
                          "one (edgeface deploy --http-token generate, or: openssl rand -base64 32)")
    return value


def _read_file(path: Path, what: str) -> str:
    """A secret file, read by the device's one reader: a regular file of at most 4 KiB, UTF-8, not empty."""
    if not os.path.lexists(path):
        raise ConfigError(f"{what}: {path} is not a file (there is none)")
    value = read_text_input(path, MAX_SECRET_BYTES, ConfigError, f"{what} file").strip()
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
