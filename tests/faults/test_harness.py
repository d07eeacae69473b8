"""The harness itself: the checker sees every kind of loss and duplicate, and the proxy cuts what it says it cuts.
A fault suite whose checker cannot see a loss proves nothing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_bridge.model.record import DeadLetter
from tests.faults.checker import EventIdOracle, check
from tests.faults.ledger import Ledger, Outgoing, valid_stream
from tests.faults.proxy import TcpProxy
from tests.helpers import LOCALHOST, bridge_config, wait_until


class _Address:
    host = LOCALHOST
    port = 1
    url = "mqtt://127.0.0.1:1"


def _oracle() -> EventIdOracle:
    return EventIdOracle(bridge_config(_Address(), "http://127.0.0.1:1", Path("/nonexistent-buffer"), "5"))


def _event(oracle: EventIdOracle, message: Outgoing, event_id: str | None = None) -> dict[str, object]:
    run, seq = message.msg_id.split(":")
    return {"eventId": event_id or oracle.event_id(message), "customMetadata": {"run": run, "seq": int(seq)}}


def test_checker_counts_lost_duplicated_unexpected_rewrites_and_dead_letters() -> None:
    """Each kind of anomaly is counted where it belongs; unacked messages are never called lost."""
    oracle = _oracle()
    messages = valid_stream("chk", 6)
    ledger = Ledger({m.msg_id: m for m in messages}, frozenset(m.msg_id for m in messages[:5]))
    stranger: dict[str, object] = {"eventId": "stranger", "customMetadata": {"run": "other", "seq": 1}}
    events = [_event(oracle, messages[0]), _event(oracle, messages[1]),
              _event(oracle, messages[1], event_id="another-id"),  # message 1 stored twice: a duplicate
              stranger,  # nobody published it
              _event(oracle, messages[5])]  # not acked to the publisher, delivered anyway
    writes = {str(events[0]["eventId"]): 3, str(events[1]["eventId"]): 1}
    letter = DeadLetter(reason="invalid_json", detail="", topic=messages[2].topic, route="inspection",
                        payload=messages[2].payload, received_at_s=0.0, dead_at_s=0.0)
    report = check(ledger, events, writes, [letter], oracle)
    assert report.lost == ("chk:3", "chk:4")
    assert report.duplicated == ("chk:1",)
    assert report.unexpected == 1
    assert report.rewrites == 2
    assert report.dead_lettered == {"invalid_json": 1} and report.dead_lettered_ids == {"chk:2"}
    assert report.recovered == 1 and report.unsure_missing == 0
    assert "lost=2" in report.summary() and "duplicated=1" in report.summary()


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A TCP echo server on 127.0.0.1 (one thread per connection)."""
    server = socket.create_server((LOCALHOST, 0))
    server.settimeout(0.1)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            while not stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=serve, args=(conn,))
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    yield LOCALHOST, server.getsockname()[1]
    stop.set()
    acceptor.join(5)
    for thread in threads:
        thread.join(5)
    server.close()


def _roundtrip(sock: socket.socket, data: bytes, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    sock.sendall(data)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return b""


def test_proxy_forwards_blackholes_without_closing_and_resets(echo_server: tuple[str, int]) -> None:
    """Bytes flow; a blackhole stops them with the connection still open; restore delivers; reset sends RST."""
    with TcpProxy(*echo_server) as proxy, socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        assert _roundtrip(sock, b"one", 5) == b"one"
        proxy.blackhole()
        assert _roundtrip(sock, b"two", 0.5) == b""  # swallowed, not refused: half-open
        proxy.restore()
        sock.settimeout(5)
        assert sock.recv(4096) == b"two"  # held, then delivered when the link healed
        assert proxy.reset() == 1
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            while time.monotonic() - started < 5:
                if not sock.recv(4096):
                    break
        wait_until(lambda: proxy.accepted == 1, timeout_s=1)
