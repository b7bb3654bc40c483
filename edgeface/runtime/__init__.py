"""What runs on the device: bundles, the LiteRT interpreter and inference engines. No TensorFlow here."""
