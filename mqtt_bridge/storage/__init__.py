"""Durable storage on diskcache, its only importer: the event buffer and the dead letters, bytes only.

`buffer` (the queue, the one interface: `DiskBuffer`), `segments` (the byte format of the queue), `dead_letters`,
`disk` (opening the SQLite database safely).
"""
