"""The CLI's data, train and convert commands through typer's CliRunner: exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.core.bundle import load_bundle

runner = CliRunner()


def test_help_teaches_the_workflow() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("edgeface demo", "data check", "train", "convert", "Exit codes"):
        assert word in result.output


def test_data_check_clean_and_dirty(synthetic_csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(synthetic_csv)])
    assert result.exit_code == 0, result.output
    assert "clean" in result.output and "people: 6" in result.output
    dirty = tmp_path / "dirty.csv"
    lines = synthetic_csv.read_text().splitlines()
    image = str(synthetic_csv.parent / lines[1].split(",")[0])
    dirty.write_text("\n".join([lines[0], f"{image},Jimmy,grinning,male", f"{tmp_path / 'gone.jpg'},Jimmy,happy,male"]))
    result = runner.invoke(app, ["data", "check", str(dirty)])
    assert result.exit_code == 1
    assert "error: dirty.csv:2: unknown emotion label 'grinning'" in result.output
    assert "dirty.csv:3: " in result.output and "gone.jpg: file not found" in result.output


def test_data_split_writes_two_manifests(synthetic_csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "split", str(synthetic_csv), "--out", str(tmp_path), "--fraction", "0.25"])
    assert result.exit_code == 0, result.output
    train = (tmp_path / "train.csv").read_text().splitlines()
    test = (tmp_path / "test.csv").read_text().splitlines()
    assert len(train) - 1 == 90 and len(test) - 1 == 30


def test_train_refuses_bad_data_and_bad_options(synthetic_csv: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("image,identity,emotion,gender\nx.jpg,A,happy,robot\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "o"), "--backbone", "tiny",
                                 "--weights", "none"])
    assert result.exit_code == 2
    assert "error: bad.csv:2: unknown gender label 'robot'" in result.output
    tiny = ["--backbone", "tiny", "--weights", "none"]
    for options, message in [
        (["--backbone", "alexnet"], "unknown backbone 'alexnet'"),
        (["--weights", str(tmp_path / "nope.h5")], "nope.h5: no such file"),
        (["--backbone", "tiny", "--weights", "dlib"], "backbone 'tiny' has no dlib weights; use --weights none"),
        (["--backbone", "mobilenetv2", "--weights", "dlib"], "backbone 'mobilenetv2' has no dlib weights"),
        (tiny + ["--head-weight", "emotion"], "expected HEAD=WEIGHT such as emotion=2, got 'emotion'"),
        (tiny + ["--head-weight", "smile=2"], "head weight for unknown head 'smile'"),
    ]:
        result = runner.invoke(app, ["train", "--data", str(synthetic_csv), "--out", str(tmp_path / "o"), *options])
        assert result.exit_code == 2 and message in result.output, (options, result.output)


def test_train_and_convert_end_to_end(synthetic_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # dlib's architecture, tiny and from scratch: its custom layers and the centres head survive saving,
    # loading and int8.
    result = runner.invoke(app, ["train", "--data", str(synthetic_csv), "--out", str(out), "--backbone",
                                 "dlib-resnet-tiny", "--epochs", "2", "--head-weight", "emotion=2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metadata.json").read_text())["training"]["config"]["head_weights"] == {"emotion": 2.0}
    assert (out / "model.keras").is_file() and (out / "metadata.json").is_file() and (out / "history.png").is_file()
    assert "identity validation accuracy" in result.output
    result = runner.invoke(app, ["convert", str(out), "-p", "float32", "-p", "int8", "--out", str(tmp_path / "b"),
                                 "--min-agreement", "0", "--representative-size", "30", "--verify-size", "30",
                                 "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert load_bundle(tmp_path / "b" / "run-int8.edgeface").manifest["conversion"]["seed"] == 7
    assert (tmp_path / "b" / "run-int8.edgeface").is_file() and (tmp_path / "b" / "run-float32.edgeface").is_file()
    assert "agreement" in result.output and "vs float32" in result.output
    _emotion_is_read_from_the_mouth(out, tmp_path / "b" / "run-int8.edgeface", synthetic_csv)
    result = runner.invoke(app, ["convert", str(out), "-p", "int4"])
    assert result.exit_code == 2 and "unknown precision 'int4'" in result.output


def _emotion_is_read_from_the_mouth(run: Path, bundle_path: Path, synthetic_csv: Path) -> None:
    """The synthetic faces smile with their mouths, so train fits emotion on the mouth's shape (crops aligned on the
    face mesh); the int8 bundle carries that head and the Python API gives it from the landmarks of each face."""
    import edgeface
    from edgeface.core.imageio import read_image
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.align import align_faces_and_shapes
    from edgeface.runtime.engine import head_from_features

    assert json.loads((run / "metadata.json").read_text())["heads"]["emotion"]["kept"] == "mouth_shape"
    bundle = load_bundle(bundle_path)
    head = bundle.float_heads["emotion"]
    assert head.features == "mouth_shape" and bundle.manifest["head_rules"]["emotion"]["used"] == "mouth_shape"
    pipeline = edgeface.load(bundle, gallery=None)
    checked = 0
    for sample in load_dataset(synthetic_csv).samples[:4]:
        image = read_image(sample.image)
        faces = pipeline.detect(image)
        _, shapes = align_faces_and_shapes(image, faces, bundle.spec.crop, bundle.spec.input_size)
        expected = head_from_features(shapes, head)
        for result, probabilities in zip(pipeline.label(image), expected):
            assert result.labels.emotion.label == bundle.spec.labels["emotion"][int(np.argmax(probabilities))]
            assert result.labels.emotion.score == pytest.approx(float(probabilities.max()), abs=1e-5)
            checked += 1
    assert checked >= 4


def test_convert_names_a_missing_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(tmp_path / "nothing" / "model.keras")])
    assert result.exit_code == 2
    assert "metadata.json: missing" in result.output or "model file not found" in result.output


def test_demo_scores_video_faces_as_right_unknown_or_wrong() -> None:
    from edgeface.cli.demo import score_video
    from edgeface.eval.video import SceneTruth, TrueFace

    def true(identity: str, visit: int, x: float) -> TrueFace:
        return TrueFace(identity, visit, (x, 0, x + 100, 100), ((x + 30, 40), (x + 70, 40)), 1.0)

    truth = SceneTruth(10.0, (640, 480), {"Maya": {}, "Jimmy": {}}, (),
                       ((true("Maya", 0, 0), true("Jimmy", 1, 200)), (true("Maya", 0, 0),)))

    def face(label: str, x: float) -> dict:
        return {"box": [x, 10, x + 60, 70], "identity": {"label": label, "score": 0.9}}

    records = [{"frame": 0, "faces": [face("Maya", 10), face("unknown", 220)]},
               {"event": "arrived", "visit": "1-1", "time": 0.1},  # visit events carry no faces
               {"frame": 1, "faces": [face("Jimmy", 10), face("Maya", 400)]}]  # the last box matches no true face
    assert score_video(records, truth) == (1, 1, 3)  # right, unknown, faces matched (the third is wrong)


def test_demo_labels_a_video_and_reports_its_visits(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    """The demo's daemon step on the tiny bundle: the JSON lines hold frames and visit events, and the step
    scores the frames and lists the visits (it read every line as a frame once visits existed)."""
    from edgeface.cli.demo import _run_daemon
    from edgeface.data.synthetic import make_people

    correct, unknown, total, frames, visits = _run_daemon(tmp_path, tiny_bundles["int8"], make_people(6, seed=0),
                                                          None, seed=0)
    assert frames > 0 and 0 < total <= 2 * frames and correct + unknown <= total
    assert visits and all({"who", "first_seen", "last_seen"} <= set(v) for v in visits)
