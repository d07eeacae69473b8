"""The broker interop table: rendered from the interop suite's results into deploy/brokers.md.

Owns: the Markdown between `<!-- interop-table:start -->` and `<!-- interop-table:end -->`, made from the matrix
(tests/interop/matrix.py) and the outcome of each of its cells as the suite recorded them
(test-artifacts/interop-results.json, written by tests/integration/conftest.py). A cell that did not pass says so
("FAILED", "not run"), so a table can only show a check or a limit the tests confirmed.

    python -m tests.interop.table --results test-artifacts/interop-results.json --write deploy/brokers.md

exits 1 when a cell did not pass (the table is still written, with the failures in it). `make interop-table` runs
the suite and then this. A unit test (tests/unit/test_interop_table.py) checks that the committed table equals the
rendering of a run in which every cell passed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from tests.interop.matrix import BROKERS, CHECKS, LIMITS, TARGETS, BrokerKind

__all__ = ["END", "START", "all_passed", "cells", "read_results", "render", "replace_block"]

START = "<!-- interop-table:start -->"
END = "<!-- interop-table:end -->"
Outcomes = Mapping[tuple[str, str], str]


def cells() -> list[tuple[str, str]]:
    """Every (row, column) the suite must fill: each target x each check, each broker x each limit."""
    return ([(target.id, check.id) for target in TARGETS for check in CHECKS]
            + [(info.kind.value, limit.id) for info in BROKERS for limit in LIMITS])


def all_passed() -> dict[tuple[str, str], str]:
    """The outcomes of a run in which every cell passed."""
    return dict.fromkeys(cells(), "passed")


def read_results(path: Path) -> dict[tuple[str, str], str]:
    """The outcomes in a results file the suite wrote."""
    document = orjson.loads(path.read_bytes())
    return {(str(row["row"]), str(row["column"])): str(row["outcome"]) for row in document["results"]}


def _not_passed(outcome: str | None) -> str:
    return "not run" if outcome in (None, "skipped") else "**FAILED**"


def _check_cell(outcomes: Outcomes, row: str, column: str) -> str:
    outcome = outcomes.get((row, column))
    return "✓ passes" if outcome == "passed" else _not_passed(outcome)


def _limit_cell(outcomes: Outcomes, kind: BrokerKind, limit_id: str) -> str:
    outcome = outcomes.get((kind.value, limit_id))
    if outcome != "passed":
        return _not_passed(outcome)
    expected = next(limit for limit in LIMITS if limit.id == limit_id).expected[kind]
    return {True: "yes", False: "**no**", None: "n/a"}[expected]


def render(outcomes: Outcomes) -> str:
    """The Markdown block (markers included) for these outcomes."""
    names = {info.kind: info.name for info in BROKERS}
    lines = [START, "",
             "| broker | `mqtt.protocol` | protocol in use | " + " | ".join(c.title for c in CHECKS) + " |",
             "|---|---|---|" + "---|" * len(CHECKS)]
    for target in TARGETS:
        row = [names[target.broker], f"`{target.protocol_setting}`", target.protocol_in_use]
        row += [_check_cell(outcomes, target.id, check.id) for check in CHECKS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| broker | source | " + " | ".join(limit.title for limit in LIMITS) + " |",
              "|---|---|" + "---|" * len(LIMITS)]
    for info in BROKERS:
        row = [info.name, info.source] + [_limit_cell(outcomes, info.kind, limit.id) for limit in LIMITS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "What the checks do:", ""]
    lines += [f"- **{check.title}**: {check.what}." for check in CHECKS]
    lines += ["", "What a **no** means for the bridge:", ""]
    for limit in LIMITS:
        lacking = [names[kind] for kind, expected in limit.expected.items() if expected is False]
        if lacking:
            lines.append(f"- {limit.title}, not on {', '.join(lacking)}: {limit.when_missing}.")
    lines += ["", END]
    return "\n".join(lines)


def replace_block(document: str, block: str) -> str:
    """`document` with the text between the markers (markers included) replaced by `block`."""
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {START} ... {END} are missing")
    return document[:start] + block + document[end + len(END):]


def main(argv: Sequence[str] | None = None) -> int:
    """Render the table from a results file; with --write, put it between the markers of that file."""
    parser = argparse.ArgumentParser(prog="python -m tests.interop.table", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, required=True, help="the suite's interop-results.json")
    parser.add_argument("--write", type=Path, help="replace the table between the markers of this file")
    args = parser.parse_args(argv)
    outcomes = read_results(args.results)
    block = render(outcomes)
    if args.write is not None:
        args.write.write_text(replace_block(args.write.read_text(encoding="utf-8"), block), encoding="utf-8")
    else:
        print(block)
    missing = [f"{row} {column}: {outcomes.get((row, column), 'not run')}" for row, column in cells()
               if outcomes.get((row, column)) != "passed"]
    for line in missing:
        print(f"not passed: {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
