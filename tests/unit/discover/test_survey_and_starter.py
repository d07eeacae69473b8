"""The survey (formats, images, companion links, figures) and the starter config written from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from mqtt_bridge.config.dump import dump_yaml
from mqtt_bridge.config.load import load_config, parse_config
from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.discover.starter import USE_CASE_PLACEHOLDER, build_starter
from mqtt_bridge.discover.survey import Finding, Survey
from mqtt_bridge.discover.traits import ImageKind
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.transform.dryrun import DryRun
from tests.helpers import tiny_png

MQTT = MqttConfig(host="broker.plant.local", port=1883, protocol="3.1.1")


def _heard(topic: str, payload: bytes, at_s: float) -> CapturedMessage:
    return CapturedMessage(topic.encode(), payload, 0, False, at_s)


def _roboflow(extra: dict[str, object]) -> bytes:
    return orjson.dumps({"image": {"width": 320, "height": 240}, "predictions": [
        {"x": 50, "y": 40, "width": 20, "height": 10, "class": "dent", "confidence": 0.9}], **extra})


def _plant_traffic() -> list[CapturedMessage]:
    """Ten seconds of a small plant: inline images, a companion topic, URLs, files, noise, Sparkplug."""
    out = []
    for second in range(10):
        t = 1000.0 + second
        for line, cam in (("line1", "cam1"), ("line1", "cam2"), ("line2", "cam1")):
            out.append(_heard(f"factory/{line}/{cam}/detections", build_message(
                detections=[Detection("scratch", 0.8, 30, 30, 10, 10)], image=tiny_png(second),
                image_size=(32, 24)), t))
        frame = 500 + second
        image = _heard(f"station/line3/cam1/image/{frame}", tiny_png(frame), t)
        detection = _heard("station/line3/cam1/detections", build_message(
            detections=[Detection("dent", 0.7, 10, 10, 4, 4)], metadata={"frame": frame}), t)
        out.extend((image, detection) if second % 2 else (detection, image))
        out.append(_heard("snapshot/line3/cam2", _roboflow({"snapshot_url": f"http://10.1.2.3:8000/f/{second}.jpg"}),
                          t))
        out.append(_heard("vision/cell4/result", _roboflow({"image_path": f"/data/frames/{second}.png"}), t))
        out.append(_heard("sensors/cell4/temperature", b'{"celsius": 21.5}', t))
        out.append(_heard("spBv1.0/plant/DDATA/edge1/cam9", b"\x08\x01", t))
    return out


def _findings() -> dict[str, Finding]:
    survey = Survey()
    for message in _plant_traffic():
        survey.add(message)
    return {finding.pattern.template: finding for finding in survey.findings(10.0)}


def test_survey_reports_format_rate_size_and_varying_levels() -> None:
    """Each pattern has its message count, rate per second, sizes, detected format and example values."""
    factory = _findings()["factory/{line}/{cam}/detections"]
    assert (factory.messages, factory.format, factory.image) == (30, "canonical", ImageKind.INLINE)
    assert factory.rate_per_s == 3.0
    assert 0 < factory.avg_bytes <= factory.max_bytes
    assert factory.pattern.values == {"line": ["line1", "line2"], "cam": ["cam1", "cam2"]}


def test_survey_finds_url_file_and_unknown_payloads() -> None:
    """An http(s) field is a URL image (with its hosts), an image path a file image; other JSON has no format."""
    findings = _findings()
    url = findings["snapshot/line3/cam2"]
    assert (url.format, url.image, url.image_field, url.url_hosts) == ("roboflow", ImageKind.URL, "snapshot_url",
                                                                       ["10.1.2.3:8000"])
    files = findings["vision/cell4/result"]
    assert (files.image, files.image_field, files.file_roots) == (ImageKind.FILE, "image_path", ["/data/frames"])
    assert findings["sensors/cell4/temperature"].format is None
    assert findings["spBv1.0/plant/DDATA/edge1/cam9"].format == "sparkplug"


def test_survey_links_a_raw_image_topic_to_its_detections_by_the_payload_field() -> None:
    """station/.../image/<frame> pairs with station/.../detections through metadata.frame, either order."""
    findings = _findings()
    detections = findings["station/line3/cam1/detections"]
    assert detections.image == ImageKind.COMPANION
    assert detections.companion is not None
    assert detections.companion.topic == "station/line3/cam1/image/{frame}"
    assert (detections.companion.key, detections.companion.image_key) == ("{payload.metadata.frame}", "{frame}")
    assert findings["station/line3/cam1/image/{id}"].companion_of == "station/line3/cam1/detections"


def test_starter_config_passes_check_config_with_one_route_per_detection_pattern(tmp_path: Path) -> None:
    """The YAML written loads through config.load (check-config's validation); unroutable patterns are noted."""
    starter = build_starter(list(_findings().values()), MQTT)
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(starter.document, ["starter", *starter.notes]))
    config = load_config(path, env={"ROBOFLOW_API_KEY": "k"})
    topics = [route.topic for route in config.routes]
    assert topics == ["snapshot/line3/cam2", "station/line3/cam1/detections", "vision/cell4/result",
                      "factory/{line}/{cam}/detections"]
    assert {route.use_case for route in config.routes} == {USE_CASE_PLACEHOLDER}
    assert config.mqtt.host == "broker.plant.local" and config.mqtt.client_id == "mqtt-vision-bridge"
    notes = "\n".join(starter.notes)
    assert "sensors/cell4/temperature: not routed" in notes and "spBv1.0/plant/DDATA/edge1/cam9: not routed" in notes
    assert "private networks (10.1.2.3)" in notes
    url = config.routes[0].image.url
    assert url is not None and url.allow_hosts == ["10.1.2.3:8000"]
    assert [str(n) for n in url.allow_private_networks] == ["10.1.2.3/32"]


def test_starter_routes_turn_the_heard_detections_into_events() -> None:
    """Decoding the heard traffic with the starter's routes gives events with device ids from the topic levels."""
    starter = build_starter(list(_findings().values()), MQTT)
    config = parse_config(starter.document, env={"ROBOFLOW_API_KEY": "k"})
    dry_run = DryRun(list(config.routes), config.mqtt.max_payload_bytes)
    factory: dict[str, Any] = dry_run.run("factory/line2/cam1/detections", _plant_traffic()[2].payload)
    [event] = factory["events"]
    assert event["deviceId"] == "line2-cam1" and event["streamId"] == "cam1"
    assert event["customMetadata"]["line"] == "line2"
    assert factory.get("images")
