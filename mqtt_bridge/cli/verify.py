"""`mqtt-bridge verify [--since 1h]`: proof of delivery. Asks the API whether each recently delivered event exists.

Owns: reading the delivery ledger (`storage.ledger`, `<buffer>/ledger`: readable while the bridge runs, since it is
not under the buffer's lock), grouping its entries by use case, asking `POST /vision-events/query` for each group's
time window (`api.query`: the API cannot filter by eventId, so the window, use case and event types narrow the
pages), and printing every event that is missing, then a summary, with a progress bar on a terminal. An event
older than the workspace's retention (`lookbackDays` of the answer) cannot be checked: it is counted apart, not as
missing. Exit 0 when every checked event was found, 1 when any is missing; `cli.common` maps config (2), API (3)
and ledger (4) errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

from mqtt_bridge.api.client import VisionEventsClient
from mqtt_bridge.api.query import QueryApi, find_events
from mqtt_bridge.cli.common import EXIT_FAILURE, EXIT_OK, Progress, UsageError, operator_errors, parse_when, with_config
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.model.values import format_timestamp, parse_timestamp
from mqtt_bridge.storage.ledger import DeliveryLedger, LedgerEntry, ledger_path

__all__ = ["VerifyResult", "verify", "verify_command"]

_MARGIN = timedelta(seconds=1)  # the API may round or re-render a timestamp: widen the window a little


@dataclass(slots=True)
class VerifyResult:
    """What one `verify` found: every checked entry is in exactly one of the lists."""

    found: list[LedgerEntry] = field(default_factory=list)
    missing: list[LedgerEntry] = field(default_factory=list)
    expired: list[LedgerEntry] = field(default_factory=list)  # older than the workspace's retention
    pages: int = 0

    @property
    def checked(self) -> int:
        """How many delivered events were looked at."""
        return len(self.found) + len(self.missing) + len(self.expired)


def verify_command(args: argparse.Namespace) -> int:
    """`verify --config FILE [--since AGE|TIME]`."""

    def action(config: BridgeConfig) -> int:
        since_s = parse_when(args.since) if args.since else None
        result = verify(config, sys.stdout, since_s=since_s)
        return EXIT_FAILURE if result.missing else EXIT_OK

    return with_config(args.config, operator_errors(action))


def _latest(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """One entry per eventId (an event delivered again, e.g. replayed, counts once: its last delivery)."""
    return list({entry.event_id: entry for entry in entries}.values())


def _stamp(entry: LedgerEntry) -> datetime:
    moment = parse_timestamp(entry.timestamp)
    return moment if moment is not None else datetime.fromtimestamp(entry.delivered_at_s, tz=UTC)


def _check_use_case(api: QueryApi, use_case_id: str, entries: list[LedgerEntry], progress: Progress,
                    result: VerifyResult, now: datetime) -> None:
    stamps = [_stamp(entry) for entry in entries]
    sighting = find_events(api, use_case_id, {entry.event_id for entry in entries}, min(stamps) - _MARGIN,
                           max(stamps) + _MARGIN, {entry.event_type for entry in entries if entry.event_type},
                           on_found=progress.advance)
    result.pages += sighting.pages
    oldest = now - timedelta(days=sighting.lookback_days) if sighting.lookback_days is not None else None
    for entry, stamp in zip(entries, stamps, strict=True):
        if entry.event_id in sighting.found:
            result.found.append(entry)
            continue
        progress.advance()
        (result.expired if oldest is not None and stamp < oldest else result.missing).append(entry)


def verify(config: BridgeConfig, out: TextIO, *, since_s: float | None = None, api: QueryApi | None = None,
           progress_stream: TextIO | None = None) -> VerifyResult:
    """Check every event of the ledger (delivered at or after `since_s`) against the API; print the missing ones
    and a summary to `out`. Raises UsageError when the ledger is off, StorageError when it is unusable, ApiError
    when the API cannot be asked."""
    if config.buffer.ledger_entries <= 0:
        raise UsageError("buffer.ledger_entries is 0: the bridge keeps no delivery ledger, so there is nothing to "
                         "verify")
    path = ledger_path(config.buffer.path)
    if not (path / "cache.db").is_file():
        out.write(f"no deliveries recorded yet in {path}\n")
        return VerifyResult()
    with DeliveryLedger(path, config.buffer.ledger_entries).open(create=False) as ledger:
        entries = _latest(ledger.entries(since_s))
    by_use_case: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        by_use_case[entry.use_case_id].append(entry)
    result = VerifyResult()
    client = None
    if api is None:
        settings = config.api
        client = VisionEventsClient(settings.base_url, settings.api_key_value, settings.connect_timeout_s,
                                    settings.read_timeout_s)
        api = client
    progress = Progress(len(entries), "verifying", progress_stream)
    now = datetime.now(UTC)
    try:
        for use_case_id, group in by_use_case.items():
            _check_use_case(api, use_case_id, group, progress, result, now)
    finally:
        progress.close()
        if client is not None:
            client.close()
    _report(result, out, since_s)
    return result


def _report(result: VerifyResult, out: TextIO, since_s: float | None) -> None:
    for entry in sorted(result.missing, key=lambda e: e.delivered_at_s):
        delivered = format_timestamp(datetime.fromtimestamp(entry.delivered_at_s, tz=UTC))
        out.write(f"missing  {entry.event_id}  use_case={entry.use_case_id} route={entry.route} "
                  f"timestamp={entry.timestamp} delivered_at={delivered}\n")
    window = ("since " + format_timestamp(datetime.fromtimestamp(since_s, tz=UTC))) if since_s is not None \
        else "in the ledger"
    expired = f", {len(result.expired)} older than the workspace's retention (not checked)" if result.expired \
        else ""
    out.write(f"{result.checked} delivered event(s) {window}: {len(result.found)} found, "
              f"{len(result.missing)} missing{expired} ({result.pages} query page(s), "
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})\n")
