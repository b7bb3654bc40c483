"""A real broker for tests: Debian's mosquitto on a free port, with its own config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .ports import free_port, wait_until_listening


class Mosquitto:
    """A real Debian mosquitto broker on a free port, with its own config, started and stopped by the test."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_until_listening(self.port, 10, alive=lambda: self.proc.poll() is None):
            raise RuntimeError("mosquitto did not start listening")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
