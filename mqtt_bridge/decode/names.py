"""The names of the payload formats: the one list that the config validates against and the registry serves.

Imports nothing, so that the config (which the decoders import) can name the formats without importing a decoder.
`decode.registry` checks at import time that it has a decoder for every name here and for nothing else.
"""

from __future__ import annotations

__all__ = ["FORMATS", "JSON_FORMATS"]

FORMATS = ("canonical", "roboflow", "generic", "deepstream", "frigate", "ultralytics", "sparkplug", "dlstreamer",
           "auto")

# formats whose messages are JSON documents (a Sparkplug String metric can hold any of them)
JSON_FORMATS = ("canonical", "roboflow", "generic", "deepstream", "ultralytics", "dlstreamer")
