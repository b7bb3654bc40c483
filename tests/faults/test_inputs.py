"""Bad and hostile inputs: one line, the documented exit code, bounded memory, no hang.

Before this suite (issue 25) each of these gave a traceback (exit 1), hung, or passed a memory bomb as
clean; the table in docs/security.md lists what each did then and does now.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import pytest
from helpers.faults import deflate_zeros, error_line, run_cli

GIB = 1 << 30


# --- bundles ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zip_bomb_bundle(tiny_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The int8 bundle with its model member replaced by 1 GiB of zeros that deflate to about 1 MB."""
    source = tiny_bundles["int8"]
    path = tmp_path_factory.mktemp("zip-bomb") / "bomb.edgeface"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("bundle.json", original.read("bundle.json"))
        with bomb.open("model.tflite", "w", force_zip64=True) as member:
            block = bytes(64 << 20)
            for _ in range(GIB // len(block)):
                member.write(block)
    assert path.stat().st_size < 2 << 20
    return path


def test_bundle_member_bomb_is_refused_before_inflating(zip_bomb_bundle: Path, synthetic_csv: Path) -> None:
    """Before: a 2-3 GB peak, and a MemoryError traceback under a Pi's memory. Now: refused from the zip
    entry's declared size, against the manifest's and a cap."""
    done = run_cli("run", "--bundle", str(zip_bomb_bundle), "--source", str(synthetic_csv.parent / "images"),
                   "--max-frames", "1", "--no-http", "--jsonl", "-")
    line = error_line(done, 2)
    assert f"{zip_bomb_bundle}: model.tflite inflates to 1,073,741,824 bytes" in line, line


def test_bundle_member_that_inflates_past_its_declared_size(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """The entry claims the model's real size; the data inflates to 1 GiB: inflation stops at the claim."""
    from edgeface.core.errors import BundleError
    from edgeface.core.bundle import load_bundle

    with zipfile.ZipFile(tiny_bundles["int8"]) as original:
        manifest, model = original.read("bundle.json"), original.read("model.tflite")
    lying = tmp_path / "lying.edgeface"
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bundle.json", manifest)
        archive.writestr("model.tflite", model)
    data = bytearray(lying.read_bytes())
    # Swap the member's compressed data for 1 GiB of deflated zeros, sizes in its headers left as they were.
    with zipfile.ZipFile(lying) as archive:
        info = archive.getinfo("model.tflite")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    bomb = deflate_zeros(GIB)[2:-4]  # raw deflate, as zip stores it
    data[start:start + info.compress_size] = bomb[:info.compress_size].ljust(info.compress_size, b"\0")
    lying.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"lying\.edgeface: not a readable bundle"):
        load_bundle(lying)


def test_special_files_are_refused_not_waited_for(tmp_path: Path, synthetic_csv: Path) -> None:
    """Before: a FIFO given as a bundle or config blocked forever."""
    fifo = tmp_path / "model.edgeface"
    os.mkfifo(fifo)
    images = str(synthetic_csv.parent / "images")
    line = error_line(run_cli("run", "--bundle", str(fifo), "--source", images, "--no-http", timeout=60), 2)
    assert line == f"error: {fifo}: not a regular file (a FIFO): give a bundle file"
    config = tmp_path / "pi.toml"
    os.mkfifo(config)
    line = error_line(run_cli("run", "--config", str(config), timeout=60), 2)
    assert line == f"error: {config}: not a regular file (a FIFO): give a config file"


# --- images ----------------------------------------------------------------------------------------------

def test_png_dimension_bomb_is_refused_before_decoding(png_bomb: Path, dataset: Path) -> None:
    """Before: this 1 MB PNG of 32000 x 32000 pixels passed `data check` as clean at a 6.1 GB peak."""
    assert png_bomb.stat().st_size < 2 << 20
    with dataset.open("a") as handle:
        handle.write(f"{png_bomb},Zoe,happy,female\n")
    done = run_cli("data", "check", str(dataset))
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr[-2000:]
    assert "32000x32000 pixels is more than the 50 megapixels an image may have" in done.stdout + done.stderr


def test_image_read_is_bounded_in_process(png_bomb: Path) -> None:
    import resource

    from edgeface.core.errors import ImageError
    from edgeface.core.imageio import read_image

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="32000x32000 pixels"):
        read_image(png_bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: no decode


def test_fifo_and_device_given_as_images(dataset: Path, tmp_path: Path) -> None:
    """Before: `data check` hung on a FIFO listed as an image (and would read /dev/zero forever)."""
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    with dataset.open("a") as handle:
        handle.write(f"{fifo},Zoe,happy,female\n/dev/zero,Zoe,happy,female\n")
    done = run_cli("data", "check", str(dataset), timeout=60)
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert f"{fifo}: not a regular file (a FIFO)" in out and "/dev/zero: not a regular file (a character device)" in out


# --- CSV and TOML ----------------------------------------------------------------------------------------

def test_csv_that_is_not_utf8(dataset: Path) -> None:
    dataset.write_bytes(dataset.read_bytes() + "caf\u00e9.jpg,Zo\u00eb,happy,female\n".encode("latin-1"))
    line = error_line(run_cli("data", "check", str(dataset), memory=None), 2)
    assert line == f"error: {dataset}:14: not UTF-8 text (byte 0xe9): save the CSV file as UTF-8"


def test_csv_field_over_the_csv_limit(dataset: Path) -> None:
    with dataset.open("a") as handle:
        handle.write("x" * 200_000 + ".jpg,Zoe,happy,female\n")
    line = error_line(run_cli("data", "check", str(dataset), memory=None), 2)
    assert line.startswith(f"error: {dataset}:14: not a readable CSV row (field larger than field limit"), line


def test_nul_in_an_image_path(dataset: Path) -> None:
    with dataset.open("a") as handle:
        handle.write("images/a\0b.jpg,Zoe,happy,female\n")
    line = error_line(run_cli("data", "check", str(dataset), memory=None), 2)
    assert line == f"error: {dataset}:14: the image path contains a NUL byte: not a text CSV file"


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "pi.toml"
    config.write_bytes(b'source = 0\n# caf\xe9\n')
    line = error_line(run_cli("run", "--config", str(config), memory=None), 2)
    assert line == f"error: {config}:2: not UTF-8 text (byte 0xe9): save the config file as UTF-8"


# --- galleries and thresholds ----------------------------------------------------------------------------

def _gallery(path: Path, bundle: Path, **fields: object) -> Path:
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import GALLERY_FORMAT, GALLERY_VERSION

    loaded = load_bundle(bundle)
    size = loaded.spec.embedding_size
    raw = {"format": GALLERY_FORMAT, "format_version": GALLERY_VERSION, "model_sha256": loaded.model_sha256,
           "embedding_size": size, "people": [{"name": "Maya", "embeddings": [[1.0] + [0.0] * (size - 1)]}]}
    raw.update(fields)
    path.write_text(json.dumps(raw))  # json writes NaN as NaN, which json.loads reads back
    return path


def _run(bundle: Path, images: Path, *args: str) -> str:
    done = run_cli("run", "--bundle", str(bundle), "--source", str(images), "--max-frames", "2", "--no-http",
                   "--jsonl", "-", *args)
    return error_line(done, 2)


def test_gallery_person_without_embeddings(tiny_bundles: dict[str, Path], synthetic_csv: Path,
                                           tmp_path: Path) -> None:
    """Before: `run` crashed at the first face (under systemd: a restart loop). Now: refused at start."""
    gallery = _gallery(tmp_path / "g.json", tiny_bundles["int8"], people=[{"name": "Ghost", "embeddings": []}])
    line = _run(tiny_bundles["int8"], synthetic_csv.parent / "images", "--gallery", str(gallery))
    assert line == f"error: {gallery}: 'Ghost' has no embeddings: enroll them again or remove them"


@pytest.mark.parametrize("args, message", [
    (["--similarity-threshold", "-1"], "must be in [0.1, 1]"),        # before: named every face
    (["--similarity-threshold", "nan"], "must be in [0.1, 1]"),
    (["--identity-threshold", "nan"], "must be in [0, 1.01]"),
])
def test_thresholds_out_of_range_are_refused(tiny_bundles: dict[str, Path], synthetic_csv: Path,
                                             args: list[str], message: str) -> None:
    line = _run(tiny_bundles["int8"], synthetic_csv.parent / "images", *args)
    assert message in line, line


def test_nan_threshold_in_a_gallery_file(tiny_bundles: dict[str, Path], synthetic_csv: Path, tmp_path: Path) -> None:
    """Before: a NaN similarity threshold in the gallery silently turned matching off."""
    gallery = _gallery(tmp_path / "g.json", tiny_bundles["int8"], similarity_threshold=math.nan)
    line = _run(tiny_bundles["int8"], synthetic_csv.parent / "images", "--gallery", str(gallery))
    assert line == f"error: {gallery}: similarity_threshold = nan: must be a number in [0.1, 1]"


def test_gallery_files_are_private(tmp_path: Path) -> None:
    """Embeddings are biometric data: the state folder 0700, gallery files 0600 (before: 0755 and 0644)."""
    from edgeface.core.gallery import default_gallery_path, empty_gallery

    state = tmp_path / "state"
    path = default_gallery_path("ab" * 32, state)
    empty_gallery("ab" * 32, 4, path).save()
    assert {p: p.stat().st_mode & 0o777 for p in (state, path.parent, path)} == {
        state: 0o700, path.parent: 0o700, path: 0o600}


def test_keras_is_past_the_safe_mode_bypasses() -> None:
    import re
    import tomllib
    from importlib.metadata import version

    train = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["train"]
    (keras,) = [r for r in train if r.startswith("keras")]
    minimum = tuple(int(x) for x in re.search(r">=([\d.]+)", keras)[1].split("."))
    assert minimum >= (3, 14), keras  # CVE-2026-1462 (TFSMLayer) fixed in 3.14; earlier ones before it
    assert tuple(int(x) for x in version("keras").split(".")[:2]) >= minimum[:2]
