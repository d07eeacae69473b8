"""The connection and run-time sections of the config: mqtt, api, buffer, flush, health, logging.

Owns: their pydantic models, defaults and per-key checks, and the `ByteSize` type (`2GiB`). Must not do I/O.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from mqtt_bridge.errors import ConfigError

__all__ = [
    "DEFAULT_API_URL",
    "ApiConfig",
    "BufferConfig",
    "FlushConfig",
    "HealthConfig",
    "LoggingConfig",
    "MqttConfig",
    "TlsConfig",
]


DEFAULT_API_URL = "https://api.roboflow.com"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

def read_secret(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([(key, f"cannot read secret file {path}: {exc.strerror}")]) from exc



def _parse_size(value: object) -> object:
    """Accept `2GiB`, `500 MB`, `1048576` for byte sizes; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a size such as 512MiB, 2GiB or 1000000")
        size = float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
        if not size < 2**63:  # also catches inf: int() of it would raise OverflowError, not a config error
            raise ValueError(f"{value!r} is too large")
        return int(size)
    return value


ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Model):
    """TLS to the broker. Certificates are verified against `ca_file` (or the system store) and the host name."""

    enabled: bool = Field(False, description="Connect with TLS (usually port 8883).")
    ca_file: Path | None = Field(None, description="CA that signed the broker certificate; system store if unset.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = Field(None, description="Private key (PEM) of the client certificate.")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(_Model):
    """Connection to the plant's MQTT broker."""

    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (1883 plain, 8883 TLS).")
    client_id: str = Field("mqtt-vision-bridge", min_length=1, max_length=128,
                           description="Fixed client id: the broker keeps the session (and queued messages) under it.")
    protocol: Literal["auto", "5", "3.1.1"] = Field("auto", description=(
        "MQTT protocol version. auto tries MQTT 5 and falls back to 3.1.1 for the life of the process when the "
        "broker refuses 5 (CONNACK 0x84 / return code 1, or a close right after CONNECT); \"5\" or \"3.1.1\" pins it."))
    username: str | None = Field(None, description="User name, if the broker requires one.")
    password: SecretStr | None = Field(None, description="Password; prefer password_file. Never printed or logged.")
    password_file: Path | None = Field(None, description="File holding the password (e.g. a mounted secret).")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive interval.")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=60,
                                  description="MQTT 5 session expiry: longer than the longest bridge outage.")
    receive_maximum: int = Field(500, ge=1, le=65535,
                                 description="MQTT 5 Receive Maximum: messages the broker may hand over un-acked.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest reconnect delay.")
    max_payload_bytes: ByteSize = Field(4 * 2**20, description="Larger messages are dead-lettered unparsed.")
    shared_group: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description=(
        "Subscribe as $share/<group>/<filter> so that replicas share the messages (each needs its own client_id "
        "and buffer). Mosquitto 2, EMQX and HiveMQ support it."))
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS settings.")

    @model_validator(mode="after")
    def _secrets(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    def password_value(self) -> str | None:
        """The password, read from `password_file` when that is set (re-read on every call, for rotation)."""
        if self.password_file is not None:
            return read_secret(self.password_file, "mqtt.password_file")
        return self.password.get_secret_value() if self.password else None


class ApiConfig(_Model):
    """The Roboflow Vision Events API (or the local emulator)."""

    base_url: str = Field(DEFAULT_API_URL, pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
                          description="API root; https://api.roboflow.eu for the EU region.")
    api_key: SecretStr | None = Field(None, description="Workspace API key; prefer api_key_file. Never printed.")
    api_key_file: Path | None = Field(None, description="File holding the API key (re-read after a 401).")
    connect_timeout_s: float = Field(5.0, gt=0, le=300, description="TCP connect timeout per request.")
    read_timeout_s: float = Field(30.0, gt=0, le=600, description="Response timeout per request.")
    retry_min_s: float = Field(1.0, gt=0, description="First retry delay after a retryable failure.")
    retry_max_s: float = Field(60.0, gt=0, description="Longest retry delay (jittered exponential backoff).")
    billing_retry_s: float = Field(300.0, gt=0, le=86400, description=(
        "After 402/423 (plan limit, quota, billing pause) the data is kept, the bridge reports not ready and "
        "retries this often; a Retry-After in the answer wins."))

    @model_validator(mode="after")
    def _key(self) -> ApiConfig:
        if self.api_key is None and self.api_key_file is None:
            raise ValueError("api_key or api_key_file is required")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("give api_key or api_key_file, not both")
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not exceed retry_max_s")
        return self

    def api_key_value(self) -> str:
        """The key, read from `api_key_file` when that is set (re-read on every call, for rotation)."""
        if self.api_key_file is not None:
            return read_secret(self.api_key_file, "api.api_key_file")
        assert self.api_key is not None
        return self.api_key.get_secret_value()


class BufferConfig(_Model):
    """The disk buffer that holds every accepted message until it is delivered."""

    path: Path = Field(Path("/var/lib/mqtt-bridge"), description="Private directory (created with mode 0700).")
    max_bytes: ByteSize = Field(2 * 2**30, description="High-water mark: stop acking the broker above it.")
    min_free_bytes: ByteSize = Field(64 * 2**20,
                                     description="Also stop acking when the filesystem has less free space than this.")
    on_full: Literal["stop_acking", "drop_images"] = Field("stop_acking", description=(
        "Over max_bytes: stop_acking holds everything back (the broker keeps it); drop_images keeps buffering "
        "events without their images (noted as customMetadata.imageDropped, counted) until min_free_bytes stops "
        "acking. A route's image.on_buffer_full overrides it. Events are never dropped."))
    ledger_entries: int = Field(100_000, ge=0, le=10_000_000, description=(
        "Delivered events remembered on disk (eventId, use case, timestamp, delivery time; in <path>/ledger) for "
        "`mqtt-bridge verify`, newest kept; 0 turns the ledger off."))


class FlushConfig(_Model):
    """How events are batched to the API."""

    max_events: int = Field(100, ge=1, le=100, description="Events per batch request (the API allows 100).")
    max_bytes: ByteSize = Field(5 * 2**20, description="Largest batch request body.")
    max_wait_s: float = Field(0.5, ge=0, le=60, description="Longest time an event waits for its batch to fill.")
    shutdown_grace_s: float = Field(10.0, ge=0, le=600, description="On SIGTERM, time to finish the batch in flight.")
    unconfirmed_attempts: int = Field(3, ge=1, le=100, description=(
        "Answers (201) that may leave an event out of their eventIds before it is dead-lettered as not_confirmed; "
        "each time it is re-sent alone with the retry backoff."))


class HealthConfig(_Model):
    """The small HTTP server with /healthz, /readyz and /metrics."""

    enabled: bool = Field(True, description="Serve health endpoints.")
    host: str = Field("127.0.0.1", description="Bind address; keep it local unless a probe needs it.")
    port: int = Field(9100, ge=0, le=65535, description="Port; 0 picks a free one.")
    token: SecretStr | None = Field(None, description=(
        "If set, /metrics, the status page and its API need `Authorization: Bearer <token>` (or the page's login "
        "cookie, a signed session value); /healthz and /readyz stay open but answer only their status. Never "
        "printed. The bridge warns at start when `host` is not loopback and no token is set."))
    allowed_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=100, description=(
            "Host names the health server answers to besides localhost, IP addresses and `host` itself, e.g. "
            "[bridge-0.mqtt-vision-bridge.plant.svc]: a request whose `Host` header names anything else gets 421 "
            "(the defence against DNS rebinding from a browser on this machine)."))
    trace_size: int = Field(10_000, ge=0, le=1_000_000, description=(
        "Messages the status page can find by eventId or topic (kept in memory, newest first; 0 turns it off)."))
    history_interval_s: float = Field(10.0, ge=1.0, le=300.0, description=(
        "Seconds between two samples of the status page's last-hour charts (/status, /status/history.json): the "
        "bridge keeps ceil(3600 / history_interval_s) samples in memory, 360 at the default."))


class LoggingConfig(_Model):
    """Log output on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    format: Literal["text", "json"] = Field("text", description="key=value text, or one JSON object per line.")

