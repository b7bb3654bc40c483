"""The ``edgeface`` command: a thin typer layer over the library.

Each module in this package that defines ``register(app)`` adds its commands; ``ORDER`` sets where they
appear in ``--help``. Commands import their heavy dependencies (TensorFlow, OpenCV) only when they run.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

import typer

HELP = """Train a three-head face model (identity, emotion, gender), quantize it, and run it on a Raspberry Pi.

\b
Typical workflow:
  edgeface demo                                  whole pipeline on a synthetic set, no data needed
  edgeface data check photos/labels.csv          find bad rows and images before training
  edgeface train --data photos/labels.csv --out runs/home
  edgeface convert runs/home --precision int8 --out bundles/
  edgeface evaluate runs/home bundles/home-int8.edgeface --data test.csv --max-drop 1
  edgeface run --bundle bundles/home-int8.edgeface --source 0     (on the Pi)

Exit codes: 0 success; 1 a check failed (data not clean, accuracy gate, conversion refused);
2 bad input (file, value or option); 130 interrupted.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _register_all() -> None:
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(app)


_register_all()


def main() -> None:
    # TensorFlow's C++ logging floods the terminal; users can set the variable themselves to see it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
