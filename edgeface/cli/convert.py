"""``edgeface convert``: Keras model -> verified TFLite bundles."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgeface.cli.common import EXIT_CHECK_FAILED, friendly_errors, table
from edgeface.convert.options import ConvertOptions
from edgeface.core.bundle import PRECISIONS

ORDER = 30
DEFAULTS = ConvertOptions()


@friendly_errors
def convert(
    model: Path = typer.Argument(..., help="A model.keras (or the folder `edgeface train` wrote)."),
    precision: List[str] = typer.Option(["int8"], "--precision", "-p",
                                        help="float32, float16, dynamic or int8; repeat for several, or 'all'."),
    out: Path = typer.Option(Path("bundles"), help="Folder for NAME-PRECISION.edgeface, or a .edgeface file path."),
    representative: Optional[Path] = typer.Option(
        DEFAULTS.representative,
        help="Photos for int8 calibration (CSV or folder). Default: the model's own training split."),
    representative_size: int = typer.Option(
        DEFAULTS.representative_size, help="How many faces calibrate int8, spread over people and labels "
                                           "(fewer converts faster but can cost accuracy)."),
    verify_data: Optional[Path] = typer.Option(
        DEFAULTS.verify_data,
        help="Held-out photos to compare Keras and TFLite on. Default: the model's validation split."),
    verify_size: int = typer.Option(DEFAULTS.verify_size, help="How many held-out faces to compare on."),
    seed: int = typer.Option(
        DEFAULTS.seed, help="Which faces are drawn for calibration and verification; convert with a few "
                            "seeds to see how much the int8 result depends on the draw."),
    io_type: str = typer.Option(
        DEFAULTS.io_type, help="int8 model input/output type: int8 (XNNPACK's native), uint8 or float32."),
    min_agreement: float = typer.Option(
        DEFAULTS.min_agreement, help="Refuse a precision whose argmax agrees with Keras on fewer faces than "
                                     "this, on any head."),
    identity_threshold: float = typer.Option(
        DEFAULTS.identity_threshold, help="Identity confidence below which the device says 'unknown'."),
    debug_layers: bool = typer.Option(
        DEFAULTS.debug_layers, help="int8: report each layer's own error (TFLite quantization debugger) and "
                                    "where error accumulates, int8 against float tensor by tensor (CSVs and a "
                                    "plot beside the bundles)."),
    bias_correction: bool = typer.Option(
        DEFAULTS.bias_correction, "--bias-correction/--no-bias-correction",
        help="int8: fit the per-channel gain and shift int8 gives the backbone's features on the "
             "representative faces and undo them in the heads that read the features."),
    equalize: bool = typer.Option(
        DEFAULTS.equalize, "--equalize/--no-equalize",
        help="int8: before calibrating, scale each channel that feeds a depthwise convolution up to its "
             "tensor's range (and its kernel down), so int8 keeps the weak channels; exact in float. "
             "MobileNet-class backbones only."),
) -> None:
    """Convert a trained model to TFLite bundles and verify each against Keras.

    Each bundle carries the model, labels, input size and scaling, crop geometry, quantization parameters,
    the source model's checksum and the accuracy measured here. Exit 1 when a precision is refused.
    """
    from edgeface.convert.pipeline import convert_model
    from edgeface.convert.tflite import short_tensor_name

    precisions = list(PRECISIONS) if precision == ["all"] else precision
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise typer.BadParameter(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)} or all",
                                 param_hint="--precision")
    options = ConvertOptions(representative=representative, verify_data=verify_data,
                             representative_size=representative_size, verify_size=verify_size, seed=seed,
                             io_type=io_type, min_agreement=min_agreement, identity_threshold=identity_threshold,
                             bias_correction=bias_correction, equalize=equalize, debug_layers=debug_layers)
    results = convert_model(model, precisions, out, options, on_log=lambda s: typer.echo(s, err=True))
    float_size = next((r.size_bytes for r in results if r.precision == "float32"), None)
    rows = []
    for r in results:
        for head, check in r.checks.items():
            rows.append([r.precision if head == "identity" else "", head, check.keras_accuracy, check.tflite_accuracy,
                         check.agreement, check.max_prob_diff,
                         f"{r.size_bytes / 1e6:.2f} MB" if head == "identity" else "",
                         (f"{r.size_bytes / float_size:.0%}" if float_size and head == "identity" else "")])
    typer.echo(table(rows, ["precision", "head", "keras acc", "tflite acc", "agreement", "max |dp|", "size",
                            "vs float32"]))
    for r in results:
        if r.layer_errors:
            typer.echo("\nworst int8 layers, each fed float inputs (rmse / scale; ~0.29 is plain rounding):")
            for row in r.layer_errors:
                typer.echo(f"  {row['rmse_over_scale']:8.2f}  {row['op']:<18s} {short_tensor_name(row['layer'])}")
        if r.accumulated_errors:
            echo_accumulated_errors(r.accumulated_errors)
        for path in r.debug_reports:
            typer.echo(f"wrote {path}")
    refused = [r for r in results if not r.accepted]
    for r in results:
        if r.accepted:
            typer.echo(f"wrote {r.bundle_path}")
    for r in refused:
        typer.echo(f"refused {r.precision}: {r.reason}", err=True)
    if refused:
        raise typer.Exit(EXIT_CHECK_FAILED)


def echo_accumulated_errors(rows: list[dict], worst: int = 5) -> None:
    """Where int8 error compounds: SQNR at the model's outputs and the ops that lose most of it."""
    from edgeface.convert.tflite import short_tensor_name

    typer.echo("\nint8 against float, tensor by tensor (SQNR in dB, higher is better; ~6 dB per bit):")
    at_outputs = ", ".join(f"{row['output']} {row['sqnr_db']:.1f}" for row in rows if row.get("output"))
    typer.echo(f"  at the outputs: {at_outputs or 'not matched'}")
    losers = sorted((row for row in rows if row["drop_db"] is not None), key=lambda row: -row["drop_db"])
    typer.echo(f"  the {min(worst, len(losers))} ops that lose most:")
    for row in losers[:worst]:
        typer.echo(f"  {row['drop_db']:6.1f} dB lost -> {row['sqnr_db']:5.1f}  {row['op']:<18s} "
                   f"{short_tensor_name(row['tensor'])}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
