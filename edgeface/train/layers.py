"""Custom layers saved inside ``model.keras``; registered so loading finds them."""

from __future__ import annotations

import keras
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
            bgr = ops.flip(inputs, axis=-1) * 255.0
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=inputs.dtype)
        return inputs

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
