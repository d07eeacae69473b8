"""The inbound message carries its own ack: acking it acks its companion image messages after it."""

from __future__ import annotations

from mqtt_bridge.model.attachment import Attachment, ReferenceKind
from mqtt_bridge.model.inbound import Inbound


def _message(name: str, acked: list[str], result: bool = True) -> Inbound:
    def ack() -> bool:
        acked.append(name)
        return result

    return Inbound(name.encode(), b"{}", 1, 1, 1, 0.0, acker=ack)


def test_inbound_ack_acks_the_message_then_its_companions() -> None:
    """`ack()` acks the message first, then each companion; it reports the message's own ack."""
    acked: list[str] = []
    image = _message("image", acked, result=False)
    detection = _message("detection", acked).with_image(Attachment(ReferenceKind.COMPANION, b"png"), (image,))
    assert detection.ack() is True
    assert acked == ["detection", "image"]


def test_inbound_with_image_keeps_the_message_and_its_ack() -> None:
    """`with_image` adds the attachment; topic, payload, mid, generation and the ack stay those of the message."""
    acked: list[str] = []
    message = _message("m", acked)
    resolved = message.with_image(Attachment(ReferenceKind.URL, missing="x"))
    assert (resolved.topic, resolved.payload, resolved.mid, resolved.generation) == \
        (message.topic, message.payload, message.mid, message.generation)
    assert resolved.attachment == Attachment(ReferenceKind.URL, missing="x") and message.attachment is None
    assert resolved.ack() is True and acked == ["m"]
