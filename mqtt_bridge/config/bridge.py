"""The whole configuration: `BridgeConfig`, the root that holds every section and the routes.

Owns: checks that span sections (e.g. route names unique). Must not do I/O.
"""

from __future__ import annotations

from pydantic import (
    Field,
    model_validator,
)

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

    @model_validator(mode="after")
    def _parked_below_receive_maximum(self) -> BridgeConfig:
        # parked detections and images are un-acked: if they filled the broker's window, no image could arrive
        parked = sum(r.image.companion.max_parked for r in self.routes if r.image.companion is not None)
        if parked and self.mqtt.protocol != "3.1.1" and 2 * parked > self.mqtt.receive_maximum:
            raise ValueError(f"routes[].image.companion.max_parked add up to {parked}: keep them at most half of "
                             f"mqtt.receive_maximum ({self.mqtt.receive_maximum})")
        return self

