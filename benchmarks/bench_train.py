"""Training throughput (images per second) per backbone: one Adam step on a batch of 32, all heads.

    pytest benchmarks/bench_train.py                   # tiny 64x64 and MobileNetV2 96x96
    pytest benchmarks/bench_train.py --full            # + MobileNetV2 224, ResNet50 and VGG16 at the sizes
                                                       #   the celeba-299 figures were trained at

The step is the fine-tuning step (backbone trainable, BatchNorm frozen for pretrained backbones; the whole
network for backbones trained from scratch), on data already in memory: the throughput of the model, not of
JPEG decoding. ``extra_info["images_per_second"]`` is batch size / median step time; the figures go to
``results/train-step.json``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

BATCH = 32
SMALL = [("tiny", 64, "none"), ("mobilenetv2", 96, "imagenet")]
FULL = [("mobilenetv2", 224, "imagenet"), ("mobilenetv2", 160, "imagenet"), ("resnet50", 112, "none"),
        ("vgg16", 64, "none")]


def _cases(config) -> list[tuple[str, int, str]]:
    full = config.getoption("--full", default=False) or os.environ.get("EDGEFACE_BENCH_FULL") == "1"
    return SMALL + (FULL if full else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "train_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config)
        metafunc.parametrize("train_case", cases, ids=[f"{b}-{s}" for b, s, _ in cases])


def test_training_step_throughput(benchmark, train_case: tuple[str, int, str], result_rows) -> None:
    import keras

    from edgeface.core.spec import ModelSpec
    from edgeface.train.model import BACKBONES, build_model, set_backbone_trainable
    from edgeface.train.trainer import compile_model

    backbone, size, weights = train_case
    if weights == "imagenet" and not os.environ.get("EDGEFACE_WEIGHTS_DIR"):
        pytest.skip("ImageNet weights: set EDGEFACE_WEIGHTS_DIR (../shared/weights) or run online")
    spec = ModelSpec(labels={"identity": tuple(f"p{i}" for i in range(299)), "emotion": ("happy", "neutral"),
                             "gender": ("female", "male")}, input_size=size, backbone=backbone, embedding_size=128)
    keras.utils.set_random_seed(0)
    built = build_model(spec, weights=weights)
    pretrained = weights != "none"
    set_backbone_trainable(built.backbone, True, BACKBONES[backbone].fine_tune_from if pretrained else None,
                           batchnorm=not pretrained)
    compile_model(built.training_model, 1e-4, 0.1)
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, size, size, 3), dtype=np.float32)
    targets = {head: np.eye(n, dtype=np.float32)[rng.integers(0, n, BATCH)] for head, n in spec.num_classes.items()}
    built.training_model.train_on_batch(images, targets)  # builds the graph and optimizer state
    benchmark.pedantic(built.training_model.train_on_batch, args=(images, targets), rounds=5, iterations=1,
                       warmup_rounds=1)
    benchmark.extra_info.update(backbone=backbone, input_size=size, batch=BATCH, weights=weights,
                                images_per_second=round(BATCH / benchmark.stats.stats.median, 2))
    assert benchmark.stats.stats.median > 0
    result_rows.add("train-step", {**benchmark.extra_info, "median_seconds": benchmark.stats.stats.median},
                    step="one Adam step on a batch in memory, all heads, backbone trainable", people=299)
