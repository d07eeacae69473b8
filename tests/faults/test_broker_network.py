"""Faults between the bridge and the broker: the broker restarted with SIGTERM and killed with SIGKILL, and the
network cut half-open and reset through a loopback TCP proxy (reliability.md §5 T10-T12)."""

from __future__ import annotations

import re
import signal
import time

import pytest

from mqtt_bridge.config.load import parse_config
from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import valid_stream
from tests.faults.processes import RECEIVE_MAXIMUM, FaultBridge
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEEPALIVE_S = 5  # FaultBridge's mqtt.keepalive_s
RECONNECT_MAX_S = 2  # tests.helpers.bridge_config's mqtt.reconnect_max_s


def _sessions(bridge: FaultBridge) -> list[bool]:
    """`session_present` of every MQTT connection the bridge made, in order."""
    return [flag == "True" for flag in re.findall(r"mqtt connected session_present=(\w+)", bridge.log_text())]


def test_broker_sigterm_restart_resumes_the_session_and_loses_nothing(rig: FaultRig) -> None:
    """The broker restarted with SIGTERM mid-stream (persistence on): sessions resume, nothing is lost."""
    broker = rig.broker()
    total = rig.size(3000, 20_000)
    restarts = rig.size(1, 5)
    bridge = rig.bridge(broker).start()
    publisher = rig.publisher(broker, rate_per_s=rig.size(600, 1000))
    publisher.start(valid_stream("brokerterm", total, image_every=50))
    for _ in range(restarts):
        rig.pause(rig.rng.uniform(1.0, 2.0))
        broker.restart(signal.SIGTERM)
    publisher.join()
    assert publisher.wait_acked(60)
    rig.wait_stored(total, timeout_s=120)
    assert bridge.terminate() == 0
    sessions = _sessions(bridge)
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T10 broker restarted with SIGTERM {restarts}x mid-stream", f"{total} msgs", report,
               f"bridge reconnected {len(sessions) - 1}x, session resumed every time")
    assert len(sessions) == 1 + restarts and all(sessions[1:]), sessions
    assert_exactly_once(report, max_rewrites=restarts * (RECEIVE_MAXIMUM + 100))


@pytest.mark.parametrize(("autosave", "conf"), [
    ("default autosave", ()),
    ("autosave_on_changes, interval 1", ("autosave_on_changes true", "autosave_interval 1")),
])
def test_broker_sigkill_loses_only_what_the_broker_held_never_what_the_bridge_committed(
        rig: FaultRig, autosave: str, conf: tuple[str, ...]) -> None:
    """Broker SIGKILL: only what the broker held is lost (its limit, reported); all the bridge committed arrives."""
    broker = rig.broker(extra_conf=conf)
    size = rig.size(500, 5000)
    committed, held, after = (valid_stream("sigkill", size, start=i * size) for i in range(3))
    rig.emulator.set_faults(status_always=503)  # what the bridge commits stays in its buffer
    bridge = rig.bridge(broker).start()
    with rig.publisher(broker) as publisher:
        publisher.publish_all(committed)
        assert publisher.wait_acked(30)
        wait_until(lambda: bridge.metric("buffer_depth") == size, timeout_s=30, message="first part committed")
        assert bridge.terminate() == 0
        publisher.publish_all(held)  # acked by the broker, queued there for the bridge's session
        assert publisher.wait_acked(30)
        rig.pause(1.5)  # give an autosave of one second its chance
        assert broker.kill() == -signal.SIGKILL
        broker.start()
        rig.emulator.clear_faults()
        bridge.start()
        publisher.publish_all(after)  # paho reconnects by itself and sends what it queued meanwhile
        assert publisher.wait_acked(30)
        ledger = publisher.ledger()
    rig.wait_stored(2 * size)
    wait_until(lambda: bridge.metric("buffer_depth") == 0, timeout_s=30, message="buffer drained")
    rig.pause(1.0)  # anything the broker still had would arrive now
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    held_ids = {m.msg_id for m in held}
    lost_at_broker = set(report.lost)
    sessions = _sessions(bridge)
    rig.record(f"T11 broker SIGKILLed ({autosave})", f"{3 * size} msgs, {size} held by the broker", report,
               f"the broker lost {len(lost_at_broker)} of the {size} it held "
               f"({'no snapshot yet: its documented limit' if lost_at_broker else 'it had saved them'}); session "
               f"resumed: {sessions[-1]}; all {size} the bridge had committed delivered")
    assert lost_at_broker <= held_ids, "the bridge lost messages it had committed, or the broker lost newer ones"
    assert report.duplicated == () and report.unexpected == 0 and report.dead_lettered_count == 0
    assert report.delivered == 3 * size - len(lost_at_broker)
    if conf:  # a snapshot after every change, and the kill came after a quiet second: nothing to lose
        assert lost_at_broker == set(), report.summary()
        assert sessions[-1] is True
    else:  # no snapshot in the broker's lifetime (autosave_interval 1800 s): the session and its queue are gone
        assert lost_at_broker == held_ids, report.summary()
        assert sessions[-1] is False


def test_network_cut_half_open_and_reset_loses_nothing(rig: FaultRig) -> None:
    """Half-open and reset links to the broker: detected by keepalive, session resumed, nothing lost."""
    broker = rig.broker()
    proxy = rig.proxy(broker)
    resets = rig.size(2, 10)
    rate = 200
    total = rig.size(int(rate * (3 * KEEPALIVE_S + 2 * resets + 4)), 50_000)
    bridge = rig.bridge(proxy).start()
    publisher = rig.publisher(broker, rate_per_s=rate)  # straight to the broker: only the bridge's link is cut
    publisher.start(valid_stream("cut", total, image_every=50))
    rig.pause(1.0)
    proxy.blackhole()
    rig.pause(2.5 * KEEPALIVE_S)  # long enough for keepalive to see the dead link on both ends
    detected = bridge.log_text().count("mqtt disconnected")
    restored_at = time.monotonic()
    proxy.restore()
    wait_until(lambda: len(_sessions(bridge)) >= 2 and bridge.metric("mqtt_connected") == 1, timeout_s=30,
               message="reconnected after the half-open cut")
    reconnect_s = time.monotonic() - restored_at
    for _ in range(resets):
        rig.pause(rig.rng.uniform(0.5, 1.5))
        connections = len(_sessions(bridge))
        assert proxy.reset() >= 1
        wait_until(lambda: len(_sessions(bridge)) > connections,  # noqa: B023 - evaluated at once
                   timeout_s=RECONNECT_MAX_S + 10, message="reconnected after a reset")
    publisher.join()
    assert publisher.wait_acked(60)
    rig.wait_stored(total, timeout_s=120)
    metrics = bridge.metrics()
    retried_batches = sum(v for k, v in metrics.items() if k.startswith("api_retries{"))
    recognised = metrics.get("redeliveries_recognised", 0.0)
    assert bridge.terminate() == 0
    sessions = _sessions(bridge)
    report = rig.check(publisher.ledger(), bridge)
    rig.record(f"T12 network cut: half-open for {2.5 * KEEPALIVE_S:.0f} s, then {resets} resets (TCP proxy)",
               f"{total} msgs", report,
               f"half-open detected by keepalive; reconnected {reconnect_s:.1f} s after the link healed; "
               f"{len(sessions) - 1} reconnects, session resumed every time; {recognised:.0f} redelivered events "
               f"recognised, {retried_batches:.0f} batches retried")
    assert detected >= 1, "the half-open connection was not detected during the cut"
    assert reconnect_s <= 1.5 * KEEPALIVE_S + RECONNECT_MAX_S + 2
    assert all(sessions[1:]), sessions
    # The bound on rewrites. Each reconnect makes the broker resend every message it had sent and not seen acked:
    # MQTT 5 caps that at Receive Maximum (W) per connection, but the Mosquitto 2.0.11 this runs on exceeds W
    # while it drains a backlog (eclipse/mosquitto#2301, fixed in 2.0.13; measured here: 152, 201 and 1262
    # un-acked with W = 100, so (1 + resets) * W rewrites were not a bound at all). The bridge recognises such a
    # redelivery of a record it committed in this process and commits it once (`pipeline.recent` in the processor:
    # the last 20,000 commits, while a redelivered copy follows its first copy by at most what the broker had in
    # flight, itself at most what it queued during the cut: about rate x 2.5 keepalives = 2,500 messages), so
    # redeliveries add no rewrites here however many the broker sends. What remains is the flusher's: a retried
    # batch (a timeout after the API stored it) re-sends at most max_events events. The API has no faults in this
    # case, so the bound is normally 0; without the recognition this run measured 303 to 2266 rewrites.
    max_events = parse_config(dict(bridge.raw), env={}).flush.max_events
    assert_exactly_once(report, max_rewrites=int(retried_batches) * max_events)
