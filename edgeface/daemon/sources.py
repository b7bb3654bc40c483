"""Frame sources behind one interface, and the capture thread that feeds the pipeline.

A source is opened, read frame by frame (RGB uint8) and closed. What a source says when things go wrong
decides what the daemon does:

* ``SourceError``       the source can never work (no such file, not a video): the run stops, exit code 2;
* ``SourceUnavailable`` not now (no camera yet, camera unplugged, stream down): retry with backoff;
* ``CorruptFrame``      this frame is unusable: skip it and count it;
* ``read()`` returning ``None``: a finite source (video file, folder) has ended.

``Capture`` runs a source on its own thread. Live sources (cameras, streams) keep only the newest frame: a
frame the pipeline had no time for is dropped and counted, so nothing queues up and the labels are never
late. Files and folders hand over every frame (the pipeline sets the pace), unless asked otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgeface.core.errors import EdgefaceError, ImageError
from edgeface.daemon.secrets import redact
from edgeface.daemon.service import Throttled

if TYPE_CHECKING:
    import cv2

log = logging.getLogger("edgeface.daemon")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# OpenCV/FFmpeg waits this long for a stream to open or deliver a frame before giving up (then we reconnect).
STREAM_TIMEOUT_MS = 5000


class SourceError(EdgefaceError):
    """A source that cannot work at all (a missing file, an unreadable video, a bad URL)."""


class SourceUnavailable(EdgefaceError):
    """A source that is not there right now (camera absent or unplugged, stream down): retried."""


class CorruptFrame(EdgefaceError):
    """One unusable frame: skipped and counted."""


DEFAULT_FILE_FPS = 10.0  # the frame rate of a folder of images, or of a video that does not say


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    index: int  # position in the run, counting every frame captured (dropped ones too)
    # Unix seconds: when a live source captured it; for a file or folder, when the run started plus the frame's
    # time in the video (so the pipeline sees the video's own timing however fast it reads it)
    time: float
    capture_s: float  # time spent reading and decoding it


class FrameSource(Protocol):
    """Where frames come from. ``live`` sources run at their own pace and are reconnected when lost; the others
    (files, folders) have a ``frame_rate`` that gives each frame its time."""

    name: str
    live: bool
    frame_rate: float

    def open(self) -> None: ...

    def read(self) -> np.ndarray | None: ...

    def close(self) -> None: ...


def _check_image(image: np.ndarray | None, where: str) -> np.ndarray:
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        shape = None if image is None else (image.dtype, image.shape)
        raise CorruptFrame(f"{where}: bad frame {shape}")
    return image


class OpenCVSource:
    """A camera (index or V4L2 device path), a video file or a stream URL, read with OpenCV."""

    def __init__(self, target: int | str, kind: str, width: int = 0, height: int = 0, fps: float = 0.0,
                 loop: bool = False) -> None:
        self.target = target
        self.kind = kind  # "camera", "file" or "stream"
        self.live = kind != "file"
        self.name = f"{kind} {redact(str(target))}"  # a stream URL's password is never shown
        self.loop = loop
        self._size = (width, height)
        self._fps = fps
        self.frame_rate = fps or DEFAULT_FILE_FPS
        self._cap: cv2.VideoCapture | None = None
        self._failures = 0

    def open(self) -> None:
        import cv2

        if self.kind == "stream":
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                                   STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        elif self.kind == "file":
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG)
        else:
            cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            if self.kind == "file":
                raise SourceError(f"{self.target}: not a video OpenCV can decode")
            raise SourceUnavailable(f"{self.name}: cannot open")
        if self.kind == "file" and not self._fps:
            rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.frame_rate = rate if 0 < rate <= 240 else DEFAULT_FILE_FPS
        if self.kind == "camera":
            width, height = self._size
            if width and height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if self._fps:
                cap.set(cv2.CAP_PROP_FPS, self._fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2: fewer driver buffers, fresher frames
        self._cap = cap
        self._failures = 0

    def read(self) -> np.ndarray | None:
        import cv2

        cap = self._cap
        if cap is None:
            raise SourceUnavailable(f"{self.name}: not open")
        ok, bgr = cap.read()
        if not ok:
            if self.live:
                raise SourceUnavailable(f"{self.name}: stopped delivering frames")
            total = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            position = cap.get(cv2.CAP_PROP_POS_FRAMES)
            # A damaged stretch in the middle of a file: skip it (a few tries) rather than call it the end.
            if 0 < position < total - 1 and self._failures < 10:
                self._failures += 1
                raise CorruptFrame(f"{self.target}: undecodable frame near {int(position)}")
            if self.loop and position > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                return self.read()
            return None
        self._failures = 0
        return cv2.cvtColor(_check_image(bgr, self.name), cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource:
    """Every image in a folder, in name order, as a frame. Unreadable images are corrupt frames."""

    live = False

    def __init__(self, folder: Path, loop: bool = False, fps: float = 0.0) -> None:
        from edgeface.core.imageio import IMAGE_SUFFIXES

        self.frame_rate = fps or DEFAULT_FILE_FPS
        self.folder = folder
        self.name = f"folder {folder}"
        self.loop = loop
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            raise SourceError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self._next = 0

    def open(self) -> None:
        self._next = 0

    def read(self) -> np.ndarray | None:
        from edgeface.core.imageio import read_image

        if self._next >= len(self._files):
            if not self.loop:
                return None
            self._next = 0
        path = self._files[self._next]
        self._next += 1
        try:
            return read_image(path)
        except ImageError as exc:
            raise CorruptFrame(str(exc)) from None

    def close(self) -> None:
        pass


class PiCamera2Source:
    """A Raspberry Pi camera through picamera2 (from the Pi OS packages; imported only when chosen)."""

    live = True
    frame_rate = 0.0

    def __init__(self, camera: int = 0, width: int = 0, height: int = 0) -> None:
        self.camera = camera
        self.name = f"picamera2 {camera}"
        self._size = (width or 640, height or 480)
        self._picam: Any = None  # a Picamera2 (Pi OS only, untyped)

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ModuleNotFoundError:
            raise SourceError("picamera2 is not installed: sudo apt install python3-picamera2, and make the venv "
                              "with --system-site-packages") from None
        try:
            picam = Picamera2(self.camera)
            # picamera2 names formats as libcamera does: "BGR888" arrives in memory as R, G, B per pixel.
            picam.configure(picam.create_video_configuration(main={"size": self._size, "format": "BGR888"}))
            picam.start()
        except (IndexError, RuntimeError, OSError) as exc:
            raise SourceUnavailable(f"{self.name}: cannot open ({exc})") from None
        self._picam = picam

    def read(self) -> np.ndarray | None:
        if self._picam is None:
            raise SourceUnavailable(f"{self.name}: not open")
        try:
            image = self._picam.capture_array("main")
        except (RuntimeError, OSError) as exc:
            raise SourceUnavailable(f"{self.name}: capture failed ({exc})") from None
        return np.ascontiguousarray(_check_image(image, self.name)[:, :, :3])

    def close(self) -> None:
        if self._picam is not None:
            try:
                self._picam.close()
            finally:
                self._picam = None


def open_source(uri: str, width: int = 0, height: int = 0, fps: float = 0.0, loop: bool = False) -> FrameSource:
    """A source for ``uri``: a camera index (``0``), a device (``/dev/video0``), ``picamera2[:N]``, a stream URL
    (``rtsp://``, ``http://``...), a folder of images or a video file. Paths are checked here, at once."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if uri.isdigit():
        return OpenCVSource(int(uri), "camera", width, height, fps)
    if uri == "picamera2" or uri.startswith("picamera2:"):
        index = uri.partition(":")[2] or "0"
        if not index.isdigit():
            raise SourceError(f"{uri}: picamera2 takes a camera number, e.g. picamera2:0")
        return PiCamera2Source(int(index), width, height)
    if scheme:
        if scheme not in STREAM_SCHEMES:
            raise SourceError(f"{uri}: unsupported stream scheme {scheme!r} (use {', '.join(STREAM_SCHEMES)})")
        return OpenCVSource(uri, "stream")
    if uri.startswith("/dev/"):
        return OpenCVSource(uri, "camera", width, height, fps)  # may appear later (USB camera plugged in)
    path = Path(uri).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop=loop, fps=fps)
    if path.is_file():
        return OpenCVSource(str(path), "file", fps=fps, loop=loop)
    raise SourceError(f"{uri}: no such file or folder (a source is a camera index, /dev/videoN, picamera2, "
                      "a video file, a folder of images or a stream URL)")


class CaptureStats:
    """Counters the capture thread keeps (read by the metrics; plain ints, updated under the GIL)."""

    def __init__(self) -> None:
        self.captured = 0
        self.dropped = 0
        self.corrupt = 0
        self.reconnects = 0
        self.connected = False
        self.last_error = ""
        self.capture_s = 0.0


class Capture:
    """Runs a source on a thread and hands the pipeline the newest frame.

    ``latest_only``: a new frame replaces one not yet taken (dropped, counted); otherwise the thread waits
    until the pipeline took the previous one. Either way at most one frame is held.
    """

    END = object()

    def __init__(self, source: FrameSource, latest_only: bool, retry_max: float = 10.0, pace_fps: float = 0.0
                 ) -> None:
        self.source = source
        self.latest_only = latest_only
        self.retry_max = retry_max
        self._pace = 1.0 / pace_fps if pace_fps > 0 and not source.live else 0.0
        self.stats = CaptureStats()
        self._slot: Frame | object | None = None
        self._error: EdgefaceError | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._corrupt_warning = Throttled(10.0)
        self._started_at: float | None = None  # the run's clock for files and folders
        self.end_time = time.time()  # the time just after the last frame, once a finite source has ended
        self._thread = threading.Thread(target=self._run, name="edgeface-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread. A camera blocked in a read is left to the process exit rather than waited for."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.source.close()

    def get(self, timeout: float) -> Frame | object | None:
        """The newest frame, ``Capture.END`` when a finite source ended, or None after ``timeout`` seconds.
        Raises the source's ``SourceError`` if it cannot work at all."""
        with self._cond:
            if self._slot is None and self._error is None:
                self._cond.wait(timeout)
            if self._error is not None:
                raise self._error
            item, self._slot = self._slot, None
            if item is Capture.END:
                self._slot = Capture.END  # stays ended
            self._cond.notify_all()
            return item

    def _put(self, item: Frame | object) -> None:
        with self._cond:
            if not self.latest_only:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.2)
            elif isinstance(self._slot, Frame):
                self.stats.dropped += 1
            self._slot = item
            self._cond.notify_all()

    def _run(self) -> None:
        delay = 0.5
        opened = False
        index = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            if not opened:
                try:
                    self.source.open()
                except SourceUnavailable as exc:
                    self._unavailable(str(exc), delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
                except SourceError as exc:
                    self._fail(exc)
                    return
                opened, delay = True, 0.5
                if self.stats.last_error:
                    self.stats.reconnects += 1
                    log.warning("%s: connected again", self.source.name)
                else:
                    log.info("%s: opened", self.source.name)
                self.stats.connected, self.stats.last_error = True, ""
            if self._pace:
                next_due = max(next_due + self._pace, time.monotonic())
                self._stop.wait(max(0.0, next_due - time.monotonic()))
            start = time.perf_counter()
            try:
                image = self.source.read()
            except CorruptFrame as exc:
                self.stats.corrupt += 1
                self._corrupt_warning.warning("skipped a corrupt frame: %s", exc)
                continue
            except SourceUnavailable as exc:
                self.source.close()
                opened = False
                self._unavailable(str(exc), 0.0)
                continue
            except Exception as exc:  # a driver error we do not know: a lost camera, or a file that cannot work
                self.source.close()
                opened = False
                message = redact(f"{self.source.name}: {type(exc).__name__}: {exc}")
                if not self.source.live:
                    self._fail(SourceError(message))
                    return
                self._unavailable(message, 0.0)
                self._stop.wait(delay)
                continue
            if image is None:
                self.end_time = self._frame_time(index)
                self._put(Capture.END)
                return
            elapsed = time.perf_counter() - start
            self.stats.captured += 1
            self.stats.capture_s += elapsed
            self._put(Frame(image=image, index=index, time=self._frame_time(index), capture_s=elapsed))
            index += 1

    def _frame_time(self, index: int) -> float:
        if self.source.live:
            return time.time()
        if self._started_at is None:
            self._started_at = time.time()
        return self._started_at + index / (self.source.frame_rate or DEFAULT_FILE_FPS)

    def _unavailable(self, message: str, retry_in: float) -> None:
        message = redact(message)  # shown in /healthz as the reason
        if self.stats.connected or self.stats.last_error != message:
            suffix = f"; retrying in {retry_in:g} s" if retry_in else "; reconnecting"
            log.warning("%s%s", message, suffix)
        self.stats.connected = False
        self.stats.last_error = message

    def _fail(self, exc: EdgefaceError) -> None:
        with self._cond:
            self._error = exc
            self._cond.notify_all()
