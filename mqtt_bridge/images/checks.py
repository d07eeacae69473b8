"""Image checks: which picture formats the Vision Events API takes, told from the bytes, never from a file name.

Owns: format sniffing by magic bytes (JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC, AVIF; spec/vision-events-api.md §2.3),
the checks every image passes before it is buffered (byte size, pixel count, decompression bombs: reliability.md
§4), the pixel size read from the header, the optional downscale / JPEG re-encode before upload, and the content
hash that identifies an upload. This is the only module that imports Pillow (the demo's simulator and the benchmark
chart draw with it; see tests/unit/test_layers.py). Must not do network or file I/O.

Pillow is only asked for the header (`Image.open` reads it; pixels are decoded by `load`, which only `shrink`
calls, after the checks). `Image.MAX_IMAGE_PIXELS` is a process-wide setting, so it is set per call under a lock,
with `DecompressionBombWarning` turned into an error. HEIC (and AVIF where this Pillow cannot read it) is accepted
by its magic bytes without decoding; its size comes from the `ispe` property of the HEIF container when present.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from mqtt_bridge.errors import DeadLetterReason, DecodeError

__all__ = [
    "ACCEPTED_TYPES",
    "ImageInfo",
    "ImageLimits",
    "content_hash",
    "file_extension",
    "image_size",
    "inspect_image",
    "shrink",
    "sniff_image_type",
]

ACCEPTED_TYPES = ("jpeg", "png", "webp", "gif", "tiff", "bmp", "heic", "avif")
_EXTENSIONS = {"jpeg": "jpg"}
_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "tiff": "TIFF", "bmp": "BMP",
                   "avif": "AVIF", "heic": "HEIF"}
_HEADER_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error)
# Image.MAX_IMAGE_PIXELS and the warnings filters are process-wide: one check at a time
_PILLOW_LOCK = threading.Lock()
_MAX_BOXES = 1000  # HEIF boxes walked at most (a hostile file cannot make the walk long)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an image may be: at most `max_bytes` long and `max_pixels` (width x height) large."""

    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the checks learnt: the sniffed type, the size (None when a HEIF header does not say) and whether
    Pillow can decode it (then it can be downscaled)."""

    type: str
    width: int | None
    height: int | None
    is_decodable: bool


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
    """Width and height in pixels, read from the image header; None when the bytes are not a readable image.

    Refuses (None) images over Pillow's default pixel limit rather than reading a bomb's header as a size.
    """
    try:
        info = inspect_image(data, ImageLimits(max_bytes=max(len(data), 1), max_pixels=89_478_485))
    except DecodeError:
        return None
    if info.width is None or info.height is None:
        return None
    return info.width, info.height


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow with `max_pixels` as its bomb limit and the bomb warning as an error, for this call only."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _pillow_reads(image_type: str) -> bool:
    Image.init()
    return _PILLOW_FORMATS[image_type] in Image.OPEN


def _boxes(data: bytes, start: int, end: int, budget: list[int]) -> Iterator[tuple[bytes, int, int]]:
    """ISO-BMFF boxes in data[start:end] as (type, payload start, payload end)."""
    offset = start
    while offset + 8 <= end and budget[0] > 0:
        budget[0] -= 1
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > end:
                return
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            return
        yield kind, offset + header, offset + size
        offset += size


def _heif_size(data: bytes) -> tuple[int, int] | None:
    """The largest `ispe` (image spatial extent) of a HEIF/AVIF file: meta → iprp → ipco → ispe."""
    budget = [_MAX_BOXES]
    best: tuple[int, int] | None = None
    for kind, start, end in _boxes(data, 0, len(data), budget):
        if kind != b"meta":
            continue
        for child, c_start, c_end in _boxes(data, start + 4, end, budget):  # meta is a FullBox
            if child != b"iprp":
                continue
            for group, g_start, g_end in _boxes(data, c_start, c_end, budget):
                if group != b"ipco":
                    continue
                for prop, p_start, p_end in _boxes(data, g_start, g_end, budget):
                    if prop == b"ispe" and p_end - p_start >= 12:
                        width, height = struct.unpack_from(">II", data, p_start + 4)
                        if best is None or width * height > best[0] * best[1]:
                            best = (width, height)
    return best


def _check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED, f"the image header says {width}x{height} pixels")
    if width * height > limits.max_pixels:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                          f"{width}x{height} pixels is over the limit of {limits.max_pixels}")


def inspect_image(data: bytes, limits: ImageLimits,
                  unknown_reason: DeadLetterReason = DeadLetterReason.IMAGE_REJECTED) -> ImageInfo:
    """Check an image before it is buffered: accepted type (from the bytes), byte size, pixel count, no bomb.

    Reads the header only. Raises DecodeError: `unknown_reason` when the bytes are none of the accepted types,
    `image_rejected` for everything else (too many bytes or pixels, a decompression bomb, an unreadable header).
    """
    if len(data) > limits.max_bytes:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED, f"{len(data)} bytes is over the limit of {limits.max_bytes}")
    image_type = sniff_image_type(data)
    if image_type is None:
        raise DecodeError(unknown_reason, "the bytes are not JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC or AVIF")
    if image_type in ("heic", "avif") and not _pillow_reads(image_type):
        size = _heif_size(data)
        if size is not None:
            _check_pixels(size[0], size[1], limits)
            return ImageInfo(image_type, size[0], size[1], is_decodable=False)
        return ImageInfo(image_type, None, None, is_decodable=False)
    try:
        with _pixel_limit(limits.max_pixels), Image.open(io.BytesIO(data),
                                                         formats=[_PILLOW_FORMATS[image_type]]) as picture:
            width, height = picture.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                          f"over the pixel limit of {limits.max_pixels} (decompression bomb "
                          f"check): {exc}"[:300]) from None
    except _HEADER_ERRORS as exc:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED, f"unreadable {image_type} header: {exc}"[:300]) from None
    _check_pixels(width, height, limits)
    return ImageInfo(image_type, width, height, is_decodable=True)


def shrink(data: bytes, info: ImageInfo, limits: ImageLimits, max_width: int | None, max_height: int | None,
           jpeg_quality: int, reencode: bool) -> tuple[bytes, float, float] | None:
    """Downscale an image to fit `max_width` x `max_height` (keeping its aspect) and encode it as JPEG.

    Returns the new bytes with the x and y scale factors (new / old pixels), or None when nothing is to be done:
    the image already fits and `reencode` is off, or Pillow cannot decode it (HEIC). With `reencode`, an image
    that fits is re-encoded as JPEG too (a JPEG only when that makes it smaller). Only call it after
    `inspect_image` accepted the bytes. Raises DecodeError `image_rejected` when the pixels cannot be decoded.
    """
    if not info.is_decodable or info.width is None or info.height is None:
        return None
    width, height = info.width, info.height
    scale = min(max_width / width if max_width else 1.0, max_height / height if max_height else 1.0, 1.0)
    if scale >= 1.0 and not reencode:
        return None
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    try:
        with _pixel_limit(limits.max_pixels), Image.open(io.BytesIO(data),
                                                         formats=[_PILLOW_FORMATS[info.type]]) as picture:
            picture.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            frame = picture.convert("RGB")
            if frame.size != target:
                frame = frame.resize(target, Image.Resampling.LANCZOS)
            out = io.BytesIO()
            frame.save(out, format="JPEG", quality=jpeg_quality, optimize=True)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, *_HEADER_ERRORS) as exc:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED,
                          f"cannot decode the {info.type} image: {exc}"[:300]) from None
    encoded = out.getvalue()
    if scale >= 1.0 and info.type == "jpeg" and len(encoded) >= len(data):
        return None
    return encoded, target[0] / width, target[1] / height
