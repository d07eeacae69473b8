"""The broker interop table in deploy/brokers.md: rendered from the suite's matrix and results (tests/interop/)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.interop.matrix import AEDES_VERSION, BROKERS, LIMITS, TARGETS
from tests.interop.processes import AEDES_DIR
from tests.interop.table import END, START, all_passed, cells, main, read_results, render, replace_block

BROKERS_MD = Path(__file__).resolve().parents[2] / "deploy" / "brokers.md"


def test_interop_table_committed_equals_the_rendering_of_an_all_passing_run() -> None:
    """deploy/brokers.md holds exactly what the generator renders when every cell of the matrix passed."""
    document = BROKERS_MD.read_text(encoding="utf-8")
    assert replace_block(document, render(all_passed())) == document
    assert document.count(START) == 1 and document.count(END) == 1


def test_interop_table_a_failed_or_missing_cell_shows_in_the_table(tmp_path: Path) -> None:
    """A check that failed reads FAILED, one that did not run reads "not run", and the generator exits 1."""
    outcomes = all_passed()
    outcomes[(TARGETS[0].id, "delivery")] = "failed"
    del outcomes[(BROKERS[1].kind.value, LIMITS[0].id)]
    results = tmp_path / "results.json"
    results.write_bytes(orjson.dumps({"results": [{"row": r, "column": c, "outcome": o}
                                                  for (r, c), o in outcomes.items()]}))
    page = tmp_path / "brokers.md"
    page.write_text(f"intro\n{START}\nold\n{END}\noutro\n", encoding="utf-8")
    assert read_results(results) == outcomes
    assert main(["--results", str(results), "--write", str(page)]) == 1
    text = page.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    target_row = next(line for line in text.splitlines()
                      if line.startswith(f"| {BROKERS[0].name} | `{TARGETS[0].protocol_setting}`"))
    assert "**FAILED**" in target_row
    broker_row = next(line for line in text.splitlines()
                      if line.startswith(f"| {BROKERS[1].name} | {BROKERS[1].source}"))
    assert "not run" in broker_row


def test_interop_table_every_cell_passing_exits_0(tmp_path: Path) -> None:
    """With every cell passed the generator exits 0 and the block has one row per target and per broker."""
    results = tmp_path / "results.json"
    results.write_bytes(orjson.dumps({"results": [{"row": r, "column": c, "outcome": "passed"} for r, c in cells()]}))
    assert main(["--results", str(results)]) == 0
    block = render(all_passed())
    assert sum(line.startswith("| ") for line in block.splitlines()) == 2 + len(TARGETS) + len(BROKERS)
    assert "FAILED" not in block and "not run" not in block


def test_interop_table_without_markers_is_an_error() -> None:
    """A page without the markers is not silently rewritten."""
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers here", render(all_passed()))


def test_interop_matrix_names_the_aedes_version_the_lock_file_installs() -> None:
    """The Aedes version in the table is the one package.json pins and package-lock.json resolves."""
    package = orjson.loads((AEDES_DIR / "package.json").read_bytes())
    lock = orjson.loads((AEDES_DIR / "package-lock.json").read_bytes())
    assert package["dependencies"]["aedes"] == AEDES_VERSION
    assert lock["packages"]["node_modules/aedes"]["version"] == AEDES_VERSION
