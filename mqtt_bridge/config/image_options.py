"""Per-route image references and resizing (`routes[].image.url`, `.file`, `.companion`, `.resize`).

Owns: their pydantic models and checks. Must not do I/O. (`ReferenceKind`, which of them a route's image comes
from, lives in `model.attachment`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, model_validator

from mqtt_bridge.config.format_options import _Model, _Path
from mqtt_bridge.model.attachment import ReferenceKind
from mqtt_bridge.routing.templates import has_placeholder

__all__ = ["CompanionImages", "FileReference", "ReferenceKind", "ResizeOptions", "UrlReference"]




_HOST_PATTERN = (r"^((\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])"
                 r"(:([0-9]{1,5}|\*))?(/[!-~]*)?$|^[0-9A-Fa-f:.]+(/[!-~]*)?$")


def _one_source(field: str | None, template: str | None, what: str) -> None:
    if (field is None) == (template is None):
        raise ValueError(f"give the {what} as `field` (a payload path) or `template`, exactly one of them")
    if template is not None and not has_placeholder(template):
        raise ValueError("template has no {placeholder}: every message would name the same image")


class UrlReference(_Model):
    """Fetch the image over HTTP(S) from a URL the message names (a camera snapshot endpoint, an NVR API).

    Only http and https; no user:password@ in the URL. The host must be in `allow_hosts`, and every address it
    resolves to must be public unless it lies in `allow_private_networks` (loopback, private, link-local, CGNAT,
    multicast, reserved and IPv4-mapped addresses are refused otherwise). Every redirect is checked the same way.
    """

    field: _Path | None = Field(None, description="Payload path of the URL (the whole URL), e.g. `snapshot_url`.")
    template: str | None = Field(None, min_length=8, max_length=2048, description=(
        "URL template with {level}, {topic} or {payload.path} placeholders, e.g. "
        "'http://nvr1:5000/api/events/{payload.after.id}/snapshot.jpg'; inserted values are percent-encoded."))
    allow_hosts: list[Annotated[str, Field(max_length=253, pattern=_HOST_PATTERN)]] = Field(
        ..., min_length=1, max_length=1000, description=(
            "Hosts the bridge may fetch from, each `host[:port][/path-prefix]`: names (cam1.plant.local), *.suffix "
            "wildcards (*.cams.plant.local) or IP addresses ([v6]:port with a port). Without a port only the "
            "scheme's default port (80, 443) is allowed; `:*` allows any port. A path prefix (nvr1:5000/api/) "
            "allows only paths under it. Anything else is refused (image_url_refused)."))
    allow_private_networks: list[IPvAnyNetwork] = Field(default_factory=list, max_length=1000, description=(
        "Networks (CIDR) whose non-public addresses may be fetched from, e.g. [10.20.0.0/16] for the camera "
        "VLAN or [127.0.0.1/32] for a local test server. Default none: only public addresses."))
    timeout_s: float = Field(5.0, gt=0, le=60, description=(
        "Connect and read timeout, and the longest a whole fetch (with redirects) may take."))
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed (each one checked like the URL).")
    ca_file: Path | None = Field(None, description=(
        "CA bundle that signed the cameras' HTTPS certificates; the system store if unset. Never unverified."))

    @model_validator(mode="after")
    def _source(self) -> UrlReference:
        _one_source(self.field, self.template, "URL")
        return self


class FileReference(_Model):
    """Read the image from a file on a shared volume whose path the message names; only under `roots`."""

    field: _Path | None = Field(None, description="Payload path of the file path, e.g. `image_path`.")
    template: str | None = Field(None, min_length=2, max_length=1024, description=(
        "Path template with {level}, {topic} or {payload.path} placeholders, e.g. "
        "'{camera}/{payload.frame_id}.jpg'; an inserted value must be a plain name ([A-Za-z0-9._-], not . or ..)."))
    roots: list[Path] = Field(..., min_length=1, max_length=100, description=(
        "Absolute directories the files must lie under (after resolving symlinks). A relative path in a "
        "message is taken relative to the first one."))

    @model_validator(mode="after")
    def _source(self) -> FileReference:
        _one_source(self.field, self.template, "file path")
        if not all(root.is_absolute() for root in self.roots):
            raise ValueError("roots must be absolute directories")
        return self


class CompanionImages(_Model):
    """Raw image bytes published on a topic of their own, joined to their detection message.

    Both are acked and kept in the raw log; the one that arrives first waits in the processor until the other
    arrives or `window_s` passes; then the detection is buffered, with the image or without it (counted). An image
    that finds no detection within the window is dropped (counted). Images and detections are paired by key,
    oldest first.
    """

    topic: str = Field(..., min_length=1, max_length=1024, description=(
        "Topic template of the image messages, e.g. factory/{line}/{camera}/image; subscribed by the bridge. Its "
        "messages are taken before any route sees them."))
    key: str | None = Field(None, max_length=1024, description=(
        "Correlation key of a detection: a template of the route's topic levels, {topic} and {payload.path}, "
        "e.g. '{line}/{camera}/{payload.frame_id}'. Default: the named levels of `topic`, joined by /."))
    image_key: str | None = Field(None, max_length=1024, description=(
        "Correlation key of an image: a template of the levels of `topic` (and {topic}), e.g. "
        "'{line}/{camera}/{frame}'. Default: the same text as `key`."))
    window_s: float = Field(5.0, gt=0, le=600, description=(
        "How long a detection waits for its image (and an image for its detection)."))
    max_parked: int = Field(100, ge=1, le=10_000, description=(
        "Messages of this route waiting in memory at most (detections and images; they are acked and kept in the "
        "raw log); past it the oldest is released: a detection without its image, an image dropped."))


class ResizeOptions(_Model):
    """Downscale (and re-encode as JPEG) images before they are buffered; boxes are scaled with them."""

    max_width: int | None = Field(None, gt=0, le=100_000, description="Widest image kept, pixels.")
    max_height: int | None = Field(None, gt=0, le=100_000, description="Tallest image kept, pixels.")
    jpeg_quality: int = Field(85, ge=1, le=95, description="JPEG quality of a downscaled or re-encoded image.")
    reencode: bool = Field(False, description=(
        "Also re-encode images that already fit as JPEG (a PNG/BMP/TIFF always, a JPEG only when smaller)."))

    @model_validator(mode="after")
    def _some_limit(self) -> ResizeOptions:
        if self.max_width is None and self.max_height is None and not self.reencode:
            raise ValueError("give max_width, max_height or reencode: true")
        return self

