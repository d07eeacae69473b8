"""`mqtt-bridge status`: a one-screen summary from the running bridge, or from its buffer when it is stopped.

Owns: asking the running bridge's health server for `/status.json` (with the health token when one is set), and
otherwise reading the buffer on disk; printing either as text or JSON. Exit code 0 when the bridge is running and
ready, or stopped with an empty queue; 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import TextIO

import orjson

from mqtt_bridge.cli.common import open_buffer, operator_errors, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.model.values import JsonDict, JsonValue

__all__ = ["status", "status_command"]


def status_command(args: argparse.Namespace) -> int:
    """`status [--json]`."""
    return with_config(args.config, operator_errors(lambda config: status(config, sys.stdout, as_json=args.json)))


def _fetch_status(config: BridgeConfig, timeout_s: float = 3.0) -> JsonDict | None:
    """The running bridge's /status.json, or None when no bridge answers."""
    if not config.health.enabled:
        return None
    host = config.health.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a bind-all address is reachable locally
    request = urllib.request.Request(f"http://{host}:{config.health.port}/status.json")
    if config.health.token is not None:
        request.add_header("Authorization", f"Bearer {config.health.token.get_secret_value()}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never http_proxy: it would get the token
    try:
        with opener.open(request, timeout=timeout_s) as answer:
            document = orjson.loads(answer.read())
    except (OSError, urllib.error.URLError, orjson.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _yes(value: JsonValue) -> str:
    return "yes" if value else "NO"


def _age(seconds: float) -> str:
    if seconds < 1:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def status(config: BridgeConfig, out: TextIO, *, as_json: bool = False) -> int:
    """Print a one-screen summary from the running bridge, or from the buffer when it is stopped.

    Returns 0 when the bridge is running and ready, or stopped with an empty queue; 1 otherwise.
    """
    live = _fetch_status(config)
    if live is not None:
        if as_json:
            out.write(orjson.dumps(live).decode() + "\n")
        else:
            _print_live(live, out)
        state = live.get("state")
        return 0 if isinstance(state, dict) and state.get("ready") else 1
    buffer = open_buffer(config)
    try:
        oldest = buffer.oldest_received_at_s()
        oldest_raw = buffer.raw.oldest_received_at_s()
        reasons = Counter(letter.reason for _, letter in buffer.dead_letters())
        summary: JsonDict = {"running": False, "buffer": str(config.buffer.path), "depth": buffer.depth,
                             "bytes": buffer.volume_bytes(), "oldestAgeS": time.time() - oldest if oldest else 0.0,
                             "deadLetters": buffer.dead_letter_count, "deadLettersByReason": dict(reasons),
                             "rawDepth": buffer.raw.depth,
                             "rawOldestAgeS": time.time() - oldest_raw if oldest_raw else 0.0}
    finally:
        buffer.close()
    if as_json:
        out.write(orjson.dumps(summary).decode() + "\n")
    else:
        age = float(summary["oldestAgeS"]) if isinstance(summary["oldestAgeS"], float) else 0.0
        raw_age = float(summary["rawOldestAgeS"]) if isinstance(summary["rawOldestAgeS"], float) else 0.0
        out.write(f"bridge:        stopped (no answer from its health server; read the buffer at "
                  f"{config.buffer.path})\n"
                  f"waiting:       {summary['depth']} event(s), oldest {_age(age)}, {summary['bytes']} bytes\n"
                  f"raw log:       {summary['rawDepth']} message(s) not processed yet, oldest {_age(raw_age)} "
                  "(processed when the bridge starts)\n"
                  f"dead letters:  {summary['deadLetters']}"
                  + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})" if reasons else "")
                  + "\n")
    return 0 if buffer.depth == 0 and buffer.raw.depth == 0 else 1


def _print_live(live: JsonDict, out: TextIO) -> None:
    state = live.get("state") if isinstance(live.get("state"), dict) else {}
    buffer = live.get("buffer") if isinstance(live.get("buffer"), dict) else {}
    totals = live.get("totals") if isinstance(live.get("totals"), dict) else {}
    assert isinstance(state, dict) and isinstance(buffer, dict) and isinstance(totals, dict)
    oldest = buffer.get("oldestAgeS")
    lines = [
        f"bridge:        running v{live.get('version')}, up {_age(float(str(live.get('uptimeS') or 0)))}, "
        f"{'READY' if state.get('ready') else 'NOT READY'}",
        f"mqtt:          connected={_yes(state.get('mqttConnected'))} subscribed={_yes(state.get('mqttSubscribed'))}"
        + (f" protocol={state.get('mqttProtocol')}" if state.get("mqttProtocol") else ""),
        f"api:           NOT READY: {state.get('apiReason')}" if state.get("apiReason") else
        f"api:           key accepted={_yes(state.get('apiReady'))}",
        f"buffer:        {buffer.get('depth')} waiting, oldest {_age(float(str(oldest or 0)))}, "
        f"{buffer.get('bytes')} bytes, writable={_yes(state.get('bufferWritable'))}, "
        f"backpressured={'YES' if state.get('backpressured') else 'no'}",
        f"raw log:       {buffer.get('rawDepth', 0)} not processed yet, "
        f"oldest {_age(float(str(buffer.get('rawOldestAgeS') or 0)))}",
        f"totals:        received={totals.get('received')} delivered={totals.get('delivered')} "
        f"({totals.get('deliveredPerS')}/s) dead-lettered={totals.get('deadLettered')}",
    ]
    if state.get("mqttProblem"):
        lines.insert(2, f"mqtt problem:  {state.get('mqttProblem')}")
    if not state.get("ready") and state.get("notReadyReason"):
        lines.insert(1, f"not ready:     {state.get('notReadyReason')}")
    routes = live.get("routes")
    for route in routes if isinstance(routes, list) else []:
        if isinstance(route, dict):
            lines.append(f"route:         {route.get('route')}: {route.get('received')} received, "
                         f"{route.get('ratePerS')}/s")
    reasons = live.get("deadLettersByReason")
    if isinstance(reasons, dict) and reasons:
        lines.append("dead letters:  " + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())))
    if state.get("lastError"):
        lines.append(f"last error:    {state.get('lastError')}")
    out.write("\n".join(lines) + "\n")
