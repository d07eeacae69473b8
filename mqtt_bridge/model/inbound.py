"""The inbound message: one MQTT message as the broker handed it over, carrying its own ack.

Owns: the value every stage after the MQTT client sees, and the rule that whoever finishes with a message acks it
through the message itself (`Inbound.ack`): the receiver after the durable commit, the image references when they
drop an image no detection claimed. The ack is a plain callable bound by the subscriber (`mqtt.subscriber`), fenced
by connection generation there; a detection that was paired with companion image messages carries them, and its
ack acks them too. Must not do I/O and must not import paho.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from mqtt_bridge.model.attachment import Attachment

__all__ = ["Inbound"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message. `topic` stays bytes: it may not be UTF-8.

    `acker` acknowledges this one packet to the broker (False when it could not: an older connection's packet, or
    the client refused); call `ack()` instead, which also acks the `companions`. `attachment` is the image the
    image references resolved for it (or why there is none); None when it needed none.
    """

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at_s: float
    retain: bool = False  # a retained message the broker replays on (re)subscribe, not a fresh publish
    acker: Callable[[], bool] = field(kw_only=True, repr=False, compare=False)
    attachment: Attachment | None = field(default=None, kw_only=True)
    companions: tuple[Inbound, ...] = field(default=(), kw_only=True)

    def ack(self) -> bool:
        """Acknowledge the message, then its companion image messages. True when the message's own ack went out."""
        acked = self.acker()
        for companion in self.companions:
            companion.ack()
        return acked

    def with_image(self, attachment: Attachment | None, companions: tuple[Inbound, ...] = ()) -> Inbound:
        """The same message with its resolved image (or why there is none) and the image messages acked with it."""
        return dataclasses.replace(self, attachment=attachment, companions=companions)
