"""``edgeface enroll / people / calibrate / identify`` and the daemon's use of the gallery, through the CLI.

Model: the tiny bundles (64x64 toy backbone). Photos: the project's synthetic people who are NOT in the tiny
model's training set, run through the real detector and aligner; bad photos are made from good ones (blurred,
shrunk, two people, no face, corrupt bytes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.core.imageio import read_image, write_image
from edgeface.core.bundle import load_bundle, read_manifest
from edgeface.core.gallery import default_gallery_path, read_gallery
from helpers.no_tensorflow import run_without_tensorflow

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Photos of 3 new people (not among the tiny model's 6) and bad photos made from them."""
    import cv2

    from edgeface.data.synthetic import composite_frame, render_head
    from helpers.video_fixtures import new_people_photos

    folder = tmp_path_factory.mktemp("new-people")
    new, out = new_people_photos(folder, per_person=6)
    bad = folder / "bad"
    bad.mkdir()
    good = read_image(out[new[0].name][0])
    write_image(bad / "blurry.jpg", cv2.GaussianBlur(good, (0, 0), 5.0))
    write_image(bad / "small.jpg", cv2.resize(good, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA))
    write_image(bad / "blank.jpg", np.full((240, 320, 3), 127, np.uint8))
    rng = np.random.default_rng(0)
    heads = [render_head(look, "neutral", rng, width=200) for look in new[:2]]
    places = [(heads[0], (130.0, 150.0, 110.0)), (heads[1], (350.0, 150.0, 110.0))]
    frame, _ = composite_frame((320, 480), places, rng)
    write_image(bad / "two.jpg", frame)
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8not a jpeg at all\xff\xd9")
    out["bad"] = [bad / n for n in ("blurry.jpg", "small.jpg", "blank.jpg", "two.jpg", "corrupt.jpg")]
    return out


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEFACE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def cli(*args: object) -> Any:  # typer's Result
    return runner.invoke(app, [str(a) for a in args])


def impostor_args(paths: list[Path]) -> list[object]:
    return [arg for path in paths for arg in ("--impostors", path)]


def test_embedding_output_survives_every_precision(tiny_bundles: dict[str, Path]) -> None:
    for precision, path in tiny_bundles.items():
        manifest = read_manifest(path)
        assert "embedding" in manifest["io"]["outputs"], precision
        assert manifest["spec"]["embedding_size"] == 32
        assert manifest["embedding_cosine"] > 0.95, (precision, manifest["embedding_cosine"])
    assert read_manifest(tiny_bundles["int8"])["io"]["outputs"]["embedding"]["dtype"] == "int8"


def test_enroll_reports_each_bad_photo_and_enrolls_the_good_ones(tiny_bundles: dict[str, Path], photos,
                                                                 state: Path) -> None:
    bundle = tiny_bundles["int8"]
    priya = photos["Priya"]
    result = cli("enroll", "--bundle", bundle, "--name", "Priya", *priya[:3], *photos["bad"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if "  " in line}  # table rows
    for photo in priya[:3]:
        assert "enrolled" in lines[photo.name] and "px, sharpness" in lines[photo.name]
    assert "blurry" in lines["blurry.jpg"] and "need 40" in lines["blurry.jpg"]
    assert "too small" in lines["small.jpg"] and "need 40" in lines["small.jpg"]
    assert "no face" in lines["blank.jpg"]
    assert "several faces" in lines["two.jpg"] and "2 faces" in lines["two.jpg"]
    assert "unreadable" in lines["corrupt.jpg"]
    assert "enrolled Priya: 3 photo(s) added, 3 in all; 1 people in" in result.output
    gallery = read_gallery(default_gallery_path(load_bundle(bundle).model_sha256, state))
    assert gallery.names == ("Priya",) and gallery.get("Priya").embeddings.shape == (3, 32)
    assert [p["file"] for p in gallery.get("Priya").photos] == [p.name for p in priya[:3]]

    again = cli("enroll", "--bundle", bundle, "--name", "priya", priya[0], photos["bad"][2])
    assert again.exit_code == 1 and "already enrolled" in again.output
    assert "error: no photo of priya could be enrolled" in again.output
    more = cli("enroll", "--bundle", bundle, "--name", "priya", priya[3])
    assert more.exit_code == 0 and "1 photo(s) added, 4 in all" in more.output


def test_list_and_remove(tiny_bundles: dict[str, Path], photos, state: Path) -> None:
    bundle = tiny_bundles["int8"]
    empty = cli("people", "list", "--bundle", bundle)
    assert empty.exit_code == 0 and "nobody is enrolled" in empty.output
    for name in ("Priya", "Kenji"):
        assert cli("enroll", "--bundle", bundle, "--name", name, *photos[name][:2]).exit_code == 0
    listed = cli("people", "list", "--bundle", bundle)
    assert listed.exit_code == 0
    rows = [line.split()[:2] for line in listed.output.splitlines()]
    assert ["Priya", "2"] in rows and ["Kenji", "2"] in rows
    assert "similarity threshold 0.8 (default" in listed.output
    as_json = json.loads(cli("people", "list", "--bundle", bundle, "--json").output)
    assert [p["name"] for p in as_json["people"]] == ["Priya", "Kenji"]
    assert as_json["similarity_threshold"] is None

    # Each enrolled photo's face is kept beside the gallery, readable by this user only.
    path = default_gallery_path(load_bundle(bundle).model_sha256, state)
    crops = path.with_name(path.stem + ".faces") / "people"
    kenji = [crops / f"{p['sha256']}.jpg" for p in read_gallery(path).get("Kenji").photos]
    assert len(list(crops.glob("*.jpg"))) == 4 and all(c.is_file() for c in kenji)
    assert {oct(c.stat().st_mode & 0o777) for c in crops.iterdir()} == {"0o600"}
    assert oct(crops.stat().st_mode & 0o777) == oct(crops.parent.stat().st_mode & 0o777) == "0o700"
    assert read_image(kenji[0]).shape == (64, 64, 3)

    removed = cli("people", "remove", "--bundle", bundle, "kenji")
    assert removed.exit_code == 0 and "removed kenji; 1 people left" in removed.output
    assert not any(c.exists() for c in kenji) and len(list(crops.glob("*.jpg"))) == 2
    left = json.loads(cli("people", "list", "--bundle", bundle, "--json").output)["people"]
    assert [p["name"] for p in left] == ["Priya"]
    missing = cli("people", "remove", "--bundle", bundle, "Zoe")
    assert missing.exit_code == 2 and missing.output.strip() == "error: 'Zoe' is not enrolled (Priya)"


def test_calibrate_identify_and_reject(tiny_bundles: dict[str, Path], photos, state: Path) -> None:
    bundle = tiny_bundles["int8"]
    nothing = cli("calibrate", "--bundle", bundle, "--impostors", photos["Sofia"][0])
    assert nothing.exit_code == 2 and "nobody is enrolled for this bundle" in nothing.output
    # Priya is enrolled from the one photo she is shown by below, so her score there is 1 whatever the tiny
    # model (trained anew each run) makes of new people: with 3 photos, a run's strangers came within 0.02 of it.
    assert cli("enroll", "--bundle", bundle, "--name", "Priya", photos["Priya"][0]).exit_code == 0
    strangers = photos["Sofia"] + photos["Kenji"]
    calibrated = cli("calibrate", "--bundle", bundle, "--far", "0", *impostor_args(strangers))
    assert calibrated.exit_code == 0, calibrated.output
    assert "false-accept rate on these strangers: 0.00% (0 of 12), target 0.00%" in calibrated.output
    assert "warning: 12 stranger faces measure" in calibrated.output
    gallery = read_gallery(default_gallery_path(load_bundle(bundle).model_sha256, state))
    assert gallery.similarity_threshold is not None and gallery.calibration["faces"] == 12
    assert "calibrated" in cli("people", "list", "--bundle", bundle).output

    # An enrolled photo is its own best match (its own photo and Priya's centre: 1); strangers are below the
    # calibrated thresholds.
    named = cli("identify", "--bundle", bundle, "--json", photos["Priya"][0], *strangers[:4],
                photos["bad"][2])
    assert named.exit_code == 0, named.output
    records = [json.loads(line) for line in named.stdout.splitlines()]
    assert records[0]["identity"]["label"] == "Priya" and records[0]["identity"]["score"] > 0.99
    assert [r["identity"]["label"] for r in records[1:5]] == ["unknown"] * 4
    assert records[5]["error"].endswith("no face found") and "identity" not in records[5]
    # An explicit threshold wins over the calibrated one: at the top of the range only a similarity of 1 names.
    strict = cli("identify", "--bundle", bundle, "--json", photos["Priya"][0], "--similarity-threshold", "1")
    (record,) = [json.loads(line) for line in strict.stdout.splitlines()]
    assert record["identity"]["label"] == ("Priya" if record["identity"]["score"] >= 1.0 else "unknown"), record
    refused = cli("identify", "--bundle", bundle, photos["Priya"][0], "--similarity-threshold", "1.01")
    assert refused.exit_code == 2 and "similarity_threshold" in refused.output and "[0.1, 1]" in refused.output


def test_daemon_reports_enrolled_people_and_unknown(tiny_bundles: dict[str, Path], photos, state: Path,
                                                    tmp_path: Path) -> None:
    bundle = tiny_bundles["int8"]
    # enrolled from the photo she is shown by, as in test_calibrate_identify_and_reject
    assert cli("enroll", "--bundle", bundle, "--name", "Priya", photos["Priya"][0]).exit_code == 0
    strangers = photos["Sofia"] + photos["Kenji"]
    assert cli("calibrate", "--bundle", bundle, "--far", "0", *impostor_args(strangers)).exit_code == 0
    # At --far 0 the thresholds sit just above the closest stranger (ABOVE_ALL_MARGIN); the daemon gets the
    # stranger furthest below both, so its frame tests the labels, not that margin.
    from edgeface.people.enroll import FaceEmbedder

    gallery = read_gallery(default_gallery_path(load_bundle(bundle).model_sha256, state))
    checks, outputs = FaceEmbedder(bundle).photos(strangers, quality=False)
    assert all(c.ok for c in checks)
    assert gallery.similarity_threshold is not None and gallery.identity_threshold is not None
    margins = np.maximum(gallery.similarities(outputs["embedding"]).max(axis=1) - gallery.similarity_threshold,
                         outputs["identity"].max(axis=1) - gallery.identity_threshold)
    assert (margins < 0).all()
    stranger = strangers[int(np.argmin(margins))]
    frames = tmp_path / "frames"
    frames.mkdir()
    # Priya for 0.4 s, nobody for 0.6 s (her track is lost), then the stranger for 0.6 s: at 10 frames a second.
    empty = np.full((240, 320, 3), 127, np.uint8)
    for i in range(16):
        if i < 4 or i >= 10:
            (frames / f"{i:02d}.jpg").write_bytes((photos["Priya"][0] if i < 4 else stranger).read_bytes())
        else:
            write_image(frames / f"{i:02d}.jpg", empty)
    out = tmp_path / "labels.jsonl"
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{bundle}"\nsource = "{frames}"\n'
                      f'[http]\nenabled = false\n[jsonl]\npath = "{out}"\n[service]\nlog_level = "error"\n')
    result = cli("run", "--config", config)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    labels = [(r["faces"][0]["track"], r["faces"][0]["identity"]["label"]) for r in records if "frame" in r]
    priya, other = labels[:4], labels[4:]
    # a track is named once it has 3 faces, and the stranger is another track, never named
    assert [name for _, name in priya] == ["unknown", "unknown", "Priya", "Priya"]
    assert len(other) == 6 and {name for _, name in other} == {"unknown"} and other[0][0] != priya[0][0]
    events = [(r["event"], r["who"]) for r in records if "event" in r]
    assert events == [("arrived", "Priya"), ("arrived", "unknown"), ("left", "Priya"), ("left", "unknown")]
    # --gallery none: enrolled people are ignored, so Priya is no longer named.
    out.unlink()
    assert cli("run", "--config", config, "--gallery", "none").exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert "Priya" not in [r["faces"][0]["identity"]["label"] for r in records if "frame" in r]


def test_gallery_of_another_bundle_is_refused(tiny_bundles: dict[str, Path], photos, state: Path,
                                              tmp_path: Path) -> None:
    shared = tmp_path / "family.json"
    assert cli("enroll", "--bundle", tiny_bundles["int8"], "--name", "Priya", "--gallery", shared,
               photos["Priya"][0]).exit_code == 0
    result = cli("enroll", "--bundle", tiny_bundles["float32"], "--name", "Kenji", "--gallery", shared,
                 photos["Kenji"][0])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "family.json: this gallery was made with model" in result.output
    assert "enroll the people again with this bundle" in result.output


@pytest.mark.parametrize("args, code, message", [
    (["--name", "unknown", "{photo}"], 2,
     "error: 'unknown' is reserved for faces nobody matches; choose another name"),
    (["--name", "Ann", "{missing}"], 1, "error: no photo of Ann could be enrolled"),
    (["--name", "Ann", "{folder}"], 2,
     "error: {folder}: no images in this folder (.jpg, .jpeg, .png, .bmp, .webp)"),
])
def test_bad_input_is_one_line(tiny_bundles: dict[str, Path], photos, state: Path, tmp_path: Path, args,
                               code: int, message: str) -> None:
    where = {"photo": str(photos["Priya"][0]), "missing": str(tmp_path / "no-such.jpg"),
             "folder": str(tmp_path)}
    result = cli("enroll", "--bundle", tiny_bundles["int8"], *[a.format(**where) for a in args])
    assert result.exit_code == code
    assert result.output.strip().splitlines()[-1] == message.format(**where)
    if code == 1:
        assert "no-such.jpg  unreadable  file not found" in result.output
    no_bundle = cli("people", "list", "--bundle", tmp_path / "gone.edgeface")
    assert no_bundle.exit_code == 2
    assert no_bundle.output == f"error: {tmp_path / 'gone.edgeface'}: bundle not found\n"


CLI_SCRIPT = r"""
import json, sys
from edgeface.cli import app
codes = []
for args in json.loads(sys.argv[1]):
    try:
        app(args)
    except SystemExit as stop:
        codes.append(stop.code)
print(json.dumps(codes))
"""


def test_enroll_and_identify_run_without_tensorflow(tiny_bundles: dict[str, Path], photos, state: Path) -> None:
    bundle = str(tiny_bundles["int8"])
    commands = [["enroll", "--bundle", bundle, "--name", "Priya", str(photos["Priya"][0])],
                ["calibrate", "--bundle", bundle, "--far", "0", *map(str, impostor_args(photos["Sofia"][:3]))],
                ["identify", "--bundle", bundle, str(photos["Priya"][0])],
                ["people", "remove", "--bundle", bundle, "Priya"]]
    done = run_without_tensorflow(CLI_SCRIPT, json.dumps(commands), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, 0, 0, 0], done.stdout
    assert "Priya" in done.stdout and "removed Priya" in done.stdout
