"""Run inside the arm64 root (and on the workstation, for the comparison): a bundle on saved face crops.

    python guest_predict.py BUNDLE CROPS.npy OUT.json

Writes the per-head probabilities and the labels the runtime gives, plus what ran them (machine, runtime).
Uses only what the Pi has: the edgeface runtime, numpy and LiteRT.
"""

from __future__ import annotations

import json
import platform
import sys

import numpy as np

from edgeface.core.bundle import load_bundle
from edgeface.runtime.engine import LiteRTEngine
from edgeface.runtime.labeler import Labeler
from edgeface.runtime.litert import runtime_name


def main(bundle_path: str, crops_path: str, out_path: str) -> None:
    bundle = load_bundle(bundle_path)
    engine = LiteRTEngine.from_bundle(bundle, num_threads=1)
    labeler = Labeler(bundle.spec, bundle.identity_threshold)
    crops = np.load(crops_path)
    outputs: dict[str, list[np.ndarray]] = {}
    for crop in crops:  # one face at a time, as the daemon does for a frame with one face
        for name, value in engine.predict(crop[None]).items():
            outputs.setdefault(name, []).append(value[0])
    stacked = {name: np.stack(values) for name, values in outputs.items()}
    labels = [face.to_dict() for face in labeler(stacked)]
    report = {
        "machine": platform.machine(),
        "runtime": runtime_name(),
        "probabilities": {h: stacked[h].tolist() for h in ("identity", "emotion", "gender")},
        "labels": labels,
    }
    with open(out_path, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
