"""Hostile input mixed into a valid stream, through a real broker into the bridge process (reliability.md §5 T16):
every hostile message is dead-lettered with its reason (or refused by the broker), every valid one delivered once,
the process stays up, and its memory stays bounded."""

from __future__ import annotations

import socket
import struct
from collections import Counter

import orjson
import pytest

from tests.faults.checker import assert_exactly_once
from tests.faults.conftest import FaultRig
from tests.faults.ledger import Outgoing, valid_stream
from tests.helpers import BrokerAddress, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAP = 256 * 1024  # mqtt.max_payload_bytes of the bridge in this case
TOPIC = "t/factory/L1/cam1/detections"
INFERENCE = "t/inference/cam9"

Hostile = tuple[str, bytes, frozenset[str]]  # topic, payload, acceptable outcomes ("delivered" or a reason)


def _box(**fields: object) -> dict[str, object]:
    return {"class": "a", "confidence": 0.5, "x": 1, "y": 1, "width": 1, "height": 1, **fields}


def _hostile(n: int) -> list[Hostile]:
    """One round of hostile messages; `n` makes every payload unique (dead letters are matched by their bytes)."""
    invalid_json = frozenset({"invalid_json"})
    invalid_message = frozenset({"invalid_message"})
    tag = str(n).encode()
    return [
        (TOPIC, b'{"detections": [' + tag, invalid_json),
        (TOPIC, b"\xff\xfe\xfd not utf-8 " + tag, invalid_json),
        (TOPIC, b"[" * (100_000 + n) + b"]" * (100_000 + n), invalid_json),  # 100k-deep nesting, under the cap
        (TOPIC, b'{"a":' * 40_000 + tag + b"}" * 40_000, invalid_json),  # 40k-deep objects, under the cap
        (TOPIC, b'{"detections": [{"class": "a", "confidence": ' + b"9" * 100_000 + b"}]}" + tag, invalid_json),
        (TOPIC, orjson.dumps({"detections": [_box()]})[:-1] + b', "n": 1e400}' + tag, invalid_json),
        (TOPIC, b'{"pad": "' + b"x" * (CAP + n) + b'"}', frozenset({"payload_too_large"})),
        (TOPIC, b"\x00" * (64 + n), invalid_json),
        (TOPIC, orjson.dumps({"detections": [_box(**{"class": f"nul\u0000{n}"})]}),
         frozenset({"delivered", "invalid_event", "api_rejected"})),
        (TOPIC, orjson.dumps({"metadata": {"k\u0000": f"v\u0000{n}"}, "detections": []}),
         frozenset({"delivered", "invalid_event", "invalid_message", "api_rejected"})),
        (TOPIC, orjson.dumps([n]), invalid_message),
        (TOPIC, orjson.dumps(f"a string {n}"), invalid_message),
        (TOPIC, str(n).encode(), invalid_message),
        (TOPIC, b"null " + b" " * n, invalid_message),
        (TOPIC, orjson.dumps({"detections": f"not a list {n}"}), invalid_message),
        (TOPIC, orjson.dumps({"detections": [{"class": n}]}), invalid_message),
        (TOPIC, orjson.dumps({"detections": [_box(x="left")], "n": n}), invalid_message),
        (TOPIC, b'{"detections": [{"class": "a' + tag + b'", "confidence": 0.5, "x": 1, "y": 1, "width": '
         + b"1" * 30 + b', "height": 1}]}', frozenset({"delivered", "invalid_event", "api_rejected"})),
        (TOPIC, orjson.dumps({"timestamp": {"when": n}}), invalid_message),
        (TOPIC, orjson.dumps({"timestamp": f"yesterday {n}"}), frozenset({"bad_timestamp"})),
        (TOPIC, orjson.dumps({"image": {"data": f"!!not base64 {n}"}}), frozenset({"bad_image"})),
        (TOPIC, orjson.dumps({"image": {"data": "AAAAAAAA" * (n + 1)}}), frozenset({"bad_image"})),
        (TOPIC, orjson.dumps({"metadata": {f"k{i}": i for i in range(150 + n)}}), invalid_message),
        (TOPIC, orjson.dumps({"detections": [_box(x=i) for i in range(2500)], "metadata": {"n": n}}),
         frozenset({"delivered", "invalid_event"})),
        (f"t/factory/{'L' * 5000}{n}/cam1/detections", orjson.dumps({"detections": []}),
         frozenset({"invalid_event", "delivered", "api_rejected"})),
        (INFERENCE, orjson.dumps({"predictions": [{"class": "a", "confidence": "high", "n": n}]}), invalid_message),
        (INFERENCE, orjson.dumps({"predictions": {"n": n}}),  # read as a multi-label classification
         frozenset({"invalid_message", "delivered"})),
        (INFERENCE, orjson.dumps({"predictions": [{"class": "a", "confidence": 0.5, "x": n}]}), invalid_message),
    ]


def _publish_raw_topic(broker: BrokerAddress, topic: bytes, payload: bytes) -> bool:
    """MQTT 3.1.1 by hand (paho refuses to send such a topic): CONNECT, PUBLISH QoS 1; True if PUBACKed."""
    def packet(kind: int, body: bytes) -> bytes:
        length, encoded = len(body), b""
        while True:
            digit, length = length % 128, length // 128
            encoded += bytes([digit | (0x80 if length else 0)])
            if not length:
                return bytes([kind]) + encoded + body

    def string(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    with socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        sock.sendall(packet(0x10, string(b"MQTT") + b"\x04\x02\x00\x0a" + string(b"raw-hostile")))
        if sock.recv(4)[:1] != b"\x20":
            return False
        sock.sendall(packet(0x32, string(topic) + b"\x00\x01" + payload))
        try:
            return sock.recv(4)[:1] == b"\x40"
        except OSError:
            return False


def test_hostile_input_is_dead_lettered_valid_input_delivered_memory_bounded(rig: FaultRig) -> None:
    """Hostile messages are dead-lettered (or refused by the broker); valid ones all arrive; memory stays bounded."""
    broker = rig.broker()
    valid_count, rounds = rig.size(2000, 20_000), rig.size(8, 40)
    bridge = rig.bridge(broker, mqtt={"max_payload_bytes": CAP}).start()
    baseline_kib = bridge.memory_kb("VmRSS")
    valid = valid_stream("hostile", valid_count, image_every=20)
    hostile: dict[str, frozenset[str]] = {}
    stream: list[Outgoing] = []
    for index, message in enumerate(valid):
        stream.append(message)
        if index % (valid_count // rounds) == 0 and len(hostile) < rounds * len(_hostile(0)):
            for kind, (topic, payload, allowed) in enumerate(_hostile(index)):
                msg_id = f"hostile:{index}:{kind}"
                hostile[msg_id] = allowed
                stream.append(Outgoing(msg_id, topic, payload))
    hostile["hostile:huge"] = frozenset({"payload_too_large"})
    stream.insert(len(stream) // 2, Outgoing("hostile:huge", TOPIC, b"[" + b"1," * (4 * 2**20) + b"1]"))  # 8 MiB
    broker_refused_topic = not _publish_raw_topic(broker, b"t/factory/\xff\xfe/cam1/detections", b"{}")
    with rig.publisher(broker, rate_per_s=1000) as publisher:
        publisher.publish_all(stream)
        assert publisher.wait_acked(120)
        ledger = publisher.ledger()
    rig.wait_stored(valid_count, timeout_s=120)
    wait_until(lambda: bridge.metric("buffer_depth") == 0, timeout_s=60, message="buffer drained")
    peak_kib = bridge.memory_kb("VmHWM")
    assert bridge.returncode is None and bridge.log_text().count("buffer opened") == 1
    assert bridge.terminate() == 0
    report = rig.check(ledger, bridge)
    outcomes = {m: report.dead_letter_reasons.get(m, "delivered" if m in report.delivered_ids else "missing")
                for m in hostile}
    wrong = {m: (outcomes[m], sorted(allowed)) for m, allowed in hostile.items() if outcomes[m] not in allowed}
    growth_mib = (peak_kib - baseline_kib) / 1024
    by_outcome = Counter(outcomes.values())
    rig.record("T16 hostile input mixed into a valid stream", f"{valid_count} valid + {len(hostile)} hostile",
               report, f"hostile: {', '.join(f'{k} {v}' for k, v in sorted(by_outcome.items()))}; non-UTF-8 "
               f"topic {'refused by the broker' if broker_refused_topic else 'dead-lettered'}; "
               f"peak RSS {peak_kib / 1024:.0f} MiB (+{growth_mib:.0f})")
    assert wrong == {}, f"hostile messages with an unexpected outcome: {list(wrong.items())[:5]}"
    assert_exactly_once(report, dead_lettered=sum(1 for o in outcomes.values() if o != "delivered"))
    assert report.delivered_ids >= {m.msg_id for m in valid}
    assert growth_mib < 100, f"memory grew by {growth_mib:.0f} MiB"
    if not broker_refused_topic:
        assert any(letter.reason == "topic_not_utf8" for letter in bridge.dead_letters())
