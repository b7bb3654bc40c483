"""Workstation side: building and training the three-head model. Imports TensorFlow; never used on the Pi."""
