"""Image checks: which picture formats the Vision Events API takes, told from the bytes, never from a file name.

Owns: format sniffing by magic bytes (JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC, AVIF; spec/vision-events-api.md §2.3)
the pixel size read from the header, and the content hash that identifies an upload. Must not do network or file I/O.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image, UnidentifiedImageError

__all__ = ["ACCEPTED_TYPES", "content_hash", "image_size", "sniff_image_type"]

ACCEPTED_TYPES = ("jpeg", "png", "webp", "gif", "tiff", "bmp", "heic", "avif")
_EXTENSIONS = {"jpeg": "jpg"}


def sniff_image_type(data: bytes) -> str | None:
    """Return the image format named in `ACCEPTED_TYPES`, or None when the bytes are none of them."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(data) > 26:
        return "bmp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    return None


def file_extension(image_type: str) -> str:
    """The usual file extension of a sniffed type (`jpeg` → `jpg`)."""
    return _EXTENSIONS.get(image_type, image_type)


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest: the key under which an uploaded image's sourceId is remembered."""
    return hashlib.sha256(data).hexdigest()


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height in pixels, read from the image header; None when the bytes are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return (width, height) if width > 0 and height > 0 else None
