"""The gallery file, matching, threshold choice and the combined identity rule (numpy only, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.runtime import labeler as labeler_module
from edgeface.people.calibrate import calibration_warnings, choose_thresholds
from edgeface.core.gallery import (DEFAULT_SIMILARITY_THRESHOLD, GalleryError, check_name,
                                      default_gallery_path, empty_gallery, open_gallery,
                                      read_gallery)
from edgeface.runtime.labeler import Labeler
from edgeface.core.paths import default_state_dir
from edgeface.core.results import UNKNOWN
from edgeface.core.spec import ModelSpec

SHA = "ab" * 32
SPEC = ModelSpec(labels={"identity": ("Jimmy", "Maya"), "emotion": ("happy", "neutral"),
                         "gender": ("female", "male")}, input_size=64, embedding_size=4)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def outputs(identity: list[list[float]], embedding: list[np.ndarray]) -> dict[str, np.ndarray]:
    n = len(identity)
    return {"identity": np.asarray(identity, np.float32), "emotion": np.tile([[0.9, 0.1]], (n, 1)),
            "gender": np.tile([[0.2, 0.8]], (n, 1)), "embedding": np.stack(embedding)}


@pytest.fixture
def gallery():
    g = empty_gallery(SHA, 4)
    g = g.with_person("Ana", np.stack([unit(1, 0, 0, 0), unit(1, 1, 0, 0)]),
                      [{"file": "a.jpg", "sha256": "1" * 64}])
    return g.with_person("Ben", unit(0, 0, 1, 0)[None], [{"file": "b.jpg", "sha256": "2" * 64}])


def test_similarity_is_half_the_best_photo_half_the_centre_of_each_person(gallery) -> None:
    faces = np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 0, 1), 3 * unit(0, 0, 1, 0)])
    sims = gallery.similarities(faces)
    assert sims.shape == (4, 2)
    centre = unit(1 + np.sqrt(0.5), np.sqrt(0.5), 0, 0)  # the mean of Ana's two photos
    best = np.array([1.0, np.sqrt(0.5), 0.0, 0.0])
    np.testing.assert_allclose(sims[:, 0], 0.5 * (best + faces @ centre), atol=1e-6)
    np.testing.assert_allclose(sims[:, 1], [0.0, 0.0, 0.0, 1.0], atol=1e-6)  # length does not matter
    match = gallery.match(faces)
    assert [gallery.names[i] for i in match.index] == ["Ana", "Ana", "Ana", "Ben"]
    empty = empty_gallery(SHA, 4).match(faces)
    assert list(empty.index) == [-1] * 4 and list(empty.similarity) == [-1.0] * 4


def test_add_more_photos_replace_and_remove(gallery) -> None:
    more = gallery.with_person(" ana ", unit(0, 0, 0, 1)[None])  # same person: names compare without case
    assert more.names == ("Ana", "Ben") and len(more.get("ANA").embeddings) == 3
    fresh = more.with_person("Ana", unit(0, 0, 0, 1)[None], replace_existing=True)
    assert len(fresh.get("Ana").embeddings) == 1
    assert fresh.without("ben").names == ("Ana",)
    with pytest.raises(GalleryError, match="'Zoe' is not enrolled \\(Ana, Ben\\)"):
        fresh.without("Zoe")
    with pytest.raises(GalleryError, match=r"expected embeddings of shape \(K, 4\)"):
        gallery.with_person("Cy", np.ones((2, 3)))


def test_remove_one_photo_and_rename() -> None:
    g = empty_gallery(SHA, 4).with_person("Ana", np.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)]),
                                          [{"file": "a.jpg", "sha256": "a1" * 32}, {"file": "b.jpg", "sha256": "a2" * 32}])
    one = g.without_photo("ana", "a1" * 32)
    assert one.get("Ana").photos == ({"file": "b.jpg", "sha256": "a2" * 32},)
    np.testing.assert_allclose(one.get("Ana").embeddings, unit(0, 1, 0, 0)[None])
    assert one.without_photo("Ana", "a2" * 32).names == ()  # the last photo takes the person with it
    with pytest.raises(GalleryError, match="Ana has no photo a3"):
        g.without_photo("Ana", "a3" * 32)
    unaligned = g.with_person("Ana", unit(0, 0, 1, 0)[None])  # an embedding without a photo record
    with pytest.raises(GalleryError, match="3 embeddings for 2 photo records"):
        unaligned.without_photo("Ana", "a1" * 32)

    two = g.with_person("Ben", unit(0, 0, 1, 0)[None], [{"file": "c.jpg", "sha256": "b1" * 32}])
    renamed = two.renamed("ana", "Anna")
    assert renamed.names == ("Anna", "Ben") and len(renamed.get("Anna").embeddings) == 2
    assert two.renamed("Ana", "ANA").names == ("ANA", "Ben")  # a change of case only
    with pytest.raises(GalleryError, match="'Ben' is already enrolled"):
        two.renamed("Ana", "ben")
    with pytest.raises(GalleryError, match="reserved"):
        two.renamed("Ana", "unknown")


@pytest.mark.parametrize("name, message", [("  ", "the name is empty"), ("Unknown", "reserved"),
                                           ("a\tb", "control characters"), ("x" * 65, "longer than 64")])
def test_bad_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        check_name(name)


def test_save_and_read_back(gallery, tmp_path: Path) -> None:
    path = gallery.calibrated(0.6, 0.7, {"far_target": 0.01}).save(tmp_path / "g" / "gallery.json")
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # biometric data: its owner alone
    assert [p.name for p in path.parent.iterdir()] == ["gallery.json"]  # no temporary file left
    back = read_gallery(path, SHA)
    assert back.names == gallery.names and back.similarity_threshold == 0.6 and back.identity_threshold == 0.7
    assert back.calibration["people"] == ["Ana", "Ben"] and not back.calibration_is_stale
    np.testing.assert_allclose(back.get("Ana").embeddings, gallery.get("Ana").embeddings, atol=1e-6)
    assert back.get("Ben").photos == ({"file": "b.jpg", "sha256": "2" * 64},)
    assert back.without("Ben").calibration_is_stale


def test_gallery_of_another_model_is_refused(gallery, tmp_path: Path) -> None:
    path = gallery.save(tmp_path / "gallery.json")
    with pytest.raises(GalleryError, match=r"gallery.json: this gallery was made with model abababababab, "
                                           r"not with this bundle's model cdcdcdcdcdcd"):
        read_gallery(path, "cd" * 32)


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"), ('{"format": "other"}', "not an edgeface gallery"),
    ('{"format": "edgeface-gallery", "format_version": 9}', "format version 9 is not supported"),
    ('{"format": "edgeface-gallery", "format_version": 1, "model_sha256": "x"}', "model_sha256 = 'x': must be"),
])
def test_damaged_files_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "gallery.json"
    path.write_text(content)
    with pytest.raises(GalleryError, match=message) as error:
        read_gallery(path)
    assert "\n" not in str(error.value) and "gallery.json" in str(error.value)


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("EDGEFACE_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "edgeface"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "edgeface"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edgeface:/var/lib/other")
    assert default_state_dir() == Path("/var/lib/edgeface")
    monkeypatch.setenv("EDGEFACE_STATE_DIR", str(tmp_path / "state"))
    assert default_gallery_path(SHA) == tmp_path / "state" / "galleries" / f"{SHA[:16]}.json"
    assert len(open_gallery(SHA, 4)) == 0  # no file yet: an empty gallery


def test_thresholds_meet_the_false_accept_target() -> None:
    rng = np.random.default_rng(0)
    sims, conf = rng.uniform(-0.2, 0.9, 1000), rng.uniform(0.0, 1.0, 1000)
    for far in (0.0, 0.01, 0.05):
        alone = choose_thresholds(sims, None, far)
        assert alone.identity is None and alone.accepted == np.sum(sims >= alone.similarity)
        assert alone.accepted == int(far * 1000)  # no ties: exactly the allowed number
        both = choose_thresholds(sims, conf, far)
        accepted = (sims >= both.similarity) | (conf >= both.identity)
        assert both.accepted == accepted.sum() <= far * 1000
        assert np.sum(sims >= both.similarity) == np.sum(conf >= both.identity)  # the same share each
    # far 0: above every stranger by more than re-scoring a face in another batch can move it
    assert choose_thresholds(sims, None, 0.0).similarity >= sims.max() + 1e-6


def test_thresholds_with_ties_stay_within_the_target() -> None:
    conf = np.repeat([0.5, 0.25, 0.125], [3, 50, 47])  # int8 probabilities come in steps
    t = choose_thresholds(np.linspace(0, 0.5, 100), conf, 0.02)
    assert t.accepted <= 2 and t.identity > 0.5


def test_a_saturated_identity_head_leaves_the_gallery_its_share() -> None:
    # A CosFace head in int8 gives many strangers its top probability, 255/256: the identity path cannot let
    # in one more stranger without letting in 30. The gallery must still get the whole budget, and the user
    # must be told that the identity head will name nobody.
    rng = np.random.default_rng(1)
    sims = rng.uniform(-0.2, 0.9, 1000)
    conf = np.where(np.arange(1000) < 30, 255 / 256, rng.uniform(0.1, 0.9, 1000))
    t = choose_thresholds(sims, conf, 0.01)
    assert np.sum(sims >= t.similarity) == 10 == t.accepted  # same as calibrating the gallery alone
    assert t.identity > conf.max()
    [warning] = calibration_warnings(conf, t, 0.01)
    assert warning.startswith("the identity head gives 30 of the 1000 stranger faces its highest confidence "
                              "(0.9961), so at 1.00% it names nobody")
    # A budget of one face that the gallery takes first is not a tie: no warning about the identity head.
    one = choose_thresholds(sims[:100], conf[30:130], 0.01)
    assert one.identity > conf[30:130].max() and not any(
        w.startswith("the identity head") for w in calibration_warnings(conf[30:130], one, 0.01))
    spread = rng.uniform(0, 1, 1000)
    assert calibration_warnings(spread, choose_thresholds(sims, spread, 0.01), 0.01) == []
    assert calibration_warnings(None, choose_thresholds(sims[:100], None, 0.01), 0.01) == [
        "100 stranger faces measure a false-accept rate of 1.00% poorly (at least 500 faces advised)"]


def test_rule_gallery_first_then_identity_head_then_unknown(gallery) -> None:
    labeler = Labeler(SPEC, 0.6, gallery=gallery, similarity_threshold=0.8)
    got = labeler(outputs([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45]],
                          [unit(1, 0.1, 0, 0), unit(0, 0, 0, 1), unit(0, 0, 0, 1), unit(0, 0.3, 1, 0)]))
    assert [(f.identity.label, round(f.identity.score, 2)) for f in got] == [
        ("Ana", 0.98), ("Jimmy", 0.9), ("Maya", 0.7), ("Ben", 0.96)]
    assert got[0].emotion.label == "happy" and got[0].gender.label == "male"
    strict = Labeler(SPEC, 0.95, gallery=gallery, similarity_threshold=0.99)
    assert [f.identity.label for f in strict(outputs([[0.9, 0.1]], [unit(0, 0.3, 1, 0)]))] == [UNKNOWN]


def test_labeler_without_gallery_is_the_old_labeler() -> None:
    got = Labeler(SPEC, 0.5)(outputs([[0.4, 0.6], [0.55, 0.45]], [unit(1, 0, 0, 0)] * 2))
    assert [f.identity.label for f in got] == ["Maya", "Jimmy"]
    strict = Labeler(SPEC, 0.7)(outputs([[0.4, 0.6]], [unit(1, 0, 0, 0)]))
    assert [f.identity.label for f in strict] == [UNKNOWN]


class FakeBundle:
    """What ``Labeler.for_bundle`` reads of a bundle (a real one is used in test_enroll_cli.py)."""

    def __init__(self, path: Path) -> None:
        self.path, self.spec, self.model_sha256, self.identity_threshold = path, SPEC, SHA, 0.4


def test_for_bundle_thresholds_and_reload(gallery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFACE_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(labeler_module, "RELOAD_CHECK_SECONDS", 0.0)
    bundle = FakeBundle(tmp_path / "m.edgeface")
    labeler = Labeler.for_bundle(bundle)  # no gallery yet: identity head, bundle threshold
    assert labeler.gallery is None and labeler.identity_threshold == 0.4
    assert labeler.similarity_threshold == DEFAULT_SIMILARITY_THRESHOLD
    path = gallery.calibrated(0.5, 0.8, {}).save(default_gallery_path(SHA))
    face = outputs([[0.7, 0.3]], [unit(0, 0, 1, 0.2)])
    assert labeler(face)[0].identity.label == "Ben"  # the new file was picked up
    assert labeler.similarity_threshold == 0.5 and labeler.identity_threshold == 0.8
    explicit = Labeler.for_bundle(bundle, identity_threshold=0.6, similarity_threshold=0.99)
    assert explicit.identity_threshold == 0.6 and explicit.similarity_threshold == 0.99
    assert explicit(face)[0].identity.label == "Jimmy"
    path.write_text("{")  # a broken file: keep the gallery we have
    assert labeler(face)[0].identity.label == "Ben"
    path.unlink()
    assert labeler(face)[0].identity.label == "Jimmy" and labeler.identity_threshold == 0.4
    assert Labeler.for_bundle(bundle, gallery="none").gallery is None
    with pytest.raises(GalleryError, match="nothing.json: gallery not found"):
        Labeler.for_bundle(bundle, gallery=tmp_path / "nothing.json")


def test_daemon_config_keys(tmp_path: Path) -> None:
    from edgeface.daemon.config import load_config

    config_file = tmp_path / "edgeface.toml"
    config_file.write_text('bundle = "m.edgeface"\nsource = 0\ngallery = "people.json"\n'
                           'similarity_threshold = 0.7\n')
    settings = load_config(config_file)
    assert settings.gallery == str(tmp_path / "people.json") and settings.similarity_threshold == 0.7
    config_file.write_text('bundle = "m.edgeface"\nsource = 0\ngallery = "none"\n')
    assert load_config(config_file).gallery == "none"
    assert load_config(None, {"bundle": "m.edgeface", "source": "0"}).gallery == ""
