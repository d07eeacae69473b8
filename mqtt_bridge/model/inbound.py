"""The inbound message: one MQTT message as the broker handed it over, before anything is made of it.

Must not do I/O and must not import paho: every stage after the MQTT client sees only this.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Inbound"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, as the ingest thread needs it. `topic` stays bytes: it may not be UTF-8."""

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at_s: float
    retain: bool = False  # a retained message the broker replays on (re)subscribe, not a fresh publish

