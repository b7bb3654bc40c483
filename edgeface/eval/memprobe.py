"""Peak memory of running a bundle, measured in a fresh process: ``python -m edgeface.eval.memprobe BUNDLE``.

Python's own counters (tracemalloc) do not see LiteRT's native allocations (tensor arena, XNNPACK's packed
weights), and the peak of a long-lived process remembers everything it did before. So a new process imports
what the Pi runtime imports (numpy, the LiteRT interpreter), records its peak resident set size (RSS), then
loads the bundle, runs ``runs`` inferences on one face and records the peak again. It prints one JSON line:
``{"baseline_kib": ..., "peak_kib": ...}``. The difference is what the model costs in RAM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MemoryUsage:
    """Peak RSS in KiB of a process that only runs the model: before loading it, and after running it."""

    baseline_kib: int
    peak_kib: int

    @property
    def model_kib(self) -> int:
        return max(self.peak_kib - self.baseline_kib, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_kib": self.baseline_kib, "peak_kib": self.peak_kib, "model_kib": self.model_kib}


def peak_rss_kib() -> int | None:
    """This process's peak RSS in KiB (Linux VmHWM; ru_maxrss elsewhere), or None where neither exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # macOS reports bytes


def measure_memory(bundle: str | Path, num_threads: int | None = 1, runs: int = 5,
                   timeout: float = 300.0) -> MemoryUsage | None:
    """Run the probe in a child process; None when the platform cannot report peak RSS."""
    command = [sys.executable, "-m", "edgeface.eval.memprobe", str(bundle), "--runs", str(runs)]
    if num_threads is not None:
        command += ["--threads", str(num_threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        from edgeface.core.errors import EdgefaceError

        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgefaceError(f"{bundle}: memory probe failed ({last})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result.get("peak_kib") is None:
        return None
    return MemoryUsage(int(result["baseline_kib"]), int(result["peak_kib"]))


def _probe(bundle: str, num_threads: int | None, runs: int) -> dict[str, int | None]:
    import numpy as np

    from edgeface.runtime.engine import LiteRTEngine
    from edgeface.runtime.litert import interpreter_module

    interpreter_module()  # import the interpreter package before the baseline: it is not the model's cost
    baseline = peak_rss_kib()
    engine = LiteRTEngine.from_bundle(bundle, num_threads=num_threads)
    size = engine.spec.input_size
    crop = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(runs):
        engine.predict(crop)
    return {"baseline_kib": baseline, "peak_kib": peak_rss_kib()}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(_probe(args.bundle, args.threads, args.runs)))


if __name__ == "__main__":
    main()
