"""Benchmark orchestration: Mosquitto, the sink, the load generator and the systems under test, side by side.

Owns: the three modes (max rate, drain of a queued backlog, fixed rate), interleaved repetitions of the bridge and
the baselines in the same run (the receive-only ceilings in drain only: in the other modes the publisher would be
what they measure), measurement from outside each system (CPU, peak RSS and count of all its processes via
`devtools.bench.tree`; the sink's arrival times and latencies), the rig's own capacity (the sink alone; the
publisher into Mosquitto, checked by a counting subscriber that must see all) and the JSON file (the PNG chart is
`devtools.bench.chart`'s). Figures and the capacity rule live in `devtools.bench.report`; `run_bench` raises
`CapacityError` (after writing the results) when the rule fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests
import yaml

from mqtt_bridge.devtools.bench.chart import draw_chart
from mqtt_bridge.devtools.bench.measure import free_port, wait_for
from mqtt_bridge.devtools.bench.report import (
    BRIDGES,
    MODES,
    SYSTEMS,
    Capacity,
    RunResult,
    capacity_line,
    capacity_shortfalls,
    summarize,
    table,
)
from mqtt_bridge.devtools.bench.tree import TreeSampler, TreeUsage

__all__ = ["MODES", "SYSTEMS", "BenchSettings", "CapacityError", "RunResult", "run_bench"]


class CapacityError(RuntimeError):
    """The sink or the publisher had less than the required headroom: the figures may be the rig's."""


@dataclass(frozen=True)
class BenchSettings:
    """What `mqtt-bridge bench` can change."""

    out_dir: Path
    count: int = 20_000
    rate: float = 500.0
    rate_seconds: float = 10.0
    repetitions: int = 3
    modes: tuple[str, ...] = MODES
    max_wait_s: float = 0.5
    mosquitto: str = "mosquitto"
    systems: tuple[str, ...] = SYSTEMS


class _System:
    """A system under test as a subprocess: the bridge, or one of the baselines."""

    def __init__(self, name: str, workdir: Path, mqtt_port: int, sink_url: str, max_wait_s: float) -> None:
        self.name = name
        self.workdir = workdir
        self.mqtt_port = mqtt_port
        self.sink_url = sink_url
        self.max_wait_s = max_wait_s
        self.client_id = f"bench-{name}-{time.time_ns() % 10**9}"
        self.process: subprocess.Popen[str] | None = None
        self.tree: TreeSampler | None = None  # sampled from the start: the peak RSS covers start-up too
        self.log: IO[str] | None = None
        self._config = workdir / f"{name}.yaml"
        if name in BRIDGES:
            self._config.write_text(yaml.safe_dump({
                "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": self.client_id, "protocol": "5",
                         "receive_maximum": 500},
                "api": {"base_url": sink_url, "api_key": "bench", "retry_min_s": 0.2, "retry_max_s": 2},
                "buffer": {"path": str(workdir / "buffer"), "min_free_bytes": "64MiB"},
                "flush": {"max_wait_s": max_wait_s},
                "health": {"enabled": False},
                "logging": {"level": "INFO"},
                "routes": [{"topic": "bench/{line}/{camera}/detections", "use_case": "bench",
                            "device_id": "{line}-{camera}", "stream_id": "{camera}"}],
            }))

    def _command(self, count: int, setup_only: bool) -> list[str]:
        if self.name in BRIDGES:  # bridge-1proc: the same bridge in one process (`run --single-process`)
            return [sys.executable, "-m", "mqtt_bridge", "run", "--config", str(self._config),
                    *(["--single-process"] if self.name == "bridge-1proc" else [])]
        command = [sys.executable, "-m", f"{__package__}.baselines", self.name, "--port", str(self.mqtt_port),
                   "--count", str(max(count, 1)), "--client-id", self.client_id, "--sink", self.sink_url,
                   "--max-wait-s", str(self.max_wait_s)]
        return [*command, "--setup-only"] if setup_only else command

    def start(self, count: int, setup_only: bool = False) -> None:
        """Start the process and wait until it is subscribed."""
        self.log = (self.workdir / f"{self.name}.log").open("a")
        self.process = subprocess.Popen(self._command(count, setup_only), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE if self.name not in BRIDGES else self.log,
                                        stderr=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.tree = TreeSampler(self.process.pid).start()
        if self.name in BRIDGES:
            log_path = self.workdir / f"{self.name}.log"
            runs = log_path.read_text().count("mqtt subscribed") if log_path.exists() else 0
            wait_for(lambda: self.process is not None and (self.process.poll() is not None or
                                                           log_path.read_text().count("mqtt subscribed") > runs),
                     30, "bridge subscribed")
        else:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{self.name} did not start: {line!r}")
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited early; see {self.workdir}")

    def result_line(self, timeout_s: float) -> dict[str, float]:
        """Baselines: the JSON line printed when they have seen every message."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = ""
        while not line and time.monotonic() < deadline:
            line = self.process.stdout.readline()
        data: dict[str, float] = json.loads(line)
        return data

    def usage(self) -> TreeUsage:
        assert self.tree is not None
        return self.tree.usage()

    def stop(self) -> None:
        """Stop cleanly (SIGTERM for the bridge, stdin EOF for the baselines)."""
        if self.process is None or self.tree is None:
            return
        self.tree.stop()
        if self.process.poll() is None:
            if self.name in BRIDGES:
                self.process.send_signal(signal.SIGTERM)
            elif self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.log is not None:
            self.log.close()
        self.process = None


class _Rig:
    """Mosquitto + sink for one benchmark run."""

    def __init__(self, workdir: Path, mosquitto: str) -> None:
        self.workdir = workdir
        self.mqtt_port = free_port()
        self.sink_port = free_port()
        conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.mqtt_port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 0", "max_inflight_messages 0", "log_type error"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self._mosquitto = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        self._sink = subprocess.Popen([sys.executable, "-m", "mqtt_bridge.devtools.bench.sink", "--port",
                                       str(self.sink_port)])
        self.sink_url = f"http://127.0.0.1:{self.sink_port}"
        self._http = requests.Session()
        wait_for(self._ports_open, 15, "mosquitto and the sink")

    def _ports_open(self) -> bool:
        for port in (self.mqtt_port, self.sink_port):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    def sink_stats(self) -> dict[str, float]:
        stats: dict[str, float] = self._http.get(f"{self.sink_url}/_sink/stats", timeout=30).json()
        return stats

    def sink_count(self) -> int:
        count: int = self._http.get(f"{self.sink_url}/_sink/count", timeout=30).json()["unique_seqs"]
        return count

    def sink_reset(self) -> None:
        self._http.post(f"{self.sink_url}/_sink/reset", timeout=30)

    def publish(self, count: int, rate: float, run: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mqtt_bridge.devtools.bench.load", "--port", str(self.mqtt_port),
                                 "--count", str(count), "--rate", str(rate), "--run", run],
                                stdout=subprocess.PIPE, text=True)

    def close(self) -> None:
        self._http.close()
        for process in (self._sink, self._mosquitto):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _one(rig: _Rig, settings: BenchSettings, system_name: str, mode: str, rep: int) -> RunResult:
    """One system in one mode.

    drain: the session is created, the system stopped, the whole backlog published and acknowledged by Mosquitto,
    then the system started again; events/s runs from the first event the sink receives to the last (the receive-only
    ceilings: first to last message), and CPU from the moment the system is subscribed (its start-up and imports are
    not counted) to the last event. max: the publisher runs at full speed while the system consumes. rate: a fixed
    rate, for CPU per core and end-to-end latency.
    """
    count = int(settings.rate * settings.rate_seconds) if mode == "rate" else settings.count
    rate = settings.rate if mode == "rate" else 0.0
    workdir = Path(tempfile.mkdtemp(prefix=f"{system_name}-{mode}-", dir=rig.workdir))
    system = _System(system_name, workdir, rig.mqtt_port, rig.sink_url, settings.max_wait_s)
    rig.sink_reset()
    run = f"{mode}-{rep}"
    try:
        if mode == "drain":  # create the session, stop, queue the backlog while it is away
            system.start(count, setup_only=True)
            if system_name in BRIDGES:
                system.stop()
            else:
                system.result_line(30)
                system.stop()
            rig.publish(count, 0.0, run).communicate(timeout=600)
            system.start(count)
            loader = None
        else:
            system.start(count)
            loader = rig.publish(count, rate, run)
        cpu_start = system.usage().cpu_s
        started = time.monotonic()
        if system_name.startswith("receive-only"):
            report = system.result_line(600)
            cpu_end, wall_end = system.usage().cpu_s, time.monotonic()
            first_s, last_s = report["first_s"], report["last_s"]
            delivered, duplicates = report["received"], 0.0
            p50: float | None = None
            p95: float | None = None
            p99: float | None = None
        else:
            wait_for(lambda: rig.sink_count() >= count, 600, f"{system_name} to deliver {count}", poll_s=0.05)
            cpu_end, wall_end = system.usage().cpu_s, time.monotonic()
            time.sleep(0.2)  # anything sent twice arrives now
            stats = rig.sink_stats()
            first_s, last_s = stats["first_s"], stats["last_s"]
            delivered, duplicates = stats["unique_seqs"], stats["duplicate_seqs"]
            p50, p95, p99 = stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]
        wall = wall_end - started
        cpu = cpu_end - cpu_start
        usage = system.usage()
        if loader is not None:
            loader.communicate(timeout=60)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    span = last_s - first_s
    return RunResult(
        system=system_name, mode=mode, repetition=rep, messages=count, delivered=int(delivered),
        lost=count - int(delivered), duplicates=int(duplicates),
        events_per_s=(delivered - 1) / span if span > 0 and mode != "rate" else None,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, cpu_s=cpu, wall_s=wall, cores=cpu / wall if wall > 0 else None,
        cpu_s_per_10k=cpu * 10_000 / count, peak_rss_mb=usage.peak_rss_mb, processes=usage.processes,
        peak_pss_mb=usage.peak_pss_mb)


def _sink_capacity(rig: _Rig, count: int) -> float:
    """Events/s the sink takes from a load client posting batches of 100 straight to it."""
    rig.sink_reset()
    done = subprocess.run([sys.executable, "-m", f"{__package__}.baselines", "sink-load", "--sink", rig.sink_url,
                           "--count", str(count)], capture_output=True, text=True, timeout=600, check=True)
    rig.sink_reset()
    events_per_s: float = json.loads(done.stdout)["events_per_s"]
    return events_per_s


def _publisher_capacity(rig: _Rig, count: int) -> float:
    """Messages/s the publisher puts into Mosquitto (PUBACKed), queued for a subscribed session that is away.

    This is the drain mode's own setup, and the publisher's share of the max mode. The session is then drained by a
    counting subscriber, which must see every message (else the publisher's figure is not believed: 0).
    """
    system = _System("receive-only", Path(tempfile.mkdtemp(prefix="capacity-", dir=rig.workdir)), rig.mqtt_port,
                     rig.sink_url, 0.0)
    try:
        system.start(count, setup_only=True)
        system.result_line(30)
        system.stop()
        out, _ = rig.publish(count, 0.0, "capacity").communicate(timeout=600)
        system.start(count)
        received = system.result_line(600)
    finally:
        system.stop()
    published: dict[str, float] = json.loads(out)
    if received["received"] < count:
        return 0.0
    return published["acked"] / max(published["seconds"], 1e-6)


def _capacity(rig: _Rig, count: int) -> Capacity:
    return Capacity(sink_events_per_s=_sink_capacity(rig, count),
                    publisher_messages_per_s=_publisher_capacity(rig, count))


def run_bench(settings: BenchSettings, echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run every mode and system, interleaved; write JSON and PNG into `out_dir`; return the report.

    The rig's capacity is measured before and after the systems (the lower of the two counts); `CapacityError`
    is raised, after the results are written and printed, when the sink or the publisher had less than 3x the
    fastest system it served (`report.capacity_shortfalls`).
    """
    mosquitto = shutil.which(settings.mosquitto) or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if mosquitto is None:
        raise RuntimeError("the benchmark needs Mosquitto (apt-get install -y mosquitto)")
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mqtt-bridge-bench-") as tmp:
        rig = _Rig(Path(tmp), mosquitto)
        try:
            before = _capacity(rig, settings.count)
            echo(f"capacity before: sink {before.sink_events_per_s:,.0f} events/s, publisher "
                 f"{before.publisher_messages_per_s:,.0f} msg/s")
            chosen = tuple(s for s in SYSTEMS if s in settings.systems)
            for rep in range(settings.repetitions):
                for mode in settings.modes:
                    for system in (chosen if rep % 2 == 0 else tuple(reversed(chosen))):
                        if system.startswith("receive-only") and mode != "drain":
                            continue  # the ceilings run in drain only: elsewhere the publisher would be their limit
                        result = _one(rig, settings, system, mode, rep)
                        results.append(result)
                        echo(f"rep {rep + 1} {mode:<5} {system:<18} events/s={result.events_per_s or 0:,.0f} "
                             f"cores={result.cores or 0:.2f} rss={result.peak_rss_mb or 0:.0f}MB "
                             f"pss={result.peak_pss_mb or 0:.0f}MB "
                             f"procs={result.processes} lost={result.lost} dup={result.duplicates}")
            after = _capacity(rig, settings.count)
        finally:
            rig.close()
    capacity = Capacity(min(before.sink_events_per_s, after.sink_events_per_s),
                        min(before.publisher_messages_per_s, after.publisher_messages_per_s))
    summary = summarize(results)
    problems = capacity_shortfalls(capacity, summary)
    stamp = time.strftime("%Y-%m-%d")
    report: dict[str, object] = {
        "date": stamp,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
        "capacity": {**dataclasses.asdict(capacity), "before": dataclasses.asdict(before),
                     "after": dataclasses.asdict(after), "shortfalls": problems},
        "summary": summary, "runs": [dataclasses.asdict(r) for r in results],
    }
    (settings.out_dir / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2))
    draw_chart(summary, settings.out_dir / f"bench-{stamp}.png")
    echo(table(summary, f"(medians of {settings.repetitions} interleaved repetitions; drain/max with "
                        f"{settings.count:,} messages, rate mode {settings.rate:g} msg/s for {settings.rate_seconds:g}"
                        f" s; max_wait_s={settings.max_wait_s}; load average {load_before[0]:.1f} on "
                        f"{os.cpu_count()} CPUs at the start)"))
    echo(capacity_line(capacity, summary))
    echo(f"results: {settings.out_dir / f'bench-{stamp}.json'}")
    if problems:
        raise CapacityError("the rig may have limited the figures: " + "; ".join(problems))
    return report
