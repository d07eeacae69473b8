"""Fetching an image from a URL named in a message, without letting the URL become a way into the plant network.

Owns: the SSRF rules of reliability.md §4 for `routes[].image.url`, on the standard library only (requests stays
behind `api.py`): http and https only, no user:password@, the host on an allow-list, in canonical form (no decimal,
octal or hex IPv4 spellings), resolved once by us and every address checked (loopback, private, link-local and
cloud metadata, CGNAT, multicast, reserved, unspecified, IPv4-mapped/6to4/Teredo are refused unless their network
is explicitly allowed), then a connection to *that* address (pinned, so DNS rebinding cannot swap it) with TLS
still verified against the host name (`server_hostname`). Redirects are followed by hand, each hop checked again.
The body is read in chunks up to a byte cap whatever Content-Length says, within one overall deadline.

Raises `DecodeError` with the dead-letter reason: `image_url_refused` (the policy forbids it; nothing was sent),
`image_fetch_failed` (resolution, connection, TLS, HTTP status, timeout, too many redirects) or `image_rejected`
(over the byte cap). Must not touch files, the buffer or MQTT.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from mqtt_bridge import __version__
from mqtt_bridge.errors import DeadLetterReason, DecodeError

__all__ = ["FetchedImage", "UrlFetcher", "UrlPolicy", "is_forbidden_address"]

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


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """The bytes fetched and the URL they finally came from (after redirects)."""

    data: bytes
    url: str


def is_forbidden_address(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> bool:
    """True for an address the bridge must not connect to: anything not public, unless its network is allowed."""
    if any(address.version == net.version and address in net for net in allowed):
        return False
    if isinstance(address, ipaddress.IPv6Address) and (
            address.ipv4_mapped is not None or address.sixtofour is not None or address.teredo is not None
            or any(address in net for net in _NAT64)):
        return True  # an IPv4 address in IPv6 clothing: refused outright (reliability.md §4)
    return (not address.is_global or address.is_multicast or address.is_reserved or address.is_loopback
            or address.is_link_local or address.is_private or address.is_unspecified)


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
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), address, path


def _is_allowed_host(host: str, address: IPAddress | None, allow_hosts: tuple[str, ...]) -> bool:
    for allowed in allow_hosts:
        entry = allowed.lower()
        if address is not None:
            try:
                if ipaddress.ip_address(entry) == address:
                    return True
            except ValueError:
                continue
        elif entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif entry == host.rstrip("."):
            return True
    return False


def _resolve(host: str, port: int, address: IPAddress | None, policy: UrlPolicy) -> tuple[IPAddress, int]:
    """Resolve once and check every address; return the one to connect to (the pin)."""
    if address is not None:
        candidates = [address]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise DecodeError(_FAILED, f"cannot resolve {host!r}: {exc}"[:300]) from None
        candidates = []
        for info in infos:
            try:
                candidates.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
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


def _connect(scheme: str, host: str, pin: tuple[IPAddress, int], context: Callable[[], ssl.SSLContext],
             timeout_s: float) -> http.client.HTTPConnection:
    """Open a connection to the pinned address; TLS verifies the certificate against `host`."""
    address, port = pin
    try:
        sock = socket.create_connection((str(address), port), timeout=timeout_s)
    except OSError as exc:
        raise DecodeError(_FAILED, f"cannot connect to {host}:{port}: {exc}"[:300]) from None
    try:
        if scheme == "https":
            tls = context()
            sock = tls.wrap_socket(sock, server_hostname=host)
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout_s, context=tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise DecodeError(_FAILED, f"TLS with {host}:{port} failed: {exc}"[:300]) from None
    connection.sock = sock  # already connected to the pinned address: http.client will not resolve again
    return connection


def _time_left(connection: http.client.HTTPConnection, policy: UrlPolicy, deadline: float) -> None:
    """Let the next socket read wait only for the time left of the whole fetch."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DecodeError(_FAILED, f"the fetch took longer than {policy.timeout_s}s")
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


def _read_body(connection: http.client.HTTPConnection, response: http.client.HTTPResponse, policy: UrlPolicy,
               deadline: float) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                          f"Content-Length {declared} is over the limit of {policy.max_bytes}")
    chunks: list[bytes] = []
    total = 0
    while True:
        _time_left(connection, policy, deadline)
        # read1: at most one socket read, so a server dripping bytes cannot stretch one call past the deadline
        chunk = response.read1(min(_CHUNK, policy.max_bytes + 1 - total))
        if not chunk:
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
        if not _is_allowed_host(host, address, policy.allow_hosts):
            raise DecodeError(_REFUSED, f"host {host[:100]!r} is not in allow_hosts")
        pin = _resolve(host, port, address, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DecodeError(_FAILED, f"the fetch took longer than {policy.timeout_s}s")
        connection = _connect(scheme, host, pin, context, remaining)
        try:
            connection.request("GET", path, headers={
                "User-Agent": f"mqtt-vision-bridge/{__version__}", "Accept": "image/*", "Connection": "close"})
            _time_left(connection, policy, deadline)
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise DecodeError(_FAILED, f"HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise DecodeError(_FAILED, f"HTTP {response.status} from {host}")
            return FetchedImage(_read_body(connection, response, policy, deadline), url)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DecodeError(_FAILED, f"fetching from {host} failed: {type(exc).__name__}: {exc}"[:300]) from None
        finally:
            connection.close()
    raise DecodeError(_FAILED, f"more than {policy.max_redirects} redirects")
