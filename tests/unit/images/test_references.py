"""The image reference stage: companion topics joined (and subscribed), URL/file images fetched off the MQTT
thread, everything else passed straight on; nothing acked here except images no detection claimed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.errors import ConfigError
from mqtt_bridge.images.reference_plans import ReplayResolver, compile_image_references
from mqtt_bridge.images.references import ImageReferences
from mqtt_bridge.model.inbound import Inbound
from mqtt_bridge.observe.stats import Stats
from mqtt_bridge.routing.router import Router
from tests.helpers import tiny_png, wait_until

COMPANION = {"name": "cams", "topic": "f/{line}/{camera}/detections", "use_case": "uc",
             "image": {"companion": {"topic": "f/{line}/{camera}/image/{frame}",
                                     "key": "{line}/{camera}/{payload.frame}",
                                     "image_key": "{line}/{camera}/{frame}", "window_s": 0.3}}}
PLAIN = {"name": "plain", "topic": "plain/{camera}", "use_case": "uc"}


class _Stage:
    """An `ImageReferences` with its threads running, recording what it forwards and acks."""

    def __init__(self, routes: list[dict[str, Any]], tmp_path: Path | None = None) -> None:
        self.forwarded: list[Inbound] = []
        self.acked: list[Inbound] = []
        self.stop = threading.Event()
        self.stats = Stats()
        router = Router([RouteConfig.model_validate(r) for r in routes])
        self.stage = ImageReferences(router, self.forwarded.append, self.stats, self.stop, 2**20)
        self.threads = [threading.Thread(target=self.stage.run_timer, name="t-timer"),
                        threading.Thread(target=self.stage.run_fetcher, name="t-fetch")]
        for thread in self.threads:
            thread.start()
        self.mid = 0

    def _acker(self, message: list[Inbound]) -> Callable[[], bool]:
        """The ack a subscriber would bind: it records the message it belongs to."""
        def ack() -> bool:
            self.acked.append(message[0])
            return True
        return ack

    def offer(self, topic: str, payload: bytes, *, retain: bool = False) -> Inbound:
        self.mid += 1
        slot: list[Inbound] = []
        message = Inbound(topic.encode(), payload, self.mid, 1, 1, time.time(), retain=retain,
                          acker=self._acker(slot))
        slot.append(message)
        self.stage.offer(message)
        return message

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def stage() -> Iterator[_Stage]:
    running = _Stage([COMPANION, PLAIN])
    try:
        yield running
    finally:
        running.close()


def test_references_companion_topics_are_subscribed(stage: _Stage) -> None:
    """The image topic of a companion route is derived from its template and subscribed."""
    assert stage.stage.subscriptions() == ["f/+/+/image/+"]


def test_references_plain_routes_pass_straight_through(stage: _Stage) -> None:
    """A message of a route without references is forwarded as it is, immediately."""
    message = stage.offer("plain/cam9", b"{}")
    assert stage.forwarded == [message]
    assert stage.forwarded[0].attachment is None and stage.forwarded[0].companions == ()


def test_references_companion_pairs_by_key_in_either_order(stage: _Stage) -> None:
    """Detection then image, and image then detection: each detection is forwarded with its image attached;
    the image message is not acked here but travels with the detection (acked after the commit)."""
    first = stage.offer("f/L1/cam1/detections", orjson.dumps({"frame": 7}))
    assert stage.forwarded == [] and stage.stage.parked == 1
    image = stage.offer("f/L1/cam1/image/7", tiny_png(7))
    other_image = stage.offer("f/L1/cam2/image/8", tiny_png(8))
    second = stage.offer("f/L1/cam2/detections", orjson.dumps({"frame": 8}))
    assert [m.payload for m in stage.forwarded] == [first.payload, second.payload]
    paired = [m for m in stage.forwarded if m.attachment is not None]
    assert len(paired) == 2
    assert [(m.attachment.image if m.attachment else b"") for m in paired] == [tiny_png(7), tiny_png(8)]
    assert [m.companions for m in paired] == [(image,), (other_image,)]
    assert stage.acked == []
    assert stage.stats.count("companion_images_paired", "cams") == 2
    assert paired[0].ack() is True and stage.acked == [first, image]  # the image is acked with its detection


def test_references_companion_window_releases_and_drops(stage: _Stage) -> None:
    """After the window a lone detection goes on without its image (counted); a lone image is acked and dropped."""
    detection = stage.offer("f/L1/cam1/detections", orjson.dumps({"frame": 1}))
    image = stage.offer("f/L1/cam1/image/2", tiny_png(2))
    wait_until(lambda: stage.forwarded and stage.acked, timeout_s=3, message="window expiry")
    [released] = stage.forwarded
    assert released.payload == detection.payload
    assert released.attachment is not None and released.attachment.missing == "window_expired"
    assert stage.acked == [image]
    assert stage.stats.count("companion_images_missing", "cams") == 1
    assert stage.stats.count("companion_images_dropped", "cams") == 1


def test_references_retained_companion_image_never_pairs(stage: _Stage) -> None:
    """A retained image (replayed by the broker on subscribe) is acked and dropped; the detection waits for a
    fresh one instead of getting an old picture."""
    stale = stage.offer("f/L1/cam1/image/7", tiny_png(1), retain=True)
    assert stage.acked == [stale] and stage.stage.parked == 0
    assert stage.stats.count("companion_images_dropped", "cams") == 1
    stage.offer("f/L1/cam1/detections", orjson.dumps({"frame": 7}))
    assert stage.forwarded == [] and stage.stage.parked == 1
    stage.offer("f/L1/cam1/image/7", tiny_png(7))
    [paired] = stage.forwarded
    assert paired.attachment is not None
    assert paired.attachment.image == tiny_png(7)


def test_references_detection_without_key_field_goes_on_without_image(stage: _Stage) -> None:
    """A detection whose key field is missing cannot be joined: it goes on at once, noted, not parked."""
    stage.offer("f/L1/cam1/detections", b"{}")
    [released] = stage.forwarded
    assert released.attachment is not None
    assert released.attachment.missing == "no_key"


def test_references_file_images_are_read_by_a_worker(tmp_path: Path) -> None:
    """A file route's message is forwarded with the file's bytes; a traversal attempt with its refusal."""
    (tmp_path / "cam1").mkdir()
    (tmp_path / "cam1" / "f1.png").write_bytes(tiny_png(1))
    route = {"name": "files", "topic": "files/{camera}", "use_case": "uc",
             "image": {"file": {"template": "{camera}/{payload.frame}.png", "roots": [str(tmp_path)]}}}
    running = _Stage([route])
    try:
        running.offer("files/cam1", orjson.dumps({"frame": "f1"}))
        running.offer("files/cam1", orjson.dumps({"frame": ".."}))
        running.offer("files/cam1", orjson.dumps({"other": 1}))
        wait_until(lambda: len(running.forwarded) == 3, timeout_s=3, message="three messages forwarded")
    finally:
        running.close()
    by_payload = {m.payload: m for m in running.forwarded}
    good = by_payload[orjson.dumps({"frame": "f1"})].attachment
    assert good is not None and good.image == tiny_png(1) and good.name == "f1.png"
    bad = by_payload[orjson.dumps({"frame": ".."})].attachment
    assert bad is not None and bad.problem is not None and bad.problem[0] == "image_path_refused"
    assert by_payload[orjson.dumps({"other": 1})].attachment is None


def test_references_replay_resolves_file_images_synchronously(tmp_path: Path) -> None:
    """`dlq replay` reads a file reference again under the current config."""
    (tmp_path / "a.png").write_bytes(tiny_png(3))
    route = RouteConfig.model_validate({"topic": "files/{camera}", "use_case": "uc",
                                        "image": {"file": {"field": "path", "roots": [str(tmp_path)]}}})
    attachment = ReplayResolver([route])("files/cam1", orjson.dumps({"path": "a.png"}))
    assert attachment is not None and attachment.image == tiny_png(3)
    assert ReplayResolver([route])("other/x", b"{}") is None


def test_references_bad_templates_are_config_errors() -> None:
    """Key and URL templates are checked at start-up, each problem with its key path."""
    routes = [RouteConfig.model_validate({"topic": "a/{cam}/d", "use_case": "uc",
                                          "image": {"companion": {"topic": "a/{camera}/img"}}}),
              RouteConfig.model_validate({"topic": "b/{cam}", "use_case": "uc", "image": {"url": {
                  "template": "http://nvr/{nope}/x.jpg", "allow_hosts": ["nvr"]}}}),
              RouteConfig.model_validate({"topic": "c/{cam}", "use_case": "uc", "image": {"companion": {
                  "topic": "c/{cam}/img", "key": "{cam}/{payload.frame}"}}})]
    with pytest.raises(ConfigError) as info:
        compile_image_references(routes)
    paths = [path for path, _ in info.value.problems]
    assert paths == ["routes[0].image.companion.key", "routes[1].image.url.template",
                     "routes[2].image.companion.image_key"]


def test_references_config_validation() -> None:
    """One reference per route; URL hosts must be listed; companion routes may park more than half the receive
    maximum (parked messages are acked and in the raw log since issue 14)."""
    base: dict[str, Any] = {"api": {"api_key": "k"}}
    problems = []
    for image in ({"base64_path": "a", "file": {"field": "p", "roots": ["/srv"]}},
                  {"url": {"field": "u", "allow_hosts": []}},
                  {"url": {"field": "u", "template": "http://x/{payload.a}", "allow_hosts": ["x"]}},
                  {"file": {"field": "p", "roots": ["relative/dir"]}},
                  {"resize": {"jpeg_quality": 80}}):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "routes": [{"topic": "a/b", "use_case": "uc", "image": image}]}, env={})
        problems.append(info.value.problems[0][0])
    assert all(p.startswith("routes[0].image") for p in problems), problems
    config = parse_config({**base, "mqtt": {"receive_maximum": 100}, "routes": [
        {"topic": "a/{b}", "use_case": "uc", "image": {"companion": {"topic": "i/{b}", "max_parked": 600}}}]},
        env={})
    assert config.routes[0].image.companion is not None and config.routes[0].image.companion.max_parked == 600


@pytest.mark.parametrize("value", ["..", "."])
def test_references_url_template_dot_values_are_encoded_and_refused(value: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`{payload.id}` = `..` or `.` is percent-encoded (%2E%2E) and refused as a dot segment: it cannot climb a
    directory on the allowed host. Nothing is looked up or connected."""
    import socket

    contacted: list[object] = []
    def record(*args: object, **kwargs: object) -> list[object]:
        contacted.append(args)
        raise OSError("refused by the test")

    monkeypatch.setattr(socket, "getaddrinfo", record)
    monkeypatch.setattr(socket, "create_connection", record)
    route = RouteConfig.model_validate({"topic": "nvr/{cam}", "use_case": "uc", "image": {"url": {
        "template": "http://nvr1.plant.example/api/events/{payload.id}/snapshot.jpg",
        "allow_hosts": ["nvr1.plant.example/api/events/"]}}})
    plan = ReplayResolver([route])
    attachment = plan("nvr/cam1", orjson.dumps({"id": value}))
    assert attachment is not None and attachment.problem is not None
    assert attachment.problem[0] == "image_url_refused", attachment.problem
    assert contacted == []


def _image_server(body: bytes) -> ThreadingHTTPServer:
    """A local HTTP server, running, that answers every GET with `body` at once (shut it down when done)."""

    class Fast(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Fast)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="t-images").start()
    return server


def test_references_a_slow_route_backs_off_alone_and_never_blocks_the_mqtt_thread() -> None:
    """100 messages for a route whose image server drips bytes: offering them (the processor) waits at most a
    moment; past the route's waiting limit they go on with image_fetch_failed (backed off); a URL route with a
    healthy server and a plain route are served while the slow fetches run to their deadline."""
    from tests.drip import DripServer

    slow = DripServer(give_up_s=30, only="headers")
    fast = _image_server(tiny_png(2))

    def url_route(name: str, port: int) -> dict[str, Any]:
        return {"name": name, "topic": f"{name}/{{cam}}", "use_case": "uc", "image": {"url": {
            "field": "u", "allow_hosts": [f"127.0.0.1:{port}"], "allow_private_networks": ["127.0.0.1/32"],
            "timeout_s": 1.0}}}

    running = _Stage([url_route("slow", slow.port), url_route("fast", fast.server_address[1]), PLAIN])
    extra = [threading.Thread(target=running.stage.run_fetcher, name=f"t-fetch-{i}") for i in range(3)]
    running.threads.extend(extra)
    for thread in extra:
        thread.start()
    try:
        offered = threading.Event()

        def publish_slow() -> None:
            for seq in range(100):
                running.offer("slow/cam1", orjson.dumps({"u": f"http://127.0.0.1:{slow.port}/{seq}.jpg"}))
            offered.set()

        started = time.monotonic()
        publisher = threading.Thread(target=publish_slow, name="t-mqtt")
        publisher.start()
        assert offered.wait(2.0), "the processor was blocked by a full fetch queue"
        assert time.monotonic() - started < 1.0
        backed_off = [m for m in running.forwarded if m.attachment is not None and m.attachment.problem
                      and "backed off" in m.attachment.problem[1]]
        assert len(backed_off) >= 100 - 64 - 2
        assert all(m.attachment is not None and m.attachment.problem is not None
                   and m.attachment.problem[0] == "image_fetch_failed" for m in backed_off)
        assert running.stats.count("image_fetches_backed_off", label="slow") == len(backed_off)
        plain = running.offer("plain/cam2", b"{}")
        assert running.forwarded[-1] is plain
        fast_started = time.monotonic()
        running.offer("fast/cam3", orjson.dumps({"u": f"http://127.0.0.1:{fast.server_address[1]}/a.png"}))
        wait_until(lambda: any(m.topic == b"fast/cam3" for m in running.forwarded), timeout_s=0.5,
                   message="the healthy route's image fetched while the slow route's fetches hang")
        assert time.monotonic() - fast_started < 0.5
        fetched = next(m for m in running.forwarded if m.topic == b"fast/cam3")
        assert fetched.attachment is not None and fetched.attachment.image == tiny_png(2)
    finally:
        running.close()
        slow.close()
        fast.shutdown()
        fast.server_close()


def test_references_a_burst_for_a_healthy_server_is_fetched_not_backed_off() -> None:
    """300 messages at once for a route whose image server answers at once (a backlog read from the raw log): more
    than the route's waiting limit, yet every one is fetched with its image, none backed off."""
    fast = _image_server(tiny_png(3))
    port = fast.server_address[1]
    running = _Stage([{"name": "fast", "topic": "fast/{cam}", "use_case": "uc", "image": {"url": {
        "field": "u", "allow_hosts": [f"127.0.0.1:{port}"], "allow_private_networks": ["127.0.0.1/32"],
        "timeout_s": 5.0}}}])
    extra = [threading.Thread(target=running.stage.run_fetcher, name=f"t-fetch-{i}") for i in range(3)]
    running.threads.extend(extra)
    for thread in extra:
        thread.start()
    try:
        for seq in range(300):
            running.offer("fast/cam1", orjson.dumps({"u": f"http://127.0.0.1:{port}/{seq}.png"}))
        wait_until(lambda: len(running.forwarded) == 300, timeout_s=60, message="every fetch done")
        assert running.stats.count("image_fetches_backed_off", label="fast") == 0
        assert all(m.attachment is not None and m.attachment.image == tiny_png(3) for m in running.forwarded)
    finally:
        running.close()
        fast.shutdown()
        fast.server_close()
