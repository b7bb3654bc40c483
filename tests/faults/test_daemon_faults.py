"""The daemon's own faults: SIGHUP (reload, flushing first) and thresholds that are not numbers in range."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from helpers.daemon import DaemonProcess, status_when_listening
from helpers.ports import free_port


def test_sighup_flushes_and_reloads_the_config(fault_bundle: Path, fault_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    config = tmp_path / "edgeface.toml"
    base = f'bundle = "{fault_bundle}"\nsource = "{fault_video}"\n[capture]\nloop = true\nfps = 10\n' \
           f'[jsonl]\npath = "{out}"\n[http]\nport = {free_port()}\n'
    config.write_text(base)
    daemon = DaemonProcess(["--config", str(config)])
    try:
        daemon.http_port()
        daemon.wait_for(lambda: out.exists() and out.stat().st_size > 0, 60, "lines")
        config.write_text(base.replace("fps = 10", "fps = 5") + "[service]\nlog_level = \"debug\"\n")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: any("reloaded the configuration" in line for line in daemon.stderr), 60, "a reload")
        port = daemon.http_port()
        daemon.wait_for(lambda: status_when_listening(port, "/healthz") == 200, 60, "healthy after the reload")
        assert daemon.proc.poll() is None
        stopped = [line for line in daemon.stderr if "stopped:" in line]
        assert len(stopped) == 1 and " 0 dropped" in stopped[0]  # the first run flushed everything
        config.write_text("not = [valid")  # a broken config: logged, the running one kept
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: any("keeping the previous configuration" in line for line in daemon.stderr), 60,
                        "the bad config refused")
        assert daemon.proc.poll() is None
        # A config that loads but whose bundle does not open: the previous one runs again, no exit.
        config.write_text(base.replace(str(fault_bundle), str(tmp_path / "missing.edgeface")))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: sum("keeping the previous configuration" in line for line in daemon.stderr) == 2,
                        60, "the missing bundle refused")
        daemon.wait_for(lambda: status_when_listening(port, "/healthz") == 200, 60, "healthy on the previous config")
        assert daemon.proc.poll() is None
    finally:
        code, _ = daemon.stop()
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines if "frame" in line]  # two runs appended to one file, each line whole


@pytest.mark.parametrize("key,value", [("identity_threshold", "nan"), ("similarity_threshold", "nan"),
                                       ("identity_threshold", "inf"), ("similarity_threshold", "-1.5")])
def test_threshold_not_a_number_in_range_is_refused(tmp_path: Path, key: str, value: str) -> None:
    from edgeface.core.errors import ConfigError
    from edgeface.daemon.config import load_config

    config = tmp_path / "edgeface.toml"
    config.write_text(f'bundle = "m.edgeface"\nsource = 0\n{key} = {value}\n')
    with pytest.raises(ConfigError, match=f"{key} must be"):
        load_config(config)
    with pytest.raises(ConfigError, match=f"{key} must be"):
        load_config(None, {"bundle": "m.edgeface", "source": "0", key: float(value)})
