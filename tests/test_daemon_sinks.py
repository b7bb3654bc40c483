"""What the sinks receive and the JSON-lines sink (``edgeface.daemon.records``, ``edgeface.daemon.sinks.jsonl``);
the MQTT sink against a real broker is test_daemon_mqtt.py."""

from __future__ import annotations

import json
from pathlib import Path


def _published(index: int, faces: int = 1):
    from edgeface.core.results import FaceLabels, Prediction
    from edgeface.daemon.records import Published
    from edgeface.recognition.records import FaceResult, FrameResult

    labels = FaceLabels(Prediction("ana", 0.9), Prediction("happy", 0.8), Prediction("female", 0.7))
    result = FrameResult(time=1000.0 + index, index=index,
                         faces=tuple(FaceResult((1.0, 2.0, 3.0, 4.0), t + 1, labels) for t in range(faces)))
    return Published(result, changed=True)


def test_jsonl_file_sink_rotates_and_keeps_backups(tmp_path: Path) -> None:
    from edgeface.daemon.sinks.jsonl import JsonLinesSink

    path = tmp_path / "out" / "labels.jsonl"
    sink = JsonLinesSink(str(path), max_bytes=2000, backups=2, queue=1000)
    for i in range(60):
        sink.publish(_published(i))
    sink.close(5.0)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["labels.jsonl", "labels.jsonl.1", "labels.jsonl.2"]
    lines = [json.loads(line) for p in (path.with_name("labels.jsonl.1"), path) for line in p.read_text().splitlines()]
    assert lines[-1]["frame"] == 59 and lines[-1]["faces"][0]["identity"] == {"label": "ana", "score": 0.9}
    assert [r["frame"] for r in lines] == list(range(lines[0]["frame"], 60))  # no gaps in what was kept
    assert sink.sent == 60 and sink.dropped == 0


def test_publish_modes() -> None:
    item = _published(0, faces=0)
    assert not item.wanted("every") and item.wanted("change")  # empty frame: only a change is news
    assert _published(1).wanted("every")
