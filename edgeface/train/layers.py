"""Custom layers saved inside ``model.keras``; registered so loading finds them."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Each backbone's own input convention, applied inside the graph to [0, 1] RGB input.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="edgeface")
class BackbonePreprocess(keras.layers.Layer):
    """[0, 1] RGB -> what the backbone's ImageNet weights expect.

    ``tf``: [-1, 1] (MobileNet family); ``caffe``: BGR, 0-255, ImageNet mean subtracted (VGG16, ResNet50);
    ``none``: unchanged.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "none"):
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
        return inputs

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
