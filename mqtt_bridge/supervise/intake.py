"""The intake: the MQTT subscriber and the receiver that logs what it hands over (design §3), built the same way in
the bridge's one process (`service`) and in the receiver process (`supervise.receiver_process`).

Owns: what the bridge subscribes to (the routes' filters and the companion image topics), the wiring of subscriber →
receiver → raw log, the intake's report (its state and counters, which the receiver process sends every
`link.REPORT_INTERVAL_S`), and `RemoteIntake`, the worker's view of a receiver in another process: its last report,
its counters absorbed into the worker's `Stats` (so that /metrics and the status page count them), and, when no
report is fresh, a receiver that is not connected, in words.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.images.reference_plans import companion_subscriptions
from mqtt_bridge.images.shedding import ImageShedder
from mqtt_bridge.mqtt.subscriber import MqttSubscriber
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.pipeline.receiver import Receiver
from mqtt_bridge.routing.router import Router
from mqtt_bridge.storage.buffer import DiskBuffer
from mqtt_bridge.supervise.state import IntakeState

__all__ = ["Intake", "RemoteIntake", "build_intake", "subscriptions_for"]

_STALE_S = 3.0  # a receiver process that has not reported for this long counts as not connected


def subscriptions_for(router: Router) -> list[str]:
    """The topic filters to subscribe to: the routes', then the companion image topics."""
    return list(dict.fromkeys(router.subscriptions() + companion_subscriptions(router)))


@dataclass(slots=True)
class Intake:
    """The subscriber and its receiver (run `receiver.run` in a thread, then `subscriber.start()`)."""

    receiver: Receiver
    subscriber: MqttSubscriber
    subscriptions: list[str]

    def state(self, receiver_alive: bool) -> IntakeState:
        """Its state now; `receiver_alive`: the receiver thread runs."""
        subscriber = self.subscriber
        return IntakeState(alive=receiver_alive and subscriber.is_alive(), connected=subscriber.is_connected,
                           subscribed=subscriber.is_subscribed, problem=subscriber.problem,
                           protocol=subscriber.protocol_in_use or "", writable=self.receiver.is_writable,
                           backpressured=self.receiver.is_backpressured)

    def report(self, stats: Stats, receiver_alive: bool) -> dict[str, object]:
        """What the receiver process tells the worker: its state, counters and gauges."""
        state = self.state(receiver_alive)
        return {"pid": os.getpid(), "state": {name: getattr(state, name) for name in IntakeState.__slots__},
                "counters": stats.counters(), "gauges": stats.gauges()}


def build_intake(config: BridgeConfig, buffer: DiskBuffer, stats: Stats, stop: threading.Event, *,
                 on_logged: Callable[[], None], on_fatal: Callable[[str], None], subscriptions: list[str],
                 shedder: ImageShedder | None) -> Intake:
    """Subscriber → receiver → the buffer's raw log; the receiver holds acks over the high-water mark unless
    `shedder` lets it go on."""
    receiver = Receiver(buffer.raw, buffer.is_over_high_water, stats, stop, on_logged,
                        max_pending=max(2 * config.mqtt.receive_maximum, 1000),
                        may_exceed_high_water=shedder.may_exceed_high_water if shedder else None,
                        max_group_bytes=max(2**20, config.buffer.min_free_bytes // 4))
    subscriber = MqttSubscriber(config.mqtt, subscriptions, receiver.offer, on_fatal,
                                on_connect_failure=lambda cause: stats.add("mqtt_connect_failures", label=cause))
    return Intake(receiver, subscriber, subscriptions)


class RemoteIntake:
    """The receiver process, as the worker sees it through its reports (`update` from the link's reader thread)."""

    def __init__(self, stats: Stats, broker: str) -> None:
        self._stats = stats
        self._broker = broker
        self._lock = threading.Lock()
        self._state: IntakeState | None = None
        self._reported_at = 0.0
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        """The receiver process's pid, from its last report (None before the first)."""
        with self._lock:
            return self._pid

    def update(self, report: dict[str, object]) -> None:
        """Take one report: its state, and its counters and gauges into the worker's `Stats`."""
        fields = report.get("state")
        counters = report.get("counters")
        gauges = report.get("gauges")
        if not isinstance(fields, dict) or not isinstance(counters, dict) or not isinstance(gauges, dict):
            return
        self._stats.absorb(f"receiver-{report.get('pid')}", counters, gauges)
        pid = report.get("pid")
        with self._lock:
            self._pid = pid if isinstance(pid, int) else None
            self._state = IntakeState(**fields)
            self._reported_at = time.monotonic()

    def state(self) -> IntakeState:
        """The last report's state while it is fresh; otherwise a receiver that is not connected (starting, or
        being restarted by the supervisor)."""
        with self._lock:
            state, age = self._state, time.monotonic() - self._reported_at
        if state is not None and age <= _STALE_S:
            return state
        problem = (f"the receiver process has not reported for {age:.0f} s (the supervisor restarts it)"
                   if state is not None else f"the receiver process is starting (broker {self._broker})")
        return IntakeState(alive=True, connected=False, subscribed=False, problem=problem, protocol="",
                           writable=True, backpressured=False)
