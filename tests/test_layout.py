"""The package's shape: imports go one way (pyproject.toml's import-linter contracts), and the package list that
setuptools installs names every package of the tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def package_tree(dest: Path) -> Path:
    """The edgeface package as installed: convert/ inside it as edgeface/convert (import-linter reads folders,
    and the editable install maps that one from elsewhere)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "edgeface", dest / "edgeface", ignore=ignore)
    shutil.copytree(REPO / "convert", dest / "edgeface" / "convert", ignore=ignore)
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on that tree (it puts its working folder first on the path), with this checkout's contracts."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo",
               str(REPO / "pyproject.toml")]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_imports_keep_the_contracts(tmp_path: Path) -> None:
    """Device side never reaches the workstation side (nor TensorFlow), layers import downward, no cycles."""
    if not Path(sys.executable).with_name("lint-imports").is_file():
        pytest.fail("lint-imports not installed: pip install -e '.[dev]'")
    done = lint_imports(package_tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout, done.stdout


def test_every_package_is_installed() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "edgeface").rglob("__init__.py")}
    found |= {"edgeface." + ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "convert").rglob("__init__.py")}
    # folders of data files (models, scripts, the web page's assets) are listed too, so they ship
    found |= {".".join(d.relative_to(REPO).parts) for d in (REPO / "edgeface").rglob("*")
              if d.is_dir() and d.name != "__pycache__" and not (d / "__init__.py").exists()}
    assert listed == found
