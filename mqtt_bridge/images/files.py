"""Reading an image file named in a message, only from under the directories the route allows.

Owns: the path-traversal rules of reliability.md §4 for `routes[].image.file`: no NUL, no backslash, no `..`
segment; a relative path is taken under the first root; the path is resolved (`os.path.realpath`) and must stay
under one of the roots (`os.path.commonpath`), so a symlink that points outside is refused; the file is then
opened component by component from the root's directory with `O_NOFOLLOW`, so that nothing swapped in after the
check can lead elsewhere; it must be a regular file (`fstat`) of at most `max_bytes`.

Raises `DecodeError`: `image_path_refused` (the policy forbids the path), `image_read_failed` (missing or
unreadable) or `image_rejected` (too large). Must not touch the network, the buffer or MQTT.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from mqtt_bridge.errors import DeadLetterReason, DecodeError

__all__ = ["read_under_roots"]

_REFUSED = DeadLetterReason.IMAGE_PATH_REFUSED
_FAILED = DeadLetterReason.IMAGE_READ_FAILED
_MAX_PATH_CHARS = 4096


def _candidate(path_text: str, roots: Sequence[Path]) -> str:
    if not path_text or len(path_text) > _MAX_PATH_CHARS:
        raise DecodeError(_REFUSED, "the path is empty or too long")
    if "\x00" in path_text or "\\" in path_text:
        raise DecodeError(_REFUSED, "the path contains a NUL byte or a backslash")
    if ".." in path_text.split("/"):
        raise DecodeError(_REFUSED, "the path contains a '..' segment")
    return path_text if path_text.startswith("/") else os.path.join(roots[0], path_text)


def _open_beneath(root: str, relative: str) -> int:
    """Open `relative` under the directory `root`, one component at a time, never following a symlink."""
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        *parents, name = relative.split("/")
        for part in parents:
            child = os.open(part, flags_dir, dir_fd=directory)
            os.close(directory)
            directory = child
        # O_NONBLOCK: opening a FIFO must not hang the worker; fstat refuses it right after
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=directory)
    finally:
        os.close(directory)


def read_under_roots(path_text: str, roots: Sequence[Path], max_bytes: int) -> bytes:
    """Read the file `path_text` names if it lies under one of `roots`. Raises DecodeError (see module doc)."""
    resolved = os.path.realpath(_candidate(path_text, roots))
    for root in roots:
        real_root = os.path.realpath(root)
        with contextlib.suppress(ValueError):  # commonpath of paths on different drives: not under it
            if os.path.commonpath([resolved, real_root]) == real_root and resolved != real_root:
                break
    else:
        raise DecodeError(_REFUSED, "the path (after resolving symlinks) is not under any of the allowed roots")
    try:
        descriptor = _open_beneath(real_root, os.path.relpath(resolved, real_root))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DecodeError(_REFUSED, "a component of the path was changed into a symlink") from None
        raise DecodeError(_FAILED, f"cannot open the file: {exc.strerror}") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(_REFUSED, "not a regular file")
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED, f"{info.st_size} bytes is over the limit of {max_bytes}")
    with os.fdopen(descriptor, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise DecodeError(_FAILED, f"cannot read the file: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise DecodeError(DeadLetterReason.IMAGE_REJECTED, f"the file grew over the limit of {max_bytes} bytes")
    return data
