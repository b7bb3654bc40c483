"""Latency benchmarks (pytest-benchmark). See docs/benchmarks.md.

    pytest benchmarks/bench_latency.py                  # small tier: MobileNetV2 96x96, about a minute
    pytest benchmarks/bench_latency.py --full           # + MobileNetV2, ResNet50, VGG16 at 224x224
    EDGEFACE_BENCH_FULL=1 pytest benchmarks/bench_latency.py                  # the same
    pytest benchmarks/bench_latency.py --benchmark-json=artifacts/benchmarks.json
    python benchmarks/check_speedup.py artifacts/benchmarks.json  # CI: int8 must beat float32

Files named ``bench_*.py`` here are collected as test modules (the project's ``testpaths`` is ``tests``, so
the default test run never starts a benchmark). Models are built once per session in a temporary folder.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import pytest
from benchmodels import PRECISIONS, TIERS, BenchModel, build_bundles, cache_key, calibration_faces
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CELEBA_CSV = SHARED / "data" / "celeba-299" / "labels.csv"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEFACE_PROGRESS", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="edgeface: also benchmark MobileNetV2, ResNet50 and VGG16 at 224x224 (slow to build)")


def pytest_configure(config: pytest.Config) -> None:
    cache = config.cache.mkdir("edgeface-bench-cache") if getattr(config, "cache", None) else "/tmp/edgeface-bench"
    os.environ.setdefault("EDGEFACE_CACHE", str(cache))
    if (SHARED / "weights").is_dir():
        os.environ.setdefault("EDGEFACE_WEIGHTS_DIR", str(SHARED / "weights"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    """Collect ``bench_*.py`` unless pytest does itself (a file named on the command line, or one that
    ``python_files`` matches): never twice."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):  # named on the command line: pytest collects it itself
        return None
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def _tiers(config: pytest.Config) -> list[BenchModel]:
    full = config.getoption("--full", default=False) or os.environ.get("EDGEFACE_BENCH_FULL") == "1"
    return list(TIERS["small"]) + (list(TIERS["full"]) if full else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``bench_model`` runs each benchmark for every model of the chosen tiers."""
    if "bench_model" in metafunc.fixturenames:
        models = _tiers(metafunc.config)
        metafunc.parametrize("bench_model", models, ids=[m.key for m in models], scope="session")


@pytest.fixture(scope="session")
def shared_csv() -> Path | None:
    """Real faces for int8 calibration when ../shared is here, else None (synthetic faces are used)."""
    return CELEBA_CSV if CELEBA_CSV.is_file() else None


@pytest.fixture(scope="session")
def bench_bundles(bench_model: BenchModel, shared_csv: Path | None, request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{precision: bundle path} for one benchmark model.

    Converting four precisions takes a minute or more, so the bundles are kept in pytest's cache folder
    (``.pytest_cache``, never committed) under a key of everything that shapes them: the code that builds and
    converts them, the TensorFlow version and the calibration source. A fresh clone (CI) builds them once.
    """
    folder = Path(request.config.cache.mkdir("edgeface-bench-models")) / cache_key(bench_model, shared_csv)
    bundles = {p: folder / f"{bench_model.key}-{p}.edgeface" for p in PRECISIONS}
    if all(path.is_file() for path in bundles.values()):
        return bundles
    work = tmp_path_factory.mktemp(f"bench-{bench_model.key}")
    faces, _ = calibration_faces(bench_model.input_size, bench_model.calibration, shared_csv, work,
                                 bench_model.backbone)
    built = build_bundles(bench_model, work, faces)
    folder.mkdir(parents=True, exist_ok=True)
    for precision, path in built.items():
        os.replace(path, bundles[precision])  # write_bundle was atomic; so is the move
    return bundles


@pytest.fixture(scope="session")
def bundle_memory(bench_bundles: dict[str, Path]) -> dict[str, Any]:
    """{precision: MemoryUsage} of a fresh process loading and running each bundle (1 thread)."""
    from edgeface.eval.memprobe import measure_memory

    return {precision: measure_memory(path, num_threads=1) for precision, path in bench_bundles.items()}


@pytest.fixture(scope="session")
def frames() -> dict[int, Any]:
    """Synthetic 640x480 frames with 1 and 3 faces: {faces: RGB image}."""
    from edgeface.eval.bench import synthetic_frames

    return {n: image for _, image, n in synthetic_frames((1, 3))}



class ResultRows:
    """Rows measured by the tests of one module, one results file per name."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, name: str, row: dict[str, Any], **about: Any) -> None:
        """Add ``row`` to results/``name``.json; ``about`` (the setup the rows share) is kept from the first."""
        self.files.setdefault(name, {**about, "rows": []})["rows"].append(row)


@pytest.fixture(scope="module")
def result_rows() -> Any:
    """Collects a module's measured rows and writes them as results/<name>.json when the module ends (only
    what was measured: a test that failed added nothing)."""
    rows = ResultRows()
    yield rows
    for name, data in rows.files.items():
        write_result(name, data)
