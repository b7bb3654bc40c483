"""Training: label masking, class weights, backbones, and real training on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeface.data.manifest import Sample
from edgeface.core.errors import ModelError
from edgeface.core.spec import ModelSpec
from edgeface.train.batches import encode_labels

SPEC = ModelSpec(labels={"identity": ("Jimmy", "Maya", "Mona"), "emotion": ("happy", "neutral"),
                         "gender": ("female", "male")}, input_size=64, backbone="tiny")


def test_unknown_labels_are_masked_out_of_their_head() -> None:
    samples = [Sample(Path("a"), "Jimmy", "happy", "male"), Sample(Path("b"), "Maya", None, "female"),
               Sample(Path("c"), None, "neutral", "female")]
    heads = encode_labels(samples, SPEC)
    np.testing.assert_array_equal(heads.targets["emotion"], [[1, 0], [0, 0], [0, 1]])
    assert heads.weights["emotion"][1] == 0.0 and heads.weights["identity"][2] == 0.0
    assert heads.weights["identity"][0] == 1.0


def test_attribute_heads_are_class_weighted() -> None:
    samples = [Sample(Path(str(i)), "Jimmy", "happy" if i < 3 else "neutral", "male") for i in range(4)]
    heads = encode_labels(samples, SPEC)
    # 3 happy, 1 neutral: weights n / (classes * count) = 4/6 and 4/2.
    assert heads.class_weights["emotion"] == pytest.approx({"happy": 4 / 6, "neutral": 2.0})
    np.testing.assert_allclose(heads.weights["emotion"], [4 / 6, 4 / 6, 4 / 6, 2.0])
    # A head with a single present class keeps weight 1 for the absent one rather than dividing by zero.
    assert heads.class_weights["gender"] == {"female": 1.0, "male": 1.0}


def test_weights_argument_is_checked(tmp_path: Path) -> None:
    from edgeface.train.model import resolve_weights

    with pytest.raises(ModelError, match="no such file"):
        resolve_weights("mobilenetv2", str(tmp_path / "missing.h5"))
    assert resolve_weights("vgg16", "none") is None


def test_imagenet_weights_come_from_the_local_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from edgeface.train.model import resolve_weights

    local = tmp_path / "mobilenet_v2_1.0_224_imagenet_notop.weights.h5"
    local.write_bytes(b"x")
    monkeypatch.setenv("EDGEFACE_WEIGHTS_DIR", str(tmp_path))
    assert resolve_weights("mobilenetv2", "imagenet") == str(local)
    monkeypatch.setenv("EDGEFACE_WEIGHTS_DIR", str(tmp_path / "empty"))
    assert resolve_weights("resnet50", "imagenet") == "imagenet"  # Keras' own download, for users online


@pytest.mark.parametrize("backbone,size,embedding", [("vgg16", 32, 16), ("resnet50", 32, 16), ("mobilenetv2", 32, 16),
                                                      ("tiny", 32, 16), ("dlib-resnet-tiny", 150, 128)])
def test_every_backbone_builds_with_named_outputs(backbone: str, size: int, embedding: int) -> None:
    from edgeface.train.model import build_model

    spec = SPEC.with_(backbone=backbone, input_size=size, embedding_size=embedding)
    out = build_model(spec, weights="none").model(np.zeros((2, size, size, 3), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "identity": (2, 3), "emotion": (2, 2), "gender": (2, 2), "embedding": (2, embedding)}


def test_centres_head_is_a_softmax_over_scaled_cosines_to_fixed_centres() -> None:
    from edgeface.train.model import build_model, model_identity_centres, set_identity_centres

    spec = SPEC.with_(backbone="dlib-resnet-tiny", input_size=150, embedding_size=128)
    built = build_model(spec, weights="none")
    assert type(built.heads.get_layer("identity")).__name__ == "CosineSoftmax"
    assert not built.heads.get_layer("identity").trainable_weights  # set from the data, not trained
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 128)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    set_identity_centres(built.heads, embeddings, ["a", "a", "b", "b", "c", "c"], ["a", "b", "c"], scale=40.0)
    attributes = int(built.heads.input["attributes"].shape[-1])
    features = {"descriptor": embeddings * 3.0, "attributes": rng.normal(size=(6, attributes)).astype(np.float32)}
    out = built.heads(features)
    centres = np.stack([embeddings[0] + embeddings[1], embeddings[2] + embeddings[3],
                        embeddings[4] + embeddings[5]], axis=1)
    centres /= np.linalg.norm(centres, axis=0, keepdims=True)
    logits = 40.0 * embeddings @ centres
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(out["identity"]), expected / expected.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["embedding"]), embeddings, atol=1e-6)  # the descriptor, normalised
    travelling = model_identity_centres(built.model)  # what convert puts in the bundle
    np.testing.assert_allclose(travelling.centres, centres.T, atol=1e-6)
    assert travelling.scale == 40.0
    assert model_identity_centres(build_model(SPEC.with_(embedding_size=16), weights="none").model) is None


@pytest.mark.shared
def test_real_training_beats_chance_on_every_head(celeba_model: Path) -> None:
    """MobileNetV2 from ImageNet weights, heads trained on 6 real people (the `celeba_model` fixture)."""
    metadata = json.loads(celeba_model.with_name("metadata.json").read_text())
    metrics = metadata["metrics"]["validation"]
    assert metrics["identity"]["accuracy"] > 2 / 6  # chance is 1/6
    assert metrics["emotion"]["balanced_accuracy"] > 0.6
    assert metrics["gender"]["balanced_accuracy"] > 0.6
    assert metadata["dataset"]["val_faces"] > 20
    for name in ("model.keras", "history.json", "history.png"):
        assert celeba_model.with_name(name).stat().st_size > 0
    history = json.loads(celeba_model.with_name("history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]


def test_head_weights_scale_each_heads_share_of_the_loss() -> None:
    from edgeface.train.model import build_model
    from edgeface.train.trainer import check_head_weights, compile_model

    built = build_model(SPEC.with_(embedding_size=16, input_size=32), weights="none")
    compile_model(built.training_model, 1e-3, 0.0, head_weights={"emotion": 3.0})
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 3), dtype=np.float32)
    targets = {head: np.eye(n, dtype=np.float32)[rng.integers(0, n, 4)] for head, n in
               (("identity", 3), ("emotion", 2), ("gender", 2))}
    got = built.training_model.evaluate(images, targets, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(got["identity_loss"] + 3 * got["emotion_loss"] + got["gender_loss"],
                                        rel=1e-4)
    with pytest.raises(ModelError, match="head weight for unknown head 'smile'; heads are identity, emotion"):
        check_head_weights({"smile": 2.0})
    with pytest.raises(ModelError, match="head weight for emotion must be above 0, got 0"):
        check_head_weights({"emotion": 0.0})


def test_a_head_keeps_its_training_only_when_clearly_better_than_the_probe() -> None:
    from edgeface.train.choice import MIN_LABELLED, PROBE, TRAINED, compare, settle

    def faces(both: int, trained_only: int, probe_only: int, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
        trained = [True] * both + [True] * trained_only + [False] * probe_only + [False] * neither
        probe = [True] * both + [False] * trained_only + [True] * probe_only + [False] * neither
        return np.array(trained), np.array(probe)

    # 16 faces disagree: the trained head must win by more than sqrt(16) = 4 of them
    assert compare(*faces(80, 11, 5))[0] == TRAINED  # +6
    kept, why = compare(*faces(80, 10, 6))  # +4: within the noise
    assert kept == PROBE and why == "fine-tuned, it is not clearly better: +4 faces of 96 against the probe (noise ±4.0)"
    assert compare(*faces(80, 0, 0, 16))[0] == PROBE  # the same faces right: the exact fit
    kept, why = compare(*faces(MIN_LABELLED - 10, 9, 0))  # far better, but on too few faces to tell
    assert kept == PROBE and why.startswith(f"only {MIN_LABELLED - 1} labelled validation faces, too few")
    # heads on the same fine-tuned features: back to the frozen backbone only if each is better so
    figures = {"trained": 0.9, "probe": 0.8, "n": 100}
    back, settled = settle({"identity": (TRAINED, "better", figures), "emotion": (PROBE, "worse", figures)})
    assert not back and settled["emotion"]["kept"] == TRAINED
    assert settled["emotion"]["why"] == "worse; but identity read the same fine-tuned features and are better trained"
    back, settled = settle({"emotion": (PROBE, "worse", figures), "gender": (PROBE, "worse", figures)})
    assert back and {c["kept"] for c in settled.values()} == {PROBE}


def test_a_kept_trained_head_is_refitted_exactly_only_where_validation_agrees() -> None:
    from edgeface.train.choice import MIN_LABELLED, REFIT_L2, keep_refit, refit_head

    rng = np.random.default_rng(0)
    classes = ("happy", "neutral")

    def faces(n: int) -> tuple[np.ndarray, list[str | None]]:
        truth = rng.integers(0, 2, n)
        features = rng.normal(size=(n, 6)) + np.outer(2.0 * truth - 1.0, [1.5, 0, 0, 0, 0, 0])
        return features.astype(np.float32), [classes[t] for t in truth]

    (train_x, train_y), (val_x, val_y) = faces(200), faces(100)
    train_y[:20] = [None] * 20  # unlabelled faces are left out of the fit
    # a head that learned from the wrong feature: the exact fit is right on more validation faces
    wrong = np.zeros((6, 2), np.float32)
    wrong[1] = [1.0, -1.0]
    kernel, bias, record = refit_head(train_x, train_y, val_x, val_y, classes, wrong, np.zeros(2, np.float32))
    assert record["kept"] and record["l2"] in REFIT_L2 and record["validation"]["n"] == 100
    assert record["validation"]["refit"] > 0.8 > record["validation"]["trained"]
    assert kernel[0, 1] - kernel[0, 0] > 0  # the refit reads the feature that tells the classes apart
    # a head the validation faces prefer (they differ along the feature it reads, not the training faces') keeps
    # its own weights
    own = np.zeros((6, 2), np.float32)
    own[1] = [-1.0, 1.0]
    shifted = np.outer(2.0 * np.array([c == "neutral" for c in val_y]) - 1.0, np.eye(6)[1]).astype(np.float32)
    kept_kernel, _, record = refit_head(train_x, train_y, shifted, val_y, classes, own, np.zeros(2, np.float32))
    assert not record["kept"] and record["validation"]["trained"] == 1.0 > record["validation"]["refit"]
    np.testing.assert_array_equal(kept_kernel, own)
    # a trained layer right on a face or two more than the refit is not clearly better: the exact fit is kept
    refit_right, trained_right = np.ones(100, bool), np.ones(100, bool)
    refit_right[:2], trained_right[2] = False, False  # they disagree on 3 faces; the trained layer wins 2 of them
    assert keep_refit(trained_right, refit_right)
    assert not keep_refit(np.ones(100, bool), np.arange(100) >= 10)  # right on 10 more of 10 disagreements
    # too few labelled validation faces to tell: nothing is refitted
    few = [label if i < MIN_LABELLED - 1 else None for i, label in enumerate(val_y)]
    assert refit_head(train_x, train_y, val_x, few, classes, wrong, np.zeros(2, np.float32)) is None


def test_default_recipe_fits_frozen_heads_exactly_and_trains_the_rest(synthetic_csv: Path, tmp_path: Path) -> None:
    """dlib-resnet with dlib's weights (the default), on the synthetic set: gender reads the frozen descriptor,
    so its head is the linear probe's own fit and fine-tuning leaves it so (the same validation accuracy, to
    the face); emotion's branch is fine-tuned with its head, then, with too few validation faces to show that
    fine-tuning helps, goes back to dlib's weights under the probe's exact fit, which the fit on the mouth's
    shape then replaces (the synthetic faces smile with their mouths); identity is the nearest centre."""
    from edgeface.train.dlib_resnet import find_dat
    from edgeface.train.keras_model import load_keras_model
    from edgeface.train.model import ATTRIBUTE_PREFIX, build_model, model_parts
    from edgeface.train.trainer import TrainConfig, train

    try:
        find_dat()
    except ModelError as error:
        pytest.skip(str(error))
    logs: list[str] = []
    result = train(TrainConfig(data=synthetic_csv, out=tmp_path, frozen_epochs=3, epochs=1, verbose=0),
                   on_log=logs.append)
    assert any("gender fitted exactly" in line for line in logs), logs
    assert not any("emotion" in line and "fitted exactly" in line for line in logs), logs
    assert any(line.startswith("identity: nearest of 6 person centres") for line in logs), logs
    metrics = result.metadata["metrics"]
    n = metrics["validation"]["gender"]["n"]  # the probe's fit on dlib's descriptor
    assert abs(metrics["validation"]["gender"]["accuracy"] - metrics["linear_probe"]["gender"]) <= 1 / n + 1e-4
    assert metrics["validation"]["emotion"]["accuracy"] >= metrics["linear_probe"]["emotion"]
    history = json.loads(result.model_path.with_name("history.json").read_text())
    assert history["phase"][-1] == "fine-tune" and "heads" in history["phase"]
    heads = result.metadata["heads"]
    assert {head: c["kept"] for head, c in heads.items()} == {"identity": "probe", "emotion": "mouth_shape",
                                                               "gender": "probe"}
    assert "cross-validated on every labelled face" in heads["emotion"]["why"]
    assert heads["emotion"]["cross_validation"]["mouth_shape"] >= heads["emotion"]["cross_validation"]["probe"]
    assert result.metadata["float_heads"]["emotion"]["features"] == "mouth_shape"
    assert any(line.startswith("emotion: keeps the fit on the mouth's shape (") for line in logs), logs
    # the attribute branch is dlib's again, as the probe read it
    saved = model_parts(load_keras_model(result.model_path)).backbone
    dlib = build_model(ModelSpec.from_dict(result.metadata["spec"])).backbone
    for layer in saved.layers:
        if layer.name.startswith(ATTRIBUTE_PREFIX) and layer.weights:
            for got, want in zip(layer.get_weights(), dlib.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(got, want)


def test_training_batches_of_named_features_are_shuffled() -> None:
    """Frozen features come as a dict of arrays: every row is shuffled, not only within the first few."""
    from edgeface.train.batches import HeadArrays, make_tf_dataset

    rows = 40
    features = {"pooled": np.arange(rows, dtype=np.float32)[:, None], "other": np.zeros((rows, 2), np.float32)}
    heads = HeadArrays({"gender": np.eye(2, dtype=np.float32)[np.arange(rows) % 2]},
                       {"gender": np.ones(rows, np.float32)}, {})
    order = [int(v) for batch, _, _ in make_tf_dataset(features, heads, 8, True, seed=0)
             for v in batch["pooled"].numpy()[:, 0]]
    assert sorted(order) == list(range(rows))
    assert order != list(range(rows)) and max(order[:8]) >= 8  # rows from beyond the first batch come first
