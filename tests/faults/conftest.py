"""Fixtures of the fault suite: the rig (real Mosquitto, emulator, bridge processes, publishers, proxies), sizes,
the seed, `--soak`, and the results table that `make faults` writes into deploy/guarantees.md.

Options (give them with `tests/faults` on the command line, e.g. `pytest tests/faults --soak`; pytest reads a
sub-directory's options only then):

- `--soak`: run every case longer (more messages, more kills, longer outages).
- `--fault-seed N`: replay a run; the seed is random otherwise and always printed in the summary.
- `--faults-results FILE`: after the run, replace the block between the fault-results markers in FILE
  (deploy/guarantees.md) with the table of this run.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mqtt_bridge.devtools.emulator.server import Emulator
from tests.faults.checker import EventIdOracle, Report, check
from tests.faults.ledger import Ledger, Publisher
from tests.faults.processes import FaultBridge
from tests.faults.proxy import TcpProxy
from tests.helpers import BrokerAddress, MosquittoBroker, MosquittoFactory, free_port, wait_until

RESULTS_BEGIN = "<!-- fault-results:begin -->"
RESULTS_END = "<!-- fault-results:end -->"
_RESULTS_KEY = pytest.StashKey[dict[str, "CaseResult"]]()
_SEED_KEY = pytest.StashKey[int]()
_STARTED_KEY = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "fault-injection suite (tests/faults)")
    group.addoption("--soak", action="store_true", default=False, help="run the fault cases longer")
    group.addoption("--fault-seed", type=int, default=None, help="seed of the random fault schedule")
    group.addoption("--faults-results", default=None, metavar="FILE",
                    help="write the results table between the fault-results markers of FILE")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STARTED_KEY] = time.monotonic()
    if config.getoption("--soak", default=False):
        os.environ.setdefault("FUZZ_EXAMPLES", "3000")  # read by test_fuzz.py when pytest imports it


def _seed(config: pytest.Config) -> int:
    if _SEED_KEY not in config.stash:
        given = config.getoption("--fault-seed", default=None)
        config.stash[_SEED_KEY] = int(given) if given is not None else random.SystemRandom().randrange(2**31)
        config.stash[_RESULTS_KEY] = {}
    return config.stash[_SEED_KEY]


@dataclass
class CaseResult:
    """One row of the results table."""

    case: str
    size: str
    report: Report | None
    notes: str = ""
    seconds: float = 0.0


@dataclass
class FaultRig:
    """Everything one fault case needs; every part it starts is stopped by `close()` (through its handle)."""

    tmp_path: Path
    broker_factory: MosquittoFactory
    emulator: Emulator
    rng: random.Random
    seed: int
    is_soak: bool
    results: dict[str, CaseResult]
    nodeid: str
    started_s: float = field(default_factory=time.monotonic)
    bridges: list[FaultBridge] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)
    proxies: list[TcpProxy] = field(default_factory=list)

    def size(self, ci: int, soak: int) -> int:
        """A case size: small enough for CI, or the soak size with `--soak`."""
        return soak if self.is_soak else ci

    def broker(self, *, max_queued_messages: int = 100_000, extra_conf: tuple[str, ...] = ()) -> MosquittoBroker:
        """A real Mosquitto on a free port, persistence in tmp (stopped by the mosquitto fixture)."""
        return self.broker_factory(max_queued_messages=max_queued_messages, extra_conf=extra_conf)

    def bridge(self, broker: BrokerAddress, name: str = "bridge", *, routes: list[dict[str, object]] | None = None,
               **overrides: Mapping[str, object]) -> FaultBridge:
        """A bridge process (not started yet) with its own directory under tmp (`routes` replaces the test routes)."""
        bridge = FaultBridge(self.tmp_path / name, broker, self.emulator.url, overrides, routes=routes)
        self.bridges.append(bridge)
        return bridge

    def publisher(self, broker: BrokerAddress, client_id: str = "fault-publisher", *, window: int = 100,
                  rate_per_s: float = 0.0) -> Publisher:
        """A connected ledger publisher."""
        publisher = Publisher(broker, client_id, window=window, rate_per_s=rate_per_s)
        self.publishers.append(publisher)
        return publisher.connect()

    def proxy(self, target: BrokerAddress) -> TcpProxy:
        """A started loopback TCP proxy in front of `target`."""
        proxy = TcpProxy(target.host, target.port).start()
        self.proxies.append(proxy)
        return proxy

    def wait_stored(self, count: int, timeout_s: float = 60.0) -> None:
        """Wait until the API holds at least `count` events."""
        wait_until(lambda: len(self.emulator.write_counts()) >= count, timeout_s=timeout_s, interval_s=0.1,
                   message=f"{count} events stored at the API")

    def pause(self, seconds: float) -> None:
        """Let the fault last `seconds` (a fault schedule, not a wait for a condition)."""
        threading.Event().wait(seconds)

    def check(self, ledger: Ledger, bridge: FaultBridge) -> Report:
        """The verdict: ledger against the emulator's events and writes and the (stopped) bridge's dead letters."""
        return check(ledger, self.emulator.events(), self.emulator.write_counts(), bridge.dead_letters(),
                     EventIdOracle(bridge.raw))

    def record(self, case: str, size: str, report: Report | None, notes: str = "") -> None:
        """Keep this case's row for the results table."""
        self.results[self.nodeid] = CaseResult(case, size, report, notes, time.monotonic() - self.started_s)

    def close(self) -> None:
        """Stop publishers, bridges and proxies (brokers and the emulator have their own fixtures)."""
        for publisher in self.publishers:
            publisher.close()
        for bridge in self.bridges:
            bridge.stop()
        for proxy in self.proxies:
            proxy.stop()


@pytest.fixture
def fault_emulator() -> Iterator[Emulator]:
    """The API: an emulator on a fixed free port (so that a test can stop it and start it there again)."""
    emulator = Emulator(port=free_port(), use_cases=[{"name": "Line A", "id": "uc-a"},
                                                     {"name": "Line B", "id": "uc-b"}])
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def rig(request: pytest.FixtureRequest, mosquitto_factory: MosquittoFactory, fault_emulator: Emulator,
        tmp_path: Path) -> Iterator[FaultRig]:
    """The fault rig for one case, with a per-case random generator derived from the logged seed."""
    seed = _seed(request.config)
    case_seed = random.Random(f"{seed}:{request.node.nodeid}").randrange(2**31)
    rig = FaultRig(tmp_path, mosquitto_factory, fault_emulator, random.Random(case_seed), seed,
                   bool(request.config.getoption("--soak", default=False)), request.config.stash[_RESULTS_KEY],
                   request.node.nodeid)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def is_soak(request: pytest.FixtureRequest) -> bool:
    """Whether `--soak` was given."""
    return bool(request.config.getoption("--soak", default=False))


# --- the results table -----------------------------------------------------------------------------------------


def _outcomes(reporter: pytest.TerminalReporter) -> dict[str, str]:
    out: dict[str, str] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in reporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if nodeid and out.get(nodeid) not in ("failed", "error"):
                out[nodeid] = outcome
    return out


def render_results(results: dict[str, CaseResult], outcomes: dict[str, str], seed: int, elapsed_s: float,
                   is_soak: bool) -> str:
    """The markdown block: one row per case, in the order the cases ran."""
    when = dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = sum(1 for nodeid in results if outcomes.get(nodeid) in ("failed", "error"))
    lines = [
        f"Last run: {when}, {'soak' if is_soak else 'CI'} sizes, seed {seed} (`make faults "
        f"ARGS='{'--soak ' if is_soak else ''}--fault-seed={seed}'` replays it), {len(results)} cases in "
        f"{elapsed_s:.0f} s on {os.cpu_count()} cores, "
        f"{'all passed' if failed == 0 else f'{failed} FAILED'}.",
        "",
        "| case | size | lost | duplicated | rewrites | dead-lettered | notes | result |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for nodeid, row in sorted(results.items(), key=lambda item: _case_order(item[1].case)):
        report = row.report
        counts = (["-"] * 4 if report is None else
                  [str(len(report.lost)), str(len(report.duplicated)), str(report.rewrites),
                   str(report.dead_lettered_count)])
        outcome = outcomes.get(nodeid, "not run")
        lines.append(f"| {row.case} | {row.size} | {' | '.join(counts)} | {row.notes or '-'} | {outcome} |")
    fuzz = {nodeid: outcome for nodeid, outcome in outcomes.items() if "/test_fuzz.py::" in nodeid}
    if fuzz:
        bad = sum(1 for outcome in fuzz.values() if outcome in ("failed", "error"))
        verdict = "no input raised anything but the bridge's own errors" if bad == 0 else f"{bad} FAILED"
        lines += ["", f"Fuzzing (hypothesis, {os.environ.get('FUZZ_EXAMPLES', '150')} examples per test): "
                      f"{len(fuzz)} test(s) over every decoder in the registry, `Ingestor.process` and the config "
                      f"loader; {verdict}."]
    return "\n".join(lines)


def _case_order(case: str) -> tuple[int, str]:
    """T2 before T10: rows sorted by the number of the case in reliability.md §5."""
    digits = "".join(ch for ch in case[1:4] if ch.isdigit())
    return (int(digits) if case.startswith("T") and digits else 999, case)


def _write_block(path: Path, block: str) -> bool:
    text = path.read_text(encoding="utf-8")  # re-read right before writing: others edit the file too
    begin, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if begin < 0 or end < begin:
        return False
    new = text[:begin + len(RESULTS_BEGIN)] + "\n" + block + "\n" + text[end:]
    path.write_text(new, encoding="utf-8")
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if _SEED_KEY not in config.stash:
        return
    results = config.stash[_RESULTS_KEY]
    seed = config.stash[_SEED_KEY]
    elapsed = time.monotonic() - config.stash.get(_STARTED_KEY, time.monotonic())
    block = render_results(results, _outcomes(terminalreporter), seed, elapsed,
                           bool(config.getoption("--soak", default=False)))
    terminalreporter.section("fault-injection results")
    terminalreporter.write_line(block)
    target = config.getoption("--faults-results", default=None)
    if target and results:
        path = Path(target)
        if _write_block(path, block):
            terminalreporter.write_line(f"results written to {path}")
        else:
            terminalreporter.write_line(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END} block; nothing written")
