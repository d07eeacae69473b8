"""The configuration: pydantic models, YAML loading, `${VAR}` interpolation, secret files and redaction.

Owns: turning a YAML file into a validated, frozen `BridgeConfig`, and every error message about it (each with its
key path, e.g. `routes[0].use_case`). This is the only module that reads the environment. Must not start anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from mqtt_bridge.errors import ConfigError
from mqtt_bridge.events import EVENT_TYPES, MAX_PREDICTIONS_PER_LIST
from mqtt_bridge.route_models import (
    CompanionImages,
    DeepStreamOptions,
    FileReference,
    FrigateOptions,
    GenericMapping,
    ImageSize,
    InventoryCountRule,
    QualityCheckRule,
    ResizeOptions,
    SafetyAlertRule,
    SparkplugOptions,
    UltralyticsOptions,
    UrlReference,
)

__all__ = [
    "DEFAULT_API_URL",
    "FORMATS",
    "ApiConfig",
    "BridgeConfig",
    "BufferConfig",
    "FlushConfig",
    "HealthConfig",
    "ImageOptions",
    "LoggingConfig",
    "MqttConfig",
    "RouteConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
    "redacted",
]

DEFAULT_API_URL = "https://api.roboflow.com"
FORMATS = ("canonical", "roboflow", "generic", "deepstream", "frigate", "ultralytics", "sparkplug", "dlstreamer",
           "auto")
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
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
            return _read_secret(self.password_file, "mqtt.password_file")
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
            return _read_secret(self.api_key_file, "api.api_key_file")
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


class FlushConfig(_Model):
    """How events are batched to the API."""

    max_events: int = Field(100, ge=1, le=100, description="Events per batch request (the API allows 100).")
    max_bytes: ByteSize = Field(5 * 2**20, description="Largest batch request body.")
    max_wait_s: float = Field(0.5, ge=0, le=60, description="Longest time an event waits for its batch to fill.")
    shutdown_grace_s: float = Field(10.0, ge=0, le=600, description="On SIGTERM, time to finish the batch in flight.")


class HealthConfig(_Model):
    """The small HTTP server with /healthz, /readyz and /metrics."""

    enabled: bool = Field(True, description="Serve health endpoints.")
    host: str = Field("127.0.0.1", description="Bind address; keep it local unless a probe needs it.")
    port: int = Field(9100, ge=0, le=65535, description="Port; 0 picks a free one.")
    token: SecretStr | None = Field(None, description=(
        "If set, /metrics, the status page and its API need `Authorization: Bearer <token>` (or the page's login "
        "cookie); /healthz and /readyz stay open but answer only their status. Never printed."))
    trace_size: int = Field(10_000, ge=0, le=1_000_000, description=(
        "Messages the status page can find by eventId or topic (kept in memory, newest first; 0 turns it off)."))


class LoggingConfig(_Model):
    """Log output on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    format: Literal["text", "json"] = Field("text", description="key=value text, or one JSON object per line.")


class ImageOptions(_Model):
    """Where a route's images come from, and the checks and changes every image of the route goes through.

    An image the payload format itself carries (canonical `image.data`, a Workflows image output, a Sparkplug
    Bytes metric, a Frigate snapshot) is used first; the reference below fills in when the message has none.
    """

    base64_path: Annotated[str, Field(max_length=256, pattern=r"^[^.\s]+(\.[^.\s]+)*$")] | None = Field(
        None, description="Payload path of an inline base64 image (a data: URI prefix is accepted), any format.")
    url: UrlReference | None = Field(None, description="Fetch the image from a URL the message names.")
    file: FileReference | None = Field(None, description="Read the image from a file under allowed roots.")
    companion: CompanionImages | None = Field(None, description="Raw image bytes on a topic of their own.")
    max_bytes: ByteSize = Field(20 * 2**20, description=(
        "Larger images are refused (image_rejected); a URL fetch stops reading there."))
    max_pixels: int = Field(40_000_000, gt=0, le=1_000_000_000, description=(
        "Images with more pixels (width x height, read from the header) are refused as image_rejected; "
        "decompression bombs never get decoded."))
    boxes_fit: bool = Field(True, description=(
        "The referenced image is the frame the boxes refer to. false: it is a crop or thumbnail, sent without "
        "boxes (they are summarised in customMetadata)."))
    resize: ResizeOptions | None = Field(None, description=(
        "Downscale (JPEG re-encode) before buffering; boxes are scaled to the new size. Default: sent as is."))
    on_buffer_full: Literal["stop_acking", "drop_images"] | None = Field(None, description=(
        "This route's choice over the buffer's high-water mark; default: buffer.on_full."))

    @model_validator(mode="after")
    def _one_reference(self) -> ImageOptions:
        given = [name for name in ("base64_path", "url", "file", "companion") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one image reference, not {' and '.join(given)}")
        return self


class RouteConfig(_Model):
    """Maps a topic pattern to a use case, a device and a payload format."""

    topic: str = Field(..., min_length=1, max_length=1024, description=(
        "Topic template: {name} matches one level, {name*} (last) the rest; + and # are allowed unnamed."))
    name: str | None = Field(None, max_length=128, description="Route name in logs and metrics; the topic if unset.")
    format: Literal[FORMATS] = Field("canonical", description=(  # type: ignore[valid-type]
        "Payload format: canonical, roboflow, generic (needs `generic`), deepstream, frigate, ultralytics, "
        "sparkplug (needs `sparkplug`), dlstreamer, or auto (detected per message; unknown_format otherwise)."))
    use_case: str = Field(..., min_length=1, max_length=256, description="useCaseId (template).")
    device_id: str | None = Field(None, max_length=256, description="deviceId template, e.g. '{line}-{camera}'.")
    stream_id: str | None = Field(None, max_length=256, description="streamId template.")
    event_type: Literal[EVENT_TYPES] | None = Field(  # type: ignore[valid-type]
        None, description="eventType; the payload's event_type (canonical) or quality_check if unset.")
    event_data: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="eventData fields; string values are templates.")
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="customMetadata fields; string values are templates.")
    event_id_field: str | None = Field(None, description="Payload field holding the eventId (dotted path).")
    receipt_topic: str | None = Field(None, min_length=1, max_length=1024, pattern=r"^[^$+#\x00][^+#\x00]*$",
                                      description=(
        "Publish a delivery receipt {eventId, status, reason, sourceTopic} here (QoS 1) once the event is "
        "delivered or dead-lettered. Template of topic levels and {topic}, e.g. '{topic}/receipt'."))
    min_confidence: float = Field(0.0, ge=0, le=1, description=(
        "Drop predictions (boxes and classifications) below this confidence."))
    max_predictions: int = Field(MAX_PREDICTIONS_PER_LIST, ge=0, le=MAX_PREDICTIONS_PER_LIST,
                                 description="Keep at most this many detections per event (highest confidence).")
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(None, description=(
        "Keep only predictions of these classes (case-sensitive); all when unset."))
    confidence_scale: Literal["unit", "percent"] = Field("unit", description=(
        "percent: the source sends confidences as 0..100 (divided by 100 before clamping to 0..1). Never guessed."))
    debounce_s: float = Field(0.0, ge=0, le=86_400, description=(
        "Per device, stream and class, send at most one event in this many seconds (0: every message). "
        "Suppressed "
        "messages are counted, not dead-lettered."))
    image_size: ImageSize | None = Field(None, description=(
        "Size of the images the boxes refer to when the payload does not say (normalized boxes need it)."))
    generic: GenericMapping | None = Field(None, description="Field mapping of the generic format.")
    deepstream: DeepStreamOptions = Field(default_factory=DeepStreamOptions, description="DeepStream options.")
    frigate: FrigateOptions = Field(default_factory=FrigateOptions, description="Frigate options.")
    ultralytics: UltralyticsOptions = Field(default_factory=UltralyticsOptions, description="Ultralytics options.")
    sparkplug: SparkplugOptions | None = Field(None, description="Sparkplug B metric mapping.")
    quality_check: QualityCheckRule | None = Field(None, description=(
        "quality_check result rule; default: fail when there is any detection."))
    safety_alert: SafetyAlertRule | None = Field(None, description=(
        "safety_alert rule; default: the first detection's class is the alertType."))
    inventory_count: InventoryCountRule | None = Field(None, description=(
        "inventory_count rule; default: count every detection."))
    image: ImageOptions = Field(default_factory=ImageOptions, description=(
        "Image references (inline base64 path, URL, file, companion topic), checks and resizing."))

    @model_validator(mode="after")
    def _format_sections(self) -> RouteConfig:
        if self.format == "generic" and self.generic is None:
            raise ValueError("format generic needs a `generic` section (detections_path, class_path, box, ...)")
        if self.format == "sparkplug" and self.sparkplug is None:
            raise ValueError("format sparkplug needs a `sparkplug` section with the metrics to map")
        if self.sparkplug is not None and self.generic is None:
            unmapped = [m.name for m in self.sparkplug.metrics if m.format == "generic" and m.generic is None]
            if unmapped:
                raise ValueError(f"sparkplug metrics {unmapped} need a `generic` mapping (on the metric or the route)")
        return self

    @property
    def label(self) -> str:
        """Name used in logs, metrics and dead letters."""
        return self.name or self.topic


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
        if parked and self.mqtt.protocol == "5" and 2 * parked > self.mqtt.receive_maximum:
            raise ValueError(f"routes[].image.companion.max_parked add up to {parked}: keep them at most half of "
                             f"mqtt.receive_maximum ({self.mqtt.receive_maximum})")
        return self


def _read_secret(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError([(key, f"cannot read secret file {path}: {exc.strerror}")]) from exc


def _interpolate(node: object, path: str, env: dict[str, str], problems: list[tuple[str, str]]) -> object:
    """Replace `${VAR}` and `${VAR:-default}` in every string of the parsed YAML; `$$` is a literal `$`."""
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append((path, f"environment variable {name} is not set (use ${{{name}:-default}})"))
        return ""

    return _ENV_RE.sub(substitute, node)


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[")):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def parse_config(raw: object, env: dict[str, str] | None = None, base_dir: Path | None = None) -> BridgeConfig:
    """Validate an already-parsed YAML document. Raises ConfigError listing every problem with its key path."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "the file must hold a mapping of sections (mqtt, api, routes, ...)")])
    try:
        data = _interpolate(raw, "", dict(os.environ) if env is None else env, problems)
    except RecursionError:  # a YAML alias that contains itself, or absurd nesting
        raise ConfigError([("(top level)", "the document refers to itself or is nested too deeply")]) from None
    if problems:
        raise ConfigError(problems)
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([(_loc_to_path(err["loc"]), err["msg"]) for err in exc.errors()]) from None
    if base_dir is not None and not config.buffer.path.is_absolute():
        buffer = config.buffer.model_copy(update={"path": (base_dir / config.buffer.path)})
        config = config.model_copy(update={"buffer": buffer})
    return config


def load_config(path: Path, env: dict[str, str] | None = None) -> BridgeConfig:
    """Read and validate a YAML config file. Relative buffer paths stay relative to the working directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {path}: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([("(file)", f"{path} is not UTF-8 text (byte {exc.start})")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        raise ConfigError([(where, f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:
        raise ConfigError([("(file)", "invalid YAML: nested too deeply")]) from None
    return parse_config(raw, env)


def redacted(config: BridgeConfig) -> dict[str, object]:
    """The effective config as plain data, with every secret replaced by `**********`."""
    dumped: dict[str, object] = config.model_dump(mode="json")
    return dumped
