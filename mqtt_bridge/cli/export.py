"""`mqtt-bridge export`: undelivered events written as Vision Events bundles (`event_*.tar.gz`), bridge stopped.

Owns: walking the queue oldest first, writing one bundle per event (`api.bundle`), and `--delete`, which drops
exactly the exported head of the queue. Raises `UsageError` or `StorageError`; `cli.common` maps them to exit codes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mqtt_bridge.api.bundle import BundleTooLarge, write_bundle
from mqtt_bridge.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    Progress,
    UsageError,
    open_buffer,
    operator_errors,
    with_config,
)
from mqtt_bridge.config.bridge import BridgeConfig
from mqtt_bridge.storage.buffer import DiskBuffer

__all__ = ["ExportResult", "export_bundles", "export_command"]


def export_command(args: argparse.Namespace) -> int:
    """`export`: exit 0, or 1 when an event was too large for a bundle (then nothing is deleted)."""

    def action(config: BridgeConfig) -> int:
        buffer = open_buffer(config)
        try:
            result = export_bundles(buffer, Path(args.out), route=args.route, limit=args.limit, delete=args.delete)
        finally:
            buffer.close()
        print(f"wrote {result.written} bundle(s) to {args.out}" +
              (f"; {result.too_large} over 25 MiB skipped (nothing deleted)" if result.too_large else "") +
              ("; exported events removed from the buffer" if args.delete and not result.too_large else ""))
        return EXIT_OK if not result.too_large else EXIT_FAILURE

    return with_config(args.config, operator_errors(action))


@dataclass(slots=True)
class ExportResult:
    """What an export wrote."""

    written: int = 0
    too_large: int = 0
    paths: list[Path] = field(default_factory=list)


def export_bundles(buffer: DiskBuffer, directory: Path, *, route: str | None = None, limit: int | None = None,
                   delete: bool = False, progress_stream: TextIO | None = None) -> ExportResult:
    """Write undelivered events as bundles, oldest first. `delete` drops the exported ones from the buffer
    (only with no route filter, so that what is dropped is exactly the exported head of the queue)."""
    if delete and route is not None:
        raise UsageError("--delete exports the head of the queue: it cannot be combined with --route")
    directory.mkdir(parents=True, exist_ok=True)
    total = buffer.depth if limit is None else min(limit, buffer.depth)
    progress = Progress(total, "exporting", progress_stream)
    result = ExportResult()
    taken = 0
    for record in buffer.records():
        if limit is not None and taken >= limit:
            break
        if route is not None and record.route != route:
            continue
        taken += 1
        try:
            result.paths.append(write_bundle(record, directory))
            result.written += 1
        except BundleTooLarge:
            result.too_large += 1
        progress.advance()
    progress.close()
    if delete and taken and not result.too_large:
        buffer.complete(taken)
    return result
