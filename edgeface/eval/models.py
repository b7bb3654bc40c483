"""What a model file is, read from its metadata alone: no TensorFlow, no LiteRT, no weights loaded.

Evaluation, benchmarks and reports name, group and match models with this; a ``.keras`` model is only
loaded (importing TensorFlow) when it is actually run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeface.core.bundle import SUFFIX, read_manifest
from edgeface.core.errors import BundleError, ModelError
from edgeface.core.fileio import file_sha256
from edgeface.core.modelio import MODEL_NAME, read_metadata
from edgeface.core.spec import ModelSpec

KERAS = "keras"  # the "precision" of a model before conversion


@dataclass(frozen=True)
class ModelInfo:
    """A model (``.keras``) or bundle (``.edgeface``) and what its metadata says about it."""

    path: Path
    kind: Literal["keras", "bundle"]
    spec: ModelSpec
    precision: str  # float32, float16, dynamic, int8, or "keras"
    size_bytes: int  # the TFLite flatbuffer for a bundle, the .keras file otherwise
    sha256: str  # of the flatbuffer or the .keras file: matches a model across machines and paths
    source_sha256: str | None = None  # the .keras a bundle was converted from (a .keras: itself)
    file_bytes: int = 0  # the file itself: for a bundle, the deflated zip that is copied to the device

    @property
    def backbone(self) -> str:
        return self.spec.backbone

    @property
    def name(self) -> str:
        """A short name: the bundle's file stem, or the folder a ``model.keras`` was trained into."""
        if self.kind == "bundle":
            return self.path.stem
        return self.path.parent.name if self.path.name == MODEL_NAME else self.path.stem


def describe_model(path: str | Path) -> ModelInfo:
    """Read a bundle's manifest or a ``model.keras``'s ``metadata.json``. Raises a one-line error."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_NAME).is_file():
        path = path / MODEL_NAME
    if path.suffix == ".keras":
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        metadata = read_metadata(path)
        spec = ModelSpec.from_dict(metadata["spec"])
        digest = file_sha256(path)
        return ModelInfo(path, "keras", spec, KERAS, path.stat().st_size, digest, digest, path.stat().st_size)
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder")
    try:
        manifest = read_manifest(path)
    except BundleError:
        if path.suffix == SUFFIX:
            raise
        raise ModelError(f"{path}: not a model: give a {SUFFIX} bundle, a .keras model or the folder "
                         "`edgeface train` wrote") from None
    try:
        spec = ModelSpec.from_dict(manifest["spec"])
    except KeyError:
        raise ModelError(f"{path}: bundle manifest has no model spec") from None
    source = manifest.get("source_model") or {}
    return ModelInfo(path, "bundle", spec, str(manifest.get("precision", "?")), int(manifest.get("model_bytes", 0)),
                     str(manifest.get("model_sha256", "")), source.get("sha256"),
                     path.stat().st_size if path.is_file() else 0)


def display_names(models: Sequence[ModelInfo]) -> list[str]:
    """Short names for tables; where two models would share one, their paths instead."""
    names = [m.name for m in models]
    return [str(m.path) if names.count(n) > 1 else n for m, n in zip(models, names)]
