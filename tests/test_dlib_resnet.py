"""dlib's face encoder in Keras: the .dat reader on files written by the test, the port against an independent
numpy forward pass of dlib's layers, and (shared tier) against dlib itself on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import dlib_writer as dw
from edgeface.core.errors import ModelError
from edgeface.train.dlib_dat import read_dlib_network
from edgeface.train import dlib_resnet as dr

MEANS = (122.782, 117.001, 104.298)
WIDTH = 1 / 8  # 4, 8, 16, 32, 32 channels: dlib's architecture, cheaply


def test_reader_reads_a_network_written_in_dlibs_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    filters, biases = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    gamma, beta = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    weights = rng.normal(size=(4, 5)).astype(np.float32)
    layers = [dw.con(filters, biases, 2, 0), dw.affine(gamma, beta), dw.text("relu_"), dw.pool("max", 3, 2),
              dw.text("add_prev_"), dw.pool("avg", 0, 1), dw.fc(weights)]
    network = read_dlib_network(dw.write(tmp_path / "net.dat", layers, MEANS, 150, tags=2))

    assert network.loss == "loss_metric_2"
    assert network.loss_settings == pytest.approx({"margin": 0.04, "distance_threshold": 0.6})
    assert network.input_means == pytest.approx(MEANS) and network.input_size == (150, 150)
    assert network.kinds() == ["con", "affine", "relu", "max_pool", "add_prev", "avg_pool", "fc"]
    con, affine, _, max_pool, _, avg_pool, fc = network.layers
    np.testing.assert_array_equal(con.arrays["filters"], filters)
    np.testing.assert_array_equal(con.arrays["biases"], biases)
    assert (con.settings["stride_y"], con.settings["padding_y"], con.settings["num_filters"]) == (2, 0, 4)
    np.testing.assert_array_equal(affine.arrays["gamma"], gamma)
    np.testing.assert_array_equal(affine.arrays["beta"], beta)
    assert (max_pool.settings["rows"], max_pool.settings["stride_y"]) == (3, 2)
    assert avg_pool.settings["rows"] == 0  # avg_pool_everything
    np.testing.assert_array_equal(fc.arrays["weights"], weights)
    assert "biases" not in fc.arrays


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:len(data) // 2], "unexpected end of file"),
    (lambda data: data.replace(b"\x05relu_", b"\x05relux"), "layer 'relux'"),
    (lambda data: b"\x01\x02" + data[2:], "no loss layer"),
    (lambda data: data.replace(b"loss_metric_2", b"loss_mmod___2"), "loss layer 'loss_mmod___2'"),
])
def test_reader_refuses_a_damaged_file_in_one_line(tmp_path: Path, damage, message: str) -> None:
    good = dw.network([dw.con(np.ones((2, 3, 3, 3)), np.zeros(2), 1, 1), dw.text("relu_")], MEANS, 150)
    path = tmp_path / "bad.dat"
    path.write_bytes(damage(good))
    with pytest.raises(ModelError, match=message) as error:
        read_dlib_network(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def random_encoder(rng: np.random.Generator) -> tuple[list[bytes], list[tuple[str, dict]]]:
    """dlib's face encoder architecture at WIDTH with random weights: the file's layers, and the same layers
    for the numpy reference."""
    def conv_pair(channels: int, filters: int, size: int, stride: int) -> list[tuple[str, dict]]:
        return [("con", {"filters": rng.normal(0, (2 / (channels * size * size)) ** 0.5,
                                               (filters, channels, size, size)).astype(np.float32),
                         "biases": rng.normal(0, 0.1, filters).astype(np.float32), "stride": stride,
                         "padding": 0 if stride == 2 else size // 2}),
                ("affine", {"gamma": rng.uniform(0.5, 1.5, filters).astype(np.float32),
                            "beta": rng.normal(0, 0.1, filters).astype(np.float32)})]

    width = lambda n: max(1, round(n * WIDTH))  # noqa: E731
    plan = conv_pair(3, width(32), 7, 2) + [("relu", {}), ("max_pool", {"size": 3, "stride": 2})]
    channels = width(32)
    for stage in dr.STAGES:
        for block in range(stage.blocks):
            down = stage.down and block == 0
            plan += [("tag", {})]  # dlib's tag1: the block's input, which the shortcut reads
            plan += conv_pair(channels, width(stage.filters), 3, 2 if down else 1) + [("relu", {})]
            plan += conv_pair(width(stage.filters), width(stage.filters), 3, 1)
            plan += ([("avg_pool", {"size": 2, "stride": 2})] if down else []) + [("add_prev", {"down": down}),
                                                                                 ("relu", {})]
            channels = width(stage.filters)
    plan += [("avg_pool", {"size": 0, "stride": 1}),
             ("fc", {"weights": rng.normal(0, 0.1, (channels, 128)).astype(np.float32)})]
    encoded = []
    for kind, p in plan:
        if kind == "tag":
            continue  # tags hold nothing in the file
        encoded.append({"con": lambda: dw.con(p["filters"], p["biases"], p["stride"], p["padding"]),
                        "affine": lambda: dw.affine(p["gamma"], p["beta"]),
                        "relu": lambda: dw.text("relu_"), "add_prev": lambda: dw.text("add_prev_"),
                        "max_pool": lambda: dw.pool("max", p["size"], p["stride"]),
                        "avg_pool": lambda: dw.pool("avg", p["size"], p["stride"]),
                        "fc": lambda: dw.fc(p["weights"])}[kind]())
    return encoded, plan


def dlib_forward(image: np.ndarray, plan: list[tuple[str, dict]]) -> np.ndarray:
    """dlib's layers in numpy (rows, columns, channels), written from dlib's layer definitions."""
    def windows(x: np.ndarray, size: int, stride: int) -> np.ndarray:
        view = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(0, 1))
        return view[::stride, ::stride]  # (rows, columns, channels, size, size)

    def zero_pad_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        shape = np.maximum(a.shape, b.shape)
        out = np.zeros(shape, np.float64)
        out[:a.shape[0], :a.shape[1], :a.shape[2]] += a
        out[:b.shape[0], :b.shape[1], :b.shape[2]] += b
        return out

    x = (image.astype(np.float64) - np.asarray(MEANS)) / 256.0
    tags: list[np.ndarray] = []  # the input of each residual block
    for kind, p in plan:
        if kind == "tag":
            tags.append(x)
        elif kind == "con":
            pad = p["padding"]
            padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
            x = np.einsum("ijcrs,fcrs->ijf", windows(padded, p["filters"].shape[2], p["stride"]),
                          p["filters"]) + p["biases"]
        elif kind == "affine":
            x = x * p["gamma"] + p["beta"]
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "max_pool":
            x = windows(x, p["size"], p["stride"]).max(axis=(3, 4))
        elif kind == "avg_pool" and p["size"] == 0:
            x = x.mean(axis=(0, 1))
        elif kind == "avg_pool":
            pooled = windows(tags[-1], p["size"], p["stride"]).mean(axis=(3, 4))
            tags[-1] = pooled  # the down block's shortcut
        elif kind == "add_prev":
            x = zero_pad_sum(x, tags.pop())
        elif kind == "fc":
            x = x @ p["weights"]
    return x


def test_port_computes_dlibs_layers_on_a_random_network(tmp_path: Path) -> None:
    """Residual wiring, zero-padded sums (channels, and rows and columns where 3x3 meets 4x4), strided
    padding and the folded affine layers agree with a numpy forward pass written from dlib's definitions."""
    import keras

    from edgeface.train.layers import BackbonePreprocess

    rng = np.random.default_rng(1)
    layers, plan = random_encoder(rng)
    path = dw.write(tmp_path / "encoder.dat", layers, MEANS, 150, tags=28)
    model = dr.load_dlib_resnet(path, cache_dir=tmp_path / "cache", width=WIDTH)
    images = rng.integers(0, 256, (2, 150, 150, 3)).astype(np.uint8)
    port = np.asarray(model(BackbonePreprocess("dlib")(images.astype(np.float32) / 255.0),
                            training=False)[dr.DESCRIPTOR_NAME])
    reference = np.stack([dlib_forward(image, plan) for image in images])
    np.testing.assert_allclose(port, reference, rtol=2e-3, atol=2e-4 * np.abs(reference).max())
    assert list((tmp_path / "cache" / "weights").glob("dlib-resnet-*.weights.h5"))  # converted once, cached
    keras.backend.clear_session()


def test_port_refuses_a_network_that_is_not_dlibs_face_encoder(tmp_path: Path) -> None:
    path = dw.write(tmp_path / "other.dat", [dw.con(np.ones((2, 3, 3, 3)), np.zeros(2), 1, 1), dw.text("relu_")],
                    MEANS, 150)
    with pytest.raises(ModelError, match="not dlib's face encoder: layer 1 is relu, expected affine"):
        dr.load_dlib_resnet(path, cache_dir=tmp_path)


@pytest.mark.shared
def test_port_reproduces_dlibs_descriptors_on_real_faces(shared_dir: Path, tmp_path: Path) -> None:
    """On 200+ real faces: the port in Keras, float32 and int8 TFLite against dlib's own encoder on dlib's
    chips, and edgeface's own crops (BlazeFace + face mesh) against dlib's chips (benchmarks/dlib_port.py)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("dlib", reason="dlib (dlib-bin, in the dev extra) is what the port is compared with")
    import os

    run = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "dlib_port.py"),
                          "--faces", "340"], env={**os.environ, "EDGEFACE_RESULTS": str(tmp_path)},
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "dlib-port.json").read_text())["data"]
    port = results["port"]
    assert min(port[p]["faces"] for p in port) >= 200
    for precision in ("keras", "float32"):
        assert port[precision]["median"] >= 0.9999 and port[precision]["min"] >= 0.999, port
    assert port["int8"]["median"] >= 0.999, port
    assert results["alignment"]["median"] >= 0.995 and results["alignment"]["p5"] >= 0.98, results["alignment"]
