"""URL images (SSRF, reliability.md §5 T17): hostile URLs are refused before any connection; only the allowed
local test server is ever contacted. `socket.getaddrinfo` and `socket.create_connection` are patched to record
every lookup and connection and to refuse anything but that server, so nothing outside loopback is reached."""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from mqtt_bridge.errors import DecodeError
from mqtt_bridge.images.fetch import UrlFetcher, UrlPolicy, is_forbidden_address
from tests.drip import DRIPS, DripServer

JPEG = io.BytesIO()
Image.new("RGB", (32, 24), (200, 40, 40)).save(JPEG, format="JPEG")
PICTURE = JPEG.getvalue()
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        path, _, query = self.path.partition("?")
        if path == "/img.jpg":
            self._send(200, PICTURE, {"Content-Type": "image/jpeg"})
        elif path == "/redirect":
            self._send(302, b"", {"Location": query.removeprefix("to=")})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif path == "/big":  # no Content-Length: read until close
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\xff\xd8\xff" + b"x" * 5000)
            self.close_connection = True
        elif path == "/liar":
            self._send(200, PICTURE, {"Content-Length": str(10**9)}, length=False)
        elif path == "/drip":  # headers at once, then one byte every 50 ms: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif path == "/short":  # says 1000 bytes, sends 600 and closes: a truncated JPEG
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(PICTURE[:600] if len(PICTURE) > 600 else PICTURE)
            self.close_connection = True
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, PICTURE, {})
        else:
            self._send(404, b"no", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str], length: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    paths: list[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up (timeout, byte cap) breaks the pipe: expected here


@pytest.fixture(scope="module")
def shared_server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.paths = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name="test-http", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(shared_server: _Server) -> _Server:
    """The local test server (one per module), with its request log emptied."""
    shared_server.paths = []
    return shared_server


@dataclass
class _Network:
    """Records every name lookup and connection attempt; only `allowed` (the test server) may be reached."""

    allowed: set[tuple[str, int]]
    answers: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, server: _Server) -> _Network:
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.create_connection
    net = _Network(allowed={("127.0.0.1", server.server_address[1])})

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        net.lookups.append(str(host))
        if host in net.answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in net.answers[host]]
        if host == "127.0.0.1":
            return real_getaddrinfo(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "refused by the test: no lookups but the fake answers")

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        net.connects.append((str(address[0]), int(address[1])))
        if (str(address[0]), int(address[1])) not in net.allowed:
            raise ConnectionRefusedError("refused by the test: only the local test server may be contacted")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return net


def _fetcher(hosts: tuple[str, ...] = ("127.0.0.1:*",), networks: tuple[Any, ...] = LOOPBACK,
             **policy: Any) -> UrlFetcher:
    return UrlFetcher(UrlPolicy(allow_hosts=hosts, allow_networks=networks, timeout_s=policy.pop("timeout_s", 3.0),
                                **policy))


def _refused(fetcher: UrlFetcher, url: str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        fetcher.fetch(url)
    return info.value


def test_fetch_allowed_local_server_returns_the_exact_bytes(server: _Server, network: _Network) -> None:
    """With 127.0.0.1 explicitly allowed, the image comes back byte for byte over the pinned address."""
    port = server.server_address[1]
    fetched = _fetcher().fetch(f"http://127.0.0.1:{port}/img.jpg")
    assert fetched.data == PICTURE
    assert network.connects == [("127.0.0.1", port)]


def test_fetch_loopback_is_refused_by_default(server: _Server, network: _Network) -> None:
    """An allow-listed 127.0.0.1 is still refused unless its network is allowed too (the default refuses it)."""
    error = _refused(_fetcher(networks=()), f"http://127.0.0.1:{server.server_address[1]}/img.jpg")
    assert error.reason == "image_url_refused"
    assert network.connects == [] and server.paths == []


HOSTILE = [
    "http://127.0.0.2/",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://017700000001/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/x.jpg",
    "gopher://127.0.0.1:70/",
    "http://user:secret@cam1.plant.example/x.jpg",
    "http://cam1.plant.example@127.0.0.1/x.jpg",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http:///x.jpg",
    "http://cam1.plant.example/x y.jpg",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_fetch_hostile_url_refused_without_any_connection(url: str, network: _Network) -> None:
    """Loopback, metadata, private, odd IPv4 spellings, other schemes and userinfo: refused, nothing contacted."""
    hosts = ("127.0.0.2", "::1", "169.254.169.254", "fd00:ec2::254", "10.0.0.1", "192.168.1.1", "100.64.0.1",
             "224.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "::ffff:a9fe:a9fe", "2130706433", "0177.0.0.1",
             "0x7f.0.0.1", "0x7f000001", "127.1", "017700000001", "cam1.plant.example")
    error = _refused(_fetcher(hosts=hosts, networks=()), url)
    assert error.reason == "image_url_refused", error
    assert network.connects == []
    assert network.lookups == []


def test_fetch_host_not_on_the_allow_list_is_refused(network: _Network) -> None:
    """A public name that is not allow-listed is refused before it is even looked up."""
    error = _refused(_fetcher(hosts=("cam1.plant.example",)), "http://evil.example/x.jpg")
    assert error.reason == "image_url_refused" and "allow_hosts" in error.detail
    assert network.lookups == [] and network.connects == []


def test_fetch_allowed_name_resolving_inside_is_refused(network: _Network) -> None:
    """A listed name whose DNS answer is private (or mixes public and private: rebinding) is never connected."""
    network.answers["cam1.plant.example"] = ["10.1.2.3"]
    network.answers["cams.example"] = ["93.184.216.34", "169.254.169.254"]
    fetcher = _fetcher(hosts=("cam1.plant.example", "*.example"), networks=())
    assert _refused(fetcher, "http://cam1.plant.example/x.jpg").reason == "image_url_refused"
    assert _refused(fetcher, "https://cams.example/x.jpg").reason == "image_url_refused"
    assert network.lookups == ["cam1.plant.example", "cams.example"]
    assert network.connects == []


def test_fetch_connects_to_the_resolved_address_not_the_name(network: _Network) -> None:
    """The address checked is the address connected to (pinned); a public one is attempted, here refused."""
    network.answers["cam1.example"] = ["93.184.216.34"]
    error = _refused(_fetcher(hosts=("*.example:8080",), networks=()), "http://cam1.example:8080/x.jpg")
    assert error.reason == "image_fetch_failed"
    assert network.lookups == ["cam1.example"]
    assert network.connects == [("93.184.216.34", 8080)]


@pytest.mark.parametrize("target", ["http://127.0.0.2:{port}/img.jpg", "http://[::1]:{port}/img.jpg",
                                    "http://localhost:{port}/img.jpg", "http://169.254.169.254/",
                                    "file:///etc/passwd"])
def test_fetch_redirect_to_loopback_is_refused(target: str, server: _Server, network: _Network) -> None:
    """The allowed server redirects elsewhere: each hop is checked again, and the target is never contacted."""
    port = server.server_address[1]
    error = _refused(_fetcher(), f"http://127.0.0.1:{port}/redirect?to={target.format(port=port)}")
    assert error.reason == "image_url_refused"
    assert network.connects == [("127.0.0.1", port)]
    assert network.lookups in ([], ["127.0.0.1"])


def test_fetch_redirect_loop_stops(server: _Server, network: _Network) -> None:
    """Redirects are followed at most max_redirects times."""
    port = server.server_address[1]
    error = _refused(_fetcher(max_redirects=2), f"http://127.0.0.1:{port}/loop")
    assert error.reason == "image_fetch_failed" and "redirects" in error.detail
    assert len(server.paths) == 3


def test_fetch_byte_cap_does_not_trust_content_length(server: _Server, network: _Network) -> None:
    """A body over the cap is refused while streaming; a Content-Length over it is refused up front."""
    port = server.server_address[1]
    fetcher = _fetcher(max_bytes=1000)
    assert _refused(fetcher, f"http://127.0.0.1:{port}/big").reason == "image_rejected"
    assert _refused(fetcher, f"http://127.0.0.1:{port}/liar").reason == "image_rejected"


def test_fetch_timeout_and_http_errors_are_fetch_failures(server: _Server, network: _Network) -> None:
    """A server slower than the timeout (silent, or dripping bytes), and a 404, are image_fetch_failed."""
    port = server.server_address[1]
    started = time.monotonic()
    assert _refused(_fetcher(timeout_s=0.3), f"http://127.0.0.1:{port}/slow").reason == "image_fetch_failed"
    assert time.monotonic() - started < 1.4
    started = time.monotonic()
    assert _refused(_fetcher(timeout_s=0.3), f"http://127.0.0.1:{port}/drip").reason == "image_fetch_failed"
    assert time.monotonic() - started < 1.0
    error = _refused(_fetcher(), f"http://127.0.0.1:{port}/missing.jpg")
    assert error.reason == "image_fetch_failed" and "404" in error.detail


def test_fetch_https_verifies_the_certificate_against_the_host_name(server: _Server, network: _Network) -> None:
    """TLS is never unverified: a server that does not speak TLS (or has no valid certificate) fails."""
    port = server.server_address[1]
    assert _refused(_fetcher(), f"https://127.0.0.1:{port}/img.jpg").reason == "image_fetch_failed"


@pytest.mark.parametrize(("address", "forbidden"), [
    ("8.8.8.8", False), ("2001:4860:4860::8888", False), ("127.0.0.1", True), ("10.1.1.1", True),
    ("172.16.0.1", True), ("100.100.100.200", True), ("169.254.169.254", True), ("fe80::1", True),
    ("fc00::1", True), ("ff02::1", True), ("240.0.0.1", True), ("::", True), ("::ffff:8.8.8.8", False),
    ("::ffff:127.0.0.1", True), ("::ffff:10.0.0.1", True),
    ("2002:7f00:1::", True), ("64:ff9b::7f00:1", True), ("255.255.255.255", True)])
def test_fetch_forbidden_address_table(address: str, forbidden: bool) -> None:
    """Only public unicast addresses are allowed by default; a mapped IPv4 address is judged as that address."""
    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden


def test_fetch_allowed_network_opens_only_that_network() -> None:
    """allow_private_networks lets its own addresses through and nothing next to them."""
    allowed = (ipaddress.ip_network("10.20.0.0/16"),)
    assert not is_forbidden_address(ipaddress.ip_address("10.20.3.4"), allowed)
    assert is_forbidden_address(ipaddress.ip_address("10.21.0.1"), allowed)
    assert is_forbidden_address(ipaddress.ip_address("127.0.0.1"), allowed)


def test_fetch_mapped_ipv6_is_judged_as_the_ipv4_address_it_maps() -> None:
    """An IPv6 range that covers the mapped range (::/0, ::ffff:0:0/96) does not let ::ffff:127.0.0.1 through;
    only an IPv4 network that holds the mapped address does."""
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert is_forbidden_address(mapped, (ipaddress.ip_network("::/0"),))
    assert is_forbidden_address(mapped, (ipaddress.ip_network("::ffff:0:0/96"),))
    assert not is_forbidden_address(mapped, (ipaddress.ip_network("127.0.0.0/8"),))
    assert is_forbidden_address(ipaddress.ip_address("::ffff:10.0.0.1"), (ipaddress.ip_network("::/0"),))


def test_fetch_mapped_ipv6_url_under_an_ipv6_allowance_is_refused(network: _Network) -> None:
    """The URL form: [::ffff:127.0.0.1] with all of IPv6 allowed is refused before any connection."""
    fetcher = _fetcher(hosts=("::ffff:127.0.0.1",), networks=(ipaddress.ip_network("::/0"),))
    assert _refused(fetcher, "http://[::ffff:127.0.0.1]/x.jpg").reason == "image_url_refused"
    assert network.connects == []


def test_fetch_allow_hosts_entry_without_a_port_allows_only_the_default_port(network: _Network) -> None:
    """`cam1.plant.example` allows port 80 (http) and 443 (https), not 8080 or 22; `host:8080` allows that port."""
    network.answers["cam1.plant.example"] = ["10.1.2.3"]
    fetcher = _fetcher(hosts=("cam1.plant.example",), networks=())
    for url in ("http://cam1.plant.example:8080/x.jpg", "http://cam1.plant.example:22/",
                "https://cam1.plant.example:80/x.jpg", "http://cam1.plant.example:443/x.jpg"):
        error = _refused(fetcher, url)
        assert error.reason == "image_url_refused" and "allow_hosts" in error.detail, url
    assert network.lookups == [] and network.connects == []
    # with the port listed, the host is looked up (and here refused for its private address: no connection)
    assert _refused(_fetcher(hosts=("cam1.plant.example:8080",), networks=()),
                    "http://cam1.plant.example:8080/x.jpg").reason == "image_url_refused"
    assert network.lookups == ["cam1.plant.example"]


def test_fetch_allow_hosts_path_prefix_and_port(server: _Server, network: _Network) -> None:
    """`127.0.0.1:<port>/img` allows /img and /img.../ below it only, on that port only."""
    port = server.server_address[1]
    fetcher = _fetcher(hosts=(f"127.0.0.1:{port}/img.jpg",))
    assert fetcher.fetch(f"http://127.0.0.1:{port}/img.jpg").data == PICTURE
    for url in (f"http://127.0.0.1:{port}/big", f"http://127.0.0.1:{port}/img.jpgx",
                f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/img.jpg"):
        assert _refused(fetcher, url).reason == "image_url_refused", url
    assert server.paths == ["/img.jpg"]


@pytest.mark.parametrize("path", ["/img/../big", "/img/./x.jpg", "/img/%2e%2e/big", "/img/%2E%2E%2Fbig",
                                  "/img/..%2fbig", "/img/..%5cbig"])
def test_fetch_dot_segments_are_refused(path: str, server: _Server, network: _Network) -> None:
    """A path with . or .. segments, plain or percent-encoded, is refused: the server might climb out of a prefix."""
    port = server.server_address[1]
    assert _refused(_fetcher(hosts=(f"127.0.0.1:{port}/img/",)),
                    f"http://127.0.0.1:{port}{path}").reason == "image_url_refused"
    assert network.connects == []


def test_fetch_body_shorter_than_its_content_length_is_refused(server: _Server, network: _Network) -> None:
    """A body that ends before its Content-Length (a truncated JPEG) is a failed fetch, not an image."""
    error = _refused(_fetcher(), f"http://127.0.0.1:{server.server_address[1]}/short")
    assert error.reason == "image_fetch_failed" and "Content-Length" in error.detail


# --- slow servers: one deadline for the whole fetch ---------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(DRIPS))
def test_fetch_slow_drip_is_cut_off_at_the_deadline(kind: str) -> None:
    """A server that drips its status line, headers, 100 Continues, chunk sizes or body a byte at a time is cut
    off at timeout_s (each read is quick; the whole is not), as image_fetch_failed."""
    server = DripServer(give_up_s=6.0, only=kind)
    try:
        fetcher = _fetcher(hosts=(f"127.0.0.1:{server.port}",), timeout_s=0.6)
        started = time.monotonic()
        error = _refused(fetcher, f"http://127.0.0.1:{server.port}/x.jpg")
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert error.reason == "image_fetch_failed", error
    assert elapsed < 0.6 + 0.4, f"{kind}: the fetch took {elapsed:.2f}s with timeout_s=0.6"
