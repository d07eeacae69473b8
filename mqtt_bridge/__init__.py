"""mqtt-vision-bridge: MQTT detections to Roboflow Vision Events, durably and exactly once.

The package owns nothing at import time: no threads, no I/O, no environment reads.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mqtt-vision-bridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
