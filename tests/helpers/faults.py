"""Helpers of the fault suite: each attack or fault from issue 25 that concerns inputs, as a test of what a user sees.

Every case runs the real CLI in a subprocess (``python -m edgeface``), most under an address-space limit the
size of a Raspberry Pi's memory, and checks the promise of the README: one ``error:`` line naming what is
wrong and where, the documented exit code (2 for bad input, 1 for a check that found problems), no traceback,
no hang (each call has a timeout).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import zlib
from pathlib import Path


# What a Pi 4 with 2 GB could give one process; the runtime's own imports fit well under it.
PI_MEMORY = 1536 * 1024 * 1024


def run_cli(*args: str, memory: int | None = PI_MEMORY, timeout: float = 120,
            cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``edgeface ARGS`` in a fresh process, its address space capped at ``memory`` bytes."""
    def limit() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "edgeface", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``error:`` line of a run that exited ``code``, after checking there is nothing else."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def deflate_zeros(size: int, chunk: int = 16 << 20) -> bytes:
    """``size`` zero bytes, deflated (zlib stream): about 1 KB per MB."""
    compressor = zlib.compressobj(9)
    block = bytes(chunk)
    parts = []
    for start in range(0, size, chunk):
        parts.append(compressor.compress(block[:min(chunk, size - start)]))
    parts.append(compressor.flush())
    return b"".join(parts)
