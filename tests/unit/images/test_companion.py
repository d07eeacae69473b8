"""Companion-topic correlation: pairing by key in either order, windows, limits and redelivered copies."""

from __future__ import annotations

from dataclasses import dataclass

from mqtt_bridge.images.companion import TOO_MANY_PARKED, WINDOW_EXPIRED, CompanionJoin


@dataclass(frozen=True)
class Msg:
    name: str
    generation: int = 1


def test_companion_pairs_detection_first_and_image_first() -> None:
    """Whichever arrives first waits; the second of the same key releases both as a pair."""
    join: CompanionJoin[Msg] = CompanionJoin(window_s=5, max_parked=10)
    assert not join.add_detection(Msg("d1"), "L1/cam1/7", now=0)
    assert join.add_image(Msg("i1"), "L1/cam1/7", now=1).paired == [(Msg("d1"), Msg("i1"))]
    assert not join.add_image(Msg("i2"), "L1/cam1/8", now=2)
    assert join.add_detection(Msg("d2"), "L1/cam1/8", now=3).paired == [(Msg("d2"), Msg("i2"))]
    assert join.parked == 0 and join.next_deadline() is None


def test_companion_keys_keep_cameras_apart_and_pair_oldest_first() -> None:
    """An image only pairs with a detection of its own key, the oldest waiting one first."""
    join: CompanionJoin[Msg] = CompanionJoin(window_s=5, max_parked=10)
    join.add_detection(Msg("cam1-a"), "cam1", now=0)
    join.add_detection(Msg("cam1-b"), "cam1", now=0.1)
    join.add_detection(Msg("cam2-a"), "cam2", now=0.2)
    assert join.add_image(Msg("img2"), "cam2", now=1).paired == [(Msg("cam2-a"), Msg("img2"))]
    assert join.add_image(Msg("img1"), "cam1", now=1).paired == [(Msg("cam1-a"), Msg("img1"))]
    assert join.parked == 1


def test_companion_window_releases_detection_without_image_and_drops_image() -> None:
    """After the window a detection goes on without its image; an unclaimed image is dropped."""
    join: CompanionJoin[Msg] = CompanionJoin(window_s=2, max_parked=10)
    join.add_detection(Msg("d"), "a", now=0)
    join.add_image(Msg("i"), "b", now=1)
    assert join.next_deadline() == 2
    assert not join.expire(now=1.9)
    first = join.expire(now=2.0)
    assert first.unpaired == [(Msg("d"), WINDOW_EXPIRED)] and first.dropped == []
    assert join.expire(now=3.0).dropped == [Msg("i")]
    assert join.parked == 0
    assert not join.add_image(Msg("late"), "a", now=4)  # the detection is gone: the late image waits alone


def test_companion_max_parked_releases_the_oldest() -> None:
    """Never more than max_parked wait: the oldest is released (detection unpaired, image dropped)."""
    join: CompanionJoin[Msg] = CompanionJoin(window_s=60, max_parked=2)
    join.add_detection(Msg("d1"), "k1", now=0)
    join.add_image(Msg("i1"), "k9", now=0)
    outcome = join.add_detection(Msg("d2"), "k2", now=0)
    assert outcome.unpaired == [(Msg("d1"), TOO_MANY_PARKED)]
    assert join.add_detection(Msg("d3"), "k3", now=0).dropped == [Msg("i1")]
    assert join.parked == 2


def test_companion_parked_image_bytes_are_bounded() -> None:
    """Parked images hold at most max_parked_bytes; past it the oldest image is dropped."""
    join: CompanionJoin[Msg] = CompanionJoin(window_s=60, max_parked=100, max_parked_bytes=1000)
    join.add_image(Msg("i1"), "a", now=0, size=600)
    assert join.add_image(Msg("i2"), "b", now=0, size=600).dropped == [Msg("i1")]
    assert join.parked_bytes == 600


def test_companion_redelivered_copy_replaces_the_old_one() -> None:
    """A copy resent by the broker (another raw log entry) takes the old one's place; the old one is handed back as
    superseded, to be finished without an event."""
    join: CompanionJoin[Msg] = CompanionJoin(
        window_s=5, max_parked=10,
        supersedes=lambda new, old: new.name == old.name and new.generation != old.generation)
    join.add_detection(Msg("d", generation=1), "k", now=0)
    outcome = join.add_detection(Msg("d", generation=2), "k", now=1)
    assert join.parked == 1 and outcome.superseded == [Msg("d", 1)] and not outcome.paired
    assert join.add_image(Msg("i", generation=2), "k", now=2).paired == [(Msg("d", 2), Msg("i", 2))]
    assert not join.expire(now=100)
