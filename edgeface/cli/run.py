"""``edgeface run``: the labelling daemon (camera -> labels), for the Pi, a laptop or a video file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeface.cli.common import field_default, friendly_errors, refuse_secret_in_argument
from edgeface.daemon.config import DaemonConfig, HttpConfig, MqttConfig

ORDER = 60
# The defaults the help names, read from the daemon's config, where they are set.
THREADS, MQTT_PORT = field_default(DaemonConfig, "threads"), field_default(MqttConfig, "port")
HTTP_HOST, HTTP_PORT = field_default(HttpConfig, "host"), field_default(HttpConfig, "port")


def _abs(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path.expanduser().resolve())


@friendly_errors
def run(
    bundle: Optional[Path] = typer.Option(None, help="The model bundle (.edgeface). Overrides the config's bundle."),
    source: Optional[str] = typer.Option(None, help="Camera index (0), /dev/videoN, picamera2[:N], a video file, "
                                                    "a folder of images, or an rtsp:// / http:// stream URL."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A TOML config file; flags override it."),
    threads: Optional[int] = typer.Option(None, help=f"Inference threads (default {THREADS})."),
    loop: Optional[bool] = typer.Option(None, "--loop/--no-loop", help="Restart a video file or folder at its end."),
    fps: Optional[float] = typer.Option(None, help="Camera frame rate to ask for; for a file, play at this rate."),
    identity_threshold: Optional[float] = typer.Option(None, help="Identity confidence below which a face is "
                                                                  "'unknown' (default: the bundle's)."),
    jsonl: Optional[str] = typer.Option(None, help="Write JSON lines to this file ('-' for stdout)."),
    publish: Optional[str] = typer.Option(None, help="JSON lines: 'every' frame with faces or on 'change'."),
    mqtt_host: Optional[str] = typer.Option(None, help="Publish to this MQTT broker."),
    mqtt_port: Optional[int] = typer.Option(None, help=f"MQTT broker port (default {MQTT_PORT})."),
    http: Optional[bool] = typer.Option(None, "--http/--no-http", help="Serve /healthz, /labels, /metrics."),
    http_host: Optional[str] = typer.Option(None, help=f"HTTP address (default {HTTP_HOST})."),
    http_port: Optional[int] = typer.Option(None, help=f"HTTP port (default {HTTP_PORT}; 0 picks a free one)."),
    web: Optional[bool] = typer.Option(None, "--web/--no-web", help="Serve the web page on the HTTP server (live "
                                                                    "view, unknown faces to name, people) and keep "
                                                                    "the faces nobody could name; off by default."),
    snapshots: Optional[Path] = typer.Option(None, help="Save frames with faces in this folder (off by default: "
                                                        "no image is ever written unless you ask)."),
    max_frames: Optional[int] = typer.Option(None, help="Stop after this many processed frames."),
    gallery: Optional[str] = typer.Option(None, help="Enrolled people: a gallery file, 'none' to ignore them, "
                                                     "default the bundle's gallery in the state folder."),
    similarity_threshold: Optional[float] = typer.Option(None, help="Cosine similarity above which a face is an "
                                                                    "enrolled person (default: calibrated)."),
    log_level: Optional[str] = typer.Option(None, help="debug, info, warning or error."),
) -> None:
    """Label faces from a camera, file or stream until stopped; a video file or folder ends the run.

    With no sink configured, one JSON line per frame with faces goes to stdout; logs go to stderr. SIGTERM or
    SIGINT stop cleanly; SIGHUP flushes and reloads the config. Exit codes: 0 source ended or clean stop;
    1 unexpected failure; 2 bad config, bundle, source or address. See docs/daemon.md.
    """
    from edgeface.daemon.config import load_config
    from edgeface.daemon.run import run_daemon
    from edgeface.daemon.service import setup_logging
    from edgeface.web.app import web_page  # serves the page when the config has [web] enabled

    refuse_secret_in_argument("--source", source, "source")
    if source is not None and Path(source).expanduser().exists():
        source = _abs(Path(source))
    overrides: dict[str, Any] = {
        "bundle": _abs(bundle), "source": source, "threads": threads, "identity_threshold": identity_threshold,
        "capture.loop": loop, "capture.fps": fps,
        "jsonl.path": jsonl if jsonl in (None, "-") else _abs(Path(jsonl)), "jsonl.publish": publish,
        "jsonl.enabled": True if jsonl else None,
        "mqtt.host": mqtt_host, "mqtt.port": mqtt_port,
        "http.enabled": http, "http.host": http_host, "http.port": http_port, "web.enabled": web,
        "snapshots.dir": _abs(snapshots), "service.max_frames": max_frames, "service.log_level": log_level,
        "gallery": gallery if gallery in (None, "", "none") else _abs(Path(gallery)),
        "similarity_threshold": similarity_threshold,
    }
    def reload() -> DaemonConfig:  # SIGHUP: the file again, the same flags on top
        settings = load_config(config, overrides)
        setup_logging(settings.service.log_level)
        return settings

    raise typer.Exit(run_daemon(reload(), reload=reload, extensions=[web_page]))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
