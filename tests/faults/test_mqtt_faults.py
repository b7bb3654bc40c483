"""MQTT faults with a real mosquitto: TLS with the test's own CA and a client certificate, a password from a
systemd credential, a wrong password and an untrusted CA (logged once, /healthz 503), and (slow) the broker
frozen for 15 s with SIGSTOP: every frame arrives or is counted as dropped."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.daemon import DaemonProcess, http_get
from helpers.mosquitto import Mosquitto

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
                                 or not shutil.which("openssl") or not shutil.which("mosquitto_passwd"),
                                 reason="needs mosquitto, mosquitto_passwd and openssl (apt-get install mosquitto "
                                        "openssl)")]

DEVICE = "faultpi"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert))
    return key, cert


def _signed(folder: Path, name: str, ca: tuple[Path, Path], san: str = "") -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    extra = folder / f"{name}.ext"
    extra.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-days", "2", "-out", str(cert), "-extfile", str(extra))
    return key, cert


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):
    """mosquitto with TLS (the test's own CA), client certificates required, and a password file."""
    folder = tmp_path_factory.mktemp("tls-broker")
    ca = _ca(folder, "ca")
    server = _signed(folder, "server", ca, "IP:127.0.0.1")
    client = _signed(folder, "client", ca)
    passwords = folder / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "edgeface", "right-pass"], check=True,
                   capture_output=True)
    broker = Mosquitto(folder)
    broker.config.write_text(f"listener {broker.port} 127.0.0.1\ncafile {ca[1]}\ncertfile {server[1]}\n"
                             f"keyfile {server[0]}\nrequire_certificate true\npassword_file {passwords}\n"
                             f"allow_anonymous false\npersistence false\n"
                             # as root it would switch to the mosquitto user, who cannot read pytest's folders
                             + ("user root\n" if os.geteuid() == 0 else ""))
    broker.start()
    yield {"port": broker.port, "ca": ca[1], "client": client, "folder": folder}
    broker.stop()


def _tls_subscriber(broker: dict, messages: list) -> object:
    import paho.mqtt.client as mqtt

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.time_ns()}")
    sub.tls_set(ca_certs=str(broker["ca"]), certfile=str(broker["client"][1]), keyfile=str(broker["client"][0]))
    sub.username_pw_set("edgeface", "right-pass")
    sub.on_connect = lambda c, *_: c.subscribe(f"edgeface/{DEVICE}/frame", 1)
    sub.on_message = lambda c, u, m: messages.append(m.payload)
    sub.connect("127.0.0.1", broker["port"])
    sub.loop_start()
    return sub


def _config(tmp_path: Path, bundle: Path, video: Path, port: int, extra: str) -> Path:
    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "{bundle}"\nsource = "{video}"\n[capture]\nloop = true\nfps = 10\n'
                      f'[http]\nport = 0\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice = "{DEVICE}"\n'
                      f'publish = "every"\n{extra}')
    return config


def test_tls_with_own_ca_client_certificate_and_password_credential(tls_broker: dict, fault_bundle: Path,
                                                                    fault_video: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("right-pass\n")
    key, cert = tls_broker["client"]
    config = _config(tmp_path, fault_bundle, fault_video, tls_broker["port"],
                     f'username = "edgeface"\nca_certs = "{tls_broker["ca"]}"\ncertfile = "{cert}"\n'
                     f'keyfile = "{key}"\n')
    messages: list = []
    sub = _tls_subscriber(tls_broker, messages)
    daemon = DaemonProcess(["--config", str(config)], env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        port = daemon.http_port()
        daemon.wait_for(lambda: len(messages) >= 10, 60, "frames over TLS")
        status, body = http_get(port, "/healthz")
        assert status == 200 and json.loads(body)["sinks"]["mqtt"]["status"] == "ok"
    finally:
        daemon.stop()
        sub.disconnect()
        sub.loop_stop()
    assert "right-pass" not in "\n".join(daemon.stderr)


@pytest.mark.parametrize("fault", ["wrong-password", "untrusted-ca"])
def test_refused_connection_is_logged_once_and_turns_healthz_503(tls_broker: dict, fault_bundle: Path,
                                                                 fault_video: Path, tmp_path: Path,
                                                                 fault: str) -> None:
    key, cert = tls_broker["client"]
    ca = tls_broker["ca"] if fault == "wrong-password" else _ca(tmp_path, "other-ca")[1]
    password = "wrong-pass" if fault == "wrong-password" else "right-pass"
    (tmp_path / "password").write_text(password)
    config = _config(tmp_path, fault_bundle, fault_video, tls_broker["port"],
                     f'username = "edgeface"\npassword_file = "{tmp_path / "password"}"\nca_certs = "{ca}"\n'
                     f'certfile = "{cert}"\nkeyfile = "{key}"\nunhealthy_after = 2\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        port = daemon.http_port()
        expected = "Not authorized|Bad user name or password" if fault == "wrong-password" \
            else "CERTIFICATE_VERIFY_FAILED"

        def unhealthy_with_reason() -> bool:
            status, body = http_get(port, "/healthz")
            return status == 503 and re.search(expected, json.loads(body)["reason"] or "") is not None

        daemon.wait_for(unhealthy_with_reason, 30, f"/healthz 503 naming {expected}")
        time.sleep(4)  # paho retries at 1, 2, 4 s: still one line
        reported = [line for line in daemon.stderr if re.search(expected, line)]
        assert len(reported) == 1, reported
    finally:
        daemon.stop()
    assert password not in "\n".join(daemon.stderr)


@pytest.mark.slow
def test_broker_frozen_15s_every_frame_arrives_or_is_counted(fault_bundle: Path, fault_video: Path,
                                                            tmp_path: Path) -> None:
    """Default settings: SIGSTOP the broker for 15 s; the frames written as JSON lines (all of them) each reach
    a QoS 1 subscriber or are counted in edgeface_sink_dropped_total{sink="mqtt"}."""
    import paho.mqtt.client as mqtt

    broker = Mosquitto(tmp_path).start()
    received: set[int] = set()
    duplicates = 0
    lock = threading.Lock()

    def on_message(client, userdata, message) -> None:
        nonlocal duplicates
        frame = json.loads(message.payload)["frame"]
        with lock:
            duplicates += frame in received
            received.add(frame)

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="freeze-sub")
    sub.on_connect = lambda c, *_: c.subscribe(f"edgeface/{DEVICE}/frame", 1)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    out = tmp_path / "frames.jsonl"
    config = _config(tmp_path, fault_bundle, fault_video, broker.port, f'[jsonl]\nenabled = true\npath = "{out}"\n')
    daemon = DaemonProcess(["--config", str(config)])
    try:
        daemon.http_port()
        daemon.wait_for(lambda: len(received) >= 20, 60, "frames before the freeze")
        broker.proc.send_signal(signal.SIGSTOP)
        time.sleep(15)
        broker.proc.send_signal(signal.SIGCONT)
        time.sleep(8)
        code, _ = daemon.stop(timeout=20)
        time.sleep(2)
    finally:
        if broker.proc is not None:
            broker.proc.send_signal(signal.SIGCONT)
        sub.disconnect()
        sub.loop_stop()
        broker.stop()
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    written = {line["frame"] for line in lines if "frame" in line}  # (visit events are lines too)
    counts = re.search(r"mqtt (\d+) sent (\d+) dropped", next(line for line in daemon.stderr if "stopped:" in line))
    sent, dropped = int(counts.group(1)), int(counts.group(2))
    missing = written - received
    print(f"{len(written)} frames published, {len(received)} received ({duplicates} twice), "
          f"{len(missing)} missing; the daemon counted {sent} sent, {dropped} dropped")
    assert len(missing) <= dropped
    assert len(written) > 150  # before, 15 s during and after the freeze at 10 fps
