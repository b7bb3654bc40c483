"""The bundle: one file that carries a TFLite model and everything the device needs to use it.

A bundle (``*.edgeface``) is a zip archive with two or three members:

* ``model.tflite``: the converted model, with the signature ``serving_default`` whose input is ``image`` and
  whose outputs are named ``identity``, ``emotion``, ``gender`` (and ``embedding`` when present);
* ``bundle.json``: the manifest, described by :class:`Bundle` (format version, model spec with labels, input
  size, scaling and crop geometry, precision and quantization parameters, the source model's fingerprint,
  the accuracy measured at conversion, and the SHA-256 of ``model.tflite``);
* ``identity_centres.f32`` (optional): the trained people's centres, :class:`IdentityCentres`, with which the
  device computes identity from the ``embedding`` output in float (``edgeface.runtime.engine``);
* ``head_emotion.f32``, ``head_gender.f32``, ``head_identity.f32`` (optional): a head's last layer,
  :class:`FloatHead`, which the device applies in float to the output the head reads (``features_<name>``; for a
  logistic-regression identity head, the ``embedding``; for an emotion head fitted on the mouth's shape, the
  ``mouth_shape`` measured on the landmarks beside the crop, ``edgeface.faces.geometry``).

Reading a bundle needs numpy and the standard library: no TensorFlow, no LiteRT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from edgeface.core.errors import BundleError, ModelError
from edgeface.core.fileio import require_regular_file, write_atomic
from edgeface.core.gallery import THRESHOLD_RANGES
from edgeface.core.reader import SHA256_HEX, Table, parse_json, shown
from edgeface.core.spec import EMBEDDING_NAME, FEATURES_PREFIX, HEADS, MOUTH_SHAPE, MOUTH_SHAPE_SIZE, ModelSpec
from edgeface.core.version import __version__

BUNDLE_FORMAT = "edgeface-bundle"
BUNDLE_VERSION = 1  # bump when a reader of the old version could misread the new one
SUFFIX = ".edgeface"
MODEL_MEMBER = "model.tflite"
MANIFEST_MEMBER = "bundle.json"
PRECISIONS = ("float32", "float16", "dynamic", "int8")
# Identity confidence below which a face is "unknown", for a bundle whose manifest sets none.
DEFAULT_IDENTITY_THRESHOLD = 0.5
# A bundle is checked against these before a byte is inflated (a 1 MB bundle can claim a 1 GiB member),
# and they are what a bundle can really need: the largest model edgeface makes (float32 ResNet50) is about
# 95 MB, the default one 6 MB in int8; a Pi Zero 2 has 512 MB in all.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODEL_BYTES = 128 << 20
MAX_BUNDLE_BYTES = MAX_MODEL_BYTES + MAX_MANIFEST_BYTES + (1 << 20)  # deflate may grow a member a little
MAX_MEMBERS = 8  # a bundle has 2 or 3
MAX_DIRECTORY_BYTES = 64 << 10
_MEMBER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CENTRES_MEMBER = "identity_centres.f32"
MAX_CENTRES_SCALE = 1000.0  # a cosine-softmax scale beyond this is a one-hot: not something training fits
FLOAT_HEAD_MEMBER = "head_{}.f32"
MAX_FEATURES = 65536  # the widest features a float head may read (the widest backbone's pooled output is 2048)


@dataclass(frozen=True)
class IdentityCentres:
    """The trained people's centres: identity computed in float on the device, from the model's embedding.

    ``centres`` (P, D) float32: one unit row per trained person, in the order of the identity labels (a zero
    row for a person who had no training face: never named); ``scale``: the cosine-softmax scale. Stored in
    a bundle as ``identity_centres.f32`` (little-endian float32, row after row) and an ``identity_centres``
    manifest entry (``shape``, ``scale``, ``sha256``).
    """

    centres: np.ndarray = field(repr=False)
    scale: float

    def manifest_entry(self) -> dict[str, Any]:
        return {"file": CENTRES_MEMBER, "shape": list(self.centres.shape), "scale": float(self.scale),
                "sha256": sha256_bytes(self.to_bytes())}

    def to_bytes(self) -> bytes:
        return np.ascontiguousarray(self.centres, dtype="<f4").tobytes()


@dataclass(frozen=True)
class FloatHead:
    """A head's last layer, a softmax over ``features @ kernel + bias``, which the device computes in float from the
    model's ``features`` output (a signature output name, ``features_<name>``) instead of reading the head's
    quantized output: in int8 only the features are rounded, not the head's decision. ``features`` may also be
    ``mouth_shape``: the head reads the mouth's shape the aligner measured, and the model's precision does not
    touch it.

    ``kernel`` (F, C) and ``bias`` (C,) float32, C the head's labels in order. Stored in a bundle as
    ``head_<head>.f32`` (little-endian float32: the kernel row after row, then the bias) and a ``float_heads``
    manifest entry per head (``features``, ``shape``, ``sha256``).
    """

    features: str
    kernel: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)

    def manifest_entry(self, head: str) -> dict[str, Any]:
        return {"file": FLOAT_HEAD_MEMBER.format(head), "features": self.features,
                "shape": list(self.kernel.shape), "sha256": sha256_bytes(self.to_bytes())}

    def to_bytes(self) -> bytes:
        return (np.ascontiguousarray(self.kernel, dtype="<f4").tobytes()
                + np.ascontiguousarray(self.bias, dtype="<f4").tobytes())

    def to_json(self) -> dict[str, Any]:
        """As a training run's metadata keeps a head fitted outside the Keras model (:meth:`from_json`)."""
        return {"features": self.features, "kernel": np.asarray(self.kernel, float).tolist(),
                "bias": np.asarray(self.bias, float).tolist()}

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> "FloatHead":
        return cls(str(entry["features"]), np.asarray(entry["kernel"], np.float32),
                   np.asarray(entry["bias"], np.float32))


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle."""

    path: Path
    spec: ModelSpec
    precision: str
    model_bytes: bytes = field(repr=False)
    manifest: Mapping[str, Any] = field(repr=False)
    identity_centres: IdentityCentres | None = None  # None: identity is the model's own output
    float_heads: Mapping[str, FloatHead] = field(default_factory=dict)  # heads computed in float on the device

    @property
    def model_sha256(self) -> str:
        return str(self.manifest["model_sha256"])

    @property
    def accuracy(self) -> Mapping[str, Any]:
        return self.manifest.get("accuracy", {})

    @property
    def identity_threshold(self) -> float:
        value = self.manifest.get("identity_threshold")
        return DEFAULT_IDENTITY_THRESHOLD if value is None else float(value)

    @property
    def model_size(self) -> int:
        return len(self.model_bytes)

    @property
    def embedding_id(self) -> str:
        """Which embedding space the model's ``embedding`` output lives in: bundles with the same id can compare
        (and share) each other's enrolled faces. ``convert`` records it (``dlib-<digest>`` when the embedding is
        dlib's own descriptor, unchanged by training: every such bundle shares it, whatever its heads and
        precision; else ``model-<digest>`` of the source Keras model: its precisions share it); bundles written
        before it was recorded are their source model's (else their own model's)."""
        embedding = self.manifest.get("embedding")
        recorded = embedding.get("id") if isinstance(embedding, Mapping) else None
        if isinstance(recorded, str) and EMBEDDING_ID.fullmatch(recorded):
            return recorded
        source = self.manifest.get("source_model")
        digest = source.get("sha256") if isinstance(source, Mapping) else None
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{16,64}", digest)):
            digest = self.model_sha256
        return model_embedding_id(digest)


EMBEDDING_ID = re.compile(r"(?:dlib|model)-[0-9a-f]{16}")


def model_embedding_id(model_sha256: str) -> str:
    """The embedding id of a model whose embedding is its own (trained): ``model-`` and 16 hex digits of its
    digest."""
    return f"model-{model_sha256[:16]}"


def dlib_embedding_id(dat_sha256: str) -> str:
    """The embedding id of every model whose embedding is dlib's descriptor as dlib's weights file gives it."""
    return f"dlib-{dat_sha256[:16]}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(path: str | Path, model_bytes: bytes, spec: ModelSpec, precision: str,
                 extra: Mapping[str, Any] | None = None, identity_centres: IdentityCentres | None = None,
                 float_heads: Mapping[str, FloatHead] | None = None) -> Path:
    """Write a bundle atomically (a reader never sees half a file). ``extra`` adds manifest fields;
    ``identity_centres`` makes the device name trained people by nearest centre on the embedding, in float;
    ``float_heads`` (per head) makes it compute those heads' last layer in float from the model's features."""
    if precision not in PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    path = Path(path)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "edgeface_version": __version__,
        "precision": precision,
        "spec": spec.to_dict(),
        "model_file": MODEL_MEMBER,
        "model_sha256": sha256_bytes(model_bytes),
        "model_bytes": len(model_bytes),
    }
    manifest.update(extra or {})
    if identity_centres is not None:
        manifest["identity_centres"] = identity_centres.manifest_entry()
    float_heads = dict(float_heads or {})
    if float_heads:
        manifest["float_heads"] = {head: head_layer.manifest_entry(head) for head, head_layer in float_heads.items()}
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_MEMBER, json.dumps(manifest, indent=2, sort_keys=True))
            archive.writestr(MODEL_MEMBER, model_bytes)
            if identity_centres is not None:
                archive.writestr(CENTRES_MEMBER, identity_centres.to_bytes())
            for head, head_layer in float_heads.items():
                archive.writestr(FLOAT_HEAD_MEMBER.format(head), head_layer.to_bytes())

    return write_atomic(path, write)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Only the manifest, every field checked (cheap: the model is not read)."""
    path = Path(path)
    with _open_archive(path) as archive:
        return _parse_manifest(path, archive)[0]


@contextlib.contextmanager
def _open_archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """The bundle as a zip archive, after bounding what opening it costs: the file's size, and its central
    directory (which ``zipfile`` reads whole, one object per entry) from the end record, before ``zipfile``
    parses it. Errors while it is open are one ``BundleError`` line too."""
    require_regular_file(path, BundleError, "bundle file")
    try:
        with open(path, "rb") as handle:
            _check_end_record(path, handle)
            with zipfile.ZipFile(handle) as archive:
                if len(archive.infolist()) > MAX_MEMBERS:
                    raise BundleError(f"{path}: {len(archive.infolist())} members: not a bundle edgeface wrote")
                yield archive
    except FileNotFoundError:
        raise BundleError(f"{path}: bundle not found") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a folder, not a bundle file") from None
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            ValueError, zlib.error) as exc:  # unsupported compression, encrypted member, bad names
        raise BundleError(f"{path}: not a readable bundle (truncated or not an edgeface bundle: {exc})") from None


def _check_end_record(path: Path, handle: Any) -> None:
    """Refuse a bundle larger than any bundle can be, or whose end record announces more members or a
    larger central directory than a bundle has (or the zip64 records no bundle needs)."""
    size = os.fstat(handle.fileno()).st_size
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: {size:,} bytes, more than the {MAX_BUNDLE_BYTES:,} a bundle may have: "
                          "not a bundle edgeface wrote")
    tail_size = min(size, 22 + 0xFFFF)  # the end record and the longest comment it may have
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # no whole end record: zipfile says it is not a zip file
    entries, directory_size = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries > MAX_MEMBERS or directory_size > MAX_DIRECTORY_BYTES or tail.rfind(b"PK\x06\x07", 0, at) >= 0:
        raise BundleError(f"{path}: {entries:,} members in a central directory of {directory_size:,} bytes: "
                          "not a bundle edgeface wrote")


def _member_info(path: Path, archive: zipfile.ZipFile, name: str, limit: int, size: int | None = None
                 ) -> zipfile.ZipInfo:
    """A member's entry, its declared size checked against ``limit`` and the manifest's ``size``."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise BundleError(f"{path}: {name} is missing from the bundle") from None
    if info.file_size > limit:
        raise BundleError(f"{path}: {name} inflates to {info.file_size:,} bytes, more than the {limit:,} a bundle "
                          f"member may have: not a bundle edgeface wrote")
    if size is not None and info.file_size != size:
        raise BundleError(f"{path}: {name} inflates to {info.file_size:,} bytes, but {MANIFEST_MEMBER} says "
                          f"{size:,}: the bundle is corrupt or was modified")
    return info


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member whose declared size was checked: inflation stops there (a member that inflates further fails
    its CRC check)."""
    with archive.open(info) as member:
        return member.read(info.file_size)


def _member_sha256(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """The SHA-256 of a member, inflated block by block: what it costs does not grow with what it claims."""
    digest = hashlib.sha256()
    with archive.open(info) as member:
        for block in iter(lambda: member.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_manifest(path: Path, archive: zipfile.ZipFile) -> tuple[dict[str, Any], ModelSpec]:
    """The manifest, every field the device uses checked (``edgeface.core.reader``), and its model spec."""
    if MANIFEST_MEMBER not in archive.namelist():
        raise BundleError(f"{path}: no {MANIFEST_MEMBER} inside: not an edgeface bundle")
    info = _member_info(path, archive, MANIFEST_MEMBER, MAX_MANIFEST_BYTES)
    where = f"{path}: {MANIFEST_MEMBER}"
    manifest = Table(parse_json(_read_member(archive, info), where, BundleError), where, BundleError)
    if manifest.get("format", None) != BUNDLE_FORMAT:
        raise BundleError(f"{path}: {MANIFEST_MEMBER} is not an edgeface bundle manifest")
    version = manifest.get("format_version", None)
    if isinstance(version, bool) or version != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {shown(version)} is not supported by edgeface "
                          f"{__version__} (it reads version {BUNDLE_VERSION}); convert the model again with this "
                          "version")
    manifest.choice("precision", PRECISIONS)
    manifest.text("model_file", pattern=_MEMBER_NAME, describe="a member name such as model.tflite",
                  default=MODEL_MEMBER)
    manifest.text("model_sha256", pattern=SHA256_HEX, describe="64 hex digits")
    manifest.integer("model_bytes", 1, MAX_MODEL_BYTES)
    manifest.number("identity_threshold", *THRESHOLD_RANGES["identity_threshold"], default=None, none=True)
    for key in ("created", "edgeface_version", "dataset_fingerprint"):
        manifest.text(key, 256, default=None, none=True)
    manifest.number("embedding_cosine", -1.0, 1.0, default=None, none=True)
    # recorded for people and read by eval; identity_centres is checked against its member by load_bundle
    for key in ("io", "source_model", "conversion", "accuracy", "identity_centres", "float_heads"):
        if manifest.get(key, None) is not None:
            manifest.table(key)
    if manifest.get("embedding", None) is not None:  # which embedding space: devices share faces within one
        manifest.table("embedding").text("id", pattern=EMBEDDING_ID, describe="dlib- or model- and 16 hex digits",
                                         default=None)
    try:
        spec = ModelSpec.from_dict(manifest.get("spec"))
    except ModelError as exc:
        raise BundleError(f"{path}: bad model spec in {MANIFEST_MEMBER}: {exc}") from None
    return manifest.raw, spec


def load_bundle(path: str | Path) -> Bundle:
    """Open and verify a bundle: bounds, format, version, every field of the manifest, the checksum. Every
    failure is one ``BundleError`` line."""
    path = Path(path)
    with _open_archive(path) as archive:
        manifest, spec = _parse_manifest(path, archive)
        member = manifest.get("model_file", MODEL_MEMBER)
        info = _member_info(path, archive, member, MAX_MODEL_BYTES, manifest["model_bytes"])
        # Checked while streaming, before the model is held in memory: a member that is not the model the
        # manifest names costs a block of memory, not its size.
        if _member_sha256(archive, info) != manifest["model_sha256"]:
            raise BundleError(f"{path}: {member} does not match its checksum: the bundle is corrupt or was modified")
        model_bytes = _read_member(archive, info)
        centres_bytes = None
        if manifest.get("identity_centres") is not None:
            # Sized by the model before a byte is read: a manifest may not declare a larger member.
            people, dimensions = _centres_shape(path, manifest["identity_centres"], spec)
            size = people * dimensions * 4
            centres_bytes = _read_member(archive, _member_info(path, archive, CENTRES_MEMBER, MAX_MODEL_BYTES, size))
        head_bytes = {}
        for head, entry in (manifest.get("float_heads") or {}).items():
            features, classes = _float_head_shape(path, head, entry, spec)
            info = _member_info(path, archive, FLOAT_HEAD_MEMBER.format(head), MAX_MODEL_BYTES,
                                (features + 1) * classes * 4)
            head_bytes[head] = _read_member(archive, info)
    if sha256_bytes(model_bytes) != manifest["model_sha256"]:  # changed between the two reads
        raise BundleError(f"{path}: {member} does not match its checksum: the bundle is corrupt or was modified")
    centres = None if centres_bytes is None else _check_centres(path, manifest["identity_centres"], centres_bytes,
                                                                 spec)
    float_heads = {head: _check_float_head(path, head, manifest["float_heads"][head], data, spec)
                   for head, data in head_bytes.items()}
    return Bundle(path=path, spec=spec, precision=manifest["precision"], model_bytes=model_bytes, manifest=manifest,
                  identity_centres=centres, float_heads=float_heads)


def _float_head_shape(path: Path, head: str, entry: Any, spec: ModelSpec) -> tuple[int, int]:
    """A float head's (features, classes) as the manifest gives them: a head of the model, as many classes as
    its labels, features of a sane width."""
    where = f"{path}: {MANIFEST_MEMBER} float_heads"
    if head not in HEADS or not isinstance(entry, Mapping):
        raise BundleError(f"{where}: {head!r} is not a head with a float layer ({', '.join(HEADS)})")
    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)):
        raise BundleError(f"{where}: bad {head} shape {shape!r}")
    classes = len(spec.labels[head])
    if shape[1] != classes or not 0 < shape[0] <= MAX_FEATURES:
        raise BundleError(f"{where}: {head} is {shape[0]} x {shape[1]}, but the model has {classes} {head} labels "
                          f"(and features of 1 to {MAX_FEATURES} values)")
    features = entry.get("features")
    if features == MOUTH_SHAPE and head != "identity":
        if shape[0] != MOUTH_SHAPE_SIZE:
            raise BundleError(f"{where}: {head} reads the {MOUTH_SHAPE} ({MOUTH_SHAPE_SIZE} values), not {shape[0]}")
    elif not (isinstance(features, str) and _MEMBER_NAME.fullmatch(features)
              and (features.startswith(FEATURES_PREFIX) or (head == "identity" and features == EMBEDDING_NAME))):
        raise BundleError(f"{where}: {head} reads {features!r}, not a {FEATURES_PREFIX}<name> output (or, for "
                          f"identity, the {EMBEDDING_NAME}; for the others, the {MOUTH_SHAPE})")
    return shape[0], shape[1]


def _check_float_head(path: Path, head: str, entry: Mapping[str, Any], data: bytes, spec: ModelSpec) -> FloatHead:
    """A float head (its shape checked by ``_float_head_shape``): finite numbers, and the checksum the manifest
    gives."""
    features, classes = _float_head_shape(path, head, entry, spec)
    where = f"{path}: {FLOAT_HEAD_MEMBER.format(head)}"
    if sha256_bytes(data) != entry.get("sha256"):
        raise BundleError(f"{where} does not match its checksum: the bundle is corrupt or was modified")
    values = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(values).all():
        raise BundleError(f"{where}: weights must be finite numbers")
    kernel, bias = values[:features * classes].reshape(features, classes), values[features * classes:]
    return FloatHead(str(entry["features"]), kernel, bias)


def _centres_shape(path: Path, entry: Mapping[str, Any], spec: ModelSpec) -> tuple[int, int]:
    """The centres' shape the manifest gives, which must be the model's: one per trained person, of the
    embedding's size."""
    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)):
        raise BundleError(f"{path}: bad identity_centres shape in {MANIFEST_MEMBER}: {shape!r}")
    people, size = len(spec.labels["identity"]), spec.embedding_size
    if shape != [people, size]:
        raise BundleError(f"{path}: {CENTRES_MEMBER} holds {shape[0]} x {shape[1]} centres, but the model has "
                          f"{people} trained people and embeddings of size {size}")
    return people, size


def _check_centres(path: Path, entry: Mapping[str, Any], data: bytes, spec: ModelSpec) -> IdentityCentres:
    """The centres (their shape checked by ``_centres_shape``): unit (or zero) rows of finite numbers, a
    finite scale above 0, and the checksum the manifest gives."""
    people, size = _centres_shape(path, entry, spec)
    where = f"{path}: {CENTRES_MEMBER}"
    scale = entry.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= MAX_CENTRES_SCALE:
        raise BundleError(f"{where}: scale must be a number in (0, {MAX_CENTRES_SCALE:g}], got {scale!r}")
    if sha256_bytes(data) != entry.get("sha256"):
        raise BundleError(f"{where} does not match its checksum: the bundle is corrupt or was modified")
    centres = np.frombuffer(data, dtype="<f4").reshape(people, size).astype(np.float32)
    norms = np.linalg.norm(centres, axis=1) if np.isfinite(centres).all() else None
    if norms is None or not np.all((norms < 1e-6) | (np.abs(norms - 1) < 1e-3)):
        raise BundleError(f"{where}: centres must be unit vectors (or zero) of finite numbers")
    return IdentityCentres(centres, float(scale))
