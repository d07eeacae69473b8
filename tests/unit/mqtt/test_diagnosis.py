"""The connect classifier: each exception, CONNACK reason and close becomes the cause a user can act on, with what
to check (issue 13 item 1)."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from mqtt_bridge.mqtt.diagnosis import (
    ConnectCause,
    Endpoint,
    diagnose_close,
    diagnose_connack,
    diagnose_exception,
    diagnose_no_connack,
    diagnose_socket_error,
    diagnose_taken_over,
)

END = Endpoint("broker.plant.local", 8883, "vision-bridge-line1", is_tls=True)


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    exc.verify_code = code
    exc.verify_message = message
    return exc


@pytest.mark.parametrize(("exc", "cause", "words"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), ConnectCause.REFUSED,
     "nothing listens on broker.plant.local:8883"),
    (TimeoutError("timed out"), ConnectCause.TIMED_OUT, "connect timed out"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ConnectCause.DNS,
     "DNS name 'broker.plant.local' not found"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), ConnectCause.UNREACHABLE, "network unreachable"),
    (_verify_error(19, "self-signed certificate in certificate chain"), ConnectCause.TLS_UNTRUSTED,
     "certificate not trusted"),
    (_verify_error(20, "unable to get local issuer certificate"), ConnectCause.TLS_UNTRUSTED,
     "certificate not trusted"),
    (_verify_error(62, "Hostname mismatch, certificate is not valid for 'broker.plant.local'."),
     ConnectCause.TLS_HOSTNAME, "hostname mismatch"),
    (_verify_error(64, "IP address mismatch, certificate is not valid for '10.0.0.5'."), ConnectCause.TLS_HOSTNAME,
     "hostname mismatch"),
    (_verify_error(10, "certificate has expired"), ConnectCause.TLS_EXPIRED, "expired"),
    (ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"),
     ConnectCause.TLS_CLIENT_CERTIFICATE, "refused the client certificate"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), ConnectCause.TLS_OTHER, "TLS"),
    (ValueError("odd"), ConnectCause.OTHER, "ValueError: odd"),
])
def test_diagnose_exception_names_the_cause_in_words(exc: BaseException, cause: ConnectCause, words: str) -> None:
    """Every exception a TCP connect or TLS handshake raises maps to its cause, and the words say what happened."""
    diagnosis = diagnose_exception(exc, END)
    assert diagnosis.cause == cause
    assert words in diagnosis.what
    assert diagnosis.check


def test_diagnose_exception_hints_name_the_config_keys() -> None:
    """The hint names the setting to fix: ca_file for an untrusted CA, host/port for a refusal."""
    assert "mqtt.tls.ca_file" in diagnose_exception(_verify_error(20, "unable to get local issuer"), END).check
    assert "mqtt.host and mqtt.port" in diagnose_exception(ConnectionRefusedError(111, "refused"), END).check


@pytest.mark.parametrize(("reason", "cause", "words"), [
    (0x84, ConnectCause.PROTOCOL, "does not support this MQTT protocol version"),
    (0x85, ConnectCause.CLIENT_ID, "client id 'vision-bridge-line1' rejected"),
    (0x86, ConnectCause.NOT_AUTHORIZED, "bad user name or password"),
    (0x87, ConnectCause.NOT_AUTHORIZED, "not authorized"),
    (0x88, ConnectCause.UNAVAILABLE, "unavailable"),
    (0x89, ConnectCause.UNAVAILABLE, "busy"),
    (0x99, ConnectCause.OTHER, "0x99"),
])
def test_diagnose_connack_maps_reason_codes(reason: int, cause: ConnectCause, words: str) -> None:
    """A refusing CONNACK (MQTT 5 reason, or a 3.1.1 return code as paho maps it) names its cause."""
    diagnosis = diagnose_connack(reason, END)
    assert (diagnosis.cause, words in diagnosis.what) == (cause, True)


def test_diagnose_connack_protocol_hint_says_how_to_fix_it() -> None:
    """A broker that refuses the protocol version gets the hint to use auto or pin 3.1.1."""
    assert 'mqtt.protocol: set it to auto (or "3.1.1"' in diagnose_connack(0x84, END).check


def test_diagnose_socket_error_recognises_only_tls_alerts() -> None:
    """A logged socket error is a TLS diagnosis only when it is one; a reset is left to the close rules."""
    required = diagnose_socket_error("failed to receive on socket: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] "
                                     "tlsv13 alert certificate required (_ssl.c:2580)", END)
    assert required is not None and required.cause == ConnectCause.TLS_CLIENT_CERTIFICATE
    assert "mqtt.tls.cert_file" in required.check
    assert diagnose_socket_error("failed to receive on socket: [Errno 104] Connection reset by peer", END) is None


def test_diagnose_close_before_connack_points_at_tls_and_protocol() -> None:
    """A close right after CONNECT without an answer suggests the TLS setting and the protocol."""
    plain = Endpoint("b", 8883, "c", is_tls=False)
    diagnosis = diagnose_close(plain, before_connack=True, socket_error="")
    assert diagnosis.cause == ConnectCause.CLOSED
    assert "right after CONNECT" in diagnosis.what and "mqtt.tls.enabled" in diagnosis.check


def test_diagnose_no_connack_blames_the_protocol_only_before_mqtt5_was_proven() -> None:
    """Silence after an MQTT 5 CONNECT from a broker never seen accepting is the 3.1.1-only sign; else a timeout."""
    assert diagnose_no_connack(END, 5, is_v5_unproven=True).cause == ConnectCause.PROTOCOL
    assert diagnose_no_connack(END, 5, is_v5_unproven=False).cause == ConnectCause.TIMED_OUT


def test_diagnose_taken_over_names_the_client_id() -> None:
    """A takeover says which client id is shared and that each replica needs its own."""
    diagnosis = diagnose_taken_over(END, is_certain=True)
    assert diagnosis.cause == ConnectCause.TAKEN_OVER
    assert "same client id 'vision-bridge-line1'" in diagnosis.what and "mqtt.client_id" in diagnosis.check
    assert "probably" in diagnose_taken_over(END, is_certain=False).what


def test_diagnosis_describe_carries_host_port_and_protocol() -> None:
    """The sentence for /readyz and the status page starts with the broker address and protocol."""
    text = diagnose_connack(0x86, END).describe(END, "5")
    assert text.startswith("broker broker.plant.local:8883 (MQTT 5): not authorized: bad user name or password; check ")
