"""The on-device labelling daemon: camera -> faces -> labels -> sinks, run by ``edgeface run``.

* ``config``   the TOML file plus flag overrides, validated up front (``DaemonConfig``);
* ``sources``  frame sources behind one interface (OpenCV camera or device path, picamera2, video file, image
               folder, RTSP/HTTP stream) and the capture thread that always hands over the newest frame;
* ``tracking`` IoU tracking across frames with per-track smoothing of the model outputs;
* ``pipeline`` detect -> align -> one batched inference -> labels, timed per stage, and the run loop;
* ``sinks``    JSON lines (stdout or a rotated file), MQTT, HTTP (``/healthz``, ``/labels``, ``/metrics``);
* ``service``  systemd notify/watchdog, signals, journald-friendly logging, exit codes.

Everything here runs on the Pi: numpy, OpenCV and LiteRT only, never TensorFlow.
"""
