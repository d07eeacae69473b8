"""Durable storage on diskcache, its only importer: the raw log, the event buffer and the dead letters, bytes only.

`buffer` (the queue, the one interface: `DiskBuffer`), `raw_log` (the raw messages between the broker's ack and the
processor, in the same database), `segments` (the byte format of the queue), `dead_letters`, `disk` (opening the
SQLite database safely).
"""
