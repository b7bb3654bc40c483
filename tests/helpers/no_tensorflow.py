"""Run a Python snippet in a subprocess where TensorFlow and Keras cannot be imported, as on the Pi."""

from __future__ import annotations

import subprocess
import sys

BLOCK_TENSORFLOW = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
"""


def run_without_tensorflow(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -c script args...`` with any import of tensorflow, keras or tf_keras raising ImportError."""
    return subprocess.run([sys.executable, "-c", BLOCK_TENSORFLOW + script, *args], capture_output=True, text=True,
                          timeout=timeout)
