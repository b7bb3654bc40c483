"""What tests and benchmarks use to drive real components: each module one kind of thing.

- ``ports``: a free TCP port on the loopback interface.
- ``daemon``: the real ``edgeface run`` in a subprocess, its HTTP endpoints and metrics, and CPU time.
- ``camera``: an MJPEG-over-HTTP network camera that a test can switch off and on.
- ``mosquitto``: a real Debian mosquitto broker on a free port.
- ``home_assistant``: a real Home Assistant core (its own venv) with MQTT on a test broker, read over websocket.
- ``sshd``: a real Debian sshd on loopback with throwaway keys, for deploys.
- ``browser``: Debian's chromium, headless, through selenium.
- ``faults``: the CLI in a fresh process under a Pi's memory limit, and what a bad-input failure must look like.
- ``no_tensorflow``: Python in a subprocess where TensorFlow cannot be imported, as on the Pi.
- ``dlib_writer``: networks written in dlib's serialization format.
- ``video_fixtures``: matching the daemon's output to a test video's truth.

pytest puts ``tests/`` on the path (``pythonpath`` in pyproject.toml): ``from helpers.ports import free_port``.
"""
