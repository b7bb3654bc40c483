"""A real Home Assistant core for the tests: built once in a venv of its own (``.ci/homeassistant.sh``), started
with its MQTT integration on a test mosquitto (set up through its own config flow), and read through its
websocket API as its frontend reads it: the state machine, the entity registry, and every state change."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from helpers.daemon import REPO
from helpers.ports import free_port

BUILD = REPO / ".ci" / "homeassistant.sh"
CONFIG = """homeassistant:
  name: edgeface test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
logger:
  default: info
"""
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) \((?P<thread>.+?)\) "
                      r"\[(?P<logger>[^\]]+)\] (?P<message>.*)")


def home_assistant_venv(timeout: float = 1200.0) -> tuple[Path | None, str]:
    """The venv holding Home Assistant (built now if it is not yet), or None and why it could not be built."""
    try:
        done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"{BUILD.name} took longer than {timeout:.0f} s"
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING: Location")]
        return None, f"{BUILD.name} failed: " + " / ".join(errors[-3:])
    return Path(done.stdout.strip().splitlines()[-1]), ""


class HomeAssistant:
    """``hass -c <folder> --skip-pip`` on a free loopback port: a user onboarded, a token, MQTT set up."""

    def __init__(self, venv: Path, folder: Path) -> None:
        self.venv = venv
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "configuration.yaml").write_text(CONFIG.format(port=self.port))
        self.log_file = folder / "home-assistant.log"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self._ws: Any = None
        self._ids = iter(range(1, 1 << 30))
        self._results: dict[int, dict] = {}
        self._cond = threading.Condition()
        self.changes: list[dict] = []  # every state_changed event's data, in order

    # --- start, stop ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "HomeAssistant":
        self.proc = subprocess.Popen([str(self.venv / "bin" / "hass"), "-c", str(self.folder), "--skip-pip"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._request("GET", "/api/onboarding", auth=False)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Home Assistant did not start:\n" + self.log_tail()) from None
                time.sleep(0.2)
        self._onboard()
        self._connect_websocket()
        return self

    def stop(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_entries(self) -> list[dict[str, str]]:
        """The log file's entries (a traceback belongs to the entry above it)."""
        entries: list[dict[str, str]] = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(line)
            if match:
                entries.append(match.groupdict())
            elif entries:
                entries[-1]["message"] += "\n" + line
        return entries

    # --- HTTP: onboarding, token, config flow --------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True, form: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def _onboard(self) -> None:
        """The first user, as the onboarding page creates it, and an access token for them."""
        client_id = self.url + "/"
        created = self._request("POST", "/api/onboarding/users", {
            "client_id": client_id, "name": "edgeface test", "username": "edgeface", "password": "edgeface-test",
            "language": "en"}, auth=False)
        token = self._request("POST", "/auth/token", {"grant_type": "authorization_code",
                                                      "code": created["auth_code"], "client_id": client_id},
                              auth=False, form=True)
        self.token = token["access_token"]

    def set_up_mqtt(self, port: int) -> dict:
        """MQTT through the config flow a user goes through (broker, port; discovery on by default)."""
        flow = self._request("POST", "/api/config/config_entries/flow", {"handler": "mqtt",
                                                                         "show_advanced_options": False})
        assert flow["type"] == "form" and flow["step_id"] == "broker", flow
        result = self._request("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                               {"broker": "127.0.0.1", "port": port})
        assert result["type"] == "create_entry", result
        return result

    # --- websocket API -------------------------------------------------------------------------------------

    def _connect_websocket(self) -> None:
        import websocket  # websocket-client

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/api/websocket", timeout=30)
        assert json.loads(ws.recv())["type"] == "auth_required"
        ws.send(json.dumps({"type": "auth", "access_token": self.token}))
        reply = json.loads(ws.recv())
        assert reply["type"] == "auth_ok", reply
        ws.settimeout(None)
        self._ws = ws
        threading.Thread(target=self._read, daemon=True).start()
        self.call("subscribe_events", event_type="state_changed")

    def _read(self) -> None:
        import websocket

        while True:
            try:
                message = json.loads(self._ws.recv())
            except (websocket.WebSocketException, OSError, AttributeError, ValueError):
                return
            with self._cond:
                if message.get("type") == "event":
                    self.changes.append(message["event"]["data"])
                else:
                    self._results[message["id"]] = message
                self._cond.notify_all()

    def call(self, kind: str, **fields: Any) -> Any:
        """One websocket command; its result (an AssertionError if Home Assistant refused it)."""
        with self._cond:
            ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "type": kind, **fields}))
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._results, 30):
                raise AssertionError(f"Home Assistant did not answer {kind}")
            reply = self._results.pop(ident)
        assert reply.get("success"), reply
        return reply.get("result")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log_tail())

    def entities(self, platform: str = "mqtt") -> dict[str, str]:
        """The entity registry's entities of ``platform``: {unique_id: entity_id}."""
        return {e["unique_id"]: e["entity_id"] for e in self.call("config/entity_registry/list")
                if e["platform"] == platform}

    def states(self) -> dict[str, dict]:
        """The state machine now: {entity_id: state object}."""
        return {s["entity_id"]: s for s in self.call("get_states")}

    def history(self, entity_id: str) -> list[dict]:
        """Every state ``entity_id`` took since the test subscribed (None where it was removed)."""
        with self._cond:
            return [c["new_state"] for c in self.changes if c["entity_id"] == entity_id]

