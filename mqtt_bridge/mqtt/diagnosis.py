"""Why a connection to the broker failed, in words a plant engineer can act on (issue 13 item 1).

Owns: the cause enum (also the `cause` label of `mqtt_bridge_mqtt_connect_failures_total`) and the classifier that
turns what paho reports (an exception from the TCP/TLS connect, a CONNACK reason code, a DISCONNECT reason, or a
socket error paho only logged) into a `Diagnosis`: the cause, what happened, and what to check. Pure: no paho
objects, no I/O, no logging; the subscriber calls it and says the result in one line.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ConnectCause", "Diagnosis", "Endpoint", "diagnose_close", "diagnose_connack", "diagnose_exception",
           "diagnose_no_connack", "diagnose_socket_error", "diagnose_taken_over"]


class ConnectCause(StrEnum):
    """Why a connect attempt failed (or a session ended); the values are metric labels."""

    REFUSED = "refused"
    TIMED_OUT = "timed_out"
    DNS = "dns_not_found"
    UNREACHABLE = "unreachable"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_HOSTNAME = "tls_hostname_mismatch"
    TLS_EXPIRED = "tls_expired"
    TLS_CLIENT_CERTIFICATE = "tls_client_certificate"
    TLS_OTHER = "tls_error"
    NOT_AUTHORIZED = "not_authorized"
    PROTOCOL = "protocol_not_supported"
    CLIENT_ID = "client_id_rejected"
    TAKEN_OVER = "session_taken_over"
    UNAVAILABLE = "broker_unavailable"
    CLOSED = "closed_by_broker"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the bridge connects, as the messages name it."""

    host: str
    port: int
    client_id: str
    is_tls: bool = False


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One failure: its cause, what happened (`what`), and what the user should check (`check`)."""

    cause: ConnectCause
    what: str
    check: str

    def describe(self, endpoint: Endpoint, protocol: str) -> str:
        """The sentence the log, the status page, `mqtt-bridge status` and `/readyz` show."""
        return f"broker {endpoint.host}:{endpoint.port} (MQTT {protocol}): {self.what}; check {self.check}"


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that ssl.SSLCertVerificationError carries as verify_code
_X509_EXPIRED = {9, 10}  # not yet valid, expired
_X509_HOSTNAME = {62, 63, 64}  # host name, e-mail, IP address mismatch
_TLS_CLIENT_CERT_WORDS = ("certificate required", "certificate_required", "peer did not return a certificate",
                          "bad certificate", "bad_certificate", "certificate unknown", "unknown ca",
                          "certificate expired", "certificate revoked")


def _host_port(endpoint: Endpoint) -> str:
    return f"{endpoint.host}:{endpoint.port}"


def diagnose_exception(exc: BaseException, endpoint: Endpoint) -> Diagnosis:
    """Classify an exception raised while opening the TCP connection or doing the TLS handshake."""
    where = _host_port(endpoint)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _diagnose_certificate(exc, endpoint)
    if isinstance(exc, ssl.CertificateError):  # match_hostname on old paths
        return Diagnosis(ConnectCause.TLS_HOSTNAME, f"TLS: the broker certificate does not name {endpoint.host}",
                         "that mqtt.host is a name (or address) listed in the broker certificate")
    if isinstance(exc, ssl.SSLError):
        return diagnose_socket_error(str(exc), endpoint) or Diagnosis(
            ConnectCause.TLS_OTHER, f"TLS handshake failed ({exc.reason or exc})",
            "that the port expects TLS and mqtt.tls matches the broker's TLS settings")
    if isinstance(exc, socket.gaierror):
        return Diagnosis(ConnectCause.DNS, f"DNS name {endpoint.host!r} not found ({exc.strerror})",
                         "the spelling of mqtt.host and the DNS server of this machine")
    if isinstance(exc, ConnectionRefusedError):
        return Diagnosis(ConnectCause.REFUSED, f"connection refused: nothing listens on {where}",
                         "mqtt.host and mqtt.port, that the broker runs, and its listener's port")
    if isinstance(exc, TimeoutError):
        return Diagnosis(ConnectCause.TIMED_OUT, f"connect timed out: no answer from {where}",
                         "mqtt.host and mqtt.port, and a firewall or network route between here and the broker")
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
        return Diagnosis(ConnectCause.UNREACHABLE, f"network unreachable: no route to {where} ({exc.strerror})",
                         "mqtt.host and this machine's network connection and routes")
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
        return _closed(endpoint, f"connection reset by {where} during connect")
    detail = f"{type(exc).__name__}: {exc}"[:200]
    return Diagnosis(ConnectCause.OTHER, f"connect failed ({detail})", "mqtt.host, mqtt.port and mqtt.tls")


def _diagnose_certificate(exc: ssl.SSLCertVerificationError, endpoint: Endpoint) -> Diagnosis:
    code = getattr(exc, "verify_code", None)
    message = str(getattr(exc, "verify_message", "") or exc)
    if code in _X509_HOSTNAME or "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower():
        return Diagnosis(ConnectCause.TLS_HOSTNAME,
                         f"TLS: hostname mismatch: the broker certificate does not name {endpoint.host}",
                         "that mqtt.host is a name (or address) listed in the broker certificate's "
                         "subjectAltName")
    if code in _X509_EXPIRED or "expired" in message.lower() or "not yet valid" in message.lower():
        return Diagnosis(ConnectCause.TLS_EXPIRED, f"TLS: the broker certificate is expired or not yet valid "
                         f"({message})", "the broker certificate's validity dates and this machine's clock")
    return Diagnosis(ConnectCause.TLS_UNTRUSTED, f"TLS: broker certificate not trusted ({message})",
                     "that mqtt.tls.ca_file is the CA that signed the broker certificate")


def diagnose_socket_error(text: str, endpoint: Endpoint) -> Diagnosis | None:
    """Classify a socket error paho only logged (e.g. a TLS alert read after CONNECT); None when it is not TLS."""
    lowered = text.lower()
    if not any(word in lowered for word in ("ssl", "tls", "alert", "certificate")):
        return None
    if any(word in lowered for word in _TLS_CLIENT_CERT_WORDS):
        have_cert = "a client certificate" if endpoint.is_tls else "TLS"
        return Diagnosis(ConnectCause.TLS_CLIENT_CERTIFICATE,
                         f"TLS: the broker refused the client certificate ({text[:160]})",
                         f"mqtt.tls.cert_file and key_file: the broker requires {have_cert} signed by a CA it "
                         "trusts (require_certificate on Mosquitto)")
    return Diagnosis(ConnectCause.TLS_OTHER, f"TLS error ({text[:160]})",
                     "that the port expects TLS and mqtt.tls matches the broker's TLS settings")


# MQTT 5 CONNACK reason codes; paho maps the 3.1.1 return codes 1..5 onto 0x84, 0x85, 0x88, 0x86, 0x87
_CONNACK: dict[int, tuple[ConnectCause, str, str]] = {
    0x84: (ConnectCause.PROTOCOL, "the broker does not support this MQTT protocol version",
           'mqtt.protocol: set it to auto (or "3.1.1" for a broker that speaks MQTT 3.1.1 only)'),
    0x01: (ConnectCause.PROTOCOL, "the broker does not support this MQTT protocol version",
           'mqtt.protocol: set it to auto (or "3.1.1" for a broker that speaks MQTT 3.1.1 only)'),
    0x85: (ConnectCause.CLIENT_ID, "client id {client_id!r} rejected by the broker",
           "mqtt.client_id against the broker's client id rules (length, characters, allowed prefixes)"),
    0x86: (ConnectCause.NOT_AUTHORIZED, "not authorized: bad user name or password",
           "mqtt.username and mqtt.password (or password_file) against the broker's password file"),
    0x87: (ConnectCause.NOT_AUTHORIZED, "not authorized (bad user name or password, or this client may not connect)",
           "mqtt.username and mqtt.password (or password_file), and the broker's ACL for this user and client id"),
    0x8C: (ConnectCause.NOT_AUTHORIZED, "not authorized: the broker refused the authentication method",
           "mqtt.username and mqtt.password, and the broker's authentication settings"),
    0x88: (ConnectCause.UNAVAILABLE, "the broker is unavailable", "the broker's log and health"),
    0x89: (ConnectCause.UNAVAILABLE, "the broker is busy", "the broker's load and connection limits"),
    0x97: (ConnectCause.UNAVAILABLE, "the broker's quota is exceeded", "the broker's connection limits"),
    0x9F: (ConnectCause.UNAVAILABLE, "the broker's connection rate is exceeded", "the broker's rate limits"),
    0x8A: (ConnectCause.NOT_AUTHORIZED, "this client is banned by the broker", "the broker's ban list"),
    0x9C: (ConnectCause.UNAVAILABLE, "the broker points to another server (use another server)",
           "mqtt.host: the broker's operators moved it"),
    0x9D: (ConnectCause.UNAVAILABLE, "the broker moved permanently to another server",
           "mqtt.host: the broker's operators moved it"),
}


def diagnose_connack(reason: int, endpoint: Endpoint) -> Diagnosis:
    """Classify a refusing CONNACK by its MQTT 5 reason code (3.1.1 return codes as paho maps them)."""
    known = _CONNACK.get(reason)
    if known is None:
        return Diagnosis(ConnectCause.OTHER, f"the broker refused the connection (CONNACK reason 0x{reason:02X})",
                         "the broker's log for this client id")
    cause, what, check = known
    return Diagnosis(cause, what.format(client_id=endpoint.client_id), check)


def diagnose_taken_over(endpoint: Endpoint, *, is_certain: bool) -> Diagnosis:
    """Another client connected with our client id and the broker closed our session (0x8E, or the pattern)."""
    what = (f"session taken over by another client with the same client id {endpoint.client_id!r}" if is_certain
            else f"the broker keeps closing the connection right after accepting it: probably another client "
                 f"with the same client id {endpoint.client_id!r} takes the session over")
    return Diagnosis(ConnectCause.TAKEN_OVER, what,
                     "that no other bridge or tool uses mqtt.client_id (each replica needs its own client_id and "
                     "buffer)")


def diagnose_no_connack(endpoint: Endpoint, waited_s: float, *, is_v5_unproven: bool) -> Diagnosis:
    """The broker took the CONNECT but never answered it (`is_v5_unproven`: MQTT 5, never accepted here)."""
    if is_v5_unproven:
        return Diagnosis(ConnectCause.PROTOCOL,
                         f"no answer to the MQTT 5 CONNECT within {waited_s:.0f} s: the broker probably speaks MQTT "
                         "3.1.1 only (and does not parse MQTT 5)",
                         'mqtt.protocol: set it to auto (or "3.1.1")')
    return Diagnosis(ConnectCause.TIMED_OUT, f"no answer to CONNECT within {waited_s:.0f} s",
                     "that mqtt.port is the broker's MQTT listener (not another service) and the broker's load")


def diagnose_close(endpoint: Endpoint, *, before_connack: bool, socket_error: str) -> Diagnosis:
    """The broker closed the connection without a reason (no CONNACK yet, or after being connected)."""
    tls = diagnose_socket_error(socket_error, endpoint) if socket_error else None
    if tls is not None:
        return tls
    if before_connack:
        return _closed(endpoint, "the broker closed the connection right after CONNECT, without an answer"
                       + (f" ({socket_error[:120]})" if socket_error else ""))
    return Diagnosis(ConnectCause.CLOSED, "the broker closed the connection"
                     + (f" ({socket_error[:120]})" if socket_error else ""),
                     "the broker's log (restart, client id taken over, ACL, message size limits) and the network")


def _closed(endpoint: Endpoint, what: str) -> Diagnosis:
    tls_hint = ("mqtt.tls (this port may not expect TLS)" if endpoint.is_tls
                else "mqtt.tls.enabled (this port may expect TLS, e.g. 8883)")
    return Diagnosis(ConnectCause.CLOSED, what,
                     f"{tls_hint}, mqtt.protocol, and the broker's log (ACL, connection limits, client id rules)")
