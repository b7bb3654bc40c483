"""``edgeface evaluate``: metrics checked against planted answers, the quantization gate, the JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeface import HEADS
from edgeface.cli import app
from edgeface.data.manifest import Sample, load_dataset, write_csv
from edgeface.faces.crops import crop_samples
from edgeface.core.bundle import load_bundle, write_bundle
from edgeface.runtime.engine import LiteRTEngine
from helpers.no_tensorflow import run_without_tensorflow

runner = CliRunner()

# How many faces get a correct label per head; the rest get a wrong one. Unequal on purpose, so that a
# bundle with swapped labels (the planted drop) scores differently.
RIGHT = {"identity": 9, "emotion": 10, "gender": 8}
FACES = 12


@pytest.fixture(scope="module")
def known_set(synthetic_csv: Path, tiny_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """12 synthetic photos labelled so that the float32 tiny model gets exactly RIGHT[head] of them right,
    plus one photo without a face and one unreadable file, both labelled (misses), and one photo whose
    emotion is unknown (left out of emotion's n). Returns (csv, expected {head: (n, right, confusion)})."""
    bundle = load_bundle(tiny_bundles["float32"])
    spec = bundle.spec
    photos = load_dataset(synthetic_csv).samples[::9][:FACES + 1]  # spread over the people
    crops = crop_samples(photos, spec.crop, spec.input_size)
    assert len(crops.crops) == len(photos), "every synthetic photo should have a detectable face"
    predicted = LiteRTEngine(bundle.model_bytes, spec).predict(np.asarray(crops.crops))
    folder = tmp_path_factory.mktemp("known")
    samples: list[Sample] = []
    expected = {}
    truth: dict[str, list[int]] = {head: [] for head in HEADS}
    guess: dict[str, list[int]] = {head: [] for head in HEADS}
    for i, photo in enumerate(photos[:FACES]):
        labels = {}
        for head in HEADS:
            p = int(np.argmax(predicted[head][i]))
            t = p if i < RIGHT[head] else (p + 1) % len(spec.labels[head])
            labels[head] = spec.labels[head][t]
            truth[head].append(t)
            guess[head].append(p)
        samples.append(Sample(photo.image, **labels))
    last = photos[FACES]  # a face, but its emotion is unknown: counts for identity and gender only
    p_last = {h: int(np.argmax(predicted[h][FACES])) for h in HEADS}
    samples.append(Sample(last.image, spec.labels["identity"][p_last["identity"]], None,
                          spec.labels["gender"][p_last["gender"]]))
    blank = folder / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    first = {h: spec.labels[h][0] for h in HEADS}
    samples += [Sample(blank, **first), Sample(broken, **first)]
    for head in HEADS:
        right = RIGHT[head] + (head != "emotion")  # the unknown-emotion photo is right for the other heads
        n = FACES + (head != "emotion") + 2
        confusion = np.zeros((len(spec.labels[head]),) * 2, np.int64)
        np.add.at(confusion, (truth[head], guess[head]), 1)
        if head != "emotion":
            confusion[p_last[head], p_last[head]] += 1
        # the two misses are of class 0: they lower its recall
        support = confusion.sum(1) + np.eye(len(spec.labels[head]), dtype=np.int64)[0] * 2
        present = support > 0
        balanced = float(np.mean(np.diag(confusion)[present] / support[present]))
        expected[head] = (n, right, confusion, balanced)
    return write_csv(samples, folder / "labels.csv"), expected


def test_metrics_match_the_planted_answers(known_set, tiny_bundles: dict[str, Path]) -> None:
    from edgeface.eval.evaluate import evaluate_models

    csv, expected = known_set
    evaluation = evaluate_models([tiny_bundles["float32"]], csv)
    (result,) = evaluation.models
    assert result.faces == {"photos": FACES + 3, "found": FACES + 1, "multiple": 0, "no_face": 1, "unreadable": 1}
    for head in HEADS:
        n, right, confusion, balanced = expected[head]
        metrics = result.heads[head]
        assert (metrics.n, metrics.missed, metrics.correct) == (n, 2, right), head
        assert metrics.accuracy == pytest.approx(right / n)
        assert metrics.balanced_accuracy == pytest.approx(balanced)
        np.testing.assert_array_equal(metrics.confusion, confusion)

    # Another detector: the same faces here (short range finds them all, nothing in the grey image).
    (other,) = evaluate_models([tiny_bundles["float32"]], csv, detector="blazeface-fallback").models
    assert other.faces == result.faces
    assert {h: other.heads[h].correct for h in HEADS} == {h: result.heads[h].correct for h in HEADS}


def test_cli_table_json_and_plots(known_set, tiny_model: Path, tiny_bundles: dict[str, Path],
                                  tmp_path: Path) -> None:
    csv, expected = known_set
    order = [tiny_model.parent, tiny_bundles["int8"], tiny_bundles["float32"]]
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", *map(str, order), "--data", str(csv), "--json", str(out),
                                 "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "1 without a detectable face and 1 unreadable count as misses" in result.output
    assert f"confusion of {tiny_bundles['int8'].stem}" in result.output

    document = json.loads(out.read_text())
    assert document["format"] == "edgeface-evaluation" and document["format_version"] == 1
    assert document["data"] == {"path": str(csv), "photos": FACES + 3}
    assert document["reference"] == 0 and document["max_drop"] is None and document["passed"] is None
    assert [m["path"] for m in document["models"]] == [str(tiny_model), *map(str, order[1:])]
    assert [m["precision"] for m in document["models"]] == ["keras", "int8", "float32"]
    for model in document["models"]:
        assert set(model["heads"]) == set(HEADS)
        for head, figures in model["heads"].items():
            assert {"accuracy", "balanced_accuracy", "macro_f1", "n", "missed", "confusion", "labels",
                    "drop"} <= set(figures)
            assert 0.0 <= figures["accuracy"] <= 1.0 and figures["n"] == expected[head][0]
    float32 = document["models"][2]["heads"]
    assert [float32[h]["accuracy"] for h in HEADS] == [round(expected[h][1] / expected[h][0], 4) for h in HEADS]
    assert document["models"][0]["heads"]["emotion"]["drop"] == 0.0
    names = [tiny_model.parent.name, tiny_bundles["int8"].stem, tiny_bundles["float32"].stem]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"confusion-{n}.png" for n in names)


@pytest.fixture(scope="module")
def swapped_bundle(tiny_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The float32 model with its emotion labels swapped: a planted accuracy drop on one head."""
    bundle = load_bundle(tiny_bundles["float32"])
    labels = dict(bundle.spec.labels)
    labels["emotion"] = tuple(reversed(labels["emotion"]))
    path = tmp_path_factory.mktemp("planted") / "swapped-float32.edgeface"
    return write_bundle(path, bundle.model_bytes, bundle.spec.with_(labels=labels), "float32")


def test_gate_fails_on_a_planted_drop(known_set, tiny_bundles: dict[str, Path], swapped_bundle: Path,
                                      tmp_path: Path) -> None:
    csv, expected = known_set
    reference = str(tiny_bundles["float32"])
    out = tmp_path / "gate.json"
    result = runner.invoke(app, ["evaluate", reference, str(swapped_bundle), "--data", str(csv), "--max-drop", "1",
                                 "--no-confusion", "--json", str(out)])
    assert result.exit_code == 1, result.output
    n, right, _, _ = expected["emotion"]
    drop = 100 * (right - (FACES - RIGHT["emotion"])) / n  # swapped: the planted wrong ones become right
    assert f"gate failed: swapped-float32 loses {drop:.2f} points of emotion accuracy" in result.output
    assert "identity" not in result.output.split("gate failed")[1]  # only the planted head fails
    document = json.loads(out.read_text())
    assert document["passed"] is False and document["max_drop"] == 1
    assert document["models"][1]["heads"]["emotion"]["drop"] == pytest.approx(drop, abs=1e-3)
    assert document["models"][1]["heads"]["identity"]["drop"] == 0.0

    loose = runner.invoke(app, ["evaluate", reference, str(swapped_bundle), "--data", str(csv), "--max-drop",
                                f"{drop + 0.1:.2f}", "--no-confusion"])
    assert loose.exit_code == 0 and "gate passed" in loose.output
    same = runner.invoke(app, ["evaluate", reference, reference, "--data", str(csv), "--max-drop", "0"])
    assert same.exit_code == 0, same.output


def test_different_input_sizes_are_cropped_separately(known_set, tiny_bundles: dict[str, Path],
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    from edgeface.convert.tflite import convert_keras
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.train.model import build_model

    spec = load_bundle(tiny_bundles["float32"]).spec.with_(input_size=32)
    model = build_model(spec, weights="none").model
    small = write_bundle(tmp_path_factory.mktemp("size32") / "tiny32.edgeface",
                         convert_keras(model, "float32", spec), spec, "float32")
    csv, expected = known_set
    notes: list[str] = []
    evaluation = evaluate_models([tiny_bundles["float32"], small], csv, on_log=notes.append)
    assert any("2 different crop geometries or input sizes" in n for n in notes)
    assert [m.model.spec.input_size for m in evaluation.models] == [64, 32]
    assert evaluation.models[1].heads["gender"].n == expected["gender"][0]


def test_bad_input_is_one_line(known_set, tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    csv, _ = known_set
    cases = [
        (["evaluate", str(tmp_path / "nope.edgeface"), "--data", str(csv)], "nope.edgeface: no such file"),
        (["evaluate", str(tiny_bundles["int8"]), "--data", str(tmp_path / "none.csv")], "none.csv: no such file"),
        (["evaluate", str(tiny_bundles["int8"]), "--data", str(csv), "--max-drop", "-1"], "--max-drop must be 0"),
        (["evaluate", str(csv), "--data", str(csv)], "not a model"),
        (["evaluate", str(tiny_bundles["int8"]), "--data", str(csv), "--detector", "yolo"],
         "unknown face detector 'yolo'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_bundles_evaluate_and_bench_without_tensorflow(known_set, tiny_bundles: dict[str, Path]) -> None:
    """What runs on the Pi: `evaluate` and `bench` on bundles with TensorFlow and Keras impossible to import."""
    csv, _ = known_set
    script = "import sys\nfrom edgeface.cli import app\napp(sys.argv[1:])"
    bundle = str(tiny_bundles["int8"])
    for args in (["evaluate", bundle, "--data", str(csv), "--max-drop", "0"],
                 ["bench", bundle, "--threads", "1", "--runs", "3", "--no-frames", "--no-memory"]):
        done = run_without_tensorflow(script, *args, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert tiny_bundles["int8"].stem in done.stdout


@pytest.mark.shared
def test_real_faces_before_and_after_int8(celeba_model: Path, celeba_bundle: Path, celeba_people_csv: Path,
                                          tmp_path: Path) -> None:
    """MobileNetV2 on 6 real people: Keras and its int8 bundle on the same crops, with a loose gate."""
    out = tmp_path / "real.json"
    result = runner.invoke(app, ["evaluate", str(celeba_model), str(celeba_bundle), "--data",
                                 str(celeba_people_csv), "--max-drop", "10", "--json", str(out), "--no-confusion"])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    keras, int8 = document["models"]
    crops = crop_samples(load_dataset(celeba_people_csv).samples, load_bundle(celeba_bundle).spec.crop, 96)
    assert keras["faces"]["no_face"] == crops.summary().get("no_face", 0) == int8["faces"]["no_face"]
    assert keras["heads"]["identity"]["accuracy"] > 2 / 6  # 6 people (chance 1/6), heads on frozen 96x96 features
    assert keras["heads"]["identity"]["missed"] == keras["faces"]["no_face"] + keras["faces"]["unreadable"]
