"""A network camera for tests: frames served as an MJPEG stream over HTTP, switched off and on at will."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from .ports import free_port


class MjpegCamera:
    """A network camera: frames from ``frames`` served as an MJPEG stream over HTTP (multipart/x-mixed-replace),
    the way IP cameras do. ``stop()`` cuts it off (server and open connections); ``start()`` brings it back
    on the same port."""

    def __init__(self, frames: Sequence[np.ndarray], port: int | None = None, fps: float = 15.0) -> None:
        import cv2

        self.jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in frames]
        self.port = port or free_port()
        self.fps = fps
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._server = None
        self._live = threading.Event()

    def start(self) -> "MjpegCamera":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while camera._live.is_set():
                        jpg = camera.jpegs[i % len(camera.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpg) + jpg + b"\r\n")
                        i += 1
                        time.sleep(1.0 / camera.fps)
                except OSError:
                    pass

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._live.set()
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._live.clear()  # open streams end: the client sees the camera vanish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
