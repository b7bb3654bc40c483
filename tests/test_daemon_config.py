"""The daemon's configuration (``edgeface.daemon.config``): files, flags, one-line errors, and ``edgeface run``'s
bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeface.core.errors import ConfigError
from edgeface.daemon.config import load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_paths_resolve_against_its_folder_and_flags_override(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config = write(tmp_path / "conf" / "edgeface.toml", """
bundle = "model.edgeface"
source = "clips/door.mp4"
threads = 3
[http]
port = 9000
[jsonl]
path = "logs/labels.jsonl"
[tracking]
lost_after = 0.8
""")
    settings = load_config(config, {"http.port": 9100, "threads": None})
    assert settings.bundle == tmp_path / "conf" / "model.edgeface"
    assert settings.source == str(tmp_path / "conf" / "clips" / "door.mp4")
    assert settings.jsonl.path == str(tmp_path / "conf" / "logs" / "labels.jsonl")
    assert (settings.threads, settings.http.port, settings.http.host) == (3, 9100, "127.0.0.1")
    assert settings.tracking.lost_after == 0.8
    assert settings.jsonl_on and not settings.mqtt_on  # no other sink: JSON lines


def test_config_camera_sources_are_not_paths(tmp_path: Path) -> None:
    for source, expected in ((0, "0"), ("/dev/video0", "/dev/video0"), ("rtsp://cam/1", "rtsp://cam/1"),
                             ("picamera2", "picamera2")):
        value = source if isinstance(source, int) else f'"{source}"'
        config = write(tmp_path / "c.toml", f'bundle = "b.edgeface"\nsource = {value}\n')
        assert load_config(config).source == expected


def test_config_mqtt_host_turns_stdout_off(tmp_path: Path) -> None:
    settings = load_config(None, {"bundle": "/b.edgeface", "source": "0", "mqtt.host": "broker"})
    assert settings.mqtt_on and not settings.jsonl_on
    both = load_config(None, {"bundle": "/b.edgeface", "source": "0", "mqtt.host": "broker", "jsonl.enabled": True})
    assert both.mqtt_on and both.jsonl_on


@pytest.mark.parametrize("text, message", [
    ('source = 0\n', "no bundle given"),
    ('bundle = "b"\n', "no source given"),
    ('bundle = "b"\nsource = 0\nthreds = 2\n', "unknown key 'threds'"),
    ('bundle = "b"\nsource = 0\n[http]\nprot = 1\n', "unknown key 'prot' in [http]"),
    ('bundle = "b"\nsource = 0\n[http]\nport = "x"\n', "[http] port must be an integer, got 'x'"),
    ('bundle = "b"\nsource = 0\n[http]\nport = 70000\n', "[http] port must be in [0, 65535], got 70000"),
    ('bundle = "b"\nsource = 0\n[mqtt]\nenabled = true\n', "[mqtt] is enabled but has no host"),
    ('bundle = "b"\nsource = 0\n[jsonl]\npublish = "sometimes"\n', "publish must be one of every, change"),
    ('bundle = "b"\nsource = 0\n[capture]\nloop = 1\n', "[capture] loop must be true or false, got 1"),
    ('bundle = "b"\nsource = 0\nhttp = 3\n', "[http] must be a table"),
    ('bundle = "b"\nsource = [0]\n', "source must be a camera index, a path or a URL"),
    ('bundle = "b"\nsource = 0\n[http\n', "not valid TOML"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert message in str(info.value) and str(config) in str(info.value)
    assert "\n" not in str(info.value)


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "edgeface" / "daemon" / "example.toml"
    settings = load_config(example)
    assert settings.bundle.name == "model.edgeface" and settings.http.port == 8321


def test_cli_run_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    from edgeface.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["run", "--bundle", str(tmp_path / "none.edgeface"), "--source", "0"])
    assert missing.exit_code == 2
    assert missing.output.strip().startswith("error:") and "bundle not found" in missing.output
    bad = write(tmp_path / "bad.toml", 'bundle = "b"\nsource = 0\n[http]\nport = -1\n')
    result = runner.invoke(app, ["run", "--config", str(bad)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "port must be in" in result.output
    corrupt = tmp_path / "corrupt.edgeface"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    result = runner.invoke(app, ["run", "--bundle", str(corrupt), "--source", "0"])
    assert result.exit_code == 2 and "not a readable bundle" in result.output
