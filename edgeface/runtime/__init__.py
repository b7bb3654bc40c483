"""What runs models on the device: the LiteRT interpreter, the inference engine and the labeler. No TensorFlow."""
