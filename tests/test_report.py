"""``edgeface report``: rows merged from evaluate and bench results, Markdown table and charts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeface.cli import app
from edgeface.report.markdown import build_rows, write_report
from edgeface.eval.text import ms

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def _model(name: str, precision: str, sha: str, source: str, backbone: str = "mobilenetv2", accuracy: float = 0.9):
    heads = {h: {"accuracy": accuracy, "balanced_accuracy": accuracy - 0.1, "macro_f1": accuracy - 0.2, "n": 10,
                 "missed": 1} for h in ("identity", "emotion", "gender")}
    return {"path": f"/elsewhere/{name}", "name": name, "precision": precision, "sha256": sha,
            "source_sha256": source, "backbone": backbone, "input_size": 224, "size_bytes": 2_000_000,
            "heads": heads, "faces": {"photos": 11, "found": 10, "no_face": 1, "unreadable": 0}}


def _bench(model: dict, threads: int, p50: float) -> dict:
    return {**{k: model[k] for k in ("path", "name", "precision", "sha256", "source_sha256", "backbone",
                                     "input_size", "size_bytes")},
            "path": "/on/the/pi/" + model["name"], "threads": threads,
            "face": {"runs": 10, "mean_ms": p50, "p50_ms": p50, "p95_ms": p50 * 1.5, "min_ms": p50,
                     "max_ms": p50 * 2},
            "memory": {"baseline_kib": 40000, "peak_kib": 50240, "model_kib": 10240}}


def test_rows_group_by_source_model_and_match_across_machines() -> None:
    keras = _model("mnv2", "keras", "k1", "k1")
    int8 = _model("mnv2-int8", "int8", "b1", "k1", accuracy=0.85)
    float32 = _model("mnv2-float32", "float32", "b2", "k1")
    vgg = _model("vgg-int8", "int8", "b3", "k2", backbone="vgg16", accuracy=0.8)
    evaluation = {"format": "edgeface-evaluation", "data": {"path": "test.csv", "photos": 11},
                  "models": [int8, vgg, keras, float32]}
    bench = {"format": "edgeface-bench", "machine": {}, "runs": 10,
             "models": [{**_bench(int8, 1, 1.0), "file_bytes": 1_700_000}, _bench(int8, 2, 0.7),
                        _bench(float32, 1, 3.0)]}
    rows = build_rows([evaluation], [bench])
    assert [(r.group, r.precision) for r in rows] == [
        ("mobilenetv2 224", "keras"), ("mobilenetv2 224", "float32"), ("mobilenetv2 224", "int8"),
        ("vgg16 224", "int8")]
    assert rows[2].latency[1]["p50_ms"] == 1.0 and rows[2].latency[2]["p50_ms"] == 0.7  # matched by checksum
    assert rows[2].memory_kib == {1: 10240, 2: 10240} and rows[0].latency == {}
    assert rows[2].file_bytes == 1_700_000  # the bundle's file size, from whichever document has it


def test_report_from_measured_results(tiny_model: Path, tiny_bundles: dict[str, Path], synthetic_csv: Path,
                                      tmp_path: Path) -> None:
    from edgeface.eval.bench import bench_models
    from edgeface.eval.evaluate import evaluate_models
    from edgeface.train.keras_model import load_engine

    models = [tiny_model, *tiny_bundles.values()]
    evaluation = evaluate_models(models, synthetic_csv, open_engine=load_engine).to_dict()
    bench = bench_models(list(tiny_bundles.values()), threads=(1,), runs=3, warmup=1, frames=False,
                         memory=False).to_dict()
    files = write_report([evaluation], [bench], tmp_path / "report", commands=["edgeface report ..."])
    text = files.markdown.read_text()
    assert "| model | precision | identity % | emotion % | gender % | size MB | bundle MB | p50 ms | p95 ms |" in text
    table = [line for line in text.splitlines() if line.startswith("| ")][1:6]
    assert [line.split(" | ")[1] for line in table] == ["keras", "float32", "float16", "dynamic", "int8"]
    assert table[0].startswith("| tiny 64 | keras |")
    for line, precision in zip(table[1:], ("float32", "float16", "dynamic", "int8")):
        model = next(m for m in evaluation["models"] if m["precision"] == precision)
        accuracy = model["heads"]["emotion"]["accuracy"]
        assert f"| {100 * accuracy:.1f} (" in line  # with its change against Keras
        stats = next(m for m in bench["models"] if m["precision"] == precision)["face"]
        bundle = tiny_bundles[precision]
        assert line.endswith(f" | {bundle.stat().st_size / 1e6:.2f} | {ms(stats['p50_ms'])} | {ms(stats['p95_ms'])} |")
    assert "![Accuracy per head" in text and "![Per-face latency" in text and "edgeface report ..." in text
    for png in (files.accuracy_png, files.latency_png):
        assert png is not None and png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000


def test_cli_measures_models_itself_and_reads_saved_json(tiny_bundles: dict[str, Path], synthetic_csv: Path,
                                                         tmp_path: Path) -> None:
    bundles = [str(tiny_bundles["float32"]), str(tiny_bundles["int8"])]
    first = runner.invoke(app, ["report", *bundles, "--data", str(synthetic_csv), "--out", str(tmp_path / "a"),
                                "--runs", "3"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "accuracy.png", "bench.json", "evaluation.json", "latency.png", "report.md"]
    saved = [str(tmp_path / "a" / "evaluation.json"), str(tmp_path / "a" / "bench.json")]
    again = runner.invoke(app, ["report", *saved, "--out", str(tmp_path / "b"), "--title", "Again"])
    assert again.exit_code == 0, again.output
    text = (tmp_path / "b" / "report.md").read_text()
    assert text.startswith("# Again\n") and "| float32 |" in text and "| int8 |" in text


@pytest.mark.parametrize("content, message", [
    ('{"models": []}', "not the output of `edgeface evaluate --json` or `edgeface bench --json`"),
    ("{not json", "not a readable JSON file"),
])
def test_bad_input_is_one_line(content: str, message: str, tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    result = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    needs_data = runner.invoke(app, ["report", str(tiny_bundles["int8"]), "--out", str(tmp_path / "out")])
    assert needs_data.exit_code == 2 and "--data" in needs_data.output
