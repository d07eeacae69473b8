"""The registry of payload formats: the decoder built for each name of `decode.names`.

Owns: `DECODERS` (every format name the config accepts, `auto` included, in the order of `decode.names.FORMATS`)
and `build_decoder`. The decoders that nest others (`auto`, `sparkplug`) are handed `build_decoder` instead of
importing this module, so the import graph stays acyclic.
"""

from __future__ import annotations

from collections.abc import Callable

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.decode import (
    auto,
    canonical,
    deepstream,
    dlstreamer,
    frigate,
    generic,
    roboflow,
    sparkplug,
    ultralytics,
)
from mqtt_bridge.decode.base import Decoder
from mqtt_bridge.decode.names import FORMATS

__all__ = ["DECODERS", "build_decoder"]


def build_decoder(name: str, route: RouteConfig) -> Decoder:
    """Build the decoder registered under `name` for `route` (its options and state). KeyError for an unknown name."""
    return _CONSTRUCTORS[name](route)


_CONSTRUCTORS: dict[str, Callable[[RouteConfig], Decoder]] = {
    "canonical": canonical.CanonicalDecoder,
    "roboflow": roboflow.RoboflowDecoder,
    "generic": generic.GenericDecoder,
    "deepstream": deepstream.DeepStreamDecoder,
    "frigate": frigate.FrigateDecoder,
    "ultralytics": ultralytics.UltralyticsDecoder,
    "sparkplug": lambda route: sparkplug.SparkplugDecoder(route, build_decoder),
    "dlstreamer": dlstreamer.DlStreamerDecoder,
    "auto": lambda route: auto.AutoDecoder(route, build_decoder),
}
if set(_CONSTRUCTORS) != set(FORMATS):  # pragma: no cover - a programming error, caught by any test run
    raise RuntimeError(f"decoders and format names differ: {sorted(set(_CONSTRUCTORS) ^ set(FORMATS))}")

DECODERS: tuple[str, ...] = FORMATS
