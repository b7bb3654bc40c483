"""What ``edgeface train`` can be told, with its defaults, in one place (no TensorFlow here: the CLI reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainConfig:
    data: Path
    out: Path
    val: Path | None = None
    backbone: str = "dlib-resnet"
    weights: str | None = None  # None: the backbone's own (dlib, imagenet, or none for the test backbones)
    input_size: int | None = None  # None: the backbone's own (150 for dlib-resnet, 224 for the others)
    batch_size: int = 32
    epochs: int = 10  # fine-tuning (or from-scratch) epochs, with early stopping
    frozen_epochs: int = 30  # heads-only epochs on a frozen pretrained backbone (cheap: cached features)
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_from: str | None = "default"  # "default": the backbone's usual point; None: whole backbone
    patience: int = 3
    val_fraction: float = 0.15
    seed: int = 0
    embedding_size: int = 128  # learned embeddings only; dlib-resnet's is its 128-d descriptor
    label_smoothing: float = 0.1
    cosine_decay: bool = True  # fine-tuning rate follows a cosine over the epochs
    fine_tune_batchnorm: bool = False  # let a pretrained backbone's BatchNorm statistics adapt to faces
    head_weights: dict[str, float] = field(default_factory=dict)  # loss weight per head; unnamed heads weigh 1
    augment: bool = True
    detector: str = "blazeface"
    cache_dir: Path | None = None
    verbose: int = 1
