"""Integration fixtures for the broker interop suite: every broker of tests/interop/matrix.py started on a free port
(restartable), and the record of the suite's results that `make interop-table` renders into deploy/brokers.md.

Results: each test marked `@pytest.mark.interop(column)` (or `interop(column, row=...)`) whose parameter id (or
`row`) names a row of the matrix, a target or a broker, adds `{row, column, outcome}`; at the end of the session
they are written to `test-artifacts/interop-results.json` (only when such tests ran).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Protocol

import orjson
import pytest

from mqtt_bridge.devtools.broker import EmbeddedBroker
from tests.helpers import LOCALHOST, BrokerAddress, MosquittoFactory, free_port, is_ci
from tests.interop.matrix import BrokerKind
from tests.interop.processes import AedesBroker, aedes_missing_reason, install_aedes

RESULTS_PATH = Path(__file__).resolve().parents[2] / "test-artifacts" / "interop-results.json"
_RESULTS = pytest.StashKey[dict[tuple[str, str], str]]()
_WORSE = {"passed": 0, "skipped": 1, "failed": 2}


class RestartableBroker(BrokerAddress, Protocol):
    """A started broker the interop suite can reach and restart on the same port."""

    def restart(self) -> object: ...


class _Amqtt:
    """The embedded broker on a fixed free port, so that a restart comes back where the clients look for it."""

    def __init__(self) -> None:
        self.broker = EmbeddedBroker(LOCALHOST, free_port())
        self.host, self.port, self.url = self.broker.host, self.broker.port, self.broker.url

    def restart(self) -> _Amqtt:
        self.broker.stop()
        self.broker.start()
        return self


BrokerStarter = Callable[[BrokerKind], RestartableBroker]


@pytest.fixture(scope="session")
def aedes_installed() -> None:
    """Aedes is runnable here (`npm ci` of the committed lock file when needed); skips without node, fails in CI."""
    reason = aedes_missing_reason()
    if reason is not None:
        if is_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    install_aedes()


@pytest.fixture
def start_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerStarter]:
    """Start a broker of the matrix by kind on a free port; every one is stopped after the test."""
    stops: list[Callable[[], object]] = []

    def _start(kind: BrokerKind) -> RestartableBroker:
        if kind == BrokerKind.MOSQUITTO:
            factory: MosquittoFactory = request.getfixturevalue("mosquitto_factory")
            return factory()
        if kind == BrokerKind.AMQTT:
            amqtt = _Amqtt()
            amqtt.broker.start()
            stops.append(amqtt.broker.stop)
            return amqtt
        request.getfixturevalue("aedes_installed")
        aedes = AedesBroker(tmp_path / f"aedes-{len(stops)}").start()
        stops.append(aedes.stop)
        return aedes

    yield _start
    for stop in stops:
        stop()


# --- the results record -------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interop(column): a cell of the broker interop table (deploy/brokers.md)")
    config.stash[_RESULTS] = {}


def _cell(item: pytest.Item) -> tuple[str, str] | None:
    marker = item.get_closest_marker("interop")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None:
        return None
    return str(marker.kwargs.get("row", callspec.id)), str(marker.args[0])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cell = _cell(item)
    if cell is not None and (report.when == "call" or report.outcome != "passed"):
        results = item.config.stash[_RESULTS]
        outcome = str(report.outcome)
        if _WORSE.get(outcome, 2) >= _WORSE.get(results.get(cell, "passed"), 2):
            results[cell] = outcome
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.stash.get(_RESULTS, {})
    if not results:
        return
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"row": row, "column": column, "outcome": outcome} for (row, column), outcome in sorted(results.items())]
    RESULTS_PATH.write_bytes(orjson.dumps({"results": rows}, option=orjson.OPT_INDENT_2))
