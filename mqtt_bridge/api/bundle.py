"""Roboflow Vision Events bundles (spec/vision-events-api.md §2.6): one event per `.tar.gz`, for sites whose
buffer must leave the plant on a disk instead of over the network (`mqtt-bridge export`).

Owns: the bundle layout (`payload.json` with `bundleFormatVersion: 1` and `images[].file` naming a tar member
under `images/`, instead of `sourceId`), deterministic archives (member times from the event's receive time), safe
file names (`event_<UTC time>_<eventId>.tar.gz`, the id only when it matches a strict pattern), and atomic writes (a
dot-prefixed temporary file, fsync, rename, fsync of the directory) so a file mover that picks up `event_*.tar.gz`
never sees half a bundle. Each bundle is posted as is to `POST /vision-events/bundle`; its eventId is the one the
bridge would have sent, so a bundle and a later online delivery overwrite each other instead of duplicating.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
import uuid
from pathlib import Path

import orjson

from mqtt_bridge.images.checks import file_extension, sniff_image_type
from mqtt_bridge.model.record import Record
from mqtt_bridge.model.values import JsonDict

__all__ = ["BUNDLE_FORMAT_VERSION", "MAX_BUNDLE_BYTES", "BundleTooLarge", "bundle_bytes", "bundle_name",
           "write_bundle"]

BUNDLE_FORMAT_VERSION = 1
MAX_BUNDLE_BYTES = 25 * 2**20  # the limit Roboflow's own bundle writer enforces (spec §2.6)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAMESPACE = uuid.UUID("0b6f3d52-6a43-5b8e-a3c9-1f7d2e4b5c6a")


class BundleTooLarge(ValueError):
    """The bundle would exceed `MAX_BUNDLE_BYTES`."""


def bundle_name(record: Record) -> str:
    """`event_<UTC time of receipt>_<eventId>.tar.gz`; an id unsafe in a file name is replaced by its UUIDv5."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(record.received_at_s))
    micros = int((record.received_at_s % 1) * 1_000_000)
    event_id = record.event_id
    safe = event_id if _SAFE_ID.match(event_id) else str(uuid.uuid5(_NAMESPACE, event_id))
    return f"event_{stamp}_{micros:06d}_{safe}.tar.gz"


def _payload(record: Record) -> tuple[JsonDict, dict[str, bytes]]:
    payload: JsonDict = {"bundleFormatVersion": BUNDLE_FORMAT_VERSION, **record.event}
    members: dict[str, bytes] = {}
    images = payload.get("images")
    if record.image and isinstance(images, list) and images and isinstance(images[0], dict):
        extension = file_extension(sniff_image_type(record.image) or "jpeg")
        member = f"images/{uuid.uuid5(_NAMESPACE, record.event_id + '/0')}.{extension}"
        first = {k: v for k, v in images[0].items() if k != "sourceId"}
        first["file"] = member
        payload["images"] = [first, *images[1:]]
        members[member] = record.image
    return payload, members


def bundle_bytes(record: Record) -> bytes:
    """The `.tar.gz` bytes of one record's bundle. Raises BundleTooLarge over 25 MiB."""
    payload, members = _payload(record)
    mtime = int(record.received_at_s)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("payload.json", orjson.dumps(payload, option=orjson.OPT_INDENT_2)), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleTooLarge(f"bundle of {record.event_id} is {len(data)} bytes, the limit is {MAX_BUNDLE_BYTES}")
    return data


def write_bundle(record: Record, directory: Path) -> Path:
    """Write one bundle atomically into `directory` and return its path (an existing bundle is replaced)."""
    data = bundle_bytes(record)
    target = directory / bundle_name(record)
    temporary = directory / f".{target.name}.tmp"
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return target
