"""Emulator uploads (E3): the 201 answer, the kept bytes, the served image and the refused forms."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from mqtt_bridge.devtools.emulator.multipart import sniff_image_ext
from mqtt_bridge.devtools.emulator.server import Emulator
from tests.unit.devtools.emulator.helpers import (
    JPEG,
    PNG,
    post_upload,
)


def test_emulator_upload_round_trip_serves_image(emulator: Emulator, session: requests.Session) -> None:
    """An upload answers 201 with a sourceId and URL; the bytes are kept exactly and served without auth."""
    response = post_upload(session, emulator, JPEG, name="frame-1", metadata='{"line": "A1", "temp": 72.5}')
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["sourceId"].startswith("ve-img-")
    assert body["url"] == f"{emulator.url}/images/{body['sourceId']}.jpg"
    assert emulator.uploads() == {body["sourceId"]: JPEG}
    with requests.Session() as anonymous:
        image = anonymous.get(body["url"], timeout=5)
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/jpeg"
    assert image.content == JPEG


def test_emulator_upload_rejects_bad_forms(emulator: Emulator, session: requests.Session) -> None:
    """Unknown image bytes, a missing file, bad metadata and a non-multipart body are 400."""
    assert post_upload(session, emulator, b"GIF-not-really").json() == {"error": "unsupported image format"}
    no_file = session.post(f"{emulator.url}/vision-events/upload", files={"name": (None, "x")}, timeout=5)
    assert no_file.json() == {"error": "file is required"}
    assert post_upload(session, emulator, PNG, metadata="[1]").status_code == 400
    assert post_upload(session, emulator, PNG, metadata='{"bad key!": 1}').status_code == 400
    assert session.post(f"{emulator.url}/vision-events/upload", json={}, timeout=5).status_code == 400
    assert emulator.uploads() == {}


def test_emulator_sniffs_image_formats() -> None:
    """Magic bytes name every accepted format."""
    samples = {b"\xff\xd8\xff\xdb": "jpg", PNG: "png", b"GIF89a..": "gif", b"BM....": "bmp",
               b"II*\x00....": "tiff", b"MM\x00*....": "tiff", b"RIFF\x00\x00\x00\x00WEBPVP8 ": "webp",
               b"\x00\x00\x00\x18ftypheic": "heic", b"\x00\x00\x00\x18ftypavif": "avif", b"hello": None}
    assert {data: sniff_image_ext(data) for data in samples} == samples


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "gif", "tiff", "bmp", "heic", "avif"])
def test_emulator_upload_accepts_every_documented_format(ext: str, emulator: Emulator,
                                                         session: requests.Session) -> None:
    """JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC and AVIF are accepted (spec §2.3), whatever the part's Content-Type."""
    samples = {"jpg": JPEG, "png": PNG, "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ", "gif": b"GIF87a..",
               "tiff": b"II*\x00....", "bmp": b"BM....", "heic": b"\x00\x00\x00\x18ftypheic",
               "avif": b"\x00\x00\x00\x18ftypavif"}
    response = post_upload(session, emulator, samples[ext])
    assert response.status_code == 201
    assert response.json()["url"].endswith(f".{ext}")


UPLOAD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("upload-file-required", {"files": {"name": (None, "x")}}, "file is required"),
    ("upload-file-required", {"files": {"file": ("a.jpg", b"", "image/jpeg")}}, "file is required"),
    ("upload-format", {"files": {"file": ("a.txt", b"hello", "image/jpeg")}}, "unsupported image format"),
    ("upload-metadata-json-object", {"files": {"file": ("a.png", PNG)}, "data": {"metadata": "[1]"}},
     "metadata must be a JSON-encoded object"),
    ("upload-metadata-json-object", {"files": {"file": ("a.png", PNG)}, "data": {"metadata": "{not json"}},
     "metadata must be a JSON-encoded object"),
    ("upload-multipart", {"json": {}}, "body must be multipart/form-data with a boundary"),
]


@pytest.mark.parametrize(("rule", "request_kwargs", "message"), UPLOAD_CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(UPLOAD_CASES)])
def test_emulator_upload_breaking_a_rule_is_400_with_the_error_body(
        rule: str, request_kwargs: dict[str, Any], message: str, emulator: Emulator,
        session: requests.Session) -> None:
    """Each upload rule of spec §2.3 answers 400 with `{"error": message}` and keeps nothing."""
    response = session.post(f"{emulator.url}/vision-events/upload", timeout=5, **request_kwargs)
    assert (response.status_code, response.json()) == (400, {"error": message})
    assert emulator.uploads() == {}


def test_emulator_upload_keeps_name_and_metadata_for_inspection(emulator: Emulator,
                                                                session: requests.Session) -> None:
    """The optional `name` and JSON `metadata` fields are kept with the upload and shown by
    `GET /_emulator/uploads`; without a `name` field the file part's filename stands in."""
    named = post_upload(session, emulator, JPEG, name="plant_cam2_e1.jpg",
                        metadata='{"deviceId": "line1-cam2", "route": "inspection"}').json()["sourceId"]
    plain = post_upload(session, emulator, PNG).json()["sourceId"]
    listed = session.get(f"{emulator.url}/_emulator/uploads", timeout=5).json()["uploads"]
    assert listed == emulator.upload_details()
    assert [(u["sourceId"], u["name"], u["metadata"], u["ext"]) for u in listed] == [
        (named, "plant_cam2_e1.jpg", {"deviceId": "line1-cam2", "route": "inspection"}, "jpg"),
        (plain, "frame.jpg", {}, "png")]
    assert listed[0]["bytes"] == len(JPEG)
