"""Measuring models: accuracy per head (``evaluate``), latency and memory on this device (``bench``,
``memprobe``). Runs on the Pi for bundles; Keras models are run through an engine the caller passes."""
