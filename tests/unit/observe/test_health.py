"""The health server's defences (issue 16 item 4), against a real server on 127.0.0.1: a fixed worker pool with
idle timeouts, the Host check (DNS rebinding), the POST login with a signed session cookie, the start warning."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mqtt_bridge.observe.health import COOKIE, HealthServer
from tests.unit.observe.state_stub import StateStub


def _server(**options: object) -> HealthServer:
    state = StateStub()
    return HealthServer("127.0.0.1", 0, lambda: state, metrics=lambda: (b"m 1\n", "text/plain"),
                        **options)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[HealthServer]:
    running = _server(token="tok-77aa", allowed_hosts=["bridge-0.plant.svc"], idle_timeout_s=0.5, workers=4,
                      pending=4)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _request(server: HealthServer, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_health_idle_connections_do_not_hold_a_thread_each_and_are_closed(server: HealthServer) -> None:
    """60 idle connections: the server runs at most its 4 workers; the idle ones are closed after the timeout,
    those past the waiting list at once, and a probe is answered afterwards."""
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(60)]
    try:
        time.sleep(0.3)
        assert threading.active_count() - before <= 4 + 1, "a thread per idle connection"
        started = time.monotonic()
        for sock in idle[:4]:  # the four a worker took: closed by the server after idle_timeout_s
            assert sock.recv(100) == b""
        assert time.monotonic() - started < 3.0
    finally:
        for sock in idle:
            sock.close()
    response = _request(server, "GET", "/healthz")
    assert response.status == 200
    assert threading.active_count() - before <= 4 + 1


@pytest.mark.parametrize(("host", "status"), [("evil.example", 421), ("evil.example:9100", 421),
                                              ("localhost.evil.example", 421), ("localhost", 200),
                                              ("127.0.0.1:9100", 200), ("[::1]:9100", 200), ("10.1.2.3:9100", 200),
                                              ("bridge-0.plant.svc:9100", 200), ("BRIDGE-0.plant.svc.", 200)])
def test_health_host_header_must_name_this_bridge(server: HealthServer, host: str, status: int) -> None:
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends `Host: evil.example`: refused."""
    assert _request(server, "GET", "/healthz", {"Host": host}).status == status
    assert _request(server, "GET", "/metrics", {"Host": host, "Authorization": "Bearer tok-77aa"}).status == status


def test_health_login_is_a_post_and_the_cookie_is_a_signed_session(server: HealthServer) -> None:
    """The form POSTs the token; the cookie holds no token, works, and cannot be forged or carried over."""
    page = _request(server, "GET", "/status")
    assert page.status == 401
    assert _request(server, "GET", "/status?token=tok-77aa").status == 401  # a token in a URL logs nobody in
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _request(server, "POST", "/status", form, b"token=wrong").status == 401
    login = _request(server, "POST", "/status", form, b"token=tok-77aa")
    assert login.status == 303 and login.headers["Location"] == "/status"
    cookie = login.headers["Set-Cookie"].split(";", 1)[0]
    assert cookie.startswith(f"{COOKIE}=") and "tok-77aa" not in cookie
    assert _request(server, "GET", "/metrics", {"Cookie": cookie}).status == 200
    assert _request(server, "GET", "/metrics", {"Cookie": f"{COOKIE}=tok-77aa"}).status == 401
    issued, _, mac = cookie.split("=", 1)[1].partition(".")
    assert _request(server, "GET", "/metrics", {"Cookie": f"{COOKIE}={int(issued) + 1}.{mac}"}).status == 401
    other = _server(token="tok-77aa")
    other.start()
    try:  # another process (a restart) has another key: the old cookie is worth nothing
        assert _request(other, "GET", "/metrics", {"Cookie": cookie}).status == 401
    finally:
        other.stop()
    cross = _request(server, "POST", "/status", {**form, "Origin": "http://evil.example"}, b"token=tok-77aa")
    assert cross.status == 403


def test_health_warns_when_listening_beyond_loopback_without_a_token(caplog: pytest.LogCaptureFixture) -> None:
    """0.0.0.0 without a token warns at start; with a token, or on loopback, it does not."""
    state = StateStub()
    for host, token, warns in (("0.0.0.0", None, True), ("0.0.0.0", "t0ken-1", False),
                               ("127.0.0.1", None, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mqtt_bridge.observe.health"):
            running = HealthServer(host, 0, lambda: state, token=token)
            running.start()
            running.stop()
        warned = any("without a token" in record.getMessage() for record in caplog.records)
        assert warned is warns, (host, token)
