"""Labels on a video of real people match the people in it (``celeba_bundle``, ../shared photos).

The video composites CelebA photos of the 6 people ``celeba_bundle`` was trained on onto 640x480 frames, one
face and three faces at a time, switching photos every second. The fixture model trained on photos of these
same people, and only photos it names correctly on their own are used: this checks the daemon's plumbing
(detect, align, batched inference, tracking, smoothing, JSON lines) end to end, not how well the model
generalises to unseen photos.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from helpers.daemon import DaemonProcess
from helpers.video_fixtures import recognised_photos

from edgeface.eval.video import face_photos, photo_actor, side_by_side, write_scene

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def people_photos(celeba_people_csv: Path, celeba_bundle: Path) -> dict:
    photos = recognised_photos(face_photos(celeba_people_csv, per_person=40), celeba_bundle)
    if len(photos) < 3:
        pytest.fail(f"celeba_bundle names the photos of only {len(photos)} people correctly; the video needs 3")
    return photos


@pytest.mark.parametrize("faces", [1, 3])
def test_identity_per_track_matches_the_people_in_the_video(people_photos: dict, celeba_bundle: Path,
                                                             tmp_path: Path, faces: int) -> None:
    ranked = sorted(people_photos, key=lambda p: (-len(people_photos[p]), p))
    people = ranked[:faces]  # the person with the most photos first: photo switches within one track
    video = tmp_path / f"people-{faces}.mp4"
    actors = [photo_actor(person, people_photos[person]) for person in people]
    truth = write_scene(video, side_by_side(actors, seconds=4.0, face_width=120.0, hold=1.0))

    daemon = DaemonProcess(["--bundle", str(celeba_bundle), "--source", str(video), "--no-http"])
    assert daemon.finish(120) == 0, daemon.log()
    records = daemon.records()
    assert len(records) >= 36  # a face in (nearly) every frame

    per_track: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
    for record in records:
        assert len(record["faces"]) <= faces
        for face, true in zip(record["faces"], truth.match(record["frame"], [f["box"] for f in record["faces"]])):
            assert true is not None, f"frame {record['frame']}: a face where nobody is: {face['box']}"
            per_track[face["track"]].append((true.identity, face["identity"]["label"]))
    # Each person on screen is one track for the whole video: photo switches and drift do not break it.
    assert sorted(pairs[0][0] for pairs in per_track.values()) == sorted(people)
    for track, pairs in per_track.items():
        person = pairs[0][0]
        assert all(t == person for t, _ in pairs)
        right = sum(label == person for _, label in pairs) / len(pairs)
        wrong = sum(label not in (person, "unknown") for _, label in pairs) / len(pairs)
        assert right >= 0.75 and wrong <= 0.1, (track, person, collections.Counter(label for _, label in pairs))
