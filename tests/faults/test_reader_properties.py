"""Property-based tests of the readers of files: any input gives a value or the one-line error, never
another exception (hypothesis). Bundles, galleries, config files and CSV manifests are mutated field by field
from a valid one (each field replaced by any JSON/TOML value, or removed), and given as arbitrary bytes.

Each test runs a bounded number of examples (a few seconds in all); hypothesis's example database is off,
so that nothing is written into the checkout.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeface.core.errors import EdgefaceError

BUDGET = settings(max_examples=int(__import__("os").environ.get("EDGEFACE_HYPOTHESIS_EXAMPLES", 150)), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Whole texts that broke a parser before: an integer of 5,000 digits (ValueError), a lone surrogate.
HOSTILE = st.sampled_from([b"1" * 5000, b'{"format": "edgeface-gallery", "format_version": ' + b"9" * 5000 + b"}",
                           b'"\\ud800"', b"a = " + b"1" * 5000, b'bundle = "\\ud800"\nsource = 0', b"\xef\xbb\xbf{}"])
SCALARS = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=True)
           | st.text(max_size=40) | st.sampled_from(["unknown", "Unknown", "../../x", "ab" * 32, "\x00", "~nobody/x"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


def one_line_or_value(read: Any, *args: Any) -> Any:
    """``read(*args)``: its value, or None after an ``EdgefaceError`` of one line; anything else fails."""
    try:
        return read(*args)
    except EdgefaceError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(exc)
        return None


def mutated(document: Any, data: st.DataObject) -> Any:
    """``document`` with one of its fields, at any depth, replaced by any value or removed."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node[:3]):
                walk(value, path + (index,))

    walk(document, ())
    path = data.draw(st.sampled_from(paths[1:]))
    copy = json.loads(json.dumps(document))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(VALUES)
    return copy


# --- galleries ---------------------------------------------------------------------------------------------

SIZE = 8


def valid_gallery() -> dict[str, Any]:
    from edgeface.core.gallery import empty_gallery

    gallery = empty_gallery("ab" * 32, SIZE).with_person("Maya", np.eye(SIZE)[:2], [
        {"file": "a.jpg", "sha256": "1" * 64}, {"file": "b.jpg", "sha256": "2" * 64}])
    gallery = gallery.with_person("Ben", np.eye(SIZE)[2:3], [{"file": "c.jpg", "sha256": "3" * 64}])
    return gallery.calibrated(0.6, 0.7, {"far_target": 0.01, "faces": 10}).to_dict()


def check_gallery(path: Path) -> None:
    from edgeface.core.gallery import check_name, read_gallery

    gallery = one_line_or_value(read_gallery, path, "ab" * 32)
    if gallery is None:
        return
    assert len({name.casefold() for name in gallery.names}) == len(gallery.names)
    for person in gallery.people:
        assert check_name(person.name) == person.name
        assert person.embeddings.shape[1:] == (SIZE,) and len(person.embeddings)
        assert np.isfinite(person.embeddings).all()
        assert all(len(photo["sha256"]) == 64 for photo in person.photos)
    for threshold in (gallery.similarity_threshold, gallery.identity_threshold):
        assert threshold is None or math.isfinite(threshold)


@BUDGET
@given(data=st.data())
def test_any_gallery_field_gives_a_gallery_or_one_line(tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(mutated(valid_gallery(), data)))
    check_gallery(path)


@BUDGET
@given(content=st.binary(max_size=300) | st.text(max_size=300).map(str.encode) | HOSTILE)
def test_any_gallery_bytes_give_a_gallery_or_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "g.json"
    path.write_bytes(content)
    check_gallery(path)


# --- bundles -----------------------------------------------------------------------------------------------

MODEL = b"TFL3 not a real model, which reading a bundle does not look into"


def valid_manifest() -> dict[str, Any]:
    import tempfile

    from edgeface.core.bundle import write_bundle
    from edgeface.core.spec import ModelSpec

    spec = ModelSpec(labels={"identity": ("Ana", "Ben"), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=64, embedding_size=SIZE)
    with tempfile.TemporaryDirectory() as folder:
        path = write_bundle(Path(folder) / "m.edgeface", MODEL, spec, "int8", {"identity_threshold": 0.5})
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("bundle.json"))


MANIFEST = valid_manifest()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def check_bundle(path: Path) -> None:
    from edgeface.core.bundle import load_bundle, read_manifest

    one_line_or_value(read_manifest, path)
    bundle = one_line_or_value(load_bundle, path)
    if bundle is not None:
        assert bundle.model_bytes == MODEL and 0 <= bundle.identity_threshold <= 1.01
        assert len(bundle.spec.labels["identity"]) >= 2


@BUDGET
@given(data=st.data())
def test_any_manifest_field_gives_a_bundle_or_one_line(tmp_path: Path, data: st.DataObject) -> None:
    manifest = json.dumps(mutated(MANIFEST, data)).encode()
    check_bundle(write_zip(tmp_path / "m.edgeface", {"bundle.json": manifest, "model.tflite": MODEL}))


@BUDGET
@given(members=st.dictionaries(st.sampled_from(["bundle.json", "model.tflite", "other", "../x"]),
                               st.binary(max_size=200) | HOSTILE, max_size=3),
       raw=st.binary(max_size=400) | HOSTILE)
def test_any_archive_or_bytes_give_a_bundle_or_one_line(tmp_path: Path, members: dict[str, bytes],
                                                        raw: bytes) -> None:
    check_bundle(write_zip(tmp_path / "m.edgeface", members))
    (tmp_path / "raw.edgeface").write_bytes(raw)
    check_bundle(tmp_path / "raw.edgeface")


# --- config files ------------------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """``value`` written as TOML (a dict as an inline table; None, which TOML has not, as an empty array)."""
    if value is None:
        return "[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def config_keys() -> st.SearchStrategy[tuple[str, str]]:
    import dataclasses

    from edgeface.daemon.config import SECTIONS, TOP_LEVEL

    keys = [("", key) for key in TOP_LEVEL] + [(section, f.name) for section, cls in SECTIONS.items()
                                               for f in dataclasses.fields(cls)]
    return st.sampled_from(keys + [("", "nope"), ("mqtt", "nope"), ("nope", "x")])


@BUDGET
@given(entries=st.lists(st.tuples(config_keys(), VALUES | st.text(max_size=20)), max_size=8))
def test_any_config_gives_a_config_or_one_line(tmp_path: Path, entries: list[tuple[tuple[str, str], Any]]) -> None:
    from edgeface.daemon.config import load_config

    top = {"bundle": '"m.edgeface"', "source": "0"}
    sections: dict[str, dict[str, str]] = {}
    for (section, key), value in entries:
        (sections.setdefault(section, {}) if section else top)[key] = toml_value(value)
    lines = [f"{json.dumps(k)} = {v}" for k, v in top.items()]
    for section, values in sections.items():
        lines.append(f"[{json.dumps(section)}]")
        lines.extend(f"{json.dumps(k)} = {v}" for k, v in values.items())
    path = tmp_path / "edgeface.toml"
    path.write_text("\n".join(lines) + "\n")
    one_line_or_value(load_config, path)


@BUDGET
@given(content=st.text(max_size=300) | (st.binary(max_size=300) | HOSTILE).map(lambda b: b.decode("latin-1")))
def test_any_config_text_gives_a_config_or_one_line(tmp_path: Path, content: str) -> None:
    from edgeface.daemon.config import load_config

    path = tmp_path / "edgeface.toml"
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    one_line_or_value(load_config, path)


# --- CSV manifests -----------------------------------------------------------------------------------------

FIELD = (st.text(max_size=30) | st.sampled_from(["happy", "neutral", "male", "female", "x" * 300, "a\0b",
                                                  "images/a.jpg", "/dev/zero", '"', "a,b", "\n"]))


@BUDGET
@given(header=st.just(["image", "identity", "emotion", "gender"])
       | st.lists(st.sampled_from(["image", "identity", "emotion", "gender", "other", ""]), max_size=5),
       rows=st.lists(st.lists(FIELD, max_size=5), max_size=6))
def test_any_csv_gives_a_dataset_or_one_line(tmp_path: Path, header: list[str], rows: list[list[str]]) -> None:
    import csv

    from edgeface.data.manifest import load_dataset

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp_path / "labels.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", errors="surrogateescape")
    dataset = one_line_or_value(load_dataset, path)
    if dataset is not None:
        assert all(str(problem).count("\n") == 0 for problem in dataset.problems)


@pytest.mark.parametrize("reader", ["gallery", "bundle", "config", "dotted toml keys"])
def test_the_readers_refuse_nesting_past_the_bound(tmp_path: Path, reader: str) -> None:
    """What hypothesis does not reach by chance: 100,000 nested brackets (RecursionError before)."""
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import read_gallery
    from edgeface.daemon.config import load_config

    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "file"
    if reader == "gallery":
        path.write_text('{"format": "edgeface-gallery", "format_version": 1, "people": ' + deep + "}")
        call = lambda: read_gallery(path)  # noqa: E731
    elif reader == "bundle":
        write_zip(path, {"bundle.json": ('{"format": "edgeface-bundle", "spec": ' + deep + "}").encode(),
                         "model.tflite": MODEL})
        call = lambda: load_bundle(path)  # noqa: E731
    elif reader == "config":
        path.write_text('bundle = "m.edgeface"\nsource = 0\nthreads = ' + deep + "\n")
        call = lambda: load_config(path)  # noqa: E731
    else:
        from edgeface.core.reader import MAX_DEPTH, parse_toml

        path.write_text("a" + ".a" * 20_000 + " = 1\n")  # TOML nests through dotted keys too
        call = lambda: parse_toml(path.read_text(), str(path), EdgefaceError)  # noqa: E731
        assert MAX_DEPTH < 20_000
    with pytest.raises(EdgefaceError, match="nested more than 32 levels deep"):
        call()
