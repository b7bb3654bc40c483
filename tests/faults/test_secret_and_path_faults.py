"""Secrets at the edges (URLs, the command line, error messages) and file contents trusted as paths
(docs/security.md). Before issue 30: ``user@`` and ``user:p@ss@`` forms were shown in part, a password in
``--source`` ran visibly in ``ps``, a mistyped ``--http-token`` value was echoed, and removing a person
deleted any ``.jpg`` a gallery record named.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import DaemonProcess, http_get
from helpers.faults import error_line, run_cli
from helpers.ports import free_port

URLS = {
    # form: (text, the secret parts that must go, what must stay)
    "user:pass@": ("rtsp://viewer:hunter2@cam.local/stream", ["hunter2"], "rtsp://viewer:***@cam.local/stream"),
    "user@ (a token as the user name)": ("https://ghp_t0ken@github.com/x", ["ghp_t0ken"], "https://***@github.com/x"),
    "a percent-encoded @ in the password": ("rtsp://u:p%40ss@cam/s", ["p%40ss", "ss@"], "rtsp://u:***@cam/s"),
    "several @ (a password holding @)": ("rtsp://u:p@ss@cam/s", ["p@ss", "ss@"], "rtsp://u:***@cam/s"),
    "an unescaped / in the password": ("rtsp://u:pa/ss@cam/s", ["pa/ss", "ss@"], "rtsp://u:***@cam/s"),
    "an IPv6 host": ("rtsp://u:hunter2@[fe80::1]:554/s", ["hunter2"], "rtsp://u:***@[fe80::1]:554/s"),
    "a password in the query": ("http://cam/snap?user=a&password=hunter2", ["hunter2"], "password=***"),
    "a token in the query": ("http://cam/s?x=1&access_token=hunter2#f", ["hunter2"], "access_token=***#f"),
    "a signed URL": ("https://b.s3/x?X-Amz-Signature=hunter2&X-Amz-Credential=k3y", ["hunter2", "k3y"],
                     "X-Amz-Signature=***"),
    "an api-key parameter": ("http://cam/s?api-key=hunter2;session=s3s", ["hunter2", "s3s"], "api-key=***"),
    "upper-case scheme, two URLs in one line": ("RTSP://A:hunter2@B and mqtt://c:s3cret@d:1883", ["hunter2", "s3cret"],
                                                "RTSP://A:***@B and mqtt://c:***@d:1883"),
    "a URL inside quotes (a repr, a JSON value)": ("'rtsp://u:hunter2@h/'", ["hunter2"], "'rtsp://u:***@h/'"),
}


@pytest.mark.parametrize("form", list(URLS))
def test_every_userinfo_form_is_redacted(form: str) -> None:
    from edgeface.daemon.secrets import redact

    text, secrets, kept = URLS[form]
    shown = redact(text)
    assert all(secret not in shown for secret in secrets) and kept in shown, shown


def test_urls_without_secrets_are_left_alone() -> None:
    from edgeface.daemon.secrets import redact

    for text in ("http://127.0.0.1:8321/healthz", "rtsp://cam.local:554/stream?channel=1", "/dev/video0",
                 "picamera2:0", "user@host is not a URL"):
        assert redact(text) == text


def test_password_in_source_on_the_command_line_is_refused(fault_bundle: Path) -> None:
    """Every local user reads command lines (ps): the password belongs in the config file (0640 on a Pi)."""
    done = run_cli("run", "--bundle", str(fault_bundle), "--source", "rtsp://viewer:hunter2@cam/s", "--no-http",
                   memory=None, timeout=60)
    line = error_line(done, 2)
    assert "hunter2" not in done.stderr + done.stdout
    assert line.startswith("error: --source rtsp://viewer:***@cam/s: a password or token on the command line is "
                           "visible to every user of this machine (ps); put source = ") and "--config" in line


def test_password_in_the_config_file_is_in_no_command_line_log_or_answer(fault_bundle: Path, tmp_path: Path) -> None:
    url = f"rtsp://viewer:hunter2pw@127.0.0.1:{free_port()}/stream?token=alsosecret"
    config = tmp_path / "pi.toml"
    config.write_text(f'bundle = "{fault_bundle}"\nsource = "{url}"\n[http]\nport = 0\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: "reconnecting" in "\n".join(daemon.stderr) or "retrying" in "\n".join(daemon.stderr),
                        30, "the source to fail")
        shown = [Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes().decode(), "\n".join(daemon.stderr)]
        shown += [http_get(port, path)[1] for path in ("/healthz", "/metrics", "/labels")]
        for text in shown:
            assert "hunter2pw" not in text and "alsosecret" not in text, text
        assert "viewer:***@127.0.0.1" in shown[2]
    finally:
        daemon.stop()


@pytest.mark.parametrize("option", ["--http-token", "--mqtt-password"])
def test_a_secret_typed_where_its_file_was_expected_is_not_echoed(option: str) -> None:
    done = run_cli("deploy", "pi@kitchen.invalid", option, "Hunter2-typed-by-mistake", memory=None, timeout=60)
    line = error_line(done, 2)
    assert "Hunter2" not in done.stdout + done.stderr
    assert line.startswith(f"error: {option}: no such file (the value given is not shown"), line


def test_a_health_url_holding_a_password_is_refused() -> None:
    done = run_cli("deploy", "pi@kitchen.invalid", "--health-url", "http://admin:hunter2@127.0.0.1:8321/healthz",
                   memory=None, timeout=60)
    line = error_line(done, 2)
    assert "hunter2" not in done.stdout + done.stderr and "--health-url http://admin:***@127.0.0.1" in line


# --- gallery records trusted as paths --------------------------------------------------------------------

def _enrolled(tmp_path: Path, bundle: Path, sha: str) -> Path:
    from edgeface.core.bundle import load_bundle
    from edgeface.core.gallery import empty_gallery

    loaded = load_bundle(bundle)
    size = loaded.spec.embedding_size
    path = tmp_path / "state" / "g.json"
    empty_gallery(loaded.model_sha256, size).with_person("Maya", np.eye(size)[:1], [
        {"file": "m.jpg", "sha256": "1" * 64}]).save(path)
    raw = json.loads(path.read_text())
    raw["people"][0]["photos"][0]["sha256"] = sha  # what a crafted file says
    path.write_text(json.dumps(raw))
    return path


def test_a_record_naming_a_path_is_refused_and_nothing_is_deleted(fault_bundle: Path, tmp_path: Path) -> None:
    """Before: `people remove Maya` deleted ../../victim.jpg (any .jpg the user can write)."""
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"the user's own photo")
    gallery = _enrolled(tmp_path, fault_bundle, "../../victim")
    done = run_cli("people", "remove", "Maya", "--bundle", str(fault_bundle), "--gallery", str(gallery),
                   memory=None, timeout=60)
    line = error_line(done, 2)
    assert "photos[0].sha256 = '../../victim': must be 64 hex digits" in line
    assert victim.read_bytes() == b"the user's own photo"


def test_crops_are_deleted_by_digest_only_whatever_the_caller_says(tmp_path: Path) -> None:
    """The same at use: prune_crops, given any name, deletes only <64 hex>.jpg files of the crops folder, and
    a crop that is a link loses the link, never what it points at."""
    from edgeface.core.gallery import empty_gallery
    from edgeface.people.album import crop_path, faces_dir, prune_crops

    gallery_path = tmp_path / "g.json"
    folder = faces_dir(gallery_path) / "people"
    folder.mkdir(parents=True)
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"keep me")
    link = folder / f"{'a' * 64}.jpg"
    link.symlink_to(victim)
    empty = empty_gallery("ab" * 32, 4)
    assert prune_crops(gallery_path, empty, ["../../victim", "../victim", str(victim)[:-4], "A" * 64]) == 0
    assert prune_crops(gallery_path, empty, ["a" * 64]) == 1
    assert victim.read_bytes() == b"keep me" and not link.is_symlink()
    assert crop_path(gallery_path, "../x") is None and crop_path(gallery_path, "ab" * 8) is None


def test_helper_bounds_standard_input(tmp_path: Path) -> None:
    """The root helper edgeface-credential read standard input with `read`, which takes an endless line into
    memory; it reads at most 4097 bytes now."""
    import subprocess

    helper = Path(__file__).resolve().parents[2] / "firmware_scripts" / "edgeface-credential"
    env = {**os.environ, "EDGEFACE_CREDENTIALS_DIR": str(tmp_path / "credentials")}
    env.pop("SUDO_USER", None)
    start = time.monotonic()
    endless = subprocess.run(["sh", "-c", f"yes hunter2 | tr -d '\\n' | sh {helper} http-token"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert endless.returncode == 2 and time.monotonic() - start < 10
    assert endless.stderr.strip() == "edgeface-credential: the http-token must be one line of 1 to 4096 bytes"
    assert "hunter2" not in endless.stderr
    for secret, code in ((b"t" * 4096, 0), (b"t" * 4097, 2), (b"\n", 2), (b"tok3n\nsecond line\n", 0)):
        done = subprocess.run(["sh", str(helper), "mqtt-password"], input=secret, env=env, capture_output=True,
                              timeout=30)
        assert done.returncode == code, (secret[:20], done.stderr)
    assert (tmp_path / "credentials" / "mqtt-password").read_bytes() == b"tok3n"
