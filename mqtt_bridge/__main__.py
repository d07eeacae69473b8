"""`python -m mqtt_bridge` runs the command-line interface."""

from __future__ import annotations

from mqtt_bridge.cli.main import main

raise SystemExit(main())
