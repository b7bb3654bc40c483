"""Custom layers saved inside ``model.keras``; registered so loading finds them."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Each backbone's own input convention, applied inside the graph to [0, 1] RGB input.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's face encoder: (0-255 RGB - mean) / 256


@keras.saving.register_keras_serializable(package="edgeface")
class BackbonePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> what the backbone's ImageNet weights expect.

    ``tf``: [-1, 1] (MobileNet family); ``caffe``: BGR, 0-255, ImageNet mean subtracted (VGG16, ResNet50);
    ``dlib``: 0-255 RGB minus dlib's channel means, divided by 256 (dlib's face encoder); ``none``: unchanged.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "dlib", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "tf":
            return inputs * 2.0 - 1.0
        if self.mode == "caffe":
            # RGB -> BGR, x 255, minus the mean, as one fixed 1x1 convolution. Written as flip, multiply and
            # subtract, TFLite's int8 quantizer garbles REVERSE_V2 and the MUL after it (a ResNet50 fell to
            # chance on every head); a CONV_2D quantizes like any other layer and gives the same floats.
            kernel = np.zeros((1, 1, 3, 3), np.float32)
            for rgb_channel in range(3):
                kernel[0, 0, rgb_channel, 2 - rgb_channel] = 255.0
            bgr = ops.conv(inputs, ops.convert_to_tensor(kernel, dtype=inputs.dtype), strides=1, padding="valid")
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=inputs.dtype)
        if self.mode == "dlib":
            means = np.asarray(_DLIB_MEAN_RGB, np.float32) / 256.0
            return inputs * (255.0 / 256.0) - ops.convert_to_tensor(means, dtype=inputs.dtype)
        return inputs

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def unit_vectors(inputs):
    """L2-normalise the last axis.

    With TensorFlow this is ``tf.math.l2_normalize``, which TFLite turns into one L2_NORMALIZATION op; the
    generic form becomes seven ops, two of them float, whose int8 rounding blurs the cosine head's output.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.math.l2_normalize(inputs, axis=-1)
    return ops.normalize(inputs, axis=-1)


@keras.saving.register_keras_serializable(package="edgeface")
class CosineSoftmax(keras.layers.Layer):
    """Softmax over ``scale`` x cosine similarity between the input and one centre per class.

    The nearest-centre identity head: each person's centre is the mean of their faces' unit embeddings, so
    trained people are ranked by the same cosine the enrollment gallery uses for enrolled ones. TFLite: L2
    normalisation, one fully connected layer, softmax.

    With ``linear`` (:meth:`set_linear`) it is instead a logistic regression on the unit input: a softmax over
    ``unit(x) @ centres + bias``, the centres then being its kernel (unnormalised, no scale).
    """

    def __init__(self, units: int, scale: float = 30.0, linear: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale
        self.linear = linear

    def build(self, input_shape):
        self.centres = self.add_weight(shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform",
                                       name="centres")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias", trainable=False)

    def load_own_variables(self, store):
        if len(store.keys()) == 1:  # saved before the layer had a bias: nearest centre, no bias
            self.centres.assign(store["0"])
            self.bias.assign(np.zeros(self.units, np.float32))
            return
        super().load_own_variables(store)

    def set_linear(self, kernel, bias) -> None:
        """Make this a logistic regression on the unit input: ``kernel`` (D, units), ``bias`` (units,)."""
        self.linear = True
        self.centres.assign(kernel)
        self.bias.assign(bias)

    def call(self, inputs):
        if self.linear:
            return ops.softmax(ops.matmul(unit_vectors(inputs), self.centres) + self.bias, axis=-1)
        cosine = ops.matmul(unit_vectors(inputs), ops.normalize(self.centres, axis=0))
        return ops.softmax(self.scale * cosine, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale, "linear": self.linear}


@keras.saving.register_keras_serializable(package="edgeface")
class ZeroPadSum(keras.layers.Layer):
    """The sum of two feature maps of different sizes, the smaller padded with zeros at the end of each axis
    (rows, columns, channels): dlib's ``add_prev``, the shortcut of a residual "down" block."""

    def call(self, inputs):
        first, second = inputs
        target = [max(int(a), int(b)) for a, b in zip(first.shape[1:], second.shape[1:])]

        def padded(tensor):
            pads = [[0, 0]] + [[0, t - int(n)] for t, n in zip(target, tensor.shape[1:])]
            return tensor if not any(p[1] for p in pads) else ops.pad(tensor, pads)

        return padded(first) + padded(second)

    def compute_output_shape(self, input_shapes):
        first, second = input_shapes
        return (first[0], *[max(a, b) for a, b in zip(first[1:], second[1:])])
