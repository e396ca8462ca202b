"""README.md stays short and its demo tables are generated from results/tables/, never copied by hand."""

import re
from pathlib import Path

import pytest

from armor.reporting.readme import fill, table_blocks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_150_lines_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 150
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")


def test_readme_links_only_to_docs_that_exist():
    for link in [part.split(")")[0] for part in README.split("](")[1:]]:
        assert (ROOT / link.split("#")[0]).exists(), link


@pytest.mark.parametrize("name", ["main", "blocksize", "downstream", "time_to_quality"])
def test_readme_table_is_a_generated_snapshot_naming_its_commit(name):
    body = table_blocks(README)[name]
    assert body.startswith(("| ", "Perplexity", "ARMOR by block size", "Accuracy")) and re.search(r"commit [0-9a-f]{12}", body)


def test_demo_and_benchmarks_write_no_tracked_file():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "demo-seeds", "bench-armor", "speed", "prefetch"):
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert "armor.reporting.readme" not in recipe and "README" not in recipe, target


def test_fill_writes_tables_that_exist_and_keeps_the_others(tmp_path):
    tables, benchmarks = tmp_path / "tables", tmp_path / "benchmarks"
    tables.mkdir(), benchmarks.mkdir()
    (tables / "main.md").write_text("| a |\n|---|\n| 1 |\n")
    (benchmarks / "main.md").write_text("not this one\n")
    (benchmarks / "bench.md").write_text("| b |\n")
    text = ("x\n<!-- table:main -->\nold\n<!-- /table:main -->\n<!-- table:speed -->\nkept\n<!-- /table:speed -->\n"
            "<!-- table:bench -->\n<!-- /table:bench -->\ny\n")
    filled, missing = fill(text, tables, benchmarks)
    assert filled == ("x\n<!-- table:main -->\n| a |\n|---|\n| 1 |\n<!-- /table:main -->\n<!-- table:speed -->\nkept\n"
                      "<!-- /table:speed -->\n<!-- table:bench -->\n| b |\n<!-- /table:bench -->\ny\n")
    assert missing == ["speed"] and fill(filled, tables, benchmarks)[0] == filled
