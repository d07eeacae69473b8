"""Benchmark orchestration: Mosquitto, the sink, the load generator and the systems under test, side by side.

Owns: the three modes (max rate, drain of a queued backlog, fixed rate), interleaved repetitions of the bridge and
the two baselines in the same run, measurement from outside each process (`/proc/<pid>` CPU ticks and peak RSS,
the sink's arrival times and latencies), medians, ratios, the JSON file and the PNG chart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import statistics
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

__all__ = ["BenchSettings", "RunResult", "run_bench"]

SYSTEMS = ("bridge", "naive", "receive-only")
MODES = ("drain", "max", "rate")
_TICKS = os.sysconf("SC_CLK_TCK")


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


@dataclass
class RunResult:
    """One system in one mode, one repetition."""

    system: str
    mode: str
    repetition: int
    messages: int
    delivered: int
    lost: int
    duplicates: int
    events_per_s: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cpu_s: float | None
    wall_s: float
    cores: float | None
    cpu_s_per_10k: float | None
    peak_rss_mb: float | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
        self.log: IO[str] | None = None
        self._config = workdir / f"{name}.yaml"
        if name == "bridge":
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
        if self.name == "bridge":
            return [sys.executable, "-m", "mqtt_bridge", "run", "--config", str(self._config)]
        command = [sys.executable, "-m", f"{__package__}.baselines", self.name, "--port", str(self.mqtt_port),
                   "--count", str(max(count, 1)), "--client-id", self.client_id, "--sink", self.sink_url]
        return [*command, "--setup-only"] if setup_only else command

    def start(self, count: int, setup_only: bool = False) -> None:
        """Start the process and wait until it is subscribed."""
        self.log = (self.workdir / f"{self.name}.log").open("a")
        self.process = subprocess.Popen(self._command(count, setup_only), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE if self.name != "bridge" else self.log,
                                        stderr=self.log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if self.name == "bridge":
            log_path = self.workdir / "bridge.log"
            runs = log_path.read_text().count("mqtt subscribed") if log_path.exists() else 0
            _wait(lambda: self.process is not None and (self.process.poll() is not None or
                                                        log_path.read_text().count("mqtt subscribed") > runs), 30,
                  "bridge subscribed")
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

    def cpu_s(self) -> float:
        assert self.process is not None
        return _proc_cpu_s(self.process.pid)

    def peak_rss_mb(self) -> float:
        assert self.process is not None
        return _proc_peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        """Stop cleanly (SIGTERM for the bridge, stdin EOF for the baselines)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if self.name == "bridge":
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
        self.mqtt_port = _free_port()
        self.sink_port = _free_port()
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
        _wait(self._ports_open, 15, "mosquitto and the sink")

    def _ports_open(self) -> bool:
        for port in (self.mqtt_port, self.sink_port):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    def sink_stats(self) -> dict[str, float]:
        stats: dict[str, float] = self._http.get(f"{self.sink_url}/_sink/stats", timeout=30).json()
        return stats

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
    count = int(settings.rate * settings.rate_seconds) if mode == "rate" else settings.count
    rate = settings.rate if mode == "rate" else 0.0
    workdir = Path(tempfile.mkdtemp(prefix=f"{system_name}-{mode}-", dir=rig.workdir))
    system = _System(system_name, workdir, rig.mqtt_port, rig.sink_url, settings.max_wait_s)
    rig.sink_reset()
    run = f"{mode}-{rep}"
    try:
        if mode == "drain":  # create the session, stop, queue the backlog while it is away
            system.start(count, setup_only=True)
            if system_name == "bridge":
                system.stop()
            else:
                system.result_line(30)
                system.stop()
            loader = rig.publish(count, 0.0, run)
            loader.wait(600)
            system.start(count)
        else:
            system.start(count)
            loader = rig.publish(count, rate, run)
        cpu_start = 0.0 if mode == "drain" else system.cpu_s()  # drain starts the moment it connects
        started = time.monotonic()
        if system_name == "receive-only":
            report = system.result_line(600)
            first_s, last_s = report["first_s"], report["last_s"]
            delivered, duplicates = report["received"], 0.0
            p50: float | None = None
            p95: float | None = None
            p99: float | None = None
        else:
            _wait(lambda: rig.sink_stats()["unique_seqs"] >= count, 600, f"{system_name} to deliver {count}")
            time.sleep(0.2)
            stats = rig.sink_stats()
            first_s, last_s = stats["first_s"], stats["last_s"]
            delivered, duplicates = stats["unique_seqs"], stats["duplicate_seqs"]
            p50, p95, p99 = stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]
        wall = time.monotonic() - started
        cpu = system.cpu_s() - cpu_start
        rss = system.peak_rss_mb()
        loader.wait(60)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    span = last_s - first_s
    return RunResult(
        system=system_name, mode=mode, repetition=rep, messages=count, delivered=int(delivered),
        lost=count - int(delivered), duplicates=int(duplicates),
        events_per_s=(delivered - 1) / span if span > 0 and mode != "rate" else None,
        p50_ms=p50, p95_ms=p95, p99_ms=p99, cpu_s=cpu, wall_s=wall, cores=cpu / wall if wall > 0 else None,
        cpu_s_per_10k=cpu * 10_000 / count, peak_rss_mb=rss)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summary(results: list[RunResult]) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    fields = ("events_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_s_per_10k", "cores", "peak_rss_mb", "lost",
              "duplicates")
    for mode in {r.mode for r in results}:
        for system in {r.system for r in results}:
            runs = [r for r in results if r.mode == mode and r.system == system]
            medians: dict[str, float | None] = {f: _median([getattr(r, f) for r in runs]) for f in fields}
            out.setdefault(mode, {})[system] = medians
            out[mode][system]["lost"] = float(sum(r.lost for r in runs))
            out[mode][system]["duplicates"] = float(sum(r.duplicates for r in runs))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(summary: dict[str, dict[str, dict[str, float | None]]], settings: BenchSettings) -> str:
    def fmt(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [f"{'mode':<6} {'system':<13} {'events/s':>10} {'x naive':>7} {'x ceil':>9} {'p50 ms':>8} "
             f"{'p99 ms':>8} {'cpu s/10k':>9} {'cores':>6} {'RSS MB':>7} {'lost':>5} {'dup':>4}"]
    for mode in [m for m in MODES if m in summary]:
        rows = summary[mode]
        naive = rows.get("naive", {}).get("events_per_s")
        ceiling = rows.get("receive-only", {}).get("events_per_s")
        for system in [s for s in SYSTEMS if s in rows]:
            r = rows[system]
            lines.append(
                f"{mode:<6} {system:<13} {fmt(r['events_per_s']):>10} {fmt(_ratio(r['events_per_s'], naive), 2):>7} "
                f"{fmt(_ratio(r['events_per_s'], ceiling), 2):>9} {fmt(r['p50_ms'], 1):>8} {fmt(r['p99_ms'], 1):>8} "
                f"{fmt(r['cpu_s_per_10k'], 2):>9} {fmt(r['cores'], 2):>6} {fmt(r['peak_rss_mb'], 1):>7} "
                f"{fmt(r['lost']):>5} {fmt(r['duplicates']):>4}")
    lines.append(f"(medians of {settings.repetitions} interleaved repetitions; drain/max with {settings.count:,} "
                 f"messages, rate mode {settings.rate:g} msg/s for {settings.rate_seconds:g} s; "
                 f"max_wait_s={settings.max_wait_s})")
    return "\n".join(lines)


def _chart(summary: dict[str, dict[str, dict[str, float | None]]], path: Path) -> None:
    from PIL import Image, ImageDraw  # noqa: PLC0415 - only the chart needs it

    modes = [m for m in ("drain", "max") if m in summary]
    width, height, margin = 640, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    peak = max([v["events_per_s"] or 0 for m in modes for v in summary[m].values()] + [1])
    colors = {"bridge": (31, 119, 180), "naive": (255, 127, 14), "receive-only": (150, 150, 150)}
    group_w = (width - 2 * margin) / max(1, len(modes))
    for gi, mode in enumerate(modes):
        for si, system in enumerate(SYSTEMS):
            value = summary[mode].get(system, {}).get("events_per_s") or 0
            x0 = margin + gi * group_w + 20 + si * (group_w - 40) / 3
            x1 = x0 + (group_w - 40) / 3 - 8
            y0 = height - margin - (height - 2 * margin) * value / peak
            draw.rectangle((x0, y0, x1, height - margin), fill=colors[system])
            draw.text((x0, y0 - 14), f"{value:,.0f}", fill="black")
        draw.text((margin + gi * group_w + group_w / 2 - 20, height - margin + 8), mode, fill="black")
    for si, system in enumerate(SYSTEMS):
        draw.rectangle((margin + si * 150, 12, margin + si * 150 + 12, 24), fill=colors[system])
        draw.text((margin + si * 150 + 18, 12), system, fill="black")
    draw.text((margin, height - 20), "events/s (median), higher is better", fill="black")
    image.save(path)


def run_bench(settings: BenchSettings, echo: Callable[[str], None] = print) -> dict[str, object]:
    """Run every mode and system, interleaved; write JSON and PNG into `out_dir`; return the report."""
    mosquitto = shutil.which(settings.mosquitto) or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if mosquitto is None:
        raise RuntimeError("the benchmark needs Mosquitto (apt-get install -y mosquitto)")
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="mqtt-bridge-bench-") as tmp:
        rig = _Rig(Path(tmp), mosquitto)
        try:
            for rep in range(settings.repetitions):
                for mode in settings.modes:
                    chosen = tuple(s for s in SYSTEMS if s in settings.systems)
                    order = chosen if rep % 2 == 0 else tuple(reversed(chosen))
                    for system in order:
                        result = _one(rig, settings, system, mode, rep)
                        results.append(result)
                        echo(f"rep {rep + 1} {mode:<5} {system:<13} events/s={result.events_per_s or 0:,.0f} "
                             f"cores={result.cores or 0:.2f} rss={result.peak_rss_mb or 0:.0f}MB "
                             f"lost={result.lost} dup={result.duplicates}")
        finally:
            rig.close()
    summary = _summary(results)
    stamp = time.strftime("%Y-%m-%d")
    report: dict[str, object] = {
        "date": stamp, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                   "python": platform.python_version()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
        "summary": summary, "runs": [dataclasses.asdict(r) for r in results],
    }
    (settings.out_dir / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2))
    _chart(summary, settings.out_dir / f"bench-{stamp}.png")
    echo(_table(summary, settings))
    echo(f"results: {settings.out_dir / f'bench-{stamp}.json'}")
    return report
