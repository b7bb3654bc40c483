"""Inference engines behind one interface: aligned uint8 crops in, per-face arrays out.

``LiteRTEngine`` runs a bundle's TFLite model (the device). ``edgeface.train.keras_model.KerasEngine`` runs a
``model.keras`` behind the same interface on the workstation, so any difference between them is the model's.

A bundle with person centres (``IdentityCentres``) gets its ``identity`` probabilities from the ``embedding``
output, in float (:func:`identity_from_centres`), not from the model's own quantized identity output: int8
gives the last layer's outputs one scale, so people whose cosines differ by less than a step tie there, and
the first listed wins. Every user of the engine (the daemon, the Python API, ``evaluate``, ``enroll``,
``calibrate``) therefore names trained people by the same rule.

Likewise a bundle with float heads (``FloatHead``, emotion and gender) gets those heads from the features
output each reads (``features_<name>``), its last layer applied in float (:func:`head_from_features`): in int8
only the features are rounded, not the last layer. A bundle without them gives the model's own outputs. A float
head may read the mouth's shape instead (``mouth_shape``, ``edgeface.faces.geometry``), which the caller measured
on the landmarks it aligned the crops on and passes beside them (``shapes``); without it such a head gives the
model's own output.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from edgeface.core.bundle import FloatHead, IdentityCentres
from edgeface.core.errors import ModelError
from edgeface.core.preprocess import check_crops, to_model_input
from edgeface.core.spec import (
    EMBEDDING_NAME,
    FEATURES_PREFIX,
    INPUT_NAME,
    MOUTH_SHAPE,
    MOUTH_SHAPE_SIZE,
    SIGNATURE,
    ModelSpec,
)


class InferenceEngine(Protocol):
    """Runs the three-head model on a batch of aligned crops."""

    spec: ModelSpec

    def predict(self, crops: np.ndarray, shapes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``crops``: uint8 (N, S, S, 3) RGB; ``shapes``: their mouths' shapes (N, MOUTH_SHAPE_SIZE), for a head
        fitted on them. Returns float32 probabilities (N, C) per head, plus ``embedding`` (N, D) when the
        model has one."""
        ...


def identity_from_centres(embeddings: np.ndarray, centres: IdentityCentres) -> np.ndarray:
    """(N, P) identity probabilities: a softmax over ``centres.scale`` x the cosine of each unit embedding
    (N, D) with each person's centre, in float (what the model's nearest-centre head computes)."""
    return _softmax(centres.scale * (np.asarray(embeddings, np.float32) @ centres.centres.T))


def head_from_features(features: np.ndarray, head: FloatHead) -> np.ndarray:
    """(N, C) probabilities of a head whose last layer is ``head``: a softmax over ``features @ kernel + bias``
    in float (what the model's Dense softmax computes)."""
    return _softmax(np.asarray(features, np.float32) @ head.kernel + head.bias)


def apply_float_heads(out: dict[str, np.ndarray], heads: dict[str, FloatHead], shapes: np.ndarray | None
                      ) -> dict[str, np.ndarray]:
    """``out`` with each of ``heads`` computed in float from the features it reads: a model output, or the mouths'
    ``shapes`` (a head on them keeps the model's own output when no shapes are given)."""
    for head, layer in heads.items():
        if layer.features == MOUTH_SHAPE:
            if shapes is not None:
                out[head] = head_from_features(np.asarray(shapes, np.float32).reshape(-1, MOUTH_SHAPE_SIZE), layer)
        else:
            out[head] = head_from_features(out[layer.features], layer)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, float32."""
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)


def predict_batched(engine: InferenceEngine, crops: np.ndarray, batch_size: int = 32, desc: str = "",
                    progress: bool = False, shapes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run an engine over any number of crops (and their mouths' ``shapes``, if any) in batches (bounded memory),
    with a progress bar on request: every output, one row per crop (no rows for no crops)."""
    from edgeface.core.progress import progress_bar

    crops = np.asarray(crops)
    parts: dict[str, list[np.ndarray]] = {}
    starts = range(0, len(crops), batch_size)
    for start in progress_bar(starts, desc=desc, unit="batch", enabled=None if progress else False):
        part = None if shapes is None else shapes[start:start + batch_size]
        for name, value in engine.predict(np.ascontiguousarray(crops[start:start + batch_size]), part).items():
            parts.setdefault(name, []).append(value)
    if not parts:  # no crops: the engine says which outputs it has, with no rows
        return engine.predict(crops[:0])
    return {name: np.concatenate(values) for name, values in parts.items()}


class LiteRTEngine:
    """A TFLite model run by LiteRT (or tflite-runtime), read by signature names, never output positions."""

    def __init__(self, model_bytes: bytes, spec: ModelSpec, num_threads: int | None = None,
                 source: str = "model", keep_all_tensors: bool = False,
                 identity_centres: IdentityCentres | None = None,
                 float_heads: dict[str, FloatHead] | None = None, keep_features: bool = False) -> None:
        """``keep_all_tensors``: for diagnosis, every intermediate tensor stays readable through
        :attr:`interpreter` after :meth:`predict` (no XNNPACK; see ``make_interpreter``). ``identity_centres``:
        identity from the embedding in float (see the module's note), else the model's own output;
        ``float_heads``: those heads from their features in float, likewise. ``keep_features``: :meth:`predict`
        also returns the ``features_<name>`` outputs (conversion measures the float heads on them)."""
        from edgeface.runtime.litert import make_interpreter

        self.spec = spec
        self.source = source
        self.identity_centres = identity_centres
        self.float_heads = dict(float_heads or {})
        self.keep_features = keep_features
        self._interpreter = make_interpreter(model_bytes, num_threads=num_threads, source=source,
                                             keep_all_tensors=keep_all_tensors)
        signatures = self._interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ModelError(f"{source}: no {SIGNATURE!r} signature (has {list(signatures) or 'none'})")
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)
        inputs = self._runner.get_input_details()
        if INPUT_NAME not in inputs:
            raise ModelError(f"{source}: signature input {INPUT_NAME!r} missing (has {list(inputs)})")
        self._input = inputs[INPUT_NAME]
        self._outputs = self._runner.get_output_details()
        missing = [h for h in spec.labels if h not in self._outputs]
        if missing:
            raise ModelError(f"{source}: output(s) {', '.join(missing)} missing (has {', '.join(self._outputs)})")
        for head, labels in spec.labels.items():
            if int(self._outputs[head]["shape"][-1]) != len(labels):
                raise ModelError(f"{source}: output {head!r} has {self._outputs[head]['shape'][-1]} classes "
                                 f"but the bundle lists {len(labels)} labels")
        if identity_centres is not None:
            embedding = self._outputs.get(EMBEDDING_NAME)
            shape = (len(spec.labels["identity"]), int(embedding["shape"][-1]) if embedding else 0)
            if identity_centres.centres.shape != shape:
                raise ModelError(f"{source}: {identity_centres.centres.shape[0]} x "
                                 f"{identity_centres.centres.shape[1]} identity centres for a model of "
                                 f"{shape[0]} people with embeddings of size {shape[1]}")
        for head, layer in self.float_heads.items():
            features = self._outputs.get(layer.features)
            size = (MOUTH_SHAPE_SIZE if layer.features == MOUTH_SHAPE
                    else int(features["shape"][-1]) if features is not None else 0)
            if head not in spec.labels or layer.kernel.shape != (size, len(spec.labels[head])):
                raise ModelError(f"{source}: a {layer.kernel.shape[0]} x {layer.kernel.shape[1]} float {head} head "
                                 f"on {layer.features} (the model has {size or 'no such'} features there)")
        self._quantize_input = self._input_converter()

    @classmethod
    def from_bundle(cls, bundle: Any, num_threads: int | None = None) -> "LiteRTEngine":
        """The device's one way to open a bundle (a path or a loaded ``Bundle``) for inference."""
        from edgeface.core.bundle import Bundle, load_bundle

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        return cls(bundle.model_bytes, bundle.spec, num_threads=num_threads, source=str(bundle.path),
                   identity_centres=bundle.identity_centres, float_heads=dict(bundle.float_heads))

    @property
    def interpreter(self) -> Any:
        """The LiteRT interpreter underneath, for diagnosis (tensor details, intermediate tensors)."""
        return self._interpreter

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def input_details(self) -> dict[str, Any]:
        """The interpreter's details of the ``image`` input: dtype, shape, quantization (scale, zero point)."""
        return dict(self._input)

    @property
    def output_details(self) -> dict[str, dict[str, Any]]:
        """The interpreter's details of each output, by signature name."""
        return {name: dict(details) for name, details in self._outputs.items()}

    def input_tensor(self, crops: np.ndarray) -> np.ndarray:
        """The model's input for uint8 crops: scaled, and quantized when the input is an integer type."""
        return self._quantize_input(crops)

    def _input_converter(self) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 crops -> this model's input tensor, chosen once. An integer input is ``to_model_input`` then the
        input's quantization: computed for the 256 pixel values here, so a frame needs one lookup, not float
        arithmetic."""
        spec = self.spec  # the converters hold no reference to the engine, so dropping it frees it at once
        if self.input_dtype == np.float32:
            return lambda crops: to_model_input(crops, spec)
        dtype, info = self.input_dtype, np.iinfo(self.input_dtype)
        scale, zero_point = self._input["quantization"]
        levels = to_model_input(np.arange(256, dtype=np.uint8), spec)
        table = np.clip(np.round(levels / scale) + zero_point, info.min, info.max).astype(dtype)
        if dtype == np.int8 and np.array_equal(table, np.arange(-128, 128)):
            # The usual int8 input ([0, 1] at scale 1/255, zero point -128) is the pixel minus 128: flipping the
            # top bit does that in one cheap pass (the float arithmetic it replaces took about a tenth of int8's
            # per-face time).
            return lambda crops: np.bitwise_xor(crops, np.uint8(0x80)).view(np.int8)
        if dtype == np.uint8 and np.array_equal(table, np.arange(256)):
            return lambda crops: crops
        return lambda crops: table[crops]

    def predict(self, crops: np.ndarray, shapes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        check_crops(crops, self.spec)
        if len(crops) == 0:
            return {name: np.zeros((0, int(d["shape"][-1])), np.float32) for name, d in self._outputs.items()
                    if self.keep_features or not name.startswith(FEATURES_PREFIX)}
        raw = self._runner(**{INPUT_NAME: self._quantize_input(crops)})
        out: dict[str, np.ndarray] = {}
        for name, value in raw.items():
            details = self._outputs[name]
            if np.dtype(details["dtype"]) != np.float32:
                scale, zero_point = details["quantization"]
                value = (value.astype(np.float32) - zero_point) * np.float32(scale)
            out[name] = np.asarray(value, dtype=np.float32)
        if EMBEDDING_NAME in out:
            # int8 arithmetic only approximates the graph's L2 normalisation (norms of 0.8-1.3 are common):
            # restore unit length so cosine similarities mean the same in every precision.
            norms = np.linalg.norm(out[EMBEDDING_NAME], axis=1, keepdims=True)
            out[EMBEDDING_NAME] = out[EMBEDDING_NAME] / np.maximum(norms, 1e-12)
            if self.identity_centres is not None:
                out["identity"] = identity_from_centres(out[EMBEDDING_NAME], self.identity_centres)
        apply_float_heads(out, self.float_heads, shapes)
        if not self.keep_features:
            out = {name: value for name, value in out.items() if not name.startswith(FEATURES_PREFIX)}
        return out
