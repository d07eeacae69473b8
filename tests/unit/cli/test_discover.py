"""`discover`, `capture` and `decode --capture` on the command line: exit codes, messages, the replay's output."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mqtt_bridge.cli.main import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, main
from mqtt_bridge.model.capture import CapturedMessage
from mqtt_bridge.sdk.publisher import Detection, build_message
from tests.helpers import free_port, tiny_png

CONFIG = """
api: {api_key: k}
buffer: {path: %s}
routes:
  - topic: station/{line}/detections
    use_case: uc
    device_id: "{line}"
    image:
      companion: {topic: "station/{line}/image/{frame}", key: "{line}/{payload.metadata.frame}",
                  image_key: "{line}/{frame}"}
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG % (tmp_path / "buffer"))
    return path


def test_decode_capture_prints_one_outcome_per_line_with_companions_paired(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A capture with an image after its detection replays to one event with the image, and a summary."""
    capture = tmp_path / "night.jsonl"
    detection = build_message(detections=[Detection("dent", 0.9, 10, 10, 4, 4)], metadata={"frame": 7})
    capture.write_bytes(b"# a comment line\n"
                        + CapturedMessage(b"station/l3/detections", detection, 0, False, 100.0).to_line()
                        + CapturedMessage(b"station/l3/image/7", tiny_png(7), 0, False, 100.5).to_line())
    assert main(["decode", "--config", str(_config(tmp_path)), "--capture", str(capture)]) == EXIT_OK
    out, err = capsys.readouterr()
    [outcome] = [orjson.loads(line) for line in out.splitlines()]
    assert outcome["events"][0]["deviceId"] == "l3" and outcome["images"][0]["type"] == "png"
    assert outcome["companion_image_topic"] == "station/l3/image/7"
    assert "2 message(s): 1 event(s)" in err and "1 paired" in err


def test_decode_capture_names_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not the capture format: exit 2 with the file, the line number and what is wrong."""
    capture = tmp_path / "bad.jsonl"
    capture.write_bytes(CapturedMessage(b"a/b", b"{}", 0, False, 1.0).to_line() + b'{"t": 2, "topic": "x"}\n')
    assert main(["decode", "--config", str(_config(tmp_path)), "--capture", str(capture)]) == EXIT_CONFIG
    assert f"{capture} line 2: payload_b64 is missing" in capsys.readouterr().err


def test_decode_needs_a_topic_or_a_capture_but_not_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Neither --topic nor --capture, or both: exit 2 saying what to give."""
    config = str(_config(tmp_path))
    assert main(["decode", "--config", config]) == EXIT_CONFIG
    assert "--capture FILE" in capsys.readouterr().err
    assert main(["decode", "--config", config, "--capture", "x.jsonl", "--topic", "a"]) == EXIT_CONFIG
    assert "without --topic" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["discover", "capture"])
def test_listen_commands_say_why_the_broker_is_unreachable(command: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens on the port: exit 3 with host:port and the diagnosis; no capture file is left behind."""
    port = free_port()
    out = tmp_path / "out.jsonl"
    assert main([command, "--host", "127.0.0.1", "--port", str(port), "--seconds", "1", "--out", str(out)]) \
        == EXIT_UNAVAILABLE
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert not out.exists()


def test_listen_commands_refuse_to_overwrite_and_bad_tls_flags(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An existing output file needs --force; a client certificate without its key is a usage error (exit 2)."""
    existing = tmp_path / "config.yaml"
    existing.write_text("mine")
    assert main(["discover", "--port", str(free_port()), "--out", str(existing)]) == EXIT_CONFIG
    assert "--force" in capsys.readouterr().err and existing.read_text() == "mine"
    assert main(["capture", "--cert-file", "c.pem", "--out", str(tmp_path / "c.jsonl")]) == EXIT_CONFIG
    assert "cert_file and key_file" in capsys.readouterr().err
