"""What ``edgeface train`` can be told, with its defaults, in one place (no TensorFlow here: the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeface.core.spec import CropSpec


@dataclass
class TrainConfig:
    data: Path
    out: Path
    val: Path | None = None
    backbone: str = "mobilenetv2"
    weights: str = "imagenet"
    input_size: int = 224
    batch_size: int = 32
    epochs: int = 10  # fine-tuning (or from-scratch) epochs, with early stopping
    frozen_epochs: int = 30  # heads-only epochs on a frozen pretrained backbone (cheap: cached features)
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_from: str | None = "default"  # "default": the backbone's usual point; None: whole backbone
    patience: int = 3
    val_fraction: float = 0.15
    seed: int = 0
    embedding_size: int = 128
    label_smoothing: float = 0.1
    identity_head: str = "softmax"  # "softmax": plain Dense; "cosface": cosine head trained with a margin
    identity_margin: float = 0.2  # CosFace margin subtracted from the true person's cosine while training
    cosine_decay: bool = True  # fine-tuning rate follows a cosine over the epochs
    fine_tune_batchnorm: bool = False  # let a pretrained backbone's BatchNorm statistics adapt to faces
    teacher: str | None = None  # a face encoder the identity embedding learns from (edgeface.train.teacher)
    teacher_weight: float = 5.0  # weight of the distillation (cosine) loss beside the heads' cross-entropies
    head_weights: dict[str, float] = field(default_factory=dict)  # loss weight per head; unnamed heads weigh 1
    augment: bool = True
    detector: str = "blazeface"
    crop: CropSpec = field(default_factory=CropSpec)
    cache_dir: Path | None = None
    verbose: int = 1
