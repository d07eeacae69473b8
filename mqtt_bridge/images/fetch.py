"""Fetching an image from a URL named in a message, without letting the URL become a way into the plant network.

Owns: the SSRF rules of reliability.md §4 for `routes[].image.url`, on the standard library only (requests stays
behind `api.py`): http and https only, no user:password@, the host on an allow-list, in canonical form (no decimal,
octal or hex IPv4 spellings), resolved once by us and every address checked (loopback, private, link-local and
cloud metadata, CGNAT, multicast, reserved, unspecified, IPv4-mapped/6to4/Teredo are refused unless their network
is explicitly allowed; an IPv4-mapped IPv6 address is judged as the IPv4 address it maps), then a connection to
*that* address (pinned, so DNS rebinding cannot swap it) with TLS still verified against the host name
(`server_hostname`). An `allow_hosts` entry is `host[:port][/path-prefix]` (`host:*` for any port): without a port it
allows only the scheme's default port; a path with `.` or `..` segments (plain or percent-encoded) is refused.
Redirects are followed by hand, each hop checked again. The body is read in chunks up to a byte cap whatever
Content-Length says, and a body shorter than its Content-Length is refused. One overall deadline (`timeout_s`)
covers connect, TLS, status line, headers (and any number of `100 Continue`), chunk-size lines and body, whatever
the server sends: every socket read and write waits only for the time left (`_DeadlineSocket`). Name resolution
(`getaddrinfo`) is the one step the deadline cannot interrupt.

Raises `DecodeError` with the dead-letter reason: `image_url_refused` (the policy forbids it; nothing was sent),
`image_fetch_failed` (resolution, connection, TLS, HTTP status, timeout, too many redirects) or `image_rejected`
(over the byte cap). Must not touch files, the buffer or MQTT.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from mqtt_bridge import __version__
from mqtt_bridge.errors import DeadLetterReason, DecodeError

__all__ = ["AllowedHost", "FetchedImage", "UrlFetcher", "UrlPolicy", "is_forbidden_address", "parse_allowed_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NUMERIC_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # a label a resolver may read as a number (2130706433, 0x7f)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_REFUSED = DeadLetterReason.IMAGE_URL_REFUSED
_FAILED = DeadLetterReason.IMAGE_FETCH_FAILED


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Where the bridge may fetch from, and how much and how long."""

    allow_hosts: tuple[str, ...]
    allow_networks: tuple[IPNetwork, ...] = ()
    timeout_s: float = 5.0
    max_bytes: int = 20 * 2**20
    max_redirects: int = 3
    ca_file: Path | None = None
    allowed: tuple[AllowedHost, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", tuple(parse_allowed_host(entry) for entry in self.allow_hosts))


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """The bytes fetched and the URL they finally came from (after redirects)."""

    data: bytes
    url: str


def is_forbidden_address(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> bool:
    """True for an address the bridge must not connect to: anything not public, unless its network is allowed.
    An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4 address it maps: an IPv6 range that
    happens to cover it does not let it through."""
    address = _unmapped(address)
    if any(address.version == net.version and address in net for net in allowed):
        return False
    if isinstance(address, ipaddress.IPv6Address) and (
            address.sixtofour is not None or address.teredo is not None
            or any(address in net for net in _NAT64)):
        return True  # an IPv4 address in IPv6 clothing: refused outright (reliability.md §4)
    return (not address.is_global or address.is_multicast or address.is_reserved or address.is_loopback
            or address.is_link_local or address.is_private or address.is_unspecified)


def _unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped IPv6 address stands for (the kernel connects to that one), else itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class AllowedHost:
    """One `allow_hosts` entry: a name, `*.suffix` or IP address, a port (None: the scheme's default port; 0: any
    port) and a path prefix ('' for any path)."""

    host: str
    address: IPAddress | None
    port: int | None
    path_prefix: str

    def allows(self, scheme: str, host: str, port: int, address: IPAddress | None, path: str) -> bool:
        """Whether this entry allows a URL with these (already checked) parts."""
        if self.port is None:
            if port != (443 if scheme == "https" else 80):
                return False
        elif self.port not in (0, port):
            return False
        if address is not None:
            if self.address is None or _unmapped(self.address) != _unmapped(address):
                return False
        elif self.address is not None:
            return False
        elif self.host.startswith("*."):
            if not (host.endswith(self.host[1:]) and len(host) > len(self.host) - 1):
                return False
        elif self.host != host.rstrip("."):
            return False
        if not self.path_prefix:
            return True
        bare = path.split("?", 1)[0]
        prefix = self.path_prefix
        return bare == prefix.rstrip("/") or bare.startswith(prefix if prefix.endswith("/") else prefix + "/")


_ENTRY_RE = re.compile(r"^(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<host>[^/:\[\]]+)|(?P<bare6>[0-9a-f.]*:[0-9a-f:.]*))"
                       r"(?::(?P<port>\*|[0-9]{1,5}))?(?P<path>/\S*)?$")


def parse_allowed_host(entry: str) -> AllowedHost:
    """Parse `host[:port][/path-prefix]` (`[v6]:port` for an IPv6 address with a port). Raises ValueError."""
    text = entry.strip().lower()
    match = _ENTRY_RE.match(text)
    if match is None:
        raise ValueError(f"{entry!r} is not host[:port][/path-prefix] ([v6]:port for an IPv6 address)")
    name = match["v6"] or match["host"] or match["bare6"] or ""
    address: IPAddress | None = None
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        if match["v6"] is not None or match["bare6"] is not None:
            raise ValueError(f"{entry!r}: {name!r} is not an IPv6 address") from None
    port_text = match["port"]
    port = None if port_text is None else 0 if port_text == "*" else int(port_text)
    if port is not None and port > 65535:
        raise ValueError(f"{entry!r}: port {port} is over 65535")
    path = match["path"] or ""
    if path and _has_dot_segment(path):
        raise ValueError(f"{entry!r}: the path prefix has . or .. segments")
    return AllowedHost(name, address, port, "" if path == "/" else path)


def _has_dot_segment(path: str) -> bool:
    """A `.` or `..` segment, plain or percent-encoded (`%2e%2e`, `..%2f`, backslashes): servers may resolve them."""
    decoded = unquote(path.split("?", 1)[0]).replace("\\", "/")
    return any(segment in (".", "..") for segment in decoded.split("/"))


def _host(url: str) -> tuple[str, str, int, IPAddress | None, str]:
    """Check a URL's form: (scheme, host, port, the host as an address or None, path with query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DecodeError(_REFUSED, f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DecodeError(_REFUSED, f"scheme {scheme or '(none)'!r} is not http or https")
    if "@" in parts.netloc:
        raise DecodeError(_REFUSED, "user information (user:password@) is not allowed in an image URL")
    host = (parts.hostname or "").lower()
    if not host:
        raise DecodeError(_REFUSED, "the URL has no host")
    address: IPAddress | None = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        if (len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels)
                or _NUMERIC_RE.match(labels[-1]) or (len(labels) == 1 and _NUMERIC_RE.match(host))):
            raise DecodeError(_REFUSED, f"host {host[:100]!r} is not a plain DNS name or IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise DecodeError(_REFUSED, "scoped IPv6 addresses are not allowed")
    if any(ord(c) < 33 or ord(c) > 126 for c in url):
        raise DecodeError(_REFUSED, "the URL has spaces or control characters")
    if _has_dot_segment(parts.path):
        raise DecodeError(_REFUSED, "the URL path has . or .. segments (plain or percent-encoded)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), address, path


def _resolve(host: str, port: int, address: IPAddress | None, policy: UrlPolicy) -> tuple[IPAddress, int]:
    """Resolve once and check every address; return the one to connect to (the pin)."""
    if address is not None:
        candidates = [_unmapped(address)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise DecodeError(_FAILED, f"cannot resolve {host!r}: {exc}"[:300]) from None
        candidates = []
        for info in infos:
            try:
                candidates.append(_unmapped(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])))
            except ValueError:
                continue
        if not candidates:
            raise DecodeError(_FAILED, f"{host!r} resolved to no address")
    for candidate in candidates:
        # one forbidden answer refuses the host: a name that resolves to inside and outside is not trusted
        if is_forbidden_address(candidate, policy.allow_networks):
            raise DecodeError(_REFUSED, f"{host!r} resolves to {candidate}, which is not a public address "
                                        "(allow its network in allow_private_networks if it must be fetched)")
    return candidates[0], port


class _DeadlinePassed(TimeoutError):
    """The whole fetch took longer than `timeout_s`."""


class _DeadlineReader(io.RawIOBase):
    """The raw stream under http.client's buffered reader: every socket read waits only for the time left."""

    def __init__(self, sock: _DeadlineSocket) -> None:
        super().__init__()
        self._sock = sock
        sock.readers += 1

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._sock.readers -= 1
            self._sock.close_if_unused()
        super().close()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._sock.arm()
        return self._sock.sock.recv_into(buffer)


class _DeadlineSocket:
    """A connected socket whose every read and write is bounded by one deadline for the whole fetch, so that a
    server dripping its status line, headers, `100 Continue`s or chunk sizes a byte at a time is cut off at
    `timeout_s` (a socket timeout alone is per read: a byte per read resets it). http.client uses only
    `makefile`, `sendall`, `settimeout` and `close` of the socket it is given; like a socket, it closes only once
    the readers made by `makefile` are closed too (http.client closes the connection before reading the body)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.readers = 0
        self._closing = False

    def arm(self) -> None:
        """Let the next socket operation wait only for the time left; raise once it is gone."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _DeadlinePassed("the deadline passed")
        self.sock.settimeout(remaining)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        """A buffered binary reader over deadline-bounded reads (http.client asks for "rb" only)."""
        if mode != "rb":
            raise ValueError(f"mode {mode!r} is not supported")
        return io.BufferedReader(_DeadlineReader(self), buffer_size=8192 if buffering < 0 else max(buffering, 1))

    def sendall(self, data: bytes) -> None:
        """Send within the deadline."""
        self.arm()
        self.sock.sendall(data)

    def settimeout(self, timeout: float | None) -> None:
        """Ignored: the deadline decides (http.client may call it)."""

    def close(self) -> None:
        """Close the socket once no reader uses it."""
        self._closing = True
        self.close_if_unused()

    def close_if_unused(self) -> None:
        """Close the socket if `close` was called and every reader is closed."""
        if self._closing and self.readers <= 0:
            self.sock.close()


def _connect(scheme: str, host: str, pin: tuple[IPAddress, int], context: Callable[[], ssl.SSLContext],
             deadline: float, policy: UrlPolicy) -> http.client.HTTPConnection:
    """Open a connection to the pinned address within the deadline; TLS verifies the certificate against `host`."""
    address, port = pin
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DecodeError(_FAILED, f"the fetch took longer than {policy.timeout_s}s")
    try:
        sock = socket.create_connection((str(address), port), timeout=remaining)
    except OSError as exc:
        raise DecodeError(_FAILED, f"cannot connect to {host}:{port}: {exc}"[:300]) from None
    try:
        if scheme == "https":
            # the handshake has one deadline of its own (the socket timeout, for the whole handshake): the time left
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock = context().wrap_socket(sock, server_hostname=host)
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, context=context())
        else:
            connection = http.client.HTTPConnection(host, port)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise DecodeError(_FAILED, f"TLS with {host}:{port} failed: {exc}"[:300]) from None
    # already connected to the pinned address: http.client will not resolve again
    connection.sock = _DeadlineSocket(sock, deadline)
    return connection


def _read_body(response: http.client.HTTPResponse, policy: UrlPolicy) -> bytes:
    declared = response.getheader("Content-Length")
    expected = int(declared) if declared is not None and declared.isdigit() and not response.chunked else None
    if expected is not None and expected > policy.max_bytes:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                          f"Content-Length {declared} is over the limit of {policy.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while True:
        # read1: at most one socket read per call; each read is bounded by the deadline of the whole fetch
        chunk = response.read1(min(_CHUNK, policy.max_bytes + 1 - total))
        if not chunk:
            if expected is not None and total < expected:
                raise DecodeError(_FAILED, f"the body ended after {total} of its {expected} bytes (Content-Length)")
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > policy.max_bytes:
            raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                              f"the image is over the limit of {policy.max_bytes} bytes")


class UrlFetcher:
    """Fetches images under one route's `UrlPolicy`. Thread-safe (each fetch has its own connection)."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy
        self._context: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        """Made on first use (loading CAs is slow): certificates and host names are always verified."""
        if self._context is None:
            context = ssl.create_default_context(cafile=str(self.policy.ca_file) if self.policy.ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._context = context
        return self._context

    def fetch(self, url: str) -> FetchedImage:
        """GET `url`, following at most `max_redirects` redirects, each checked like the URL. Raises DecodeError."""
        return _fetch(url, self.policy, self._tls_context)


def _fetch(url: str, policy: UrlPolicy, context: Callable[[], ssl.SSLContext]) -> FetchedImage:
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        scheme, host, port, address, path = _host(url)
        if not any(entry.allows(scheme, host, port, address, path) for entry in policy.allowed):
            raise DecodeError(_REFUSED, f"host {host[:100]!r} is not in allow_hosts")
        pin = _resolve(host, port, address, policy)
        connection = _connect(scheme, host, pin, context, deadline, policy)
        response: http.client.HTTPResponse | None = None
        try:
            connection.request("GET", path, headers={
                "User-Agent": f"mqtt-vision-bridge/{__version__}", "Accept": "image/*", "Connection": "close"})
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise DecodeError(_FAILED, f"HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise DecodeError(_FAILED, f"HTTP {response.status} from {host}")
            return FetchedImage(_read_body(response, policy), url)
        except TimeoutError:
            raise DecodeError(_FAILED, f"fetching from {host} took longer than {policy.timeout_s}s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DecodeError(_FAILED, f"fetching from {host} failed: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            if response is not None:
                response.close()  # its reader holds the socket open
            connection.close()
    raise DecodeError(_FAILED, f"more than {policy.max_redirects} redirects")
