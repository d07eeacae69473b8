"""Capture replay: messages in capture order, with companion pairing, windows and debounce in capture time."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.sdk.publisher import Detection, build_message
from mqtt_bridge.transform.dryrun import DryRun
from mqtt_bridge.transform.replay import CaptureReplay
from tests.helpers import tiny_png

ROUTES: list[dict[str, object]] = [
    {"name": "paired", "topic": "station/{line}/detections", "format": "canonical", "use_case": "uc",
     "device_id": "{line}",
     "image": {"companion": {"topic": "station/{line}/image/{frame}", "key": "{line}/{payload.metadata.frame}",
                             "image_key": "{line}/{frame}", "window_s": 5}}},
    {"name": "debounced", "topic": "alarm/{cam}", "format": "canonical", "use_case": "uc", "debounce_s": 10},
    {"name": "snapshots", "topic": "snap/{cam}", "format": "roboflow", "use_case": "uc",
     "image": {"url": {"field": "url", "allow_hosts": ["10.0.0.9"]}}},
]


def _feed(replay: CaptureReplay, message: CapturedMessage) -> list[Any]:
    return list(replay.feed(message))


def _replay() -> CaptureReplay:
    config = parse_config({"api": {"api_key": "k"}, "buffer": {"path": "/tmp/unused"}, "routes": ROUTES}, env={})
    return CaptureReplay(list(config.routes), 2**20)


def _detection(frame: int) -> bytes:
    return build_message(detections=[Detection("dent", 0.9, 10, 10, 4, 4)], metadata={"frame": frame})


def _msg(topic: str, payload: bytes, t: float, retain: bool = False) -> CapturedMessage:
    return CapturedMessage(topic.encode(), payload, 0, retain, t)


def _images(outcomes: list[Any]) -> list[bool]:
    return [bool(o.get("images")) for o in outcomes]


def test_replay_pairs_companion_images_whichever_comes_first() -> None:
    """A detection waits for its image (and an image for its detection); the pair becomes one event with it."""
    replay = _replay()
    assert replay.feed(_msg("station/l3/detections", _detection(1), 10.0)) == []
    first = replay.feed(_msg("station/l3/image/1", tiny_png(1), 10.1))
    assert replay.feed(_msg("station/l3/image/2", tiny_png(2), 11.0)) == []
    second = replay.feed(_msg("station/l3/detections", _detection(2), 11.1))
    assert _images(first) == [True] and _images(second) == [True]
    assert first[0]["companion_image_topic"] == "station/l3/image/1"
    assert first[0]["t"] == 10.0
    assert replay.counts.paired == 2


def test_replay_window_is_measured_in_capture_time() -> None:
    """A detection whose image does not come within window_s of capture time goes on without it, noted."""
    replay = _replay()
    replay.feed(_msg("station/l3/detections", _detection(1), 10.0))
    late = _feed(replay, _msg("station/l3/image/9", tiny_png(9), 15.5))  # another frame, after the window
    assert len(late) == 1 and not late[0].get("images")
    assert late[0]["events"][0]["customMetadata"]["imageMissing"] == "window_expired"
    assert replay.counts.unpaired == 1


def test_replay_finish_releases_what_is_still_parked() -> None:
    """At the end of the capture, a waiting detection is released without its image; a lone image is dropped."""
    replay = _replay()
    replay.feed(_msg("station/l3/detections", _detection(1), 10.0))
    replay.feed(_msg("station/l4/image/1", tiny_png(1), 10.0))
    assert _images(replay.finish()) == [False]
    assert (replay.counts.unpaired, replay.counts.images_dropped) == (1, 1)


def test_replay_drops_a_retained_companion_image() -> None:
    """A retained image (an old picture the broker replays) never pairs, as in a live run."""
    replay = _replay()
    assert replay.feed(_msg("station/l3/image/1", tiny_png(1), 10.0, retain=True)) == []
    assert replay.counts.images_dropped == 1
    replay.feed(_msg("station/l3/detections", _detection(1), 10.1))
    assert _images(replay.finish()) == [False]


def test_replay_debounces_in_capture_time() -> None:
    """The same alarm 5 s later (capture time) is debounced; 20 s later it is an event again."""
    replay = _replay()
    payload = build_message(detections=[Detection("person", 0.9, 10, 10, 4, 4)])
    counts = [len(_feed(replay, _msg("alarm/cam1", payload, t))[0]["events"]) for t in (100.0, 105.0, 120.0)]
    assert counts == [1, 0, 1]
    assert replay.counts.suppressed == 1


def test_replay_gives_the_event_ids_of_a_plain_dry_run() -> None:
    """Without references in play, the replay's eventIds are those of `decode` (the same Ingestor path)."""
    config = parse_config({"api": {"api_key": "k"}, "buffer": {"path": "/tmp/unused"}, "routes": ROUTES}, env={})
    payload = build_message(detections=[Detection("person", 0.9, 10, 10, 4, 4)])
    replayed = _replay().feed(_msg("alarm/cam7", payload, 100.0))
    plain = DryRun(list(config.routes), 2**20).run("alarm/cam7", payload, 100.0)
    assert replayed[0]["events"] == plain["events"]


def test_replay_does_not_fetch_urls_unless_asked() -> None:
    """A url image is not fetched by default: the outcome says so and the event goes on without it."""
    replay = _replay()
    [outcome] = _feed(replay, _msg("snap/cam2", b'{"predictions": [], "url": "http://10.0.0.9/a.jpg"}', 1.0))
    assert "url" in outcome["image_not_resolved"]
    assert replay.counts.not_resolved == 1


SPARKPLUG = Path(__file__).resolve().parents[2] / "payloads" / "sparkplug"


def _sparkplug_replay() -> CaptureReplay:
    spec = yaml.safe_load((SPARKPLUG / "routes.yaml").read_text())
    config = parse_config({"api": {"api_key": "k"}, "buffer": {"path": "/tmp/unused"}, "routes": spec["routes"]},
                          env={})
    return CaptureReplay(list(config.routes), 2**20, now=datetime.fromisoformat(spec["received_at"]))


def _sparkplug(case: str, topic: str, t: float) -> CapturedMessage:
    """A golden Sparkplug payload captured `t` seconds after the golden files' receive time."""
    received_at_s = datetime.fromisoformat(str(yaml.safe_load((SPARKPLUG / "routes.yaml").read_text())[
        "received_at"])).timestamp()
    return _msg(topic, (SPARKPLUG / f"{case}.bin").read_bytes(), received_at_s + t)


def test_replay_keeps_sparkplug_births_for_the_data_that_follows() -> None:
    """NBIRTH and DBIRTH earlier in the capture announce the aliases: the DDATA decodes to the golden events."""
    node, device = "spBv1.0/PlantA/NBIRTH/Line3-Edge", "spBv1.0/PlantA/DBIRTH/Line3-Edge/Cam07"
    data = "spBv1.0/PlantA/DDATA/Line3-Edge/Cam07"
    expected = json.loads((SPARKPLUG / "ddata_dataset.expected.json").read_text())
    replay = _sparkplug_replay()
    outcomes = [o for m in (_sparkplug("nbirth", node, 1.0), _sparkplug("dbirth", device, 2.0),
                            _sparkplug("ddata_dataset", data, 3.0)) for o in _feed(replay, m)]
    assert [e["eventId"] for e in outcomes[-1]["events"]] == [e["eventId"] for e in expected["events"]]
    alone = _feed(_sparkplug_replay(), _sparkplug("ddata_dataset", data, 3.0))
    assert alone[0]["dead_letter"]["reason"] == "unknown_alias"
