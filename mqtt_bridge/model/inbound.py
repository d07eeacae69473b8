"""The inbound message: one MQTT message as the broker handed it over, carrying its own ack.

Owns: the value every stage after the MQTT client sees, and the rule that whoever finishes with a message acks it
through the message itself (`Inbound.ack`). Out of the subscriber (`mqtt.subscriber`), the ack is the broker ack,
fenced by connection generation there, which the receiver calls after the raw log commit. Out of the raw log
(`pipeline.processor`), the ack means "this raw entry is finished": the processor calls it for what its commit
covers, the image references for an image no detection claimed. A detection that was paired with companion image
messages carries them, and its ack acks them too. Must not do I/O and must not import paho.
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

    `acker` acknowledges this one message (to the broker, False when it could not: an older connection's packet,
    or the client refused; or, in the processor, marks its raw entry finished); call `ack()` instead, which also
    acks the `companions`. `attachment` is the image the image references resolved for it (or why there is none);
    None when it needed none.
    """

    topic: bytes
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at_s: float
    retain: bool = False  # a retained message the broker replays on (re)subscribe, not a fresh publish
    properties: bytes = field(default=b"", kw_only=True, repr=False)  # the MQTT 5 properties kept (raw log), JSON
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
