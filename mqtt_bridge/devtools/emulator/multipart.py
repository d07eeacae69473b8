"""Upload parsing for E3: a multipart/form-data body split into fields, and the image format named by its bytes.

Owns: `parse_multipart` (the stdlib email parser; `cgi` is gone), `FormField`, `sniff_image_ext` and the image
formats the docs accept (JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC, AVIF: spec §2.3) with their content types. The
part's own Content-Type is ignored, as the server does (spec §2.3 "Client details"). Must not keep state.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
from dataclasses import dataclass

from .messages import RequestRejected

__all__ = ["IMAGE_CONTENT_TYPES", "FormField", "parse_multipart", "sniff_image_ext"]

IMAGE_CONTENT_TYPES = {
    "jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "bmp": "image/bmp",
    "tiff": "image/tiff", "heic": "image/heic", "avif": "image/avif",
}


@dataclass(frozen=True, slots=True)
class FormField:
    """One part of a multipart/form-data body."""

    data: bytes
    filename: str | None


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormField]:
    """Split a multipart/form-data body into named fields (the first part of each name wins).

    Raises RequestRejected(400) when the body is not multipart/form-data with a boundary.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type.lower():
        raise RequestRejected(400, "body must be multipart/form-data with a boundary")
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestRejected(400, "malformed multipart body")
    fields: dict[str, FormField] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, tuple):
            name = email.utils.collapse_rfc2231_value(name)
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and name not in fields:
            fields[name] = FormField(payload, part.get_filename())
    return fields


def sniff_image_ext(data: bytes) -> str | None:
    """Name an image format by its magic bytes: jpg, png, webp, gif, bmp, tiff, heic, avif, or None."""
    signatures = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"),
                  (b"GIF89a", "gif"), (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
    for magic, ext in signatures:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    return None
