"""Every cache and table is bounded in bytes (issue 16 item 3): each is flooded and its accounted bytes, its
evictions metric and (for the long-topic flood) the process RSS checked against a stated bound."""

from __future__ import annotations

import gc
from pathlib import Path

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode.base import Message
from mqtt_bridge.decode.frigate import SNAPSHOTS_BYTES, FrigateDecoder
from mqtt_bridge.decode.registry import build_decoder
from mqtt_bridge.decode.sparkplug import ALIAS_TABLES_BYTES, NODE_TABLE_BYTES, SparkplugDecoder
from mqtt_bridge.decode.sparkplug_schema import encode_payload
from mqtt_bridge.model.bounded import ByteLRU, eviction_counts
from mqtt_bridge.model.record import Record
from mqtt_bridge.observe.trace import TRACE_MAX_BYTES, MessageTrace
from mqtt_bridge.routing.router import ROUTE_CACHE_BYTES, Router
from mqtt_bridge.transform.rules import DEBOUNCE_BYTES, Debouncer

_LONG = 64 * 1024  # the longest topic the bridge accepts is 64 KiB
_JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * (4 * 2**20)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _long_topic(n: int) -> str:
    return f"plant/{n}/" + "x" * (_LONG - 20)


def test_byte_lru_evicts_least_recently_used_and_counts() -> None:
    lru: ByteLRU[str, bytes] = ByteLRU("test_lru", 3000, lambda _, v: len(v))
    for n in range(10):
        lru.put(str(n), b"x" * 800)
    assert lru.bytes <= 3000 and len(lru) == 3
    assert lru.get("0") is None and lru.get("9") == b"x" * 800
    assert lru.evictions == 7 and eviction_counts()["test_lru"] >= 7
    assert not lru.put("huge", b"x" * 5000) and "huge" not in lru


def test_long_topic_flood_keeps_route_cache_and_trace_within_their_bytes_and_rss_bounded() -> None:
    router = Router([RouteConfig.model_validate({"topic": "plant/{line}/#", "use_case": "uc"})])
    trace = MessageTrace(10_000)
    gc.collect()
    before = _rss_bytes()
    for n in range(10_000):  # 10,000 topics of 64 KiB: 640 MiB if they were all kept
        topic = _long_topic(n)
        route, captures = router.match(topic)
        assert captures["line"] == str(n)
        trace.on_committed([Record(event={"eventId": f"e{n}"}, route=route.label, topic=topic,
                                   received_at_s=1.0)], [])
        del topic
    gc.collect()
    grown = _rss_bytes() - before
    assert router._cache.bytes <= ROUTE_CACHE_BYTES and trace._entries.bytes <= TRACE_MAX_BYTES
    # stated bound: both caches' byte bounds (24 MiB) plus 100 MiB of slack for the allocator; was ~1 GiB
    assert grown < ROUTE_CACHE_BYTES + TRACE_MAX_BYTES + 100 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
    assert router._cache.evictions > 0 and trace._entries.evictions > 0


def test_route_cache_eviction_never_changes_routing_results() -> None:
    router = Router([RouteConfig.model_validate({"topic": "a/{x}", "use_case": "first"}),
                     RouteConfig.model_validate({"topic": "plant/{line}/#", "use_case": "second"})])
    expected = {n: router.match(_long_topic(n))[1] for n in range(300)}
    for n in range(300):  # far past the byte bound: the early ones were evicted and are matched again
        route, captures = router.match(_long_topic(n))
        assert route.index == 1 and captures == expected[n]
    assert router._cache.evictions > 0
    assert router.match("a/1")[0].index == 0


def test_image_topic_cache_is_bounded_in_bytes() -> None:
    import threading

    from mqtt_bridge.images.references import NOT_IMAGE_TOPICS_BYTES, ImageReferences
    from mqtt_bridge.observe.stats import Stats

    route = RouteConfig.model_validate({"topic": "plant/{line}/#", "use_case": "uc", "image": {
        "companion": {"topic": "cams/{line}/image", "key": "{line}"}}})
    stage = ImageReferences(Router([route]), lambda _: None, Stats(), threading.Event(), 2**20)
    for n in range(2000):
        assert stage._image_topic(_long_topic(n)) is None
    assert stage._not_image_topics.bytes <= NOT_IMAGE_TOPICS_BYTES and stage._not_image_topics.evictions > 0


def _sparkplug_route() -> RouteConfig:
    return RouteConfig.model_validate({"topic": "spBv1.0/{rest*}", "use_case": "uc", "format": "sparkplug",
                                       "sparkplug": {"metrics": [{"name": "Boxes", "format": "roboflow"}]}})


def test_sparkplug_alias_tables_are_bounded_per_node_and_in_total() -> None:
    decoder = build_decoder("sparkplug", _sparkplug_route())
    assert isinstance(decoder, SparkplugDecoder)
    name = "m" * 1000
    birth = encode_payload({"metrics": [{"name": f"{name}/{i}", "alias": i, "datatype": 12} for i in range(2000)]})
    for n in range(3):  # 3 x 20 DBIRTHs of 2,000 metrics each to one node: ~2 MiB a message
        for device in range(20):
            decoder.decode(Message(f"spBv1.0/G/DBIRTH/E{n}/D{device}", birth, 1.0))
    tables = list(decoder._nodes.values())
    assert all(table.bytes <= NODE_TABLE_BYTES for table in tables)
    assert decoder._nodes.bytes <= ALIAS_TABLES_BYTES
    assert eviction_counts().get("sparkplug_aliases", 0) > 0
    for n in range(40):  # many nodes: the total bound forgets the least recently heard ones
        decoder.decode(Message(f"spBv1.0/G/NBIRTH/N{n}", birth, 1.0))
    assert decoder._nodes.bytes <= ALIAS_TABLES_BYTES and decoder._nodes.evictions > 0


def test_frigate_snapshots_are_bounded_in_bytes() -> None:
    decoder = FrigateDecoder(RouteConfig.model_validate({"topic": "frigate/#", "use_case": "uc",
                                                         "format": "frigate"}))
    for n in range(200):  # 200 snapshots of 4 MiB: 800 MiB if all were kept
        decoder.decode(Message(f"frigate/cam{n}/person/snapshot", _JPEG, 1.0))
    assert decoder._snapshots.bytes <= SNAPSHOTS_BYTES
    assert len(decoder._snapshots) <= SNAPSHOTS_BYTES // len(_JPEG)
    assert decoder._snapshots.get(("cam199", "person")) is not None  # the latest is kept
    assert eviction_counts().get("frigate_snapshots", 0) > 0


def test_debounce_state_is_bounded_in_bytes() -> None:
    debouncer = Debouncer()
    device = "d" * 4096
    for n in range(10_000):
        assert not debouncer.is_suppressed("r", f"{device}{n}", "s", ["c"], 1.0, 5.0)
    assert debouncer._last_s.bytes <= DEBOUNCE_BYTES and debouncer._last_s.evictions > 0
    assert debouncer.is_suppressed("r", f"{device}9999", "s", ["c"], 2.0, 5.0)  # recent keys still debounce
