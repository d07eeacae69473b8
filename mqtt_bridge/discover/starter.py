"""The starter config discover writes: one route per detection pattern, ready for `check-config`.

Owns: the document (plain data, for `config.dump`) built from the survey's findings and the broker settings discover
used: the `mqtt` section (host, port, TLS, user; a fixed client id of the bridge's own, never the listener's random
one), the `api`, `buffer` and `health` sections with environment defaults, and per pattern a route: its topic
template, the format, `use_case: CHANGE_ME`, `device_id`/`stream_id`/metadata from the varying levels, and the image
reference found (companion topic and key, URL field with the hosts seen, file field with its folder, base64 field).
Patterns that cannot become a route as they are (an unknown format, Sparkplug without its metric mapping, raw images
no detection claimed) are listed in the header instead. `build_starter` checks the result with
`config.load.parse_config`, the same validation `check-config` runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mqtt_bridge.config.load import parse_config
from mqtt_bridge.config.sections import MqttConfig
from mqtt_bridge.discover.survey import Finding
from mqtt_bridge.discover.traits import RAW_IMAGE, ImageKind

__all__ = ["USE_CASE_PLACEHOLDER", "StarterConfig", "build_starter"]

USE_CASE_PLACEHOLDER = "CHANGE_ME"
STARTER_CLIENT_ID = "mqtt-vision-bridge"
# the environment a starter config is checked with: what `run` needs set, and nothing else
CHECK_ENV = {"ROBOFLOW_API_KEY": "discover-check"}
_SUFFIX_LEVELS = frozenset({"detections", "detection", "detect", "events", "event", "results", "result", "data",
                            "inference", "predictions", "objects", "state", "json", "out", "output"})


@dataclass(slots=True)
class StarterConfig:
    """The document to write, and the notes for its header (one line each)."""

    document: dict[str, object]
    notes: list[str] = field(default_factory=list)


def _mqtt_section(mqtt: MqttConfig) -> dict[str, object]:
    section: dict[str, object] = {"host": mqtt.host, "port": mqtt.port, "client_id": STARTER_CLIENT_ID}
    if mqtt.protocol != "auto":
        section["protocol"] = mqtt.protocol
    if mqtt.username is not None:
        section["username"] = mqtt.username
        section["password_file"] = str(mqtt.password_file) if mqtt.password_file else "/run/secrets/mqtt-password"
    if mqtt.tls.enabled:
        tls: dict[str, object] = {"enabled": True}
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(mqtt.tls, key)
            if value is not None:
                tls[key] = str(value)
        section["tls"] = tls
    return section


def _device_levels(finding: Finding) -> tuple[str | None, str | None]:
    """device_id and stream_id templates: the varying levels, or the topic's own levels when none vary."""
    names = finding.pattern.names
    if names:
        device = "-".join(f"{{{name}}}" for name in names)
        return device, (f"{{{names[-1]}}}" if len(names) > 1 else None)
    levels = finding.pattern.levels[1:]
    if len(levels) > 1 and levels[-1].lower() in _SUFFIX_LEVELS:
        levels = levels[:-1]
    device = "-".join(level for level in levels if level) or finding.pattern.levels[0]
    return device, None


def _host_of(netloc: str) -> str:
    """The host of a URL's `host[:port]` (an IPv6 literal without its brackets)."""
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc[1:]
    return netloc.split(":", 1)[0]


def _networks(host: str) -> list[str]:
    """The single-address networks that allow `host` (localhost: both loopback addresses)."""
    if host == "localhost":
        return ["127.0.0.1/32", "::1/128"]
    address = ipaddress.ip_address(host)
    return [f"{address}/{address.max_prefixlen}"]


def _is_private_host(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_private or address.is_loopback or address.is_link_local


def _image_section(finding: Finding, notes: list[str]) -> dict[str, object] | None:
    template = finding.pattern.template
    if finding.image == ImageKind.COMPANION and finding.companion is not None:
        companion: dict[str, object] = {"topic": finding.companion.topic, "window_s": 5}
        if finding.companion.key is not None:
            companion["key"] = finding.companion.key
            companion["image_key"] = finding.companion.image_key
        else:
            notes.append(f"{template}: its companion images are paired by topic levels and arrival order only "
                         "(no payload field names the image); check image.companion.key")
        return {"companion": companion}
    if finding.image == ImageKind.URL and finding.image_field and finding.url_hosts:
        url: dict[str, object] = {"field": finding.image_field, "allow_hosts": list(finding.url_hosts)}
        private = sorted({_host_of(netloc) for netloc in finding.url_hosts if _is_private_host(_host_of(netloc))})
        if private:
            url["allow_private_networks"] = sorted({network for host in private for network in _networks(host)})
            notes.append(f"{template}: its image URLs point into private networks ({', '.join(private)}); "
                         "image.url.allow_private_networks allows exactly those: review it")
        return {"url": url}
    if finding.image == ImageKind.FILE and finding.image_field and finding.file_roots:
        notes.append(f"{template}: images are read from files under {', '.join(finding.file_roots)}; the bridge "
                     "must see the same paths")
        return {"file": {"field": finding.image_field, "roots": list(finding.file_roots)}}
    if finding.image == ImageKind.BASE64 and finding.image_field:
        return {"base64_path": finding.image_field}
    return None


def _route(finding: Finding, notes: list[str]) -> dict[str, object]:
    route: dict[str, object] = {"topic": finding.pattern.template, "format": finding.format,
                                "use_case": USE_CASE_PLACEHOLDER}
    device, stream = _device_levels(finding)
    if device:
        route["device_id"] = device
    if stream:
        route["stream_id"] = stream
    if finding.pattern.names:
        route["metadata"] = {name: f"{{{name}}}" for name in finding.pattern.names}
    image = _image_section(finding, notes)
    if image is not None:
        route["image"] = image
    return route


def _skip_reason(finding: Finding) -> str | None:
    if finding.format == RAW_IMAGE:
        return None if finding.companion_of else "raw images that no detection topic claimed"
    if finding.format is None:
        return "no known payload format fits: give it a route with format generic and a `generic` mapping"
    if finding.format == "sparkplug":
        return "Sparkplug B: give it a route with format sparkplug and a `sparkplug` metric mapping"
    return None


def build_starter(findings: list[Finding], mqtt: MqttConfig) -> StarterConfig:
    """The starter config for `findings` (most specific first, as the router takes them). It passes
    `check-config` once ROBOFLOW_API_KEY is set; a ConfigError here is a bug of this module."""
    notes: list[str] = []
    routes: list[dict[str, object]] = []
    for finding in findings:
        reason = _skip_reason(finding)
        if reason is not None:
            notes.append(f"{finding.pattern.template}: not routed ({reason})")
            continue
        if finding.format == RAW_IMAGE:
            continue  # a companion image topic: its detection route names it
        routes.append(_route(finding, notes))
        if finding.retained:
            notes.append(f"{finding.pattern.template}: {finding.retained} retained message(s) seen; the bridge "
                         "sends a retained message again after each restart")
    if mqtt.protocol == "3.1.1":
        notes.append("mqtt.protocol is 3.1.1, as discover connected; `auto` uses MQTT 5 where the broker speaks it "
                     "(the bridge's Receive Maximum then bounds un-acked messages)")
    document: dict[str, object] = {
        "mqtt": _mqtt_section(mqtt),
        "api": {"base_url": "${ROBOFLOW_API_URL:-https://api.roboflow.com}", "api_key": "${ROBOFLOW_API_KEY}"},
        "buffer": {"path": "${MQTT_BRIDGE_BUFFER:-/var/lib/mqtt-bridge}"},
        "health": {"port": "${MQTT_BRIDGE_HEALTH_PORT:-9100}"},
        "routes": routes,
    }
    if routes:
        parse_config(document, env=CHECK_ENV)  # the check-config validation; raises ConfigError
    return StarterConfig(document, notes)
