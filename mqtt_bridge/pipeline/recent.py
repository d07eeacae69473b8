"""Recognising a redelivered message: the digests of the records this process committed lately.

Owns: `RecentCommits`, which the processor asks before it commits a group, so that a message the broker sent again
(its first copy logged, its ack lost in a reconnect: both copies are in the raw log) is not committed twice. Memory
only: after a restart every redelivery is committed (and the API overwrites it, same eventId). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import deque

import orjson

from mqtt_bridge.model.record import Record

__all__ = ["RECENT_COMMITS", "RecentCommits"]

# How many committed records `RecentCommits` remembers (about 100 bytes each). A broker resends at most its in-flight
# window after a reconnect, but Mosquitto before 2.0.13 lets that window grow past Receive Maximum while it drains a
# backlog (eclipse/mosquitto#2301, fixed by 330bf6ef): measured up to 1262 un-acked with Receive Maximum 100.
RECENT_COMMITS = 20_000


class RecentCommits:
    """The digests of the last `capacity` records this process committed, to recognise a redelivered message.

    A digest covers the route, the event and the image bytes: the eventId is derived from the message, so a message
    the broker sends again yields the same digest, and committing it again would only make the flusher overwrite
    the event with identical content. A record that differs in anything (a later version under its own id, an image
    the first copy had to shed) is committed as usual.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._digests: set[bytes] = set()
        # oldest first, for eviction: popping a dict's first key rescans every deleted slot before it (quadratic
        # until the dict is rebuilt; it was 6 % of a drain's CPU), a deque pops in constant time
        self._order: deque[bytes] = deque()

    @staticmethod
    def digest(record: Record) -> bytes:
        """What identifies the record's delivery: route, event (sorted keys) and image."""
        parts = (record.route.encode(), orjson.dumps(record.event, option=orjson.OPT_SORT_KEYS),
                 record.image_name.encode(), record.image)
        return hashlib.sha1(b"\0".join(parts), usedforsecurity=False).digest()

    def fresh(self, records: list[Record]) -> tuple[list[Record], list[bytes]]:
        """The records not committed before (nor twice in this list), with their digests for `remember`."""
        kept: list[Record] = []
        digests: list[bytes] = []
        seen: set[bytes] = set()
        for record in records:
            digest = self.digest(record)
            if digest in self._digests or digest in seen:
                continue
            seen.add(digest)
            kept.append(record)
            digests.append(digest)
        return kept, digests

    def remember(self, digests: list[bytes]) -> None:
        """Call after the commit of the records `fresh` returned."""
        for digest in digests:
            if digest not in self._digests:
                self._digests.add(digest)
                self._order.append(digest)
        while len(self._order) > self._capacity:
            self._digests.discard(self._order.popleft())
