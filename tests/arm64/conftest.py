"""What the arm64 tier measured (phase times, the guest's versions, the x86 comparison): tests and fixtures
write it into the ``report`` fixture, kept in the session's stash, and it is printed at the end of the run."""

from __future__ import annotations

import json
from typing import Any

import pytest

REPORT = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The session's arm64 report: ``durations_s`` per phase, then what each test adds."""
    return pytestconfig.stash.setdefault(REPORT, {"durations_s": {}})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(REPORT, None)
    if not report or not (report.get("durations_s") or report.get("base_root")):
        return
    write = terminalreporter.write_line
    terminalreporter.section("arm64 root (emulated Raspberry Pi OS)")
    if "base_root" in report:
        source = "from the cache" if report.get("root_from_cache") else "built in this run"
        write(f"base root: {report['base_root']} ({source}; debootstrap took {report['debootstrap_s']} s)")
    for phase, seconds in report["durations_s"].items():
        write(f"{seconds:8.1f} s  {phase}")
    for key in ("guest", "crops", "daemon"):
        if key in report:
            write(f"{key}: {json.dumps(report[key])}")
    if "bench_stdout" in report:
        write("edgeface bench inside the root (emulated: not a speed figure):")
        for line in report["bench_stdout"].splitlines():
            write("  " + line)
