"""The broker interop matrix: which brokers, which `mqtt.protocol` settings, which checks, and each broker's limits.

Owns: the single list the interop suite (tests/integration/test_brokers.py) is parametrized from and the table in
deploy/brokers.md is rendered from (tests/interop/table.py). A target is one broker with one protocol setting of
the bridge; every target runs every check. A limit is a behaviour probed once per broker; `expected` says what the
probe must find there (True: the broker does it, False: it does not, None: not applicable), so the suite fails
when a broker changes and the table is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AEDES_VERSION",
    "BROKERS",
    "CHECKS",
    "LIMITS",
    "TARGETS",
    "BrokerInfo",
    "BrokerKind",
    "Check",
    "Limit",
    "Target",
    "limit_of",
    "target_of",
]

AEDES_VERSION = "0.51.3"  # the pin in tests/interop/aedes/package.json (a unit test keeps them equal)


class BrokerKind(StrEnum):
    """The broker implementations the suite starts."""

    MOSQUITTO = "mosquitto"
    AMQTT = "amqtt"
    AEDES = "aedes"


@dataclass(frozen=True)
class BrokerInfo:
    """A broker implementation as the table names it."""

    kind: BrokerKind
    name: str
    source: str


@dataclass(frozen=True)
class Target:
    """One broker with one `mqtt.protocol` setting of the bridge, and the protocol the bridge must end up using."""

    id: str
    broker: BrokerKind
    protocol_setting: str
    protocol_in_use: str


@dataclass(frozen=True)
class Check:
    """A behaviour every target must show (a column of the checks table)."""

    id: str
    title: str
    what: str


@dataclass(frozen=True)
class Limit:
    """A broker behaviour that matters to the bridge, probed once per broker (a column of the limits table)."""

    id: str
    title: str
    expected: dict[BrokerKind, bool | None]
    when_missing: str


BROKERS = (
    BrokerInfo(BrokerKind.MOSQUITTO, "Mosquitto 2.0", "Debian 12 package `mosquitto`, persistence on"),
    BrokerInfo(BrokerKind.AMQTT, "amqtt 0.12", "the embedded broker (`mqtt-bridge broker`, `[demo]` extra)"),
    BrokerInfo(BrokerKind.AEDES, f"Aedes {AEDES_VERSION}", "npm package `aedes` on Node's `net` server, "
               "in-memory persistence"),
)

TARGETS = (
    Target("mosquitto-5", BrokerKind.MOSQUITTO, "5", "5"),
    Target("mosquitto-3.1.1", BrokerKind.MOSQUITTO, "3.1.1", "3.1.1"),
    Target("mosquitto-auto", BrokerKind.MOSQUITTO, "auto", "5"),
    Target("amqtt-auto", BrokerKind.AMQTT, "auto", "3.1.1"),
    Target("aedes-auto", BrokerKind.AEDES, "auto", "3.1.1"),
)

CHECKS = (
    Check("delivery", "delivery",
          "QoS 1 detections (some with inline images) on several routed topics each become exactly one event in "
          "the emulator"),
    Check("restart_session", "restart with session",
          "messages published while the bridge is stopped are delivered after its restart (same client id and "
          "buffer), each exactly once, and none of those delivered before the stop comes again"),
    Check("qos0_sparkplug", "QoS 0 publisher",
          "a Sparkplug B edge node publishing NBIRTH, DBIRTH and DDATA at QoS 0 (as the specification says): "
          "every DDATA becomes one event"),
)

LIMITS = (
    Limit("mqtt5", "MQTT 5",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: False, BrokerKind.AEDES: False},
          "`mqtt.protocol: auto` falls back to 3.1.1 (a pinned `\"5\"` fails with cause=protocol_not_supported); "
          "Receive Maximum and session expiry are not available, the broker's in-flight window bounds the "
          "messages handed over un-acked"),
    Limit("redelivers_unacked", "un-acked QoS 1 sent again after a client crash",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: False, BrokerKind.AEDES: True},
          "a message the bridge had received but not yet committed and acknowledged when its process died is not "
          "sent again, so a bridge crash can lose the messages in flight (ack-after-commit protects them only on "
          "a broker that redelivers)"),
    Limit("shared_subscriptions", "shared subscriptions (`$share/`)",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: False, BrokerKind.AEDES: False},
          "no scale-out with `mqtt.shared_group`: the broker grants the `$share/...` subscription but takes it as "
          "a literal topic, so the members of the group receive nothing; run one bridge per topic subset instead"),
    Limit("session_expiry", "MQTT 5 session expiry honoured",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: None, BrokerKind.AEDES: None},
          "the session (and its queue) outlives `mqtt.session_expiry_s`"),
    Limit("queue_survives_broker_restart", "offline queue survives a broker restart",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: False, BrokerKind.AEDES: False},
          "sessions and queued messages live in the broker's memory: messages queued for the bridge while it is "
          "down are lost if the broker restarts too"),
    Limit("replay_without_retain", "offline queue replayed without the RETAIN flag",
          {BrokerKind.MOSQUITTO: True, BrokerKind.AMQTT: False, BrokerKind.AEDES: True},
          "messages queued while the bridge was away arrive flagged as retained, so companion images among them "
          "are dropped as stale (counted in mqtt_bridge_companion_images_dropped_total) and do not pair"),
)


def target_of(target_id: str) -> Target:
    """The target with this id."""
    return next(target for target in TARGETS if target.id == target_id)


def limit_of(limit_id: str) -> Limit:
    """The limit with this id."""
    return next(limit for limit in LIMITS if limit.id == limit_id)
