"""The on-device labelling daemon: camera -> faces -> labels -> sinks, run by ``edgeface run``.

* ``config``   the TOML file plus flag overrides, validated up front (``DaemonConfig``);
* ``sources``  frame sources behind one interface (OpenCV camera or device path, picamera2, video file, image
               folder, RTSP/HTTP stream) and the capture thread that always hands over the newest frame;
* ``tracking`` IoU tracking across frames with per-track smoothing of the model outputs;
* ``records``  what passes between the parts: a face, a frame, a frame as the outputs see it;
* ``pipeline`` one frame: detect -> align -> one batched inference -> track -> labels, timed per stage;
* ``sinks``    where labels go: JSON lines (stdout or a rotated file), MQTT;
* ``server``   HTTP: ``/healthz``, ``/labels``, ``/metrics`` (the text from ``metrics``), and the routes others
               add (the web page); ``http`` its request and reply, ``access`` the one host and token check;
* ``stats``    the run's counters and the process's figures; ``snapshots`` frames saved on request;
* ``run``      the wiring: source, pipeline, sinks and server together, the loop, health, a clean stop;
* ``service``  systemd notify/watchdog, signals, journald-friendly logging, exit codes.

Everything here runs on the Pi: numpy, OpenCV and LiteRT only, never TensorFlow.
"""
