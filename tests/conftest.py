"""Shared fixtures: the real data in ../shared, and small models trained once per test session.

``EDGEFACE_SHARED`` points at the shared folder (default: ``../shared`` beside the repository). Tests that
need it skip with the reason when it is absent.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA = SHARED / "data" / "celeba-299"
WEIGHTS = SHARED / "weights"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEFACE_PROGRESS", "0")


def pytest_configure(config: pytest.Config) -> None:
    # Crops and downloads go to a per-run folder, so tests never read a stale cache from an earlier run.
    cache_plugin = getattr(config, "cache", None)  # absent under `-p no:cacheprovider`
    cache = Path(cache_plugin.mkdir("edgeface-cache")) if cache_plugin else Path("/tmp/edgeface-test-cache")
    os.environ.setdefault("EDGEFACE_CACHE", str(cache))
    # Enrolled people live in a state folder: never read or write a developer's real gallery.
    os.environ.setdefault("EDGEFACE_STATE_DIR", str(cache / "state"))
    if WEIGHTS.is_dir():
        os.environ.setdefault("EDGEFACE_WEIGHTS_DIR", str(WEIGHTS))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not CELEBA.joinpath("labels.csv").is_file():
        pytest.skip(f"shared data not found at {SHARED} (set EDGEFACE_SHARED to the folder holding data/celeba-299)")
    return SHARED


@pytest.fixture(scope="session")
def celeba_csv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "celeba-299" / "labels.csv"


@pytest.fixture(scope="session")
def celeba_people_csv(celeba_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real subset: the 6 people with the most photos, all their photos (about 180)."""
    from edgeface.data.manifest import load_dataset, write_csv

    data = load_dataset(celeba_csv)
    counts = data.counts("identity")
    people = sorted(counts, key=lambda p: (-counts[p], p))[:6]
    path = tmp_path_factory.mktemp("celeba6") / "labels.csv"
    return write_csv([s for s in data.samples if s.identity in people], path)


# --- small models, trained once per session ---------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own synthetic faces: 6 people x 20 photos, labelled for all three heads."""
    from edgeface.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), people=6, photos_per_person=20, seed=0)


@pytest.fixture(scope="session")
def tiny_model(synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64x64 toy-backbone model trained for a few seconds on the synthetic set: model.keras path."""
    from edgeface.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-model")
    result = train(TrainConfig(data=synthetic_csv, out=out, backbone="tiny", weights="none", input_size=64,
                               epochs=12, patience=12, embedding_size=32, verbose=0), on_log=lambda _: None)
    return result.model_path


@pytest.fixture(scope="session")
def tiny_bundles(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model in all four precisions: {precision: bundle path}."""
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model

    out = tmp_path_factory.mktemp("tiny-bundles")
    results = convert_model(tiny_model, ["float32", "float16", "dynamic", "int8"], out,
                            ConvertOptions(min_agreement=0.0), progress=False, on_log=lambda _: None)
    return {r.precision: r.bundle_path for r in results}


@pytest.fixture(scope="session")
def celeba_model(celeba_people_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNetV2 (shared ImageNet weights) at 96x96 with heads trained on 6 real people: model.keras path."""
    if not (WEIGHTS / "mobilenet_v2_1.0_224_imagenet_notop.weights.h5").is_file():
        pytest.skip(f"ImageNet MobileNetV2 weights not found in {WEIGHTS}")
    from edgeface.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("celeba-model")
    result = train(TrainConfig(data=celeba_people_csv, out=out, backbone="mobilenetv2", weights="imagenet",
                               input_size=96, frozen_epochs=40, epochs=0, patience=8, embedding_size=64,
                               verbose=0), on_log=lambda _: None)
    return result.model_path


@pytest.fixture(scope="session")
def celeba_bundle(celeba_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``celeba_model`` as a full-int8 bundle."""
    from edgeface.convert.options import ConvertOptions
    from edgeface.convert.pipeline import convert_model

    out = tmp_path_factory.mktemp("celeba-bundle")
    (result,) = convert_model(celeba_model, ["int8"], out, ConvertOptions(min_agreement=0.0), progress=False,
                              on_log=lambda _: None)
    return result.bundle_path


@pytest.fixture()
def daemon_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the daemon logs in this process, whatever earlier tests did to logging (the CLI's logging setup
    stops ``edgeface.daemon`` from propagating, so ``caplog`` alone sees nothing after it)."""
    logger = logging.getLogger("edgeface.daemon")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, "edgeface.daemon")
    yield caplog
    logger.removeHandler(caplog.handler)
