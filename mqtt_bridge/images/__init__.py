"""Images: references (inline, companion topic, URL, file: per-route plans in `reference_plans`, the stage that
resolves them between MQTT and the receiver in `references`), SSRF-safe URL fetch, path-safe file reads, Pillow
checks and resize (the only Pillow importer on the data path), attaching to events, and shedding under pressure.
"""
