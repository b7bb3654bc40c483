"""The installer trusts only what root alone can write (docs/security.md, "Install"). Before issue 30,
``sudo install.sh`` run from a folder the deploy user owns installed that folder's root helper (run by root
through sudo) and trusted its requirement hashes; a wheel was checked by its hash and then installed from
where the user could swap it.

Each case runs the real install.sh with ``--root`` into a temporary folder and ``--no-apt``; every one is
refused before anything is installed. Cases that give a file to another user need root (skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="gives files to another user: needs root")


def _install(script_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "EDGEFACE_ROOT"))}
    return subprocess.run(["bash", str(script_dir / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd="/")


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """What docs/pi.md copies to the Pi: firmware_scripts and a wheel, in a folder (private to this test)."""
    folder = tmp_path / "edgeface-setup"
    shutil.copytree(REPO / "firmware_scripts", folder / "firmware_scripts")
    (folder / "dist").mkdir()
    (folder / "dist" / "edgeface-0.1.0-py3-none-any.whl").write_bytes(b"a wheel")
    (tmp_path / "root").mkdir()
    return folder


def _refused(done: subprocess.CompletedProcess[str], path: Path, why: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("install.sh: error: ") and str(path) in last and why in last, last
    assert "root runs only what root alone can write" in last
    assert "==> Debian packages" not in done.stdout  # refused before any step


def _args(setup: Path, *extra: str) -> list[str]:
    return ["--root", str(setup.parent / "root"), "--no-apt", "--no-systemd",
            "--from", str(setup / "dist" / "edgeface-0.1.0-py3-none-any.whl"), "--sha256", "ab" * 32, *extra]


@as_root
def test_refused_from_a_folder_another_user_owns(setup: Path) -> None:
    """The issue's: the deploy user's folder (here: nobody's)."""
    os.chown(setup, NOBODY, NOBODY)
    os.chown(setup / "firmware_scripts", NOBODY, NOBODY)
    done = _install(setup / "firmware_scripts", *_args(setup))
    _refused(done, setup / "firmware_scripts", "belongs to nobody")


def test_refused_from_a_folder_everyone_may_write(setup: Path) -> None:
    (setup / "firmware_scripts").chmod(0o777)
    _refused(_install(setup / "firmware_scripts", *_args(setup)), setup / "firmware_scripts", "mode 777")


def test_refused_when_a_folder_above_may_be_written_by_others(setup: Path) -> None:
    """Whoever may write a folder above can rename the installer's folder and put another in its place."""
    setup.chmod(0o775)
    _refused(_install(setup / "firmware_scripts", *_args(setup)), setup, "mode 775")


@pytest.mark.parametrize("name", ["edgeface-credential", "requirements-pi.txt", "install.sh"])
def test_refused_when_a_file_it_uses_may_be_written_by_others(setup: Path, name: str) -> None:
    """The root helper sudo runs, the hashes pip trusts, the script itself."""
    (setup / "firmware_scripts" / name).chmod(0o666 if name != "install.sh" and name != "edgeface-credential"
                                              else 0o777)
    _refused(_install(setup / "firmware_scripts", *_args(setup)), setup / "firmware_scripts", name)


@as_root
def test_refused_when_the_helper_belongs_to_another_user(setup: Path) -> None:
    os.chown(setup / "firmware_scripts" / "edgeface-credential", NOBODY, NOBODY)
    _refused(_install(setup / "firmware_scripts", *_args(setup)), setup / "firmware_scripts", "edgeface-credential")


def test_refused_when_the_helper_is_a_link(setup: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("#!/bin/sh\nid\n")
    helper = setup / "firmware_scripts" / "edgeface-credential"
    helper.unlink()
    helper.symlink_to(target)
    _refused(_install(setup / "firmware_scripts", *_args(setup)), setup / "firmware_scripts", "edgeface-credential")


def test_a_source_tree_with_a_file_others_may_write_is_refused(setup: Path, tmp_path: Path) -> None:
    """--from a tree: its build code runs as root."""
    tree = tmp_path / "tree"
    (tree / "edgeface").mkdir(parents=True)
    (tree / "pyproject.toml").write_text('[project]\nname = "edgeface"\n')
    (tree / "edgeface" / "__init__.py").write_text("")
    (tree / "edgeface" / "__init__.py").chmod(0o666)
    done = _install(setup / "firmware_scripts", "--root", str(setup.parent / "root"), "--no-apt", "--from", str(tree))
    assert done.returncode == 2 and "edgeface/__init__.py" in done.stderr and "not root's alone" in done.stderr, \
        done.stderr


def test_a_wheel_others_may_write_needs_its_sha256(setup: Path) -> None:
    """Without --sha256 nothing vouches for a wheel but where it lies; with it, its copy is checked (and this
    one is not the wheel that was built)."""
    (setup / "dist").chmod(0o777)
    wheel = setup / "dist" / "edgeface-0.1.0-py3-none-any.whl"
    done = _install(setup / "firmware_scripts", "--root", str(setup.parent / "root"), "--no-apt", "--from", str(wheel))
    _refused(done, setup / "dist", "mode 777")
    done = _install(setup / "firmware_scripts", *_args(setup))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"install.sh: error: --from {wheel}: its sha256 is ")


@as_root
def test_a_python_another_user_owns_is_refused(setup: Path, tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\nid -u > /tmp/planted-python-ran\n")
    python.chmod(0o755)
    os.chown(python, NOBODY, NOBODY)
    _refused(_install(setup / "firmware_scripts", *_args(setup, "--python", str(python))), python, "belongs to nobody")


def test_every_python_install_sh_runs_is_isolated() -> None:
    """-I on every Python command (not the caller's folder, not PYTHON* variables); the venv's console
    script, which runs without it, is not run (it was: `edgeface --help`)."""
    import re

    text = (REPO / "firmware_scripts" / "install.sh").read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    command = r'(?:^|[\s(;|&])"\$(?:python|venv/bin/python|tmp/build/bin/python)" +(\S+)'
    # A run is followed by its options; a test ([ -x "$python" ]) or an argument ("$python" "--python") is not.
    runs = [match for line in code for match in re.findall(command, line) if not match.startswith(("]", '"'))]
    assert len(runs) >= 8 and set(runs) == {"-I"}, runs
    assert not [line for line in code if '"$venv/bin/edgeface"' in line and "-x" not in line]
