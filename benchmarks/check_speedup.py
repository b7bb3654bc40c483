"""CI gate: int8 must be faster per face than float32, measured in the same benchmark run.

    python benchmarks/check_speedup.py artifacts/benchmarks.json [--min-speedup 1.0]

Reads a pytest-benchmark ``--benchmark-json`` file, pairs the per-face latency benchmarks
(``extra_info.kind == "face"``) of float32 and int8 that share a model and thread count, and exits 1 when an
int8 median is not below its float32 median divided by ``--min-speedup``. Exit 2 when the file holds no such
pair (the gate would otherwise pass by measuring nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def speedups(report: dict) -> list[dict]:
    """One row per (model, threads) with both precisions: float32 and int8 medians (ms) and their ratio."""
    medians: dict[tuple, dict[str, float]] = {}
    for bench in report.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("kind") != "face" or info.get("precision") not in ("float32", "int8"):
            continue
        key = (info.get("backbone"), info.get("input_size"), info.get("threads"))
        medians.setdefault(key, {})[info["precision"]] = bench["stats"]["median"] * 1000
    return [{"backbone": b, "input_size": s, "threads": t, "float32_ms": m["float32"], "int8_ms": m["int8"],
             "ratio": m["int8"] / m["float32"]}
            for (b, s, t), m in sorted(medians.items(), key=lambda kv: str(kv[0])) if len(m) == 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fail when int8 is not faster than float32 (same run).")
    parser.add_argument("benchmark_json", type=Path)
    parser.add_argument("--min-speedup", type=float, default=1.0,
                        help="float32 median / int8 median must exceed this (default 1.0: int8 strictly faster)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.benchmark_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.benchmark_json}: cannot read benchmark JSON ({exc})", file=sys.stderr)
        return 2
    rows = speedups(report)
    if not rows:
        print(f"error: {args.benchmark_json}: no float32/int8 pair of per-face benchmarks", file=sys.stderr)
        return 2
    failed = False
    for r in rows:
        ok = r["float32_ms"] / r["int8_ms"] > args.min_speedup
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {r['backbone']} {r['input_size']}x{r['input_size']}, {r['threads']} "
              f"thread(s): int8 {r['int8_ms']:.3f} ms vs float32 {r['float32_ms']:.3f} ms median "
              f"(int8/float32 = {r['ratio']:.2f})")
    if failed:
        print(f"error: int8 is not faster than float32 by more than x{args.min_speedup:g}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
