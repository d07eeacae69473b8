"""Image checks: type from the bytes, byte and pixel limits, decompression bombs, HEIF headers, downscaling."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image, features

from mqtt_bridge.errors import DeadLetterReason, DecodeError
from mqtt_bridge.images.checks import ImageLimits, image_size, inspect_image, shrink, sniff_image_type

LIMITS = ImageLimits(max_bytes=2**20, max_pixels=1_000_000)


def _encoded(size: tuple[int, int], fmt: str, color: tuple[int, int, int] = (90, 120, 150)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that only *says* it is width x height: signature, IHDR and IEND (no pixel data is ever made)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _box(kind: bytes, body: bytes, full: bool = False) -> bytes:
    payload = (b"\x00\x00\x00\x00" if full else b"") + body
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _heic(width: int, height: int) -> bytes:
    """The container of a HEIC file down to its `ispe` property (no coded image: it is never decoded)."""
    ispe = _box(b"ispe", struct.pack(">II", width, height), full=True)
    meta = _box(b"meta", _box(b"hdlr", b"\x00" * 24, full=True) + _box(b"iprp", _box(b"ipco", ispe)), full=True)
    return _box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + meta


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_images_accepts_each_api_format_by_its_bytes(fmt: str) -> None:
    """Every format the API takes is recognised from its bytes and its size read from the header."""
    info = inspect_image(_encoded((40, 30), fmt), LIMITS)
    assert (info.type, info.width, info.height, info.is_decodable) == (
        {"JPEG": "jpeg", "WEBP": "webp"}.get(fmt, fmt.lower()), 40, 30, True)


def test_images_non_image_named_jpg_is_refused_by_its_bytes() -> None:
    """Bytes that are no picture are refused whatever the name says; the caller picks the reason."""
    text = b"<html>not a picture</html>"
    assert sniff_image_type(text) is None
    with pytest.raises(DecodeError) as info:
        inspect_image(text, LIMITS)
    assert info.value.reason == "image_rejected"
    with pytest.raises(DecodeError) as inline:
        inspect_image(text, LIMITS, unknown_reason=DeadLetterReason.BAD_IMAGE)
    assert inline.value.reason == "bad_image"


def test_images_png_bomb_refused_from_its_header_without_decoding() -> None:
    """A 50,000 x 50,000 PNG is refused from its header; nothing near its 7.5 GB of pixels is allocated."""
    bomb = _png_header(50_000, 50_000)
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            inspect_image(bomb, ImageLimits(max_pixels=40_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "image_rejected"
    assert "decompression bomb" in info.value.detail
    assert peak < 5 * 2**20
    assert image_size(bomb) is None


def test_images_over_pixel_or_byte_limit_is_rejected() -> None:
    """The configured pixel count and byte size are hard limits."""
    picture = _encoded((400, 300), "PNG")
    with pytest.raises(DecodeError, match="over the pixel limit of 100000"):
        inspect_image(picture, ImageLimits(max_pixels=100_000))
    with pytest.raises(DecodeError, match="bytes is over"):
        inspect_image(picture, ImageLimits(max_bytes=len(picture) - 1))
    assert inspect_image(picture, ImageLimits(max_pixels=120_000)).width == 400


def test_images_truncated_header_is_rejected() -> None:
    """A JPEG cut inside its header is refused rather than guessed at."""
    with pytest.raises(DecodeError) as info:
        inspect_image(_encoded((64, 48), "JPEG")[:20], LIMITS)
    assert info.value.reason == "image_rejected"


def test_images_heic_accepted_by_magic_with_size_from_ispe() -> None:
    """HEIC is accepted without decoding; its pixel size comes from the container, and the limit applies."""
    info = inspect_image(_heic(4032, 3024), ImageLimits(max_pixels=20_000_000))
    assert (info.type, info.width, info.height, info.is_decodable) == ("heic", 4032, 3024, False)
    with pytest.raises(DecodeError, match="pixels is over"):
        inspect_image(_heic(50_000, 50_000), ImageLimits())
    assert shrink(_heic(4032, 3024), info, ImageLimits(), 100, 100, 85, reencode=True) is None


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_images_avif_read_by_pillow_when_it_can() -> None:
    """AVIF is checked (and may be downscaled) like the other formats when Pillow reads it."""
    info = inspect_image(_encoded((48, 32), "AVIF"), LIMITS)
    assert (info.type, info.width, info.is_decodable) == ("avif", 48, True)


def test_images_shrink_fits_the_box_and_reports_scale() -> None:
    """A large image is downscaled into max_width x max_height, keeping its aspect, as JPEG."""
    picture = _encoded((800, 400), "PNG")
    info = inspect_image(picture, LIMITS)
    result = shrink(picture, info, LIMITS, 200, 200, 80, reencode=False)
    assert result is not None
    data, sx, sy = result
    assert sniff_image_type(data) == "jpeg"
    assert image_size(data) == (200, 100)
    assert (sx, sy) == (0.25, 0.25)
    assert shrink(picture, info, LIMITS, 1000, 1000, 80, reencode=False) is None


def test_images_reencode_converts_png_and_keeps_a_smaller_jpeg() -> None:
    """reencode turns a PNG into a JPEG of the same size; a JPEG is only replaced when that is smaller."""
    png = _encoded((120, 90), "PNG")
    result = shrink(png, inspect_image(png, LIMITS), LIMITS, None, None, 85, reencode=True)
    assert result is not None and sniff_image_type(result[0]) == "jpeg" and result[1:] == (1.0, 1.0)
    out = io.BytesIO()
    Image.effect_noise((120, 90), 60).convert("RGB").save(out, format="JPEG", quality=20)
    small_jpeg = out.getvalue()
    assert shrink(small_jpeg, inspect_image(small_jpeg, LIMITS), LIMITS, None, None, 95, reencode=True) is None
