"""The models the benchmarks time: built (not trained) and converted with the project's own converter.

Latency does not depend on the weight values, so the heads stay untrained; the architecture, input size and
conversion settings are the real ones (``edgeface.train.model.build_model`` and ``edgeface.convert.tflite``). Full
int8 still needs a calibration set: real face crops from ``../shared`` when it is there, the project's
synthetic faces otherwise.

Tiers:

* ``small`` (default, CI): MobileNetV2 (alpha 1.0) at 96x96, ImageNet weights when ``$EDGEFACE_WEIGHTS_DIR``
  has them. Big enough that int8 shows XNNPACK's real speed-up (a toy CNN is dominated by call overhead and
  shows none), small enough to convert four precisions in about half a minute.
* ``full`` (``pytest benchmarks --full`` or ``EDGEFACE_BENCH_FULL=1``): dlib-resnet at 150x150 (dlib's weights
  when face-recognition-models is installed), MobileNetV2, ResNet50 and VGG16 at 224x224: the backbones of the
  real models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeface.core.bundle import PRECISIONS
from edgeface.core.spec import ATTRIBUTE_LABELS, ModelSpec


@dataclass(frozen=True)
class BenchModel:
    backbone: str
    input_size: int
    people: int  # identity classes
    calibration: int  # faces for int8 calibration

    @property
    def key(self) -> str:
        return f"{self.backbone}-{self.input_size}"


TIERS: dict[str, tuple[BenchModel, ...]] = {
    "small": (BenchModel("mobilenetv2", 96, 6, 64),),
    "full": (BenchModel("dlib-resnet", 150, 299, 100), BenchModel("mobilenetv2", 224, 299, 100),
             BenchModel("resnet50", 224, 299, 100), BenchModel("vgg16", 224, 299, 100)),
}


def _weights(backbone: str) -> str:
    """The backbone's pretrained weights when they are here (no downloads on these machines), else random ones."""
    from edgeface.core.errors import ModelError
    from edgeface.train.model import BACKBONES, resolve_weights

    info = BACKBONES[backbone]
    try:
        found = resolve_weights(backbone, info.weights)
    except ModelError:
        return "none"
    return info.weights if found not in (None, "imagenet") else "none"


def cache_key(model: BenchModel, shared_csv: Path | None) -> str:
    """A hash of what the built bundles depend on, for the cross-session cache in ``conftest.py``."""
    import hashlib
    from importlib import metadata

    repo = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(f"{model}|{shared_csv}|{_weights(model.backbone)}".encode())
    for name in ("tensorflow", "keras"):
        try:
            digest.update(metadata.version(name).encode())
        except metadata.PackageNotFoundError:
            pass
    for source in (Path(__file__), repo / "convert" / "tflite.py", repo / "edgeface" / "train" / "model.py",
                   repo / "edgeface" / "train" / "layers.py", repo / "edgeface" / "train" / "dlib_resnet.py",
                   repo / "edgeface" / "core" / "bundle.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def calibration_faces(size: int, count: int, shared_csv: Path | None, workdir: Path,
                      backbone: str = "mobilenetv2") -> tuple[np.ndarray, str]:
    """Aligned face crops for int8 calibration (as ``backbone`` aligns them), and where they came from."""
    from edgeface.convert.pipeline import select_representative
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.model import BACKBONES

    if shared_csv is not None and shared_csv.is_file():
        source = shared_csv
    else:
        from edgeface.data.synthetic import make_synthetic_dataset

        source = make_synthetic_dataset(workdir / "synthetic", people=6, photos_per_person=max(count // 6 + 2, 4))
    data = load_dataset(source)
    # A few spare photos: some have no detectable face.
    picked = [data.samples[i] for i in select_representative(data.samples, int(count * 1.25) + 4)]
    crops = crop_samples(picked, BACKBONES[backbone].crop, size).crops[:count]
    if len(crops) == 0:
        raise RuntimeError(f"no faces found in {source} for int8 calibration")
    return np.asarray(crops), str(source)


def build_bundles(model: BenchModel, out: Path, calibration: np.ndarray) -> dict[str, Path]:
    """Build the model and write one bundle per precision: {precision: path}."""
    from edgeface.convert.tflite import convert_keras
    from edgeface.core.bundle import write_bundle
    from edgeface.train.model import BACKBONES, build_model

    labels = {"identity": tuple(f"person_{i:03d}" for i in range(model.people)), **ATTRIBUTE_LABELS}
    spec = ModelSpec(labels=labels, input_size=model.input_size, backbone=model.backbone, embedding_size=128,
                     crop=BACKBONES[model.backbone].crop)
    weights = _weights(model.backbone)
    keras_model = build_model(spec, weights=weights).model
    bundles = {}
    for precision in PRECISIONS:
        flatbuffer = convert_keras(keras_model, precision, spec, calibration if precision == "int8" else None)
        bundles[precision] = write_bundle(out / f"{model.key}-{precision}.edgeface", flatbuffer, spec, precision,
                                          extra={"benchmark_model": {"weights": weights, "trained": False}})
    return bundles
