"""``edgeface bench`` and the CI speed gate. Shapes and bookkeeping are checked here, never speed."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.eval.bench import LatencyStats, bench_models, time_round_robin

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def test_latency_stats_by_hand() -> None:
    stats = LatencyStats.from_seconds([0.001, 0.002, 0.003, 0.004])
    assert (stats.runs, stats.min_ms, stats.max_ms) == (4, 1.0, 4.0)
    assert stats.mean_ms == pytest.approx(2.5) and stats.p50_ms == pytest.approx(2.5)
    assert stats.p95_ms == pytest.approx(3.85)  # numpy's linear interpolation: 3 + 0.85 * (4 - 3)


def test_round_robin_alternates_calls() -> None:
    calls: list[str] = []
    stats = time_round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up of each, then one call of each per round
    assert {k: s.runs for k, s in stats.items()} == {"a": 3, "b": 3}


def test_bench_measures_every_bundle_and_thread_count(tiny_bundles: dict[str, Path]) -> None:
    report = bench_models([tiny_bundles["float32"], tiny_bundles["int8"]], threads=(1, 2), runs=5, warmup=1,
                          frame_runs=2)
    assert [(b.model.precision, b.threads) for b in report.models] == [
        ("float32", 1), ("float32", 2), ("int8", 1), ("int8", 2)]
    assert [(f.label, f.faces, detector) for f, detector, _ in report.frames] == [
        ("1 face", 1, "blazeface"), ("3 faces", 3, "blazeface")]
    for b in report.models:
        assert b.face.runs == 5 and 0 < b.face.min_ms <= b.face.p50_ms <= b.face.p95_ms <= b.face.max_ms
        assert set(b.frames) == {"1 face", "3 faces"}
        assert b.memory is not None and b.memory.peak_kib > b.memory.baseline_kib > 0
    assert report.models[0].model.size_bytes > report.models[2].model.size_bytes  # int8 weights are smaller
    assert report.machine["runtime"] and report.machine["cpu_count"]


def test_cli_table_and_json(tiny_bundles: dict[str, Path], synthetic_csv: Path, tmp_path: Path) -> None:
    photo = next((synthetic_csv.parent / "images").iterdir())
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(tiny_bundles["int8"]), "--threads", "1", "--runs", "4",
                                 "--image", str(photo), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "face p50" in result.output and tiny_bundles["int8"].stem in result.output
    document = json.loads(out.read_text())
    assert document["format"] == "edgeface-bench" and document["format_version"] == 1
    assert document["runs"] == 4
    (frame,) = document["frames"]
    assert frame["label"] == photo.name and frame["faces"] == 1 and frame["size"] == [256, 320]
    (model,) = document["models"]
    assert model["path"] == str(tiny_bundles["int8"]) and model["precision"] == "int8" and model["threads"] == 1
    assert set(model["face"]) == {"runs", "mean_ms", "p50_ms", "p95_ms", "min_ms", "max_ms"}
    assert set(model["frames"]) == {photo.name}
    assert set(model["memory"]) == {"baseline_kib", "peak_kib", "model_kib"}


def test_bad_input_is_one_line(tiny_model: Path, tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (["bench", str(tiny_model)], "bench measures bundles"),
        (["bench", str(tiny_bundles["int8"]), "--runs", "0"], "Invalid value for --runs"),
        (["bench", str(tiny_bundles["int8"]), "--threads", "0"], "Invalid value for --threads"),
        (["bench", str(tmp_path / "missing.edgeface")], "no such file or folder"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


# --- benchmarks/check_speedup.py: the CI gate on a --benchmark-json file ---------------------------------

def _gate():
    return runpy.run_path(str(REPO / "benchmarks" / "check_speedup.py"))["main"]


def _benchmark(precision: str, threads: int, median_ms: float, kind: str = "face") -> dict:
    return {"name": f"test_face_latency[{precision}-{threads}]", "stats": {"median": median_ms / 1000},
            "extra_info": {"kind": kind, "backbone": "mobilenetv2", "input_size": 96, "precision": precision,
                           "threads": threads}}


@pytest.mark.parametrize("medians, code", [
    ({1: (2.0, 0.8), 2: (1.5, 0.6)}, 0),  # int8 faster at both thread counts
    ({1: (2.0, 0.8), 2: (1.5, 1.5)}, 1),  # a tie is not faster
    ({1: (2.0, 2.4)}, 1),
])
def test_speed_gate(medians: dict, code: int, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    benchmarks = [_benchmark("detection", 1, 9.0, kind="detection")]
    for threads, (float32, int8) in medians.items():
        benchmarks += [_benchmark("float32", threads, float32), _benchmark("int8", threads, int8),
                       _benchmark("float16", threads, 0.1)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    assert _gate()([str(path)]) == code
    out = capsys.readouterr().out
    assert out.count("int8/float32 = ") == len(medians)
    assert (("FAIL" in out) == bool(code))


def test_speed_gate_refuses_a_file_without_pairs(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [_benchmark("float32", 1, 2.0)]}))
    assert _gate()([str(path)]) == 2
    assert _gate()([str(tmp_path / "missing.json")]) == 2
