"""How exactly edgeface's dlib-resnet reproduces dlib's face encoder, and how close its alignment gets to dlib's.

On real photos (``../shared``'s celeba-299 by default), dlib's own pipeline (HOG detector, 5-point landmarks,
``get_face_chip`` at 150x150 with 25% padding, ``compute_face_descriptor``) against:

* **port**: edgeface's dlib-resnet on the same chips, in Keras, float32 TFLite and int8 TFLite (calibrated on
  other chips of the same photos): descriptor cosine similarity with dlib's;
* **alignment**: edgeface's own crops of the same photos (BlazeFace, face-mesh landmarks, the model's crop
  geometry), described by the Keras port, against dlib's chips described by dlib.

``--latency`` also times, per face and taking turns on the same chips, dlib's encoder against the int8 and
float32 port (LiteRT, 1 and 2 threads).

``--fit-template`` also prints where the face mesh's five points land in dlib's chips (the median, as fractions
of the chip side), which is how ``edgeface.train.dlib_resnet.CHIP_KEYPOINTS`` was measured.

    pip install -e ".[train,dev]"    # dlib (dlib-bin) and dlib's weights (face-recognition-models)
    python benchmarks/dlib_port.py --faces 340 --latency 300    # writes results/dlib-port.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
from results import write_result

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEFACE_SHARED", REPO.parent / "shared"))
CHIP, PADDING = 150, 0.25
# dlib's 5-point template (dlib/image_transforms/interpolation.h, get_face_chip_details), before padding.
DLIB_FIVE = ((0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
             (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
             (0.4901123135679, 0.6277975316475))


def dlib_chips(paths: list[Path]) -> list[dict]:
    """dlib's detection, landmarks, chip and descriptor for each photo in which dlib finds a face."""
    import dlib
    import face_recognition_models as models

    from edgeface.core.imageio import read_image
    from edgeface.core.progress import progress_bar

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    found = []
    for path in progress_bar(paths, desc="dlib", unit="photo"):
        image = read_image(path)
        faces = detector(image, 1)
        if not faces:
            continue
        shape = landmarks(image, max(faces, key=lambda r: r.area()))
        chip = dlib.get_face_chip(image, shape, size=CHIP, padding=PADDING)
        found.append({"path": path, "image": image, "chip": np.asarray(chip),
                      "points": np.array([(p.x, p.y) for p in shape.parts()], np.float64),
                      "descriptor": np.asarray(encoder.compute_face_descriptor(chip), np.float32)})
    return found


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def summary(cosines: np.ndarray) -> dict[str, float]:
    return {"faces": int(len(cosines)), "median": round(float(np.median(cosines)), 6),
            "p5": round(float(np.percentile(cosines, 5)), 6), "min": round(float(cosines.min()), 6)}


def measure(photos: list[Path], calibration_share: float = 0.3, latency_rounds: int = 0) -> dict:
    import face_recognition_models as models

    from edgeface.convert.tflite import convert_keras
    from edgeface.core.spec import ATTRIBUTE_LABELS, EMBEDDING_NAME, ModelSpec
    from edgeface.faces.align import align_face
    from edgeface.faces.detect import create_detector, primary_face
    from edgeface.runtime.engine import LiteRTEngine
    from edgeface.train.keras_model import keras_predict
    from edgeface.train.model import BACKBONES, build_model

    found = dlib_chips(photos)
    calibrate = int(len(found) * calibration_share)
    calibration, faces = found[:calibrate], found[calibrate:]
    reference = unit(np.stack([f["descriptor"] for f in faces]))
    spec = ModelSpec(labels={"identity": ("a", "b"), **ATTRIBUTE_LABELS}, input_size=CHIP, backbone="dlib-resnet",
                     crop=BACKBONES["dlib-resnet"].crop, embedding_size=128)
    model = build_model(spec).model
    chips = np.stack([f["chip"] for f in faces])
    results = {"port": {"keras": summary((keras_predict(model, chips, spec)[EMBEDDING_NAME] * reference).sum(1))}}
    flatbuffers = {}
    for precision in ("float32", "int8"):
        flatbuffer = flatbuffers[precision] = convert_keras(
            model, precision, spec, np.stack([f["chip"] for f in calibration]) if precision == "int8" else None)
        embedding = LiteRTEngine(flatbuffer, spec, source=precision).predict(chips)[EMBEDDING_NAME]
        results["port"][precision] = summary((embedding * reference).sum(1))
        results["port"][precision]["bytes"] = len(flatbuffer)
    if latency_rounds:
        results["latency_ms"] = latency(flatbuffers, spec, chips, latency_rounds)

    detector = create_detector(spec.crop.detector)
    crops, rows = [], []
    for row, f in enumerate(faces):
        face = primary_face([d for d in detector.detect(f["image"]) if d.height >= spec.crop.min_face])
        if face is not None:
            crops.append(align_face(f["image"], face, spec.crop, CHIP))
            rows.append(row)
    ours = keras_predict(model, np.stack(crops), spec)[EMBEDDING_NAME]
    results["alignment"] = summary((ours * reference[rows]).sum(1))
    results["dlib_weights_bytes"] = os.path.getsize(models.face_recognition_model_location())
    results["photos"] = len(photos)
    results["dlib_found"] = len(found)
    results["calibration_chips"] = calibrate
    return results


def latency(flatbuffers: dict[str, bytes], spec, chips: np.ndarray, rounds: int) -> dict[str, float]:
    """Median milliseconds per face: dlib's encoder and each LiteRT engine, taking turns face by face."""
    import time

    import dlib
    import face_recognition_models as models

    from edgeface.runtime.engine import LiteRTEngine

    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    runners = {"dlib encoder": lambda chip: encoder.compute_face_descriptor(chip)}
    for precision, flatbuffer in flatbuffers.items():
        for threads in (1, 2):
            engine = LiteRTEngine(flatbuffer, spec, num_threads=threads, source=precision)
            runners[f"{precision}, {threads} thread{'s' if threads > 1 else ''}"] = (
                lambda chip, engine=engine: engine.predict(chip[None]))
    times: dict[str, list[float]] = {name: [] for name in runners}
    for name, run in runners.items():  # warm up
        run(chips[0])
    for i in range(rounds):
        chip = np.ascontiguousarray(chips[i % len(chips)])
        for name, run in runners.items():
            start = time.perf_counter()
            run(chip)
            times[name].append(time.perf_counter() - start)
    return {name: round(1000 * float(np.median(values)), 3) for name, values in times.items()}


def fit_template(photos: list[Path]) -> list[tuple[float, float]]:
    """The median position of the face mesh's five points in dlib's chips, as fractions of the chip side."""
    from edgeface.faces.align import similarity_transform
    from edgeface.faces.detect import create_detector, primary_face
    from edgeface.faces.landmarks import DLIB_FIVE as MESH_FIVE, face_mesh

    template = (PADDING + np.asarray(DLIB_FIVE)) / (2 * PADDING + 1)
    detector = create_detector("blazeface")
    positions = []
    for f in dlib_chips(photos):
        face = primary_face(detector.detect(f["image"]))
        if face is None:
            continue
        to_chip = similarity_transform(f["points"], template)
        points = face_mesh().landmarks(f["image"], face)[list(MESH_FIVE)]
        positions.append(points @ to_chip[:, :2].T + to_chip[:, 2])
    return [tuple(round(float(v), 4) for v in p) for p in np.median(np.stack(positions), axis=0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "celeba-299" / "labels.csv",
                        help="a CSV manifest of photos (its image column is used)")
    parser.add_argument("--faces", type=int, default=300, help="photos to use (first N in a seeded order)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="dlib-port", metavar="NAME",
                        help="write the figures to results/NAME.json (empty: do not write)")
    parser.add_argument("--latency", type=int, default=0, metavar="ROUNDS",
                        help="time dlib's encoder against the port for this many faces each")
    parser.add_argument("--fit-template", action="store_true", help="print the face mesh's five points in "
                                                                    "dlib's chips (uses other photos)")
    args = parser.parse_args(argv)
    with open(args.data, newline="") as handle:
        paths = [args.data.parent / row["image"] for row in csv.DictReader(handle)]
    order = np.random.default_rng(args.seed).permutation(len(paths))
    photos = [paths[i] for i in order[:args.faces]]
    results = measure(photos, latency_rounds=args.latency)
    if args.fit_template:
        results["template"] = fit_template([paths[i] for i in order[args.faces:2 * args.faces]])
    print(json.dumps(results, indent=2))
    if args.results:
        write_result(args.results, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
