"""Records: one version of one element of the household's people, as it travels and as it is checked.

An element is a person (their name), one enrolled face of a person, one face said not to be somebody (or a
stranger's), or one setting (a threshold, the calibration)::

    person/<person id>               {"name", "added"}
    face/<person id>/<face id>       {"embedding", "photo", "added", "order"[, "crop"]}
    negative/<face id>               {"id", "embedding", "of", "added", "reason"}
    setting/<name>                   {"value"}
    epoch/household                  {"id"}: present while the broker keeps the household's records

A record is the element's key, a stamp (``edgeface.sync.clock``), the device that wrote it and its data (None:
the element was removed, a *tombstone*). On the wire it is one line of JSON (the *body*) behind its HMAC-SHA256
with the household key::

    <64 hex digits of the MAC> <body>

A receiver checks, in this order and before anything else reads it: the size, the MAC (over the exact bytes
received), then every field (ids, names, embeddings of this device's size, finite and non-zero, thresholds in
range, a crop that is a JPEG within its bound) and the stamp (not later than the receiver's clock plus the
allowed skew). A record that fails is ``Refused`` with one of ``REFUSALS`` and never reaches a gallery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.gallery import THRESHOLD_RANGES, GalleryError, check_name
from edgeface.core.reader import parse_json
from edgeface.sync.clock import Stamp

FORMAT_VERSION = 1
MAC_DOMAIN = b"edgeface-sync/1\n"
MAX_BODY_BYTES = 16 * 1024  # a record without a crop: a 512-d embedding in base64 is 2.7 KB
MAX_CALIBRATION_BYTES = 8 * 1024
MAX_TEXT = 256
REFUSALS = ("auth", "malformed", "too_large", "future")
# The settings a household shares, and the range each must be in.
SETTINGS = {"similarity_threshold": "similarity_threshold", "identity_threshold": "identity_threshold",
            "visit_similarity_threshold": "similarity_threshold", "visit_identity_threshold": "identity_threshold",
            "calibration": ""}
EPOCH_KEY = "epoch/household"

PERSON_ID = re.compile(r"[0-9a-f]{16}")
FACE_ID = re.compile(r"[0-9a-z]{16,64}")
NEGATIVE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
EPOCH_ID = re.compile(r"[0-9a-f]{16,64}")
_KEY = re.compile(r"person/[0-9a-f]{16}|face/[0-9a-f]{16}/[0-9a-z]{16,64}|negative/[A-Za-z0-9._-]{1,64}"
                  r"|setting/[a-z_]{1,40}|epoch/household")
JPEG_MAGIC = b"\xff\xd8\xff"


class Refused(Exception):
    """A record that must not be applied: ``reason`` (one of ``REFUSALS``) and what was wrong, in one line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Record:
    key: str
    stamp: Stamp
    device: str
    data: Mapping[str, Any] | None  # None: the element was removed

    @property
    def kind(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def deleted(self) -> bool:
        return self.data is None

    @property
    def version(self) -> tuple[int, int, str]:
        """The order of two versions of one element: the later stamp wins, the device id breaks ties."""
        return (self.stamp.wall_ms, self.stamp.counter, self.device)

    def body(self, encoder: str) -> bytes:
        """The record as it travels (and as the state file keeps it), without its MAC."""
        return json.dumps({"v": FORMAT_VERSION, "enc": encoder, "key": self.key, "t": list(self.stamp),
                           "dev": self.device, "data": self.data},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def supersedes(new: Record, old: Record) -> bool:
    """Whether ``new`` replaces ``old`` (two versions of one element). Last writer wins, except that a person
    once removed stays removed: their id never comes back (enrolling the name again makes a new person)."""
    if new.kind == "person" and new.deleted != old.deleted:
        return new.deleted
    if new.version != old.version:
        return new.version > old.version
    return new.body("") > old.body("")  # one device never writes two versions with one stamp; total anyway


# --- keys and ids ---------------------------------------------------------------------------------------------

def person_key(person_id: str) -> str:
    return f"person/{person_id}"


def face_key(person_id: str, face_id: str) -> str:
    return f"face/{person_id}/{face_id}"


def negative_key(face_id: str) -> str:
    return f"negative/{safe_negative_id(face_id)}"


def setting_key(name: str) -> str:
    return f"setting/{name}"


def safe_negative_id(face_id: str) -> str:
    """A negative's id as a key (and topic) level: itself when it is letters, digits and ``._-``, else a digest."""
    if NEGATIVE_ID.fullmatch(face_id):
        return face_id
    return "h" + hashlib.sha256(face_id.encode("utf-8")).hexdigest()[:32]


def embedding_face_id(embedding: np.ndarray) -> str:
    """The id of an enrolled face that has no photo record: a digest of its embedding at 4 decimals (the gallery
    file keeps 6, so reading it back gives the same id)."""
    rounded = np.round(np.asarray(embedding, np.float64), 4) + 0.0  # + 0.0: no negative zeros
    return "e" + hashlib.sha256(rounded.tobytes()).hexdigest()[:31]


def encode_embedding(embedding: np.ndarray) -> str:
    return base64.b64encode(np.asarray(embedding, "<f4").tobytes()).decode("ascii")


def decode_embedding(text: Any, size: int) -> np.ndarray:
    """An embedding of ``size`` float32 values, finite and not zero; ValueError otherwise."""
    if not isinstance(text, str) or len(text) > 4 * (4 * size + 2) // 3 + 4:
        raise ValueError("embedding is not base64 text of the right length")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("embedding is not base64") from None
    if len(raw) != 4 * size:
        raise ValueError(f"embedding of {len(raw) // 4} values, this device's model makes {size}")
    values = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(values).all() or not np.linalg.norm(values) > 0:
        raise ValueError("embedding is zero, NaN or infinite")
    return values


# --- the wire -------------------------------------------------------------------------------------------------

def mac(key: bytes, body: bytes) -> str:
    return hmac.new(key, MAC_DOMAIN + body, hashlib.sha256).hexdigest()


def seal(record: Record, encoder: str, key: bytes) -> bytes:
    """The message for ``record``: its MAC, a space, its body."""
    body = record.body(encoder)
    return mac(key, body).encode("ascii") + b" " + body


def max_message_bytes(max_crop_bytes: int) -> int:
    """The largest message a device accepts: a record's body plus a crop of ``max_crop_bytes`` in base64."""
    return 65 + MAX_BODY_BYTES + 4 * (max_crop_bytes + 2) // 3


def unseal(payload: bytes, key: bytes, limit: int) -> bytes:
    """The body of a message whose MAC is right; ``Refused`` (too_large, auth) otherwise."""
    if len(payload) > limit:
        raise Refused("too_large", f"{len(payload):,} bytes, more than the {limit:,} a record may have")
    tag, _, body = payload.partition(b" ")
    expected = mac(key, body).encode("ascii")
    if len(tag) != len(expected) or not hmac.compare_digest(tag, expected):
        raise Refused("auth", "its MAC does not match the household key (another key, or forged)")
    return body


def open_record(topic_key: str, payload: bytes, key: bytes, encoder: str, embedding_size: int,
                max_crop_bytes: int, now_ms: int, max_skew_ms: int) -> Record:
    """The record a message on ``<prefix>/sync/<encoder>/r/<topic_key>`` carries, checked through and through."""
    body = unseal(payload, key, max_message_bytes(max_crop_bytes))
    record = parse_body(body, encoder, embedding_size, max_crop_bytes)
    if record.key != topic_key:
        raise Refused("malformed", f"a record of {record.key} published on the topic of {topic_key}")
    if record.stamp.wall_ms > now_ms + max_skew_ms:
        ahead = (record.stamp.wall_ms - now_ms) / 1000
        raise Refused("future", f"{record.key} from {record.device} is stamped {ahead:,.0f} s ahead of this "
                                "device's clock (check both clocks: NTP)")
    return record


def parse_body(body: bytes, encoder: str, embedding_size: int, max_crop_bytes: int) -> Record:
    """A record from its body (a message's, or the state file's); ``Refused("malformed")`` for anything wrong."""
    try:
        raw = parse_json(body, "a record", EdgefaceError)  # the device's one reader: UTF-8, depth bounded
    except EdgefaceError as exc:
        raise Refused("malformed", str(exc)) from None
    try:
        return _parse(raw, encoder, embedding_size, max_crop_bytes)
    except (KeyError, TypeError, ValueError, GalleryError) as exc:
        where = raw.get("key") if isinstance(raw, dict) and isinstance(raw.get("key"), str) else "a record"
        raise Refused("malformed", f"{str(where)[:80]}: {exc}") from None


def _parse(raw: Any, encoder: str, size: int, max_crop_bytes: int) -> Record:
    if not isinstance(raw, dict) or set(raw) != {"v", "enc", "key", "t", "dev", "data"}:
        raise ValueError("not a record (fields v, enc, key, t, dev, data)")
    if raw["v"] != FORMAT_VERSION:
        raise ValueError(f"record format {raw['v']!r}; this edgeface reads {FORMAT_VERSION}")
    if raw["enc"] != encoder:
        raise ValueError(f"made for embedding {str(raw['enc'])[:40]!r}, this device's is {encoder}")
    key = raw["key"]
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"unknown key {str(key)[:80]!r}")
    stamp = raw["t"]
    if not (isinstance(stamp, list) and len(stamp) == 2 and all(type(v) is int and 0 <= v < 1 << 53 for v in stamp)):
        raise ValueError("bad stamp")
    device = raw["dev"]
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        raise ValueError("bad device id")
    data = raw["data"]
    if data is not None:
        data = _check_data(key, data, size, max_crop_bytes)
    return Record(key, Stamp(*stamp), device, data)


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} must be text of at most {limit} characters")
    return value


def _fields(data: Any, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    if not isinstance(data, dict) or not required <= set(data) <= required | optional:
        raise ValueError(f"data must have the fields {', '.join(sorted(required))}")
    return data


def _check_data(key: str, data: Any, size: int, max_crop_bytes: int) -> dict[str, Any]:
    kind, _, rest = key.partition("/")
    if kind == "person":
        data = _fields(data, {"name", "added"})
        if check_name(_text(data["name"], "name")) != data["name"]:
            raise ValueError("the name is not in its stored form")
        _text(data["added"], "added", 40)
    elif kind == "face":
        data = _fields(data, {"embedding", "photo", "added", "order"}, {"crop"})
        decode_embedding(data["embedding"], size)
        _text(data["added"], "added", 40)
        if type(data["order"]) is not int or not 0 <= data["order"] < 1 << 31:
            raise ValueError("order must be a small whole number")
        photo = data["photo"]
        if photo is not None:
            if not isinstance(photo, dict) or len(photo) > 8 or "sha256" not in photo:
                raise ValueError("photo must be a record with a sha256")
            for name, value in photo.items():
                _text(name, "a photo field's name", 32)
                _text(value, f"photo field {name}")
            if photo["sha256"] != rest.split("/")[1]:
                raise ValueError("the photo's sha256 is not the face's id")
        if "crop" in data:
            _check_crop(data["crop"], max_crop_bytes)
    elif kind == "negative":
        data = _fields(data, {"id", "embedding", "of", "added", "reason"})
        if safe_negative_id(_text(data["id"], "id")) != rest:
            raise ValueError("the face's id is not the key's")
        decode_embedding(data["embedding"], size)
        _text(data["added"], "added", 40)
        _text(data["reason"], "reason")
        of = data["of"]
        if not isinstance(of, dict) or len(of) > 1:
            raise ValueError("of must be {}, {\"person\": id} or {\"name\": name}")
        if "person" in of and not (isinstance(of["person"], str) and PERSON_ID.fullmatch(of["person"])):
            raise ValueError("of.person must be a person id")
        if "name" in of and check_name(_text(of["name"], "of.name")) != of["name"]:
            raise ValueError("of.name is not in its stored form")
        if of and not {"person", "name"} & set(of):
            raise ValueError("of must be {}, {\"person\": id} or {\"name\": name}")
    elif kind == "setting":
        data = _fields(data, {"value"})
        if rest not in SETTINGS:
            raise ValueError(f"unknown setting {rest!r}")
        value = data["value"]
        if rest == "calibration":
            if value is not None and (not isinstance(value, dict) or len(json.dumps(value)) > MAX_CALIBRATION_BYTES):
                raise ValueError(f"calibration must be a table of at most {MAX_CALIBRATION_BYTES} bytes")
        elif value is not None:
            low, high = THRESHOLD_RANGES[SETTINGS[rest]]
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and low <= value <= high):
                raise ValueError(f"{rest} must be a number in [{low:g}, {high:g}]")
    else:  # epoch
        data = _fields(data, {"id"})
        if not (isinstance(data["id"], str) and EPOCH_ID.fullmatch(data["id"])):
            raise ValueError("bad epoch id")
    return data


def _check_crop(text: Any, max_crop_bytes: int) -> None:
    if not isinstance(text, str) or len(text) > 4 * (max_crop_bytes + 2) // 3:
        raise ValueError(f"crop larger than {max_crop_bytes:,} bytes")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("crop is not base64") from None
    if not raw.startswith(JPEG_MAGIC):
        raise ValueError("crop is not a JPEG")


def crop_bytes(data: Mapping[str, Any]) -> bytes | None:
    """A face record's crop (already checked), or None."""
    text = data.get("crop")
    return base64.b64decode(text) if isinstance(text, str) else None
