"""Hostile files the device trusts, read by its one reader (``edgeface.core.reader``): galleries, bundle
manifests, config files and secrets. Each case was accepted, split silently, or a traceback before issue 30;
now each is one line naming the file and the field (docs/security.md, "Files the device reads").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from helpers.faults import error_line, run_cli

from edgeface.core.errors import EdgefaceError

SIZE = 8
SHA = "ab" * 32


# --- galleries ---------------------------------------------------------------------------------------------

def gallery_dict() -> dict[str, Any]:
    from edgeface.core.gallery import empty_gallery

    gallery = empty_gallery(SHA, SIZE).with_person("Maya", np.eye(SIZE)[:2], [
        {"file": "a.jpg", "sha256": "1" * 64}, {"file": "b.jpg", "sha256": "2" * 64}])
    return gallery.calibrated(0.6, 0.7, {"far_target": 0.01}).to_dict()


def person(name: str, rows: Any = None) -> dict[str, Any]:
    return {"name": name, "photos": [], "embeddings": np.eye(SIZE)[:1].tolist() if rows is None else rows}


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


GALLERY_ATTACKS = {
    # the examples
    "a non-number similarity threshold": (_set(("similarity_threshold",), "0.7"),
                                          r"similarity_threshold = '0.7': must be a number in \[0.1, 1\]"),
    "a calibration that is not a table": (_set(("calibration",), "calibrated"), r"calibration must be a table"),
    "embeddings of twice the width (split silently into two before)": (
        _set(("people", 0, "embeddings"), [[0.5] * (2 * SIZE)]),
        r"'Maya'.embeddings\[0\]: must be 8 numbers \(the gallery's embedding_size\), not 16 numbers"),
    "an embedding of another width than the others": (
        _set(("people", 0, "embeddings", 1), [0.5] * (SIZE + 4)), r"'Maya'.embeddings\[1\]: must be 8 numbers"),
    "the reserved name 'unknown'": (_set(("people", 0, "name"), "Unknown"), r"people\[0\].name = 'Unknown': not a name"),
    "two people whose names differ by case": (lambda raw: raw["people"].append(person("MAYA")),
                                              r"'MAYA' and 'Maya' are the same name"),
    # and their kind
    "a threshold that is true": (_set(("identity_threshold",), True), r"identity_threshold = True: must be a number"),
    "a far_target that is text": (_set(("calibration", "far_target"), "1%"),
                                  r"calibration.far_target = '1%': must be a number in \[0, 1\]"),
    "a name with a control character": (_set(("people", 0, "name"), "Ma\x1bya"), r"name = 'Ma\\x1bya': contains control"),
    "a name of 300 characters": (_set(("people", 0, "name"), "M" * 300), r"longer than 256 characters"),
    "an embedding holding text": (_set(("people", 0, "embeddings", 0, 3), "0.5"), r"must hold numbers only"),
    "an embedding of NaN": (_set(("people", 0, "embeddings", 0), [float("nan")] * SIZE), r"zero, NaN or infinite"),
    "an embedding that is not a list": (_set(("people", 0, "embeddings", 0), 7), r"not a number"),
    "a photo digest that is a path": (_set(("people", 0, "photos", 0, "sha256"), "../../../home/user/me"),
                                      r"photos\[0\].sha256 = '../../../home/user/me': must be 64 hex digits"),
    "a photo record that is not a table": (_set(("people", 0, "photos", 0), "a.jpg"), r"photos\[0\] must be a table"),
    "people that is not a list": (_set(("people",), {"Maya": 1}), r"people must be a list"),
    "a person that is a number": (_set(("people", 0), 5), r"people\[0\] must be a table"),
    "an embedding size of 0": (_set(("embedding_size",), 0), r"embedding_size = 0: must be a whole number"),
    "an embedding size that is text": (_set(("embedding_size",), "8"), r"embedding_size = '8': must be a whole"),
    "a model digest that is not hex": (_set(("model_sha256",), "z" * 64), r"model_sha256 = 'zzz"),
    "a format version of true (== 1 in Python)": (_set(("format_version",), True), r"format version True is not"),
    "10,001 people": (_set(("people",), [person(f"p{i}") for i in range(10_001)]),
                      r"people has 10,001 entries, more than the 10,000"),
}


@pytest.mark.parametrize("attack", list(GALLERY_ATTACKS))
def test_gallery_field_attacks_are_refused_on_read(tmp_path: Path, attack: str) -> None:
    from edgeface.core.gallery import read_gallery

    change, message = GALLERY_ATTACKS[attack]
    raw = gallery_dict()
    change(raw)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(EdgefaceError) as error:
        read_gallery(path, SHA)
    assert re.search(message, str(error.value)) and str(error.value).startswith(f"{path}: "), str(error.value)


def test_gallery_nested_100000_deep_at_start_is_one_line(tiny_bundles: dict[str, Path], synthetic_csv: Path,
                                                         tmp_path: Path) -> None:
    """Before: RecursionError, a traceback at start (exit 1)."""
    gallery = tmp_path / "g.json"
    gallery.write_text('{"format": "edgeface-gallery", "format_version": 1, "people": ' + "[" * 100_000
                       + "]" * 100_000 + "}")
    done = run_cli("run", "--bundle", str(tiny_bundles["int8"]), "--source", str(synthetic_csv.parent / "images"),
                   "--max-frames", "1", "--no-http", "--gallery", str(gallery))
    assert error_line(done, 2) == f"error: {gallery}: nested more than 32 levels deep: not a file edgeface wrote"


def test_gallery_larger_than_any_household_needs(tmp_path: Path) -> None:
    """16 MiB (about 12,000 embeddings): 64 MB were allowed, and a 51 MB gallery peaked at 267 MB (a Pi Zero 2
    has 512 MB in all)."""
    from edgeface.core.gallery import read_gallery

    path = tmp_path / "g.json"
    with path.open("w") as handle:
        handle.write('{"format": "edgeface-gallery", "format_version": 1, "people": [' + " " * (17 << 20) + "]}")
    with pytest.raises(EdgefaceError, match=r"g.json: 17.0 MB, more than the 16 MB a gallery may have"):
        read_gallery(path)


# --- bundles -----------------------------------------------------------------------------------------------

MODEL = b"TFL3" + bytes(60)


def manifest_dict() -> dict[str, Any]:
    from edgeface.core.bundle import write_bundle
    from edgeface.core.spec import ModelSpec

    import tempfile

    spec = ModelSpec(labels={"identity": ("Ana", "Ben"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=64, embedding_size=SIZE)
    with tempfile.TemporaryDirectory() as folder:
        with zipfile.ZipFile(write_bundle(Path(folder) / "m.edgeface", MODEL, spec, "int8",
                                          {"identity_threshold": 0.5})) as archive:
            return json.loads(archive.read("bundle.json"))


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


MANIFEST_ATTACKS = {
    "a non-number identity threshold (the issue's)": (_set(("identity_threshold",), "high"),
                                                      r"identity_threshold = 'high': must be a number in \[0, 1.01\]"),
    "a NaN identity threshold": (_set(("identity_threshold",), float("nan")), r"identity_threshold = nan"),
    "identity labels given as one text (split into letters before)": (
        _set(("spec", "labels", "identity"), "AnaBen"), r"labels.identity must be a list, not text"),
    "an input size given as text (int() took it before)": (_set(("spec", "input_size"), "64"),
                                                          r"input_size = '64': must be a whole number"),
    "an input size of true": (_set(("spec", "input_size"), True), r"input_size = True"),
    "an embedding size of a billion": (_set(("spec", "embedding_size"), 10 ** 9), r"embedding_size = 1000000000"),
    "an unknown crop field": (_set(("spec", "crop", "evil"), 1), r"crop.evil: is not a known field"),
    "a model member named with a path": (_set(("model_file",), "../../../etc/passwd"),
                                         r"model_file = '../../../etc/passwd': must be a member name"),
    "a model size that is negative": (_set(("model_bytes",), -1), r"model_bytes = -1: must be a whole number"),
    "a model digest that is not hex": (_set(("model_sha256",), "x"), r"model_sha256 = 'x': must be 64 hex"),
    "an unknown precision": (_set(("precision",), "int4"), r"precision = 'int4': must be one of"),
    "accuracy that is not a table": (_set(("accuracy",), [1, 2]), r"accuracy must be a table"),
}


@pytest.mark.parametrize("attack", list(MANIFEST_ATTACKS))
def test_manifest_field_attacks_are_refused_on_read(tmp_path: Path, attack: str) -> None:
    from edgeface.core.bundle import load_bundle

    change, message = MANIFEST_ATTACKS[attack]
    manifest = manifest_dict()
    change(manifest)
    path = write_zip(tmp_path / "m.edgeface", {"bundle.json": json.dumps(manifest).encode(), "model.tflite": MODEL})
    with pytest.raises(EdgefaceError) as error:
        load_bundle(path)
    assert re.search(message, str(error.value)) and str(error.value).startswith(f"{path}: "), str(error.value)


def _zeros_member(path: Path, size: int, manifest: dict[str, Any]) -> Path:
    """A bundle whose model member is ``size`` zero bytes (deflated: about 1 KB per MB), the manifest saying so."""
    manifest = {**manifest, "model_bytes": size}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bundle.json", json.dumps(manifest))
        with archive.open("model.tflite", "w", force_zip64=True) as member:
            block = bytes(16 << 20)
            for start in range(0, size, len(block)):
                member.write(block[:min(len(block), size - start)])
    return path


def test_member_of_500_mib_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    """The issue's: a member that inflates to 500 MiB, its size and the manifest agreeing, passed the 512 MiB
    cap and cost a gigabyte before its checksum failed. A bundle needs at most 128 MiB."""
    from edgeface.core.bundle import load_bundle

    path = _zeros_member(tmp_path / "big.edgeface", 500 << 20, manifest_dict())
    assert path.stat().st_size < 1 << 20
    with pytest.raises(EdgefaceError) as error:
        load_bundle(path)
    assert str(error.value) == f"{path}: bundle.json: model_bytes = 524288000: must be a whole number in [1, 134,217,728]"


def test_member_under_the_cap_with_a_wrong_checksum_costs_no_memory(tmp_path: Path) -> None:
    """120 MiB, declared honestly, not the model the manifest names: hashed while streaming, refused before
    it is held (the peak grows by a few MB, not 120)."""
    path = _zeros_member(tmp_path / "wrong.edgeface", 120 << 20, manifest_dict())
    code = ("import resource, sys\nfrom edgeface.core.bundle import load_bundle\nfrom edgeface.core.errors import "
            "BundleError\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\ntry:\n    load_bundle(sys.argv[1])\n"
            "except BundleError as exc:\n    print(exc)\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    message, grown_kib = done.stdout.splitlines()
    assert message == f"{path}: model.tflite does not match its checksum: the bundle is corrupt or was modified"
    assert int(grown_kib) < 16 * 1024, f"peak grew by {int(grown_kib) // 1024} MB"


def test_central_directory_of_100000_entries_is_refused_before_parsing(tmp_path: Path) -> None:
    """zipfile reads the whole central directory into one object per entry; a 10 MB file of empty entries
    would cost hundreds of MB before anything was checked."""
    from edgeface.core.bundle import load_bundle

    path = tmp_path / "many.edgeface"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index in range(20_000):
            archive.writestr(f"{index}", b"")
    with pytest.raises(EdgefaceError, match=r"20,000 members in a central directory of [\d,]+ bytes: not a bundle"):
        load_bundle(path)


def test_bundle_file_larger_than_any_bundle(tmp_path: Path) -> None:
    from edgeface.core.bundle import load_bundle

    path = tmp_path / "huge.edgeface"
    with path.open("wb") as handle:
        handle.truncate(200 << 20)  # sparse: costs no disk
    with pytest.raises(EdgefaceError, match=r"huge.edgeface: 209,715,200 bytes, more than the [\d,]+ a bundle"):
        load_bundle(path)


# --- config files ------------------------------------------------------------------------------------------

CONFIG_ATTACKS = {
    "arrays nested 5,000 deep (RecursionError before)": ("threads = " + "[" * 5000 + "]" * 5000,
                                                        "nested more than 32 levels deep"),
    "a dotted key of 20,000 parts (14 s of parsing before)": ("a" + ".a" * 20_000 + " = 1",
                                                             "nested more than 32 levels deep"),
    "inline tables nested 3,000 deep": ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "nested more than 32"),
    "an integer of 5,000 digits (ValueError before)": ("threads = " + "7" * 5000, "not valid TOML"),
    "a NUL byte in a path (ValueError before)": ('[jsonl]\npath = "a\\u0000b"', "[jsonl] path 'a\\x00b': contains"),
    "the home of a user that does not exist (RuntimeError before)": ('[jsonl]\npath = "~nosuchuser/x.jsonl"',
                                                                     "~nosuchuser/x.jsonl: no such user's home"),
    "a key of 100,000 characters (printed whole before)": ("k" * 100_000 + " = 1", "unknown key 'kkkkkkkk"),
    "300 KB of comments": ("#" * (300 << 10), "more than the 0.25 MB a config file may have"),
}


@pytest.mark.parametrize("attack", list(CONFIG_ATTACKS))
def test_config_attacks_are_one_line(tmp_path: Path, attack: str) -> None:
    from edgeface.daemon.config import load_config

    text, message = CONFIG_ATTACKS[attack]
    config = tmp_path / "pi.toml"
    config.write_text('bundle = "m.edgeface"\nsource = 0\n' + text + "\n")
    started = time.monotonic()
    with pytest.raises(EdgefaceError) as error:
        load_config(config)
    line = str(error.value)
    assert line.startswith(f"{config}") and message in line and len(line) < 400 and "\n" not in line, line
    assert time.monotonic() - started < 2


def test_config_nested_5000_deep_at_start_is_one_line_exit_2(tmp_path: Path) -> None:
    """The same through the command line: one `error:` line, exit 2, no traceback (RecursionError before)."""
    config = tmp_path / "pi.toml"
    config.write_text('bundle = "m.edgeface"\nsource = 0\nthreads = ' + "[" * 5000 + "]" * 5000 + "\n")
    line = error_line(run_cli("run", "--config", str(config), memory=None, timeout=60), 2)
    assert line == f"error: {config}: nested more than 32 levels deep: not a file edgeface wrote"


@pytest.mark.parametrize("value", ["123456", '"hunter2\\u0007"', "[\"hunter2\"]"])
def test_a_mistyped_mqtt_password_is_never_echoed(tmp_path: Path, value: str) -> None:
    """Before: `[mqtt] password must be a string, got 123456`."""
    from edgeface.daemon.config import load_config

    config = tmp_path / "pi.toml"
    config.write_text(f'bundle = "m.edgeface"\nsource = 0\n[mqtt]\nhost = "broker"\npassword = {value}\n')
    with pytest.raises(EdgefaceError) as error:
        load_config(config)
    line = str(error.value)
    assert "[mqtt] password" in line and "123456" not in line and "hunter2" not in line, line


# --- secret files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["/dev/zero", "a FIFO", "a folder", "5 KiB", "not UTF-8", "empty"])
def test_secret_files_are_bounded_and_checked(tmp_path: Path, kind: str) -> None:
    """The token file through the one reader: /dev/zero was read whole before deploy's fix, a folder gave
    IsADirectoryError, a FIFO hung."""
    from edgeface.core.errors import ConfigError
    from edgeface.daemon.secrets import read_secret

    path = tmp_path / "token"
    if kind == "/dev/zero":
        path = Path("/dev/zero")
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes({"5 KiB": b"t" * 5000, "not UTF-8": b"\xe9t\xe9", "empty": b"\n"}[kind])
    expected = {"/dev/zero": "not a regular file (a character device)", "a FIFO": "not a regular file (a FIFO)",
                "a folder": "is a folder", "5 KiB": "more than the", "not UTF-8": "not UTF-8 text",
                "empty": "is empty"}[kind]
    with pytest.raises(ConfigError, match=re.escape(expected)):
        read_secret("[http] token", str(path))
