"""What /healthz, /readyz, the status page and `mqtt-bridge status` say about a running bridge.

Owns: `ServiceState` (the point-in-time view), `IntakeState` (the MQTT side of it: the subscriber and the receiver,
in this process or in the receiver process), and the one rule that turns them into "ready" or the reasons why not,
in words a plant engineer can act on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IntakeState", "ServiceState", "compose_state"]


@dataclass(frozen=True, slots=True)
class IntakeState:
    """The MQTT side: the subscriber's connection and the receiver's commits."""

    alive: bool  # the network thread and the receiver thread run (or the receiver process reports)
    connected: bool
    subscribed: bool
    problem: str  # why the broker connection fails, in words; "" while it works
    protocol: str  # "5" or "3.1.1" once a connection was accepted
    writable: bool  # the raw log's commits succeed
    backpressured: bool  # over the high-water mark: acks are held back


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A point-in-time view for health checks and status output."""

    is_alive: bool
    is_ready: bool
    mqtt_connected: bool
    mqtt_subscribed: bool
    api_ready: bool
    buffer_writable: bool
    backpressured: bool
    buffer_depth: int
    dead_letters: int
    last_error: str
    api_not_ready_reason: str = ""  # "auth: ..." or "billing/quota: <the API's message>" while api_ready is False
    mqtt_problem: str = ""  # why the broker connection fails, in words (issue 13); "" while it works
    mqtt_protocol: str = ""  # the protocol in use once a connection was accepted ("5" or "3.1.1")
    not_ready_reason: str = ""  # why /readyz answers 503, in words; "" when ready


def compose_state(intake: IntakeState, *, threads_alive: bool, stopping: bool, api_ready: bool, api_reason: str,
                  processor_writable: bool, broker: str, buffer_depth: int, dead_letters: int,
                  last_error: str) -> ServiceState:
    """The bridge's state from its parts; ready once subscribed (connected but not yet subscribed, the broker would
    not keep our messages) with the API key accepted, commits working and the buffer below its high-water mark."""
    alive = threads_alive and intake.alive
    writable = intake.writable and processor_writable
    reasons = [(not alive, "a bridge thread is not running"),
               (not intake.connected, intake.problem or f"connecting to the MQTT broker {broker}"),
               (intake.connected and not intake.subscribed, "subscribing at the MQTT broker"),
               (not api_ready, "the Vision Events API refuses the API key"),
               (not writable, "buffer commits fail"),
               (intake.backpressured, "the buffer is over its high-water mark: acks to the broker are held back")]
    not_ready = "; ".join(text for is_cause, text in reasons if is_cause)
    return ServiceState(
        is_alive=alive and not stopping, is_ready=not not_ready,
        mqtt_connected=intake.connected, mqtt_subscribed=intake.subscribed,
        api_ready=api_ready, buffer_writable=writable, backpressured=intake.backpressured,
        buffer_depth=buffer_depth, dead_letters=dead_letters, last_error=last_error,
        api_not_ready_reason=api_reason, mqtt_problem=intake.problem, mqtt_protocol=intake.protocol,
        not_ready_reason=not_ready,
    )
