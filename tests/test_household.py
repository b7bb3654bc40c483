"""The household harness (``benchmarks/household.py``): it scores what it should against a scene's truth, its
per-frame baseline is the rule before issue 34, and on a synthetic household the per-visit rule beats it."""

from __future__ import annotations

import numpy as np
import pytest
from household import Run, per_frame_rule, score

from edgeface.core.gallery import Gallery
from edgeface.core.spec import ModelSpec
from edgeface.eval.video import SceneTruth, TrueFace, TrueVisit
from edgeface.runtime.labeler import Labeler

D = 8
SPEC = ModelSpec(labels={"identity": ("Trained", "Other"), "emotion": ("happy", "neutral"),
                         "gender": ("female", "male")}, input_size=64, embedding_size=D)


def face(identity: str, visit: int, x: float, visible: float = 1.0) -> TrueFace:
    return TrueFace(identity, visit, (x, 100, x + 80, 180), ((x + 25, 130), (x + 55, 130)), visible)


def box(x: float) -> tuple[float, float, float, float]:
    return (x + 3, 102, x + 83, 182)


@pytest.fixture()
def truth() -> SceneTruth:
    """Maya (enrolled) on screen in frames 0-9 at x=100; Zed (a stranger) in frames 2-9 at x=400, entering
    half visible in frame 2."""
    frames = tuple((face("Maya", 0, 100),) + ((face("Zed", 1, 400, 0.4 if i == 2 else 1.0),) if i >= 2 else ())
                   for i in range(10))
    visits = (TrueVisit("Maya", 0, 0, 9, 0.0, 0.9), TrueVisit("Zed", 1, 3, 9, 0.3, 0.9))
    return SceneTruth(10.0, (640, 480), {"Maya": {}, "Zed": {}}, visits, frames)


def run_of(labels: list[list[tuple[float, str]]]) -> Run:
    return Run([[(box(x), k, label) for k, (x, label) in enumerate(frame)] for frame in labels])


def test_scores_visits_and_face_frames_against_the_truth(truth: SceneTruth) -> None:
    maya = ["unknown"] * 3 + ["Maya"] * 7
    zed = [None, None] + ["unknown"] * 3 + ["Maya"] + ["unknown"] * 4  # named once, in frame 5
    labels = [[(100, m)] + ([(400, z)] if z else []) + ([(560, "Ben")] if i == 4 else [])
              for i, (m, z) in enumerate(zip(maya, zed))]
    figures = score(truth, run_of(labels), enrolled={"Maya", "Ben"}).figures()
    assert figures["enrolled_named_right"] == {"count": 1, "of": 1, "rate": 1.0}
    assert figures["seconds_to_right_name"] == {"median": 0.3, "p90": 0.3, "named": 1}
    assert figures["strangers_given_a_name"] == {"count": 1, "of": 1, "rate": 1.0}
    assert figures["face_frames_wrong_name"] == {"count": 1, "of": 18, "rate": round(1 / 18, 4)}
    assert figures["stranger_frames_named"]["count"] == 1 and figures["enrolled_frames_right"]["count"] == 7
    assert figures["detections_without_a_face"] == 1  # the box at x=560, where nobody is

    # Maya given Ben's name in one frame: her visit is not named right, however often she was named after.
    labels[8][0] = (100, "Ben")
    figures = score(truth, run_of(labels), enrolled={"Maya", "Ben"}).figures()
    assert figures["enrolled_named_right"]["count"] == 0 and figures["enrolled_given_a_wrong_name"]["count"] == 1
    assert figures["seconds_to_right_name"] == {"median": None, "p90": None, "named": 0}

    silent = score(truth, run_of([[(100, "unknown")] for _ in range(10)]), enrolled={"Maya"}).figures()
    assert silent["enrolled_never_named"]["count"] == 1 and silent["strangers_given_a_name"]["count"] == 0
    assert silent["visits_never_detected"] == 1  # Zed's face was never found

    # In full view for 1 s (10 frames at 10 fps) or more: Maya's visit counts; a visit half hidden does not.
    assert silent["enrolled_in_view_named_right"] == {"count": 0, "of": 1, "rate": 0.0}
    hidden = SceneTruth(10.0, (640, 480), {"Maya": {}}, (TrueVisit("Maya", 0, 0, 9, 0.0, 0.9),),
                        tuple((face("Maya", 0, 100, 1.0 if i < 9 else 0.6),) for i in range(10)))
    assert score(hidden, run_of([[(100, "Maya")] for _ in range(10)]), enrolled={"Maya"}).figures()[
        "enrolled_in_view_named_right"] == {"count": 0, "of": 0, "rate": None}


def test_the_per_frame_baseline_smooths_each_track_and_applies_the_photo_rule() -> None:
    """An exponential moving average (0.6) of each track's outputs, the embedding at the newest face's length,
    each frame labelled by ``labeler(outputs)``; a track unseen for more than 5 frames starts afresh."""
    rng = np.random.default_rng(0)
    maya = rng.normal(size=D)
    maya /= np.linalg.norm(maya)
    gallery = Gallery("ab" * 32, D).with_person("Maya", maya[None].astype(np.float32))
    labeler = Labeler(SPEC, identity_threshold=0.9, gallery=gallery, similarity_threshold=0.8)
    other = rng.normal(size=D)
    other -= (other @ maya) * maya
    other /= np.linalg.norm(other)

    def outputs(cosine: float, scale: float = 1.0) -> dict[str, np.ndarray]:
        embedding = scale * (cosine * maya + np.sqrt(1 - cosine ** 2) * other)
        return {"embedding": embedding[None].astype(np.float32), "identity": np.array([[0.5, 0.5]], np.float32),
                "emotion": np.array([[0.9, 0.1]], np.float32), "gender": np.array([[0.2, 0.8]], np.float32)}

    # A good face (cosine 0.95), then one that alone is nobody (0.7), then poor ones (0.3): the average names
    # the second face too, then drops the name.
    cosines = [0.95, 0.7, 0.3, 0.3]
    frames = [([7], outputs(c, scale=1.0 + 0.1 * k)) for k, c in enumerate(cosines)]
    run = per_frame_rule(labeler, frames, [[box(0)]] * len(frames))
    expected, smoothed = [], None
    for _, out in frames:
        smoothed = out if smoothed is None else {
            k: 0.6 * smoothed[k] + 0.4 * v for k, v in out.items()}
        smoothed["embedding"] = smoothed["embedding"] * np.linalg.norm(out["embedding"]) / np.linalg.norm(
            smoothed["embedding"])
        expected.append(labeler(smoothed)[0].identity.label)
    assert [frame[0][2] for frame in run.frames] == expected == ["Maya", "Maya", "unknown", "unknown"]
    assert labeler(outputs(0.7))[0].identity.label == "unknown"
    # After 6 frames away, the track's average starts again from its new face.
    frames = [([7], outputs(0.95))] + [([], {})] * 6 + [([7], outputs(0.3))]
    run = per_frame_rule(labeler, frames, [[box(0)]] + [[]] * 6 + [[box(0)]])
    assert run.frames[-1][0][2] == labeler(outputs(0.3))[0].identity.label == "unknown"


# --- the harness on synthetic video -------------------------------------------------------------------------


def test_on_synthetic_video_the_per_visit_rule_leaves_a_stranger_unnamed_that_the_per_frame_rule_names(
        tiny_bundles: dict, tmp_path) -> None:
    """A member and a stranger come and go twice each, crossing each other (two of the tiny model's people, which
    its embedding tells apart on average, not face by face). The member is enrolled from three of their own
    faces; the thresholds are set where the issue's first kind of error lives: the per-face one below the
    stranger's best single faces, the per-visit one between the two people's averages. Through the harness
    (the pipeline twice, scored against the scene's truth): the per-frame rule names the stranger in some
    frames, the per-track rule never, and names the member on every visit."""
    from household import Config, run_rules

    import edgeface
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import open_gallery
    from edgeface.data.synthetic import make_people
    from edgeface.eval.video import read_video, synthetic_actor, visits_scene, write_scene
    from edgeface.recognition.settings import RecognitionConfig

    bundle = tiny_bundles["int8"]
    member, stranger = (synthetic_actor(look, 110.0, views=2, seed=1) for look in make_people(6, seed=0)[:2])
    video = tmp_path / "door.mp4"
    truth = write_scene(video, visits_scene([member, member, stranger, stranger], max_faces=2, seed=1,
                                            visit_seconds=(4.0, 6.0)))
    faces: dict[str, list[np.ndarray]] = {member.identity: [], stranger.identity: []}
    pipeline = edgeface.load(bundle, threads=1, gallery=None, recognition=RecognitionConfig(budget=64, refresh=0.0))
    for result in pipeline.run(read_video(video), fps=truth.fps, start=0.0):
        if result.samples is not None and result.index < truth.frame_count:
            matched = truth.match(result.index, [f.box for f in result.faces])
            for k, true in enumerate(matched):
                if true is not None and true.visible >= 0.9:
                    faces[true.identity].append(result.samples.outputs["embedding"][k])
    loaded = load_bundle(bundle)
    path = tmp_path / "people.json"
    gallery = open_gallery(loaded.model_sha256, loaded.spec.embedding_size, path)
    gallery = gallery.with_person(member.identity, np.stack(faces[member.identity][:3]))
    own = gallery.similarities(np.stack(faces[member.identity][3:]))[:, 0]
    other = gallery.similarities(np.stack(faces[stranger.identity]))[:, 0]
    assert own.mean() > other.mean() + 0.02, f"the two are not apart on average ({own.mean():.3f}, {other.mean():.3f})"
    per_face = float(np.quantile(other, 0.9))  # a tenth of the stranger's faces would be named alone
    per_visit = float((own.mean() + other.max()) / 2) if own.mean() > other.max() else float(
        (own.mean() + other.mean()) / 2)
    gallery.calibrated(per_face, 1.01, {"test": True}, per_visit, 1.01).save(path)  # 1.01: the head names nobody

    runs = run_rules(bundle, path, video, truth.frame_count, Config(threads=1))
    scores = {rule: score(truth, run, {member.identity}).figures() for rule, run in runs.items()}
    per_track, per_frame = scores["per_track"], scores["per_frame"]
    assert per_frame["strangers_given_a_name"]["count"] > 0  # some single frames name the stranger ...
    assert per_track["strangers_given_a_name"]["count"] == 0  # ... the visit's evidence never does
    assert per_track["face_frames_wrong_name"]["count"] < per_frame["face_frames_wrong_name"]["count"]
    assert per_track["enrolled_named_right"] == {"count": 2, "of": 2, "rate": 1.0}
    # The harness itself: every visit's face was found, every detection is somebody's, the rules scored the same
    # face frames, and the per-track run recognised a fraction of them.
    for figures in scores.values():
        assert figures["visits_never_detected"] == 0 and figures["detections_without_a_face"] == 0
        assert figures["face_frames"] == per_frame["face_frames"] > 100
    recognised = {rule: sum(map(len, run.recognised)) for rule, run in runs.items()}
    assert recognised["per_track"] < recognised["every_face"] / 3
