"""Nearest-centre identity: name the person whose training faces' mean embedding is closest (by cosine).

With about 14 photos per person, a Dense softmax over the identity embedding fits its training faces (98.8% of
them on celeba-299) better than it generalises; the mean of each person's embeddings is a steadier prototype.
On celeba-299 (distilled MobileNetV2) the nearest centre names 60.3% of the test faces against the softmax's
57.0% (validation 55.7% against 50.5%); on a heads-only model (frozen backbone, not fitted that closely) it changed
nothing (28.5% -> 28.1%). The centres replace the identity head's weights as a
:class:`~edgeface.train.layers.CosineSoftmax` (the CosFace head's form), so the converted model has the same
shape and cost, and the enrollment gallery ranks people by the same cosine.

With ``whiten``, the cosine is taken after within-class covariance normalisation (WCCN, Hatch et al. 2006):
the unit embedding is multiplied by ``(S_w + eps I)^(-1/2)``, ``S_w`` the covariance of each face around its
person's mean on the training photos, before the centres and the cosine. Directions along which one person's
photos vary (pose, light, expression) weigh less, directions that tell people apart weigh more. On celeba-299
(four mirrored MobileNetV2 models) it named 1.0 to 1.8 more points of the test faces, their int8 bundles 0.8
to 2.1. The head grows by one 128 x 128 matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgeface.core.errors import ModelError
from edgeface.core.gallery import unit_rows
from edgeface.core.spec import EMBEDDING_NAME, ModelSpec
from edgeface.train.refit import DEFAULT_L2, fit_softmax_head

# WCCN's ridge, relative to the mean within-class variance (trace(S_w) / D): 1 keeps the whitening gentle.
# Picked on the validation photos of a celeba-299 run (63.9% of them named against 61.9% with plain cosine;
# 62.2% at 0.3, 61.9% at 0.1).
WHITENING_EPSILON = 1.0
WHITENING_NAME = "identity_whitening"
# Softmax over 20 x cosine: on celeba-299 the validation faces' log loss is 2.25 at 10, 1.90 at 20, 2.27 at 30.
CENTRE_SCALE = 20.0


def person_centres(embeddings: np.ndarray, people: Sequence[str], labels: Sequence[str | None]) -> np.ndarray:
    """(D, P) unit centres, one column per person in ``people``: the normalised mean of their unit embeddings.

    A person without any face in ``labels`` keeps a zero column (the head never names them); faces of people
    not in ``people``, or without an identity label, are ignored.
    """
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ModelError(f"expected one embedding per label, got {embeddings.shape} for {len(labels)} labels")
    index = {person: i for i, person in enumerate(people)}
    sums = np.zeros((len(people), embeddings.shape[1]), np.float64)
    for row, person in enumerate(labels):
        if person in index:
            sums[index[person]] += embeddings[row]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).T.astype(np.float32)


def within_class_whitening(embeddings: np.ndarray, people: Sequence[str], labels: Sequence[str | None],
                           epsilon: float = WHITENING_EPSILON) -> np.ndarray:
    """(D, D) symmetric ``(S_w + epsilon * trace(S_w) / D * I)^(-1/2)``: WCCN of unit ``embeddings``.

    ``S_w`` is the covariance of each face's embedding around the mean of its person's, over the faces of
    ``people`` in ``labels`` (others are ignored). A person with one face adds nothing to it.
    """
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ModelError(f"expected one embedding per label, got {embeddings.shape} for {len(labels)} labels")
    if not epsilon > 0:
        raise ModelError(f"whitening epsilon must be above 0, got {epsilon:g}")
    index = {person: i for i, person in enumerate(people)}
    rows = np.array([i for i, person in enumerate(labels) if person in index], dtype=int)
    classes = np.array([index[labels[i]] for i in rows], dtype=int)
    counts = np.bincount(classes, minlength=len(people)) if len(rows) else np.zeros(len(people), int)
    if not (counts >= 2).any():
        raise ModelError("whitening needs at least two faces of one person; got at most one of each")
    means = np.zeros((len(people), embeddings.shape[1]))
    np.add.at(means, classes, embeddings[rows])
    means /= np.maximum(counts, 1)[:, None]
    residuals = embeddings[rows] - means[classes]
    within = residuals.T @ residuals / len(rows)
    dims = within.shape[0]
    values, vectors = np.linalg.eigh(within + epsilon * np.trace(within) / dims * np.eye(dims))
    return (vectors / np.sqrt(values)) @ vectors.T


def with_centre_identity(model: Any, centres: np.ndarray, scale: float = CENTRE_SCALE,
                         refitted: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                         whitening: np.ndarray | None = None) -> Any:
    """A copy of an edgeface Keras model whose identity head is ``softmax(scale x cos(embedding, centre))``.

    The embedding and the other heads are the same layers (shared weights), and a mirrored model stays
    mirrored; only the identity head changes, and the emotion or gender head when ``refitted`` gives it a
    new (kernel, bias) (:func:`~edgeface.train.refit.fit_softmax_head`). With ``whitening`` (D, D), the unit
    embedding is multiplied by it before the cosine, and the ``embedding`` output is the whitened unit vector,
    so the enrollment gallery ranks people as the head does; ``centres`` are then in that space.
    """
    import keras

    from edgeface.train.layers import CosineSoftmax
    from edgeface.train.model import compose_model, model_parts

    parts = model_parts(model)
    if parts is None:
        raise ModelError(f"model {model.name!r} is not shaped as edgeface train builds it (preprocess, backbone, heads)")
    heads = parts.heads
    try:
        dropout, dense, batchnorm = (heads.get_layer(n) for n in ("dropout", "embedding_dense", "embedding_bn"))
        emotion, gender, unit = (heads.get_layer(n) for n in ("emotion", "gender", EMBEDDING_NAME))
    except ValueError as exc:
        raise ModelError(f"model {model.name!r}: its heads lack a layer edgeface train adds ({exc})") from None
    people = int(heads.output["identity"].shape[-1])
    if whitening is not None and whitening.shape != (int(dense.units), int(dense.units)):
        raise ModelError(f"whitening of shape {whitening.shape} does not fit an embedding of {dense.units}")
    if centres.shape != (int(dense.units), people):
        raise ModelError(f"centres of shape {centres.shape} do not fit an embedding of {dense.units} and "
                         f"{people} people")

    refitted = refitted or {}
    unknown = sorted(set(refitted) - {"emotion", "gender"})
    if unknown:
        raise ModelError(f"only the emotion and gender heads can be refitted, not {', '.join(unknown)}")
    attribute_layers = {"emotion": emotion, "gender": gender}
    for head, (kernel, bias) in refitted.items():
        old = attribute_layers[head]
        if tuple(kernel.shape) != tuple(old.kernel.shape) or tuple(bias.shape) != tuple(old.bias.shape):
            raise ModelError(f"refitted {head} head of shape {kernel.shape} does not fit {tuple(old.kernel.shape)}")
        attribute_layers[head] = keras.layers.Dense(old.units, activation="softmax", name=head)

    features = keras.Input(tuple(heads.input.shape[1:]), name="features")
    x = dropout(features)
    embedding = batchnorm(dense(x))
    identity_layer = CosineSoftmax(people, scale=scale, name="identity")
    whitening_layer = None
    if whitening is not None:
        whitening_layer = keras.layers.Dense(int(dense.units), use_bias=False, name=WHITENING_NAME)
        embedding = whitening_layer(keras.layers.UnitNormalization(name="embedding_unit")(embedding))
    outputs = {"identity": identity_layer(embedding), "emotion": attribute_layers["emotion"](x),
               "gender": attribute_layers["gender"](x), EMBEDDING_NAME: unit(embedding)}
    identity_layer.set_weights([centres.astype(np.float32)])
    if whitening_layer is not None:
        whitening_layer.set_weights([np.asarray(whitening, np.float32)])
    for head, (kernel, bias) in refitted.items():
        attribute_layers[head].set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return compose_model(model, parts, keras.Model(features, outputs, name="heads"))


def recentre(model_path: str | Path, data: str | Path, out: str | Path, scale: float = CENTRE_SCALE,
             mirror: bool = False, refit_heads: bool = False, l2: float = DEFAULT_L2,
             whiten: bool = False, whitening_epsilon: float = WHITENING_EPSILON,
             cache_dir: Path | None = None, on_log: Callable[[str], None] = print) -> Path:
    """Give a trained model (``model.keras`` and its metadata) a nearest-centre identity head, each person's
    centre taken from their faces in ``data`` (CSV or folder; usually the training photos). With ``mirror``,
    the new model reads every face as the mean of itself and its mirror image (twice the backbone's work per
    face), and the centres are computed that way too. With ``refit_heads``, the emotion and gender heads are
    refitted on the same photos' features as the new model computes them (:mod:`edgeface.train.refit`, L2
    weight ``l2``). With ``whiten``, the identity cosine is taken after within-class covariance normalisation
    fitted on the same faces (:func:`within_class_whitening`). Writes ``out/model.keras`` and its metadata;
    returns the model's path."""
    import keras

    from edgeface.core.modelio import MODEL_NAME, read_metadata, write_metadata
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.train.keras_model import keras_predict, load_keras_model, save_keras_model
    from edgeface.train.model import compose_features, compose_model, model_parts

    model_path = Path(model_path)
    if model_path.is_dir():
        model_path = model_path / MODEL_NAME
    metadata = read_metadata(model_path)
    spec = ModelSpec.from_dict(metadata["spec"])
    if not scale > 0:
        raise ModelError(f"scale must be above 0, got {scale:g}")
    if not l2 > 0:
        raise ModelError(f"l2 must be above 0, got {l2:g}")
    if whiten and not whitening_epsilon > 0:
        raise ModelError(f"whitening epsilon must be above 0, got {whitening_epsilon:g}")
    dataset = load_dataset(data)
    dataset.raise_for_errors()
    people = spec.labels["identity"]
    known = set(people)
    strangers = sorted({s.identity for s in dataset.samples if s.identity} - known)
    if strangers:
        on_log(f"note: {len(strangers)} people in {data} are not in the model (e.g. {strangers[0]!r}); ignored")
    model = load_keras_model(model_path)
    parts = model_parts(model)
    if parts is None:
        raise ModelError(f"{model_path}: not shaped as edgeface train builds it (preprocess, backbone, heads)")
    mirrored = mirror or parts.mirrored
    if mirrored != parts.mirrored:
        model = compose_model(model, parts, mirrored=True)
    crops = crop_samples(dataset.samples, spec.crop, spec.input_size, cache_dir=cache_dir, progress=True)
    samples = crops.cropped_samples
    if not samples:
        raise ModelError(f"{data}: no face found in any photo; centres need faces of the model's people")
    labels = [s.identity for s in samples]
    # One backbone pass: the pooled features, as the new model computes them, serve the centres and the refits.
    inputs = keras.Input(tuple(model.input.shape[1:]))
    features_model = keras.Model(inputs, {"features": compose_features(parts.preprocess, parts.backbone, inputs,
                                                                       mirrored)})
    features = keras_predict(features_model, crops.crops, spec)["features"]
    embeddings = unit_embeddings(parts.heads, features)
    whitening = within_class_whitening(embeddings, people, labels, whitening_epsilon) if whiten else None
    if whitening is not None:
        embeddings = unit_rows(embeddings @ whitening)
    centres = person_centres(embeddings, people, labels)
    missing = [person for person, column in zip(people, centres.T) if not column.any()]
    if len(missing) == len(people):
        raise ModelError(f"{data}: no faces of anyone the model names; centres need their photos")
    if missing:
        on_log(f"warning: no faces of {len(missing)} people in {data} (e.g. {missing[0]!r}): "
               "the new head will never name them")
    refitted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    refit_faces: dict[str, int] = {}
    if refit_heads:
        for head in ("emotion", "gender"):
            head_labels = [getattr(s, head) for s in samples]
            refitted[head] = fit_softmax_head(features, head_labels, spec.labels[head], l2=l2)
            refit_faces[head] = sum(label in spec.labels[head] for label in head_labels)
            on_log(f"{head} head refitted on {refit_faces[head]} faces (L2 {l2:g})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ``out`` may be the model's own folder: save_keras_model replaces model.keras whole or not at all.
    new_path = save_keras_model(with_centre_identity(model, centres, scale, refitted, whitening),
                                out / MODEL_NAME)
    faces = sum(person in known for person in labels)
    metadata["identity_centres"] = {"data": str(data), "faces": faces, "scale": scale,
                                    "people_without_faces": missing}
    metadata["identity_whitening"] = ({"data": str(data), "epsilon": whitening_epsilon, "faces": faces}
                                      if whitening is not None else None)
    if refit_heads:
        metadata["refitted_heads"] = {"data": str(data), "l2": l2, "faces": refit_faces, "mirrored": mirrored}
    write_metadata(new_path, metadata)
    whitened = " in the within-class-whitened space" if whitening is not None else ""
    on_log(f"identity centres from {faces} faces of {len(people) - len(missing)} people{whitened}")
    return new_path


def unit_embeddings(heads: Any, features: np.ndarray, batch: int = 256) -> np.ndarray:
    """The unit identity embeddings the heads compute from pooled ``features``, before any whitening (so a
    whitened model can be recentred afresh)."""
    try:
        dense, batchnorm = heads.get_layer("embedding_dense"), heads.get_layer("embedding_bn")
    except ValueError as exc:
        raise ModelError(f"the model's heads lack a layer edgeface train adds ({exc})") from None
    raw = np.concatenate([np.asarray(batchnorm(dense(features[i:i + batch]), training=False))
                          for i in range(0, len(features), batch)])
    return unit_rows(raw)
