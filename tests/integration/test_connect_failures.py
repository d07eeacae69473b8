"""First contact with a broker that will not have us (issue 13 items 1, 2 and 4): each failure is said in one clear
log line within moments of start, repeated with the backoff, and the same words are the `/readyz` reason, the status
page's and `mqtt-bridge status`'s; `mqtt.protocol: auto` (the default) connects to a 3.1.1-only broker.

Real parts only: Mosquitto (TLS listeners with certificates made here by `openssl`, a password file made by
`mosquitto_passwd`), the embedded amqtt broker, the emulator, and the bridge (`Service`) in this process.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from mqtt_bridge.cli.status import status
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.config.load import parse_config
from mqtt_bridge.devtools.broker import EmbeddedBroker
from mqtt_bridge.devtools.emulator.server import Emulator
from mqtt_bridge.service import Service
from tests.helpers import (
    BrokerAddress,
    MosquittoFactory,
    PahoClient,
    bridge_config,
    detection_message,
    free_port,
    is_ci,
    wait_until,
)

LOGGER = "mqtt_bridge"


@dataclass(frozen=True)
class _Address:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass(frozen=True)
class Pki:
    """A CA that signs the broker (and a client) certificate, and a CA that signed nothing here."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Test certificates: the broker's for 127.0.0.1/localhost, and one that names another host."""
    if shutil.which("openssl") is None:
        if is_ci():
            pytest.fail("openssl is not installed")
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca", "other"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", "2", "-subj", f"/CN=test {name} CA", cwd=d)
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("wrong", "DNS:broker.elsewhere.example")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return Pki(d / "ca.pem", d / "other.pem", d / "server.pem", d / "server.key", d / "wrong.pem", d / "wrong.key")


class Bridges:
    """Start bridges that may never connect (no wait for the subscription); all shut down after the test."""

    def __init__(self, tmp_path: Path, emulator: Emulator) -> None:
        self._tmp_path = tmp_path
        self._emulator = emulator
        self.services: list[Service] = []
        self.started_at: list[float] = []

    def start(self, broker: BrokerAddress, protocol: str = "auto", **mqtt: object) -> Service:
        raw = bridge_config(broker, self._emulator.url, self._tmp_path / f"buffer-{len(self.services)}", protocol)
        section = raw["mqtt"]
        assert isinstance(section, dict)
        section.update(mqtt)
        raw["health"] = {"enabled": True, "port": 0}
        service = Service(parse_config(raw, env={}))
        self.services.append(service)
        self.started_at.append(time.monotonic())
        service.start()
        return service


@pytest.fixture
def bridges(tmp_path: Path, emulator: Emulator) -> Iterator[Bridges]:
    """Bridges started by the test, shut down after it."""
    started = Bridges(tmp_path, emulator)
    yield started
    for service in started.services:
        service.shutdown()


class _Lines:
    """The bridge's log lines, with the time each was seen."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def matching(self, *words: str) -> list[tuple[float, str]]:
        return [(record.created, record.getMessage()) for record in self._caplog.records
                if record.name.startswith(LOGGER) and all(word in record.getMessage() for word in words)]

    def wait_for(self, *words: str, count: int = 1, timeout_s: float = 10.0) -> list[tuple[float, str]]:
        def enough() -> list[tuple[float, str]]:
            found = self.matching(*words)
            return found if len(found) >= count else []

        return wait_until(enough, timeout_s=timeout_s, message=f"{count} log line(s) with {words}")

    def all(self) -> list[str]:
        return [r.getMessage() for r in self._caplog.records if r.name.startswith(LOGGER)][-20:]


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> _Lines:
    """The log of the bridges in this test, from INFO up."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    return _Lines(caplog)


def _readyz(service: Service) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.health_port}/readyz", timeout=5) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def _assert_not_ready_because(service: Service, *words: str) -> str:
    """/readyz answers 503 with the problem in words, and the state carries the same text."""
    status, body = _readyz(service)
    reason = str(body.get("reason", ""))
    assert status == 503, body
    assert all(word in reason for word in words), reason
    assert body.get("mqtt_problem") == service.state().mqtt_problem
    assert service.state().mqtt_problem in reason
    return reason


# --- nothing there --------------------------------------------------------------------------------------------


def test_connect_refused_port_is_said_within_a_second_and_repeats_with_the_backoff(
        bridges: Bridges, lines: _Lines) -> None:
    """Nothing listening: the first line comes within 1 s of start and repeats at each longer backoff step; the
    same words are the /readyz reason, on the status page and in `mqtt-bridge status`; the metric counts them."""
    address = _Address("127.0.0.1", free_port())
    service = bridges.start(address, reconnect_min_s=1, reconnect_max_s=8)
    found = lines.wait_for("mqtt connect failed", "cause=refused", count=2, timeout_s=8)
    (first_at, first), (second_at, second) = found[0], found[1]
    assert first_at - (time.time() - (time.monotonic() - bridges.started_at[0])) < 1.0
    assert f"host=127.0.0.1 port={address.port} protocol=5 cause=refused retry_in_s=3:" in first
    assert f"nothing listens on 127.0.0.1:{address.port}; check mqtt.host and mqtt.port" in first
    assert "retry_in_s=4" in second and 2.0 < second_at - first_at < 5.0
    reason = _assert_not_ready_because(service, f"broker 127.0.0.1:{address.port} (MQTT 5): connection refused")
    assert service.stats.count("mqtt_connect_failures", "refused") >= 2
    metrics, _ = service.metrics.render()
    assert b'mqtt_bridge_mqtt_connect_failures_total{cause="refused"}' in metrics
    with urllib.request.urlopen(f"http://127.0.0.1:{service.health_port}/status.json", timeout=5) as answer:
        page = orjson.loads(answer.read())
    assert page["state"]["mqttProblem"] in reason and page["state"]["notReadyReason"] == reason
    out = io.StringIO()
    config: BridgeConfig = service.config.model_copy(
        update={"health": service.config.health.model_copy(update={"port": service.health_port})})
    assert status(config, out) == 1
    assert f"mqtt problem:  broker 127.0.0.1:{address.port} (MQTT 5): connection refused" in out.getvalue()
    assert "not ready:     broker" in out.getvalue()


def test_connect_unresolvable_host_says_dns_name_not_found(bridges: Bridges, lines: _Lines) -> None:
    """A host name DNS does not know is said as such within a second, naming the host."""
    service = bridges.start(_Address("no-such-broker.invalid", 1883))
    [(at, line)] = lines.wait_for("mqtt connect failed", "cause=dns_not_found", timeout_s=3)
    assert "DNS name 'no-such-broker.invalid' not found" in line and "the spelling of mqtt.host" in line
    assert at - (time.time() - (time.monotonic() - bridges.started_at[0])) < 1.0
    _assert_not_ready_because(service, "broker no-such-broker.invalid:1883 (MQTT 5): DNS name")


# --- protocol ---------------------------------------------------------------------------------------------------


def test_connect_auto_protocol_against_a_v311_only_broker_connects_and_delivers(
        amqtt_broker: EmbeddedBroker, emulator: Emulator, bridges: Bridges, lines: _Lines) -> None:
    """The default (auto) against amqtt: falls back to 3.1.1, says why and what it means, and delivers."""
    service = bridges.start(amqtt_broker)
    wait_until(lambda: service.state().mqtt_subscribed, timeout_s=20, message="subscribed over 3.1.1")
    [(_, fallback)] = lines.matching("mqtt broker does not speak MQTT 5")
    assert "trying MQTT 3.1.1" in fallback
    [(_, in_use)] = lines.matching("mqtt protocol in use")
    assert "protocol=3.1.1 (auto: the broker does not speak MQTT 5)" in in_use
    assert "max_inflight_messages" in in_use
    assert service.state().mqtt_protocol == "3.1.1"
    with PahoClient(amqtt_broker, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol="3.1.1").connect() as publisher:
        publisher.publish("t/factory/line1/cam1/detections", detection_message(1), qos=1)
    wait_until(lambda: len(emulator.events()) == 1, timeout_s=15, message="event delivered over 3.1.1")
    assert service.state().is_ready


def test_connect_pinned_v5_against_a_v311_only_broker_says_protocol_not_supported(
        amqtt_broker: EmbeddedBroker, bridges: Bridges, lines: _Lines) -> None:
    """protocol "5" pinned against amqtt (which stalls on an MQTT 5 CONNECT): the CONNACK deadline says the
    protocol is not supported and how to fix it; it never falls back."""
    service = bridges.start(amqtt_broker, protocol="5")
    [(_, line)] = lines.wait_for("mqtt connect failed", "cause=protocol_not_supported", timeout_s=10)
    assert "protocol=5" in line and 'mqtt.protocol: set it to auto (or "3.1.1")' in line
    _assert_not_ready_because(service, "(MQTT 5): no answer to the MQTT 5 CONNECT")
    assert not lines.matching("trying MQTT 3.1.1")


# --- TLS ----------------------------------------------------------------------------------------------------------


def _tls_broker(factory: MosquittoFactory, cert: Path, key: Path, *extra: str) -> BrokerAddress:
    return factory(extra_conf=[f"certfile {cert}", f"keyfile {key}", *extra])


def test_connect_tls_with_a_ca_that_did_not_sign_the_broker_says_not_trusted(
        mosquitto_factory: MosquittoFactory, pki: Pki, bridges: Bridges, lines: _Lines) -> None:
    """A CA file that did not sign the broker certificate: `tls_untrusted`, pointing at mqtt.tls.ca_file."""
    broker = _tls_broker(mosquitto_factory, pki.server_cert, pki.server_key)
    service = bridges.start(broker, tls={"enabled": True, "ca_file": str(pki.other_ca)})
    [(_, line)] = lines.wait_for("mqtt connect failed", "cause=tls_untrusted", timeout_s=3)
    assert "TLS: broker certificate not trusted" in line and "mqtt.tls.ca_file" in line
    _assert_not_ready_because(service, "TLS: broker certificate not trusted")


def test_connect_tls_hostname_mismatch_is_said(mosquitto_factory: MosquittoFactory, pki: Pki, bridges: Bridges,
                                               lines: _Lines) -> None:
    """A broker certificate that names another host: `tls_hostname_mismatch`, naming the host we asked for."""
    broker = _tls_broker(mosquitto_factory, pki.wrong_name_cert, pki.wrong_name_key)
    service = bridges.start(broker, tls={"enabled": True, "ca_file": str(pki.ca)})
    [(_, line)] = lines.wait_for("mqtt connect failed", "cause=tls_hostname_mismatch", timeout_s=3)
    assert "does not name 127.0.0.1" in line and "subjectAltName" in line
    _assert_not_ready_because(service, "TLS: hostname mismatch")


def test_connect_tls_without_the_client_certificate_the_broker_requires(
        mosquitto_factory: MosquittoFactory, pki: Pki, bridges: Bridges, lines: _Lines) -> None:
    """Mosquitto with `require_certificate true` and no client certificate configured: `tls_client_certificate`
    (the alert comes after CONNECT; auto must not mistake it for a 3.1.1-only broker)."""
    broker = _tls_broker(mosquitto_factory, pki.server_cert, pki.server_key, f"cafile {pki.ca}",
                         "require_certificate true")
    service = bridges.start(broker, tls={"enabled": True, "ca_file": str(pki.ca)})
    [(_, line)] = lines.wait_for("mqtt connect failed", "cause=tls_client_certificate", timeout_s=5)
    assert "refused the client certificate" in line and "mqtt.tls.cert_file and key_file" in line
    assert not lines.matching("trying MQTT 3.1.1")
    _assert_not_ready_because(service, "TLS: the broker refused the client certificate")


# --- credentials and client id ------------------------------------------------------------------------------------


def test_connect_wrong_password_says_not_authorized_once_per_attempt(
        mosquitto_factory: MosquittoFactory, tmp_path: Path, bridges: Bridges, lines: _Lines) -> None:
    """Mosquitto with a password file: a wrong password is one `not_authorized` line per attempt, never the
    misleading "Protocol error"; the password is never logged."""
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "line1", "right-secret"], check=True,
                   capture_output=True, timeout=30)
    broker = mosquitto_factory(extra_conf=["allow_anonymous false", f"password_file {passwords}"])
    service = bridges.start(broker, username="line1", password="wrong-secret")
    [(_, line)] = lines.wait_for("mqtt connect failed", "cause=not_authorized", timeout_s=3)
    assert "not authorized" in line and "mqtt.username and mqtt.password" in line
    _assert_not_ready_because(service, "not authorized")
    time.sleep(3.5)  # a second attempt (after 1 s, then 2 s): still no "Protocol error" line
    assert not lines.matching("Protocol error")
    assert all("wrong-secret" not in text for text in lines.all())


def test_connect_second_bridge_with_the_same_client_id_both_say_takeover(
        mosquitto_factory: MosquittoFactory, bridges: Bridges, lines: _Lines) -> None:
    """Two bridges with one client id kick each other off the broker; each of them says so (Mosquitto closes the
    session silently, so it is the pattern that tells)."""
    broker = mosquitto_factory()
    client_id = f"shared-{uuid.uuid4().hex[:6]}"
    first = bridges.start(broker, client_id=client_id)
    wait_until(lambda: first.state().mqtt_subscribed, timeout_s=10, message="first bridge subscribed")
    second = bridges.start(broker, client_id=client_id)
    for service in (first, second):
        wait_until(lambda s=service: f"same client id '{client_id}'" in s.state().mqtt_problem,  # type: ignore[misc]
                   timeout_s=20, message="takeover said by each bridge")
    found = lines.matching("mqtt connect failed", "cause=session_taken_over", f"same client id '{client_id}'")
    assert len(found) >= 2
    assert "each replica needs its own client_id" in found[0][1]
