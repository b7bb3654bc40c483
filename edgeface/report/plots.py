"""Charts for evaluations and reports (matplotlib, a workstation dependency: imported only here, lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.core.errors import DependencyError
from edgeface.core.spec import HEADS

# One colour per precision, the same in every chart.
PRECISION_COLOURS = {"keras": "#6c757d", "float32": "#1f77b4", "float16": "#2ca02c", "dynamic": "#ff7f0e",
                     "int8": "#d62728"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DependencyError("charts need matplotlib: pip install matplotlib (or edgeface[train])") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusions: dict[str, tuple[Sequence[str], np.ndarray]], title: str, path: Path) -> Path:
    """One heat map per head (rows true, columns predicted), each row normalised to its true count."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(confusions), figsize=(5.2 * len(confusions), 4.8), squeeze=False)
    for ax, (head, (labels, matrix)) in zip(axes[0], confusions.items()):
        counts = np.asarray(matrix, dtype=float)
        rows = counts.sum(1, keepdims=True)
        share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{head} ({int(np.trace(counts))}/{int(counts.sum())} right)")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if len(labels) <= 12:  # readable tick labels and counts; identity with many people stays a heat map
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
            ax.set_yticks(range(len(labels)), labels)
            for (r, c), value in np.ndenumerate(counts):
                ax.text(c, r, f"{int(value)}", ha="center", va="center",
                        color="white" if share[r, c] > 0.5 else "black", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _grouped_bars(ax: Any, groups: list[str], series: dict[str, dict[str, float]],
                  errors: dict[str, dict[str, float]] | None = None) -> None:
    """Bars grouped by ``groups`` (x), one bar per series key (precision) in each group."""
    keys = list(series)
    width = 0.8 / max(len(keys), 1)
    x = np.arange(len(groups))
    for i, key in enumerate(keys):
        values = [series[key].get(g, np.nan) for g in groups]
        err = None
        if errors is not None:
            # asymmetric: from the bar (p50) up to p95
            err = [[0] * len(groups), [max(errors[key].get(g, np.nan) - v, 0) if not np.isnan(v) else 0
                                       for g, v in zip(groups, values)]]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, values, width, label=key, yerr=err, capsize=3,
               color=PRECISION_COLOURS.get(key))
    ax.set_xticks(x, groups)


def plot_accuracy(rows: Sequence[dict[str, Any]], heads: Sequence[str], path: Path) -> Path:
    """Accuracy per head: one panel per head, bars per backbone and precision.

    ``rows``: dicts with ``group`` (the trained model), ``precision`` and ``accuracy`` ({head: 0..1}).
    """
    plt = _pyplot()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(1, len(heads), figsize=(4.2 * len(heads) + 1, 4.2), squeeze=False)
    for ax, head in zip(axes[0], heads):
        series: dict[str, dict[str, float]] = {}
        for r in rows:
            value = r["accuracy"].get(head)
            if value is not None:
                series.setdefault(r["precision"], {})[r["group"]] = 100 * value
        _grouped_bars(ax, groups, series)
        values = [v for s in series.values() for v in s.values()]
        low = min(values, default=0)
        # Quantization moves accuracy by a point or two: start the axis near the data so that shows.
        ax.set_ylim(max(0, np.floor(low / 10) * 10 - 10), 100)
        ax.set_title(head)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, axes[0][0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(rows: Sequence[dict[str, Any]], path: Path, threads: Sequence[int]) -> Path:
    """Per-face latency (bar: p50, whisker: p95), one panel per thread count, and model size.

    ``rows``: dicts with ``group``, ``precision``, ``size_bytes`` and ``latency`` ({threads: {p50_ms, p95_ms}}).
    """
    plt = _pyplot()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(1, len(threads) + 1, figsize=(4.6 * (len(threads) + 1) + 1, 4.2), squeeze=False)
    for i, (ax, t) in enumerate(zip(axes[0], threads)):
        if i:
            ax.sharey(axes[0][0])  # one scale, so 1 and 2 threads compare at a glance
        p50: dict[str, dict[str, float]] = {}
        p95: dict[str, dict[str, float]] = {}
        for r in rows:
            stats = r["latency"].get(t)
            if stats:
                p50.setdefault(r["precision"], {})[r["group"]] = stats["p50_ms"]
                p95.setdefault(r["precision"], {})[r["group"]] = stats["p95_ms"]
        _grouped_bars(ax, groups, p50, p95)
        ax.set_ylabel("ms per face")
        ax.set_title(f"latency, {t} thread{'s' if t > 1 else ''} (bar p50, whisker p95)", fontsize=10)
        _log_if_wide(ax, [v for s in p50.values() for v in s.values()])
        ax.grid(axis="y", alpha=0.3)
    size: dict[str, dict[str, float]] = {}
    for r in rows:
        size.setdefault(r["precision"], {})[r["group"]] = r["size_bytes"] / 1e6
    ax = axes[0][-1]
    _grouped_bars(ax, groups, size)
    ax.set_ylabel("MB")
    ax.set_title("TFLite model size", fontsize=10)
    _log_if_wide(ax, [v for s in size.values() for v in s.values()])
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _log_if_wide(ax: Any, values: Sequence[float]) -> None:
    # MobileNetV2 beside VGG16 differ 20x or more: on a linear axis the small one is invisible.
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")


def _legend_below(fig: Any, ax: Any) -> None:
    """One legend for the whole figure, under the panels, where it hides no bar."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, title="precision", loc="lower center", ncol=max(len(labels), 1), fontsize=9,
               frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))


def plot_history(history: dict[str, list], path: Path) -> Path | None:
    """Loss and per-head accuracy per epoch, training vs validation, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if len(epochs) == 0:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        axes[0].plot(epochs, history["val_loss"], label="validation")
    axes[0].set_title("loss")
    for ax, head in zip(axes[1:], HEADS):
        for prefix, style in (("", "-"), ("val_", "--")):
            key = f"{prefix}{head}_accuracy"
            if key in history:
                ax.plot(epochs, history[key], style, label="validation" if prefix else "train")
        ax.set_title(f"{head} accuracy")
        ax.set_ylim(0, 1)
    phases = history.get("phase", [])
    for ax in axes:
        ax.set_xlabel("epoch")
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
