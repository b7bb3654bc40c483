"""Figures are data: docs/results.md and the README's table are what benchmarks/render_results.py writes from
results/*.json, and every results file says how, when and where it was measured."""

from __future__ import annotations

import difflib
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import render_results
from results import FIELDS, read_results, write_result

REPO = Path(__file__).resolve().parents[1]


def test_pages_match_the_data() -> None:
    pages, problems = render_results.render_all()
    assert not problems, problems
    for page, text in pages.items():
        current = (REPO / page).read_text()
        diff = "".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True), page, "rendered", n=1))
        assert current == text, f"{page} does not match results/: run `make results`\n{diff[:4000]}"


def test_every_block_is_filled() -> None:
    for page in render_results.PAGES:
        for block in render_results.BLOCK.finditer((REPO / page).read_text()):
            assert block["body"].strip(), f"{page}: the block {block['name']!r} is empty: run `make results`"


def test_results_files_say_how_when_and_where() -> None:
    results = read_results()  # raises on a missing or unknown field, a bad date, a name that is not the file's
    assert results
    for name, result in results.items():
        assert datetime.fromisoformat(result.date).tzinfo is not None, f"{name}: date without a time zone"
        assert result.command.strip() and result.machine.strip(), name
        assert result.commit != "unknown" and result.commit.split("-")[0].isalnum(), f"{name}: commit {result.commit}"
        # measured here: the load average was recorded; measured before results were data: where from
        assert (result.load is None) != (result.recorded is None), f"{name}: load xor recorded"


def copy_tree(tmp_path: Path) -> Path:
    for page in render_results.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / page, tmp_path / page)
    shutil.copytree(REPO / "results", tmp_path / "results")
    return tmp_path


def test_a_changed_figure_changes_the_page(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    path = root / "results" / "web-page.json"
    record = json.loads(path.read_text())
    record["data"]["rows"][0]["fps"] = 12345.6
    path.write_text(json.dumps(record))
    pages, problems = render_results.render_all(root)
    assert not problems
    assert "12345.6" in pages["docs/results.md"] and "12345.6" not in (REPO / "docs/results.md").read_text()


def test_a_file_no_page_shows_and_a_block_without_renderer_are_errors(tmp_path: Path, monkeypatch) -> None:
    root = copy_tree(tmp_path)
    monkeypatch.setenv("EDGEFACE_RESULTS", str(root / "results"))
    write_result("orphan", {"figure": 1.0}, command="true")
    _, problems = render_results.render_all(root)
    assert problems == ["results/orphan.json is read by no block"]
    page = root / "docs" / "results.md"
    page.write_text(page.read_text() + "\n<!-- results: nobody -->\n<!-- /results -->\n")
    with pytest.raises(KeyError, match="no renderer for the block 'nobody'"):
        render_results.render_all(root)


def test_write_result_records_provenance(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEFACE_RESULTS", str(tmp_path))
    path = write_result("example", {"fps": 10.0}, command="pytest benchmarks/bench_example.py")
    record = json.loads(path.read_text())
    assert set(FIELDS) <= set(record) and record["data"] == {"fps": 10.0}
    assert record["name"] == "example" and record["command"] == "pytest benchmarks/bench_example.py"
    assert datetime.fromisoformat(record["date"]).utcoffset().total_seconds() == 0
    assert "cores" in record["machine"] and len(record["load"]) == 3
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no partial file left
