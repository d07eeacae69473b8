"""The whole configuration: `BridgeConfig`, the root that holds every section and the routes.

Owns: the root model and checks that span sections. Must not do I/O. (The check that tied
`routes[].image.companion.max_parked` to `mqtt.receive_maximum` is gone with issue 14: parked messages are acked and
in the raw log, so they no longer hold the broker's in-flight window.)
"""

from __future__ import annotations

from pydantic import Field

from mqtt_bridge.config.routes import RouteConfig
from mqtt_bridge.config.sections import (
    ApiConfig,
    BufferConfig,
    FlushConfig,
    HealthConfig,
    LoggingConfig,
    MqttConfig,
    _Model,
)

__all__ = ["BridgeConfig"]


class BridgeConfig(_Model):
    """The whole configuration file."""

    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker connection.")
    api: ApiConfig = Field(..., description="Vision Events API.")
    buffer: BufferConfig = Field(default_factory=BufferConfig, description="Disk buffer.")
    flush: FlushConfig = Field(default_factory=FlushConfig, description="Batching.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health and metrics server.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    routes: list[RouteConfig] = Field(..., min_length=1, description="Topic routes; the first match wins.")
