"""Where each person is, for the whole household, from the reports of every device. Pure logic (the MQTT sink
feeds it and publishes what it says).

Every device reports each person it has seen, retained on ``<topic>/<device>/presence/<person>``: home while a
visit of theirs is open on its camera, not_home when it left, with when and where they were last seen. The
household's answer, ``<topic>/presence/<person>`` (what Home Assistant's presence entity reads), follows from
all the reports:

* **home** while any device that is online reports them home: at the camera of the latest of those reports;
* **not_home** otherwise (a device that went offline with a visit open does not keep anyone home), last seen
  at the camera of the latest report.

Every device computes the same answer from the same reports; the device whose report decides it (else, when
that one is offline, the online device with the smallest id) publishes it when the broker's copy differs. So a
device never sets someone not_home while another device sees them, and a change seen by all converges to one
answer.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

HOME, AWAY = "home", "not_home"
FIELDS = ("state", "name", "camera", "last_seen", "visit")


def _report(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """A report as received, with its fields checked (None: not a report this rule can use)."""
    state, seen = payload.get("state"), payload.get("last_seen")
    if state not in (HOME, AWAY) or not isinstance(seen, (int, float)) or isinstance(seen, bool):
        return None
    if not isinstance(payload.get("name"), str) or not isinstance(payload.get("camera"), str):
        return None
    return {k: payload.get(k) for k in FIELDS}


class HouseholdPresence:
    """The reports of every device (``report``), which devices are online (``status``) and what the broker
    holds for the household (``household``); ``due(device)`` says what that device must publish."""

    def __init__(self) -> None:
        self._reports: dict[str, dict[str, dict[str, Any]]] = {}  # person key -> device -> report
        self._online: dict[str, bool] = {}
        self._household: dict[str, dict[str, Any]] = {}  # person key -> payload the broker holds
        self._sent: dict[str, dict[str, Any]] = {}  # person key -> what this device last published for it
        self._lock = threading.Lock()

    def report(self, device: str, person: str, payload: Mapping[str, Any] | None) -> None:
        """A device's report on a person (None or unusable: withdrawn, as when the person was removed)."""
        checked = _report(payload) if payload else None
        with self._lock:
            reports = self._reports.setdefault(person, {})
            if checked is None:
                reports.pop(device, None)
                if not reports:
                    del self._reports[person]
            else:
                reports[device] = checked

    def status(self, device: str, online: bool) -> None:
        with self._lock:
            self._online[device] = online

    def household(self, person: str, payload: Mapping[str, Any] | None) -> None:
        """What the broker holds for the household now (somebody may have published something else since this
        device last did: then it may have to publish again)."""
        with self._lock:
            checked = _report(payload) if payload else None
            if checked is None:
                self._household.pop(person, None)
            else:
                self._household[person] = checked
            if checked != self._sent.get(person):
                self._sent.pop(person, None)

    def forget(self, person: str) -> None:
        with self._lock:
            for table in (self._reports, self._household, self._sent):
                table.pop(person, None)

    def answer(self, person: str) -> tuple[dict[str, Any], str] | None:
        """The household's presence of ``person`` and the device that decides it; None when nobody reported."""
        with self._lock:
            return self._answer(person)

    def _answer(self, person: str) -> tuple[dict[str, Any], str] | None:
        reports = self._reports.get(person)
        if not reports:
            return None

        def latest(items: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
            return max(items, key=lambda item: (item[1]["last_seen"], item[0]))

        home = [(d, r) for d, r in reports.items() if r["state"] == HOME and self._online.get(d, False)]
        device, report = latest(home) if home else latest(list(reports.items()))
        answer = {**report, "state": HOME if home else AWAY}
        if not self._online.get(device, False):
            online = sorted(d for d, up in self._online.items() if up)
            device = online[0] if online else device
        return answer, device

    def due(self, device: str) -> list[tuple[str, dict[str, Any]]]:
        """The household messages ``device`` must publish now: the answers it decides that the broker does not
        hold yet (each once, until the broker's copy changes again)."""
        out = []
        with self._lock:
            for person in list(self._reports):
                found = self._answer(person)
                if found is None:
                    continue
                answer, decider = found
                if decider != device or self._household.get(person) == answer or self._sent.get(person) == answer:
                    continue
                self._sent[person] = answer
                out.append((person, answer))
        return out

    def people(self) -> dict[str, dict[str, Any]]:
        """Every person's household presence as the broker holds it (else as the reports make it), by key."""
        with self._lock:
            out = {person: dict(payload) for person, payload in self._household.items()}
            for person in self._reports:
                if person not in out:
                    found = self._answer(person)
                    if found is not None:
                        out[person] = found[0]
            return out
