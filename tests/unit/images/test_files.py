"""File images: only regular files under the allowed roots; traversal, symlink escapes and odd files refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mqtt_bridge.errors import DecodeError
from mqtt_bridge.images.files import _open_beneath, read_under_roots

DATA = b"\xff\xd8\xff\xe0 a jpeg, as far as this module cares"


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root with a picture in a subdirectory, and a secret file outside it."""
    root = tmp_path / "images"
    (root / "cam1").mkdir(parents=True)
    (root / "cam1" / "frame.jpg").write_bytes(DATA)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    return root, outside


def _reason(path: str, roots: list[Path], max_bytes: int = 2**20) -> str:
    with pytest.raises(DecodeError) as info:
        read_under_roots(path, roots, max_bytes)
    return info.value.reason


def test_localfiles_reads_absolute_and_relative_paths_under_a_root(roots: tuple[Path, Path]) -> None:
    """An absolute path under a root, and a path relative to the first root, are read whole."""
    root, _ = roots
    assert read_under_roots(str(root / "cam1" / "frame.jpg"), [root], 2**20) == DATA
    assert read_under_roots("cam1/frame.jpg", [Path("/nonexistent-root"), root][::-1], 2**20) == DATA


@pytest.mark.parametrize("path", ["../../etc/passwd", "cam1/../../secret/passwd", "/etc/passwd", "cam1/frame.jpg\x00",
                                  "cam1\\frame.jpg", "", "/"])
def test_localfiles_traversal_and_outside_paths_are_refused(path: str, roots: tuple[Path, Path]) -> None:
    """`..`, absolute paths outside the roots, NUL bytes and backslashes never reach open()."""
    assert _reason(path, [roots[0]]) == "image_path_refused"


def test_localfiles_symlink_escape_is_refused(roots: tuple[Path, Path]) -> None:
    """A symlink inside the root that points outside it is refused (file and directory links alike)."""
    root, outside = roots
    (root / "cam1" / "evil.jpg").symlink_to(outside / "passwd")
    (root / "link").symlink_to(outside)
    assert _reason("cam1/evil.jpg", [root]) == "image_path_refused"
    assert _reason("link/passwd", [root]) == "image_path_refused"
    (root / "cam1" / "alias.jpg").symlink_to(root / "cam1" / "frame.jpg")
    assert read_under_roots("cam1/alias.jpg", [root], 2**20) == DATA  # a link that stays inside is fine


def test_localfiles_component_swapped_for_a_symlink_is_not_followed(roots: tuple[Path, Path]) -> None:
    """The open walks from the root with O_NOFOLLOW: a directory replaced by a symlink after the check fails."""
    root, outside = roots
    (root / "swapped").symlink_to(outside)
    with pytest.raises(OSError):
        _open_beneath(str(root), "swapped/passwd")


def test_localfiles_only_regular_files_within_the_size_cap(roots: tuple[Path, Path]) -> None:
    """Directories and FIFOs are refused (a FIFO without hanging); a file over the cap is image_rejected."""
    root, _ = roots
    os.mkfifo(root / "cam1" / "pipe.jpg")
    assert _reason("cam1", [root]) == "image_path_refused"
    assert _reason("cam1/pipe.jpg", [root]) == "image_path_refused"
    assert _reason("cam1/frame.jpg", [root], max_bytes=10) == "image_rejected"
    assert _reason("cam1/missing.jpg", [root]) == "image_read_failed"
