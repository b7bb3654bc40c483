"""The daemon's figures in the Prometheus text exposition format 0.0.4, as ``/metrics`` serves them."""

from __future__ import annotations

import time
from typing import Mapping

from edgeface.daemon.sources import CaptureStats
from edgeface.daemon.stats import RunStats


def prometheus_text(info: Mapping[str, str], healthy: bool, stats: RunStats, capture: CaptureStats,
                    per_sink: Mapping[str, Mapping[str, float]], process: Mapping[str, int]) -> str:
    """``info``: the labels of ``edgeface_info``; ``per_sink``: each output's counters by name; ``process``:
    ``process_status()`` (empty where /proc is missing)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, samples: Mapping[str, float] | float) -> None:
        lines.append(f"# HELP {name} {help}")
        lines.append(f"# TYPE {name} {kind}")
        if isinstance(samples, Mapping):
            lines.extend(f"{name}{{{labels}}} {value:g}" for labels, value in samples.items())
        else:
            lines.append(f"{name} {samples:g}")

    labels = ",".join(f'{key}="{value}"' for key, value in info.items())
    metric("edgeface_info", "gauge", "Build and model information.", {labels: 1})
    metric("edgeface_uptime_seconds", "gauge", "Seconds since the daemon started.",
           time.monotonic() - stats.started)
    metric("edgeface_healthy", "gauge", "1 when /healthz answers 200.", float(healthy))
    metric("edgeface_source_connected", "gauge", "1 while the frame source delivers.", float(capture.connected))
    metric("edgeface_source_reconnects_total", "counter", "Times the source was opened again after a loss.",
           capture.reconnects)
    metric("edgeface_frames_captured_total", "counter", "Frames read from the source.", capture.captured)
    metric("edgeface_frames_processed_total", "counter", "Frames run through the pipeline.", stats.processed)
    metric("edgeface_frames_dropped_total", "counter", "Stale frames replaced by a newer one before processing.",
           capture.dropped)
    metric("edgeface_frames_corrupt_total", "counter", "Unusable frames skipped.", capture.corrupt)
    metric("edgeface_faces_total", "counter", "Faces labelled.", stats.faces)
    metric("edgeface_faces", "gauge", "Faces in the latest processed frame.", stats.faces_current)
    metric("edgeface_faces_recognised_total", "counter",
           "Faces that went through the model (the others kept their track's labels).", stats.recognised)
    metric("edgeface_visit_events_total", "counter", "Visit events.",
           {f'event="{kind}"': count for kind, count in stats.events.items()})
    metric("edgeface_fps", "gauge", "Processed frames per second over the last 30 frames.", stats.fps)
    stage_sum = {f'stage="{s}"': v for s, v in stats.stage_sum.items()}
    metric("edgeface_stage_seconds_sum", "counter", "Seconds spent per pipeline stage.", stage_sum)
    metric("edgeface_stage_seconds_count", "counter", "Frames timed per stage.",
           {f'stage="{s}"': stats.processed for s in stats.stage_sum})
    for key, kind, help in (("sent", "counter", "Records delivered (HTTP: requests answered)."),
                            ("dropped", "counter", "Records dropped: buffer full or undelivered at stop."),
                            ("errors", "counter", "Failed deliveries (retried)."),
                            ("queued", "gauge", "Records waiting in the buffer."),
                            ("connected", "gauge", "1 while connected (MQTT)."),
                            ("connects", "counter", "Connections made (MQTT).")):
        values = {f'sink="{name}"': m[key] for name, m in per_sink.items() if key in m}
        if values:
            suffix = "_total" if kind == "counter" else ""
            metric(f"edgeface_sink_{key}{suffix}", kind, help, values)
    if process:
        metric("process_resident_memory_bytes", "gauge", "Resident memory.", process["rss_bytes"])
        metric("process_open_fds", "gauge", "Open file descriptors.", process["open_fds"])
        metric("process_threads", "gauge", "OS threads.", process["threads"])
    return "\n".join(lines) + "\n"
