"""Quantization-aware fine-tuning, home-made: the experiment behind the README's "Quantization-aware training".

tensorflow-model-optimization cannot wrap edgeface's Keras 3 models (README, Convert), so this script simulates
int8 where TFLite puts it after folding BatchNorm, and fine-tunes the backbone to match its own float copy:

* every convolution's kernel is fake-quantized per output channel, symmetric, 8 bits (the same as quantizing the
  folded kernel: BatchNorm in inference mode scales each output channel);
* activations are fake-quantized per tensor after each ReLU6, each linear projection's BatchNorm, each Add and
  the pooling, from the float model's min/max on 300 training crops (the converter's calibration);
* the loss is the KL divergence to the float model's three heads plus the pooled features' MSE relative to their
  mean square; BatchNorm statistics and the heads stay frozen;
* with ``--mixup P``, a share P of each batch is blends of two training faces (weights 0.3-0.7), whose float
  answers are unsure: the faces int8 flips are near decision boundaries, and a model's own training faces are not.

It writes a model folder that ``edgeface convert`` and ``edgeface evaluate`` take like any other::

    python benchmarks/qat_experiment.py runs/celeba-mobilenetv2-teacher-long-fallback-mirror \\
        --data splits/celeba/train.csv --out runs/qat --epochs 1 --learning-rate 1e-5
    edgeface convert runs/qat -p int8 --out bundles/qat --min-agreement 0 --verify-data splits/celeba/test.csv
    edgeface evaluate runs/qat bundles/qat/qat-int8.edgeface --data splits/celeba/test.csv --max-drop 1

Compare the int8 bundle with the source model's float accuracy too: fine-tuning moves the float model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="trained model folder (model.keras + metadata.json)")
    parser.add_argument("--data", type=Path, required=True, help="training photos (CSV or folder)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--calibration-size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixup", type=float, default=0.0,
                        help="share of each batch replaced by blends of two faces (weights 0.3-0.7): inputs near "
                             "the float model's decision boundaries, where int8 flips answers")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.core.modelio import MODEL_NAME, read_metadata, write_metadata
    from edgeface.train.keras_model import load_keras_model, save_keras_model
    from edgeface.core.preprocess import to_model_input
    from edgeface.core.spec import ModelSpec
    from edgeface.train.model import compose_model, model_parts

    model = load_keras_model(args.run / MODEL_NAME)
    metadata = read_metadata(args.run / MODEL_NAME)
    spec = ModelSpec.from_dict(metadata["spec"])
    parts = model_parts(model)
    if parts is None:
        raise SystemExit(f"{args.run}: not shaped as edgeface train builds it")
    backbone, heads = parts.backbone, parts.heads
    dataset = load_dataset(args.data)
    dataset.raise_for_errors()
    crops = np.asarray(crop_samples(dataset.samples, spec.crop, spec.input_size, progress=True).crops)
    rng = np.random.default_rng(args.seed)

    def inputs(batch: np.ndarray):
        return parts.preprocess(to_model_input(batch, spec))

    # The float model's answers come from a frozen copy, batch by batch (blended faces are new every step).
    teacher = keras.models.clone_model(backbone)
    teacher.set_weights(backbone.get_weights())
    teacher.trainable = False

    def quantized_after(layer) -> bool:
        kind = type(layer).__name__
        return kind in ("ReLU", "Add", "GlobalAveragePooling2D") or (
            kind == "BatchNormalization" and "project" in layer.name)

    names = [layer.name for layer in backbone.layers if quantized_after(layer)]
    probe = keras.Model(backbone.input, [backbone.get_layer(name).output for name in names])
    calibration = crops[rng.choice(len(crops), min(args.calibration_size, len(crops)), replace=False)]
    low = dict.fromkeys(names, 0.0)  # TFLite's ranges always hold 0
    high = dict.fromkeys(names, 0.0)
    for start in range(0, len(calibration), 50):
        for name, value in zip(names, probe(inputs(calibration[start:start + 50]), training=False)):
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))

    class FakeQuantConv(keras.layers.Layer):
        """A convolution of the wrapped layer's own kernel, fake-quantized per output channel."""

        def __init__(self, inner):
            super().__init__(name=f"{inner.name}_fq")
            self.inner = inner

        def call(self, x, **kwargs):
            kernel, strides = self.inner.kernel, (1, *self.inner.strides, 1)
            padding = self.inner.padding.upper()
            depthwise = isinstance(self.inner, keras.layers.DepthwiseConv2D)
            flat = tf.reshape(kernel, kernel.shape[:3]) if depthwise else kernel  # channels last
            limit = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=list(range(flat.ndim - 1))), 1e-8))
            rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -limit, limit, num_bits=8,
                                                                               narrow_range=True)
            if depthwise:
                y = tf.nn.depthwise_conv2d(x, tf.reshape(rounded, kernel.shape), strides=strides, padding=padding)
            else:
                y = tf.nn.conv2d(x, rounded, strides=strides, padding=padding)
            return y + self.inner.bias if self.inner.use_bias else y

    class FakeQuantOutput(keras.layers.Layer):
        """The wrapped layer, its output fake-quantized per tensor at trainable calibrated bounds."""

        def __init__(self, inner):
            super().__init__(name=f"{inner.name}_fq")
            self.inner = inner
            self.low = self.add_weight(shape=(), initializer=keras.initializers.Constant(low[inner.name]))
            self.high = self.add_weight(shape=(), initializer=keras.initializers.Constant(high[inner.name]))

        def call(self, x, **kwargs):
            return tf.quantization.fake_quant_with_min_max_vars(self.inner(x), self.low, self.high)

    def wrap(layer):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            return FakeQuantConv(layer)
        return FakeQuantOutput(layer) if layer.name in low else layer

    # Shares the backbone's variables; student(..., training=False) keeps every BatchNorm in inference mode.
    simulated = keras.models.clone_model(backbone, clone_function=wrap)
    backbone.trainable = True
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    heads.trainable = False
    image = keras.Input((spec.input_size, spec.input_size, 3))
    features = simulated(parts.preprocess(image))
    student = keras.Model(image, {"features": features, **heads(features, training=False)})
    variables = student.trainable_variables
    optimizer = keras.optimizers.Adam(args.learning_rate)
    # In batches of 32: a MobileNetV2 at 224x224 needs about 90 MB of activations per face.
    feature_energy = float(np.mean(np.concatenate([np.asarray(teacher(inputs(crops[i:i + 32]), training=False))
                                                   for i in range(0, min(len(crops), 256), 32)]) ** 2))

    def divergence(target, got):
        return tf.reduce_mean(tf.reduce_sum(target * (tf.math.log(target + 1e-8) - tf.math.log(got + 1e-8)), 1))

    @tf.function
    def step(x):
        features = teacher(parts.preprocess(x), training=False)
        float_heads = heads(features, training=False)
        identity, emotion, gender = (float_heads[h] for h in ("identity", "emotion", "gender"))
        with tf.GradientTape() as tape:
            out = student(x, training=False)
            parts_of_loss = [divergence(identity, out["identity"]), divergence(emotion, out["emotion"]),
                             divergence(gender, out["gender"]),
                             tf.reduce_mean((out["features"] - features) ** 2) / feature_energy]
            loss = tf.add_n(parts_of_loss)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return parts_of_loss

    steps = int(args.epochs * len(crops) / args.batch_size)
    order = np.concatenate([rng.permutation(len(crops)) for _ in range(int(np.ceil(args.epochs)))])
    started = time.time()
    for index in range(steps):
        batch = np.sort(order[index * args.batch_size:(index + 1) * args.batch_size])
        x = to_model_input(crops[batch], spec)
        blend = rng.random(len(batch)) < args.mixup
        if blend.any():
            partner = to_model_input(crops[rng.integers(0, len(crops), int(blend.sum()))], spec)
            weight = rng.uniform(0.3, 0.7, (int(blend.sum()), 1, 1, 1)).astype(np.float32)
            x[blend] = weight * x[blend] + (1 - weight) * partner
        losses = step(x)
        if index % 20 == 0 or index == steps - 1:
            print(f"step {index + 1}/{steps}, {time.time() - started:.0f} s: KL identity/emotion/gender "
                  f"{', '.join(f'{float(v):.4f}' for v in losses[:3])}, feature error {float(losses[3]):.4f}",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    path = save_keras_model(compose_model(model, parts), args.out / MODEL_NAME)  # mirrored as the source was
    metadata["quantization_aware"] = {"source": str(args.run), "epochs": args.epochs,
                                      "learning_rate": args.learning_rate, "data": str(args.data),
                                      "mixup": args.mixup}
    write_metadata(path, metadata)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
