"""A reload or a periodic re-read that fails never ends the daemon, and what the daemon writes is private
whatever the umask: each case on a real ``edgeface run`` process (docs/security.md, "The daemon").

Before issue 30, a gallery replaced by garbage and then SIGHUP made the daemon exit 2 (the previous
configuration read the same file again), and a gallery nested too deeply, or with a NaN threshold, killed it
at its periodic re-read; run by hand (umask 022), its labels, snapshots, state folder and lock were readable
by everyone.
"""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import DaemonProcess, http_get
from helpers.ports import free_port

GARBAGE = {
    "text that is not JSON": "this is not a gallery\n",
    "JSON nested 100,000 deep (RecursionError before)": ('{"format": "edgeface-gallery", "format_version": 1, '
                                                         '"people": ' + "[" * 100_000 + "]" * 100_000 + "}"),
}


def _gallery(path: Path, bundle: Path, **fields: object) -> Path:
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import empty_gallery

    loaded = load_bundle(bundle)
    size = loaded.spec.embedding_size
    gallery = empty_gallery(loaded.model_sha256, size).with_person("Maya", np.eye(size)[:1],
                                                                    [{"file": "m.jpg", "sha256": "1" * 64}])
    raw = {**gallery.to_dict(), **fields}
    path.write_text(json.dumps(raw))
    return path


def _start(tmp_path: Path, bundle: Path, video: Path, gallery: Path, extra: str = "") -> tuple[DaemonProcess, Path, int]:
    config = tmp_path / "edgeface.toml"
    port = free_port()
    config.write_text(f'bundle = "{bundle}"\nsource = "{video}"\ngallery = "{gallery}"\n[capture]\nloop = true\n'
                      f'fps = 10\n[jsonl]\npath = "{tmp_path / "labels.jsonl"}"\n[http]\nport = {port}\n{extra}')
    daemon = DaemonProcess(["--config", str(config)])
    daemon.http_port()
    daemon.wait_for(lambda: _health(port)[0] == 200, 60, "healthy")
    return daemon, config, port


def _health(port: int) -> tuple[int, dict]:
    try:
        status, body = http_get(port, "/healthz")
    except OSError:
        return 0, {}
    return status, json.loads(body)


def _frames(port: int) -> int:
    return int(_health(port)[1].get("frames", 0))


def test_gallery_replaced_by_garbage_then_sighup_keeps_running(fault_bundle: Path, fault_video: Path,
                                                               tmp_path: Path) -> None:
    """Each garbage in turn, then SIGHUP: refused, logged once, shown in /healthz; repaired, it loads."""
    gallery = _gallery(tmp_path / "g.json", fault_bundle)
    daemon, _, port = _start(tmp_path, fault_bundle, fault_video, gallery)
    try:
        for count, garbage in enumerate(GARBAGE.values(), start=1):
            gallery.write_text(garbage)
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_for(lambda: sum("keeping the previous configuration" in line for line in daemon.stderr)
                            == count, 60, "the reload refused")
            status, health = _health(port)
            assert status == 200 and health["status"] == "ok", health  # labelling on with what loaded before
            failed = health["reload_failed"]["config"]
            assert failed["what"] == "config" and str(gallery) in failed["error"] and failed["since"].endswith("+00:00")
            before = _frames(port)
            daemon.wait_for(lambda: _frames(port) > before + 5, 30, "frames after the failed reload")
        daemon.proc.send_signal(signal.SIGHUP)  # the same failure again: logged once
        time.sleep(2)
        assert sum("keeping the previous configuration" in line for line in daemon.stderr) == len(GARBAGE)
        _gallery(gallery, fault_bundle)  # repaired: the next reload loads, and the failure is gone
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: any("reloaded the configuration" in line for line in daemon.stderr), 60, "a reload")
        daemon.wait_for(lambda: _health(port)[0] == 200 and _health(port)[1]["reload_failed"] is None, 60,
                        "healthy, nothing failed")
        assert daemon.proc.poll() is None
    finally:
        code, _ = daemon.stop()
    assert code == 0
    assert not any("Traceback" in line for line in daemon.stderr)


def test_gallery_periodic_reread_failures_keep_running(fault_bundle: Path, fault_video: Path,
                                                       tmp_path: Path) -> None:
    """Without a signal, the gallery's re-read: 100,000-deep JSON (RecursionError before), a NaN threshold (a
    ConfigError nothing caught before), an embedding of the wrong width; each kept out, each logged once."""
    gallery = _gallery(tmp_path / "g.json", fault_bundle)
    daemon, _, port = _start(tmp_path, fault_bundle, fault_video, gallery)

    def wrong_width() -> None:
        raw = json.loads(gallery.read_text())
        raw["people"][0]["embeddings"][0].append(0.5)
        gallery.write_text(json.dumps(raw))

    cases = {"nested": lambda: gallery.write_text(GARBAGE["JSON nested 100,000 deep (RecursionError before)"]),
             "similarity_threshold = nan": lambda: _gallery(gallery, fault_bundle, similarity_threshold=math.nan),
             "must be": wrong_width}
    try:
        for count, (message, write) in enumerate(cases.items(), start=1):
            write()
            daemon.wait_for(lambda: message in ((_health(port)[1].get("reload_failed") or {}).get("gallery") or {})
                            .get("error", ""), 30, f"the re-read refused ({message})")
            failed = _health(port)[1]["reload_failed"]["gallery"]
            assert failed["what"] == str(gallery) and failed["since"] and _health(port)[0] == 200
            before = _frames(port)
            daemon.wait_for(lambda: _frames(port) > before + 10, 30, "frames after the failed re-read")
            assert sum("gallery not reloaded" in line for line in daemon.stderr) == count, daemon.log()
        assert daemon.proc.poll() is None
    finally:
        code, _ = daemon.stop()
    assert code == 0


def test_config_that_no_longer_loads_on_sighup_keeps_running(fault_bundle: Path, fault_video: Path,
                                                             tmp_path: Path) -> None:
    """5,000 nested arrays (RecursionError before), a 20,000-part dotted key (14 s of parsing), a value out of
    range: each SIGHUP refused while the daemon labels on."""
    gallery = _gallery(tmp_path / "g.json", fault_bundle)
    daemon, config, port = _start(tmp_path, fault_bundle, fault_video, gallery)
    good = config.read_text()
    try:
        # (in this order: one failure like the one before is not logged again)
        for count, text in enumerate(["threads = " + "[" * 5000 + "]" * 5000, "threads = 0",
                                      "a" + ".a" * 20_000 + " = 1"], start=1):
            config.write_text(text + "\n" + good)
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_for(lambda: sum("keeping the previous configuration" in line for line in daemon.stderr)
                            == count, 60, "the reload refused")
            assert _health(port)[0] == 200 and _health(port)[1]["reload_failed"]["config"]
            assert daemon.proc.poll() is None
        assert not any("Traceback" in line for line in daemon.stderr)
    finally:
        code, _ = daemon.stop()
    assert code == 0


def test_reload_onto_a_port_taken_runs_the_previous_state_again(fault_bundle: Path, fault_video: Path,
                                                                tmp_path: Path) -> None:
    """The new config loads, its HTTP port is taken: the previous loaded state runs again, re-reading nothing
    (its gallery has meanwhile become garbage: read again, it would have ended the daemon)."""
    import socket

    gallery = _gallery(tmp_path / "g.json", fault_bundle)
    daemon, config, port = _start(tmp_path, fault_bundle, fault_video, gallery)
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        other = tmp_path / "other.json"
        _gallery(other, fault_bundle)
        config.write_text(config.read_text().replace(f"port = {port}", f"port = {taken}")
                          .replace(str(gallery), str(other)))
        gallery.write_text("garbage")  # the running gallery's file, never read again
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: any("keeping the previous configuration" in line for line in daemon.stderr), 60,
                        "the new port refused")
        daemon.wait_for(lambda: _health(port)[0] == 200, 60, "the previous state on its port again")
        assert "port" in _health(port)[1]["reload_failed"]["config"]["error"] or "address" in \
            _health(port)[1]["reload_failed"]["config"]["error"], _health(port)[1]
        assert daemon.proc.poll() is None
    finally:
        blocker.close()
        code, _ = daemon.stop()
    assert code == 0


# --- private files whatever the umask -------------------------------------------------------------------------

def test_everything_written_is_private_under_umask_022(fault_bundle: Path, fault_video: Path, tmp_path: Path,
                                                       synthetic_csv: Path) -> None:
    """Run by hand (umask 022): the labels and their rotated files, the snapshots, the state folder, the
    gallery, its lock, the enrolled faces and the faces the web page keeps are 0600, their folders 0700."""
    state = tmp_path / "home" / ".local" / "state" / "edgeface"  # none of it exists yet
    out = tmp_path / "out"
    env = {"EDGEFACE_STATE_DIR": str(state)}
    previous = os.umask(0o022)
    try:
        photos = sorted((synthetic_csv.parent / "images").glob("*.jpg"))[:3]
        enrolled = subprocess.run([sys.executable, "-m", "edgeface", "enroll", "--bundle", str(fault_bundle),
                                   "--name", "Zoe", *map(str, photos)], capture_output=True, text=True,
                                  env={**os.environ, **env}, timeout=300)
        assert enrolled.returncode in (0, 1), enrolled.stderr  # 1: some photos failed a quality check
        port = free_port()
        config = tmp_path / "edgeface.toml"
        config.write_text(f'bundle = "{fault_bundle}"\nsource = "{fault_video}"\nidentity_threshold = 1.01\n'
                          f'similarity_threshold = 1.0\n[capture]\nloop = true\nfps = 20\n[jsonl]\n'
                          f'path = "{out / "labels" / "labels.jsonl"}"\nmax_bytes = 4000\nbackups = 2\n'
                          f'[snapshots]\ndir = "{out / "snapshots"}"\ninterval = 0\n[http]\nport = {port}\n'
                          f'[web]\nenabled = true\n')
        daemon = DaemonProcess(["--config", str(config)], env=env)
    finally:
        os.umask(previous)
    try:
        daemon.http_port()
        daemon.wait_for(lambda: len(list((out / "labels").glob("labels.jsonl.*"))) >= 2, 60, "rotated labels")
        daemon.wait_for(lambda: list(state.rglob("faces.json")), 60, "an unknown face kept for the page")
    finally:
        code, _ = daemon.stop()
    assert code == 0
    written = [p for root in (state, out) for p in [root, *root.rglob("*")]]
    kinds = {".jsonl", ".jpg", ".json", ".lock"}
    assert {s for p in written for s in p.suffixes} >= kinds, sorted(map(str, written))
    wrong = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in written
             if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)}
    assert not wrong, wrong
    # The folders above the state folder that the daemon made are its user's alone too.
    assert stat.S_IMODE((tmp_path / "home" / ".local").stat().st_mode) == 0o700
