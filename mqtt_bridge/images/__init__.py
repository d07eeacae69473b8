"""Images: references (inline, companion topic, URL, file), SSRF-safe URL fetch, path-safe file reads, Pillow
checks and resize (the only Pillow importer on the data path), attaching to events, and shedding under pressure.
"""
