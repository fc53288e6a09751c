"""Which objects of a node a process may trust: owner, type and mode, checked on the fd.

Everything of a node lives in places other local users can write to (/dev/shm is a sticky,
world-writable directory). An object is used only if the descriptor we opened (never
following a symlink) is of the expected type, is not writable by everyone, and belongs to
someone we trust:

* ourselves, and root (a root-run node serves every user);
* the node's owner, once the node segment itself passed these checks;
* for a node opened to a group (``tipcshm start --group G``), objects of group G: the
  members create the inboxes of their own sockets. Root never trusts a node through a
  group (it would let any member of a group root is in plant a node for root's programs).

The checks run on ``fstat`` of the open descriptor, so a name swapped between the check
and the use cannot fool them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from tipcshm.errors import UntrustedObject

__all__ = ["Trust", "default_trust", "node_trust", "open_checked", "UntrustedObject"]

_KINDS = {"file": stat.S_ISREG, "fifo": stat.S_ISFIFO, "dir": stat.S_ISDIR}


@dataclass(frozen=True, slots=True)
class Trust:
    """Owners whose objects are trusted, and the group of a group-shared node (or None)."""

    uids: frozenset[int]
    gid: int | None = None

    def check(self, st: os.stat_result, path: str, kind: str = "file") -> None:
        """Raise :class:`UntrustedObject` unless ``st`` describes a trustworthy ``kind``."""
        if not _KINDS[kind](st.st_mode):
            raise UntrustedObject(path, f"not a {kind} (mode {st.st_mode:#o})")
        if st.st_mode & 0o002:
            raise UntrustedObject(path, f"writable by every user (mode {st.st_mode & 0o7777:#o})")
        if st.st_uid in self.uids:
            return
        if self.gid is not None and st.st_gid == self.gid:
            return
        raise UntrustedObject(
            path, f"owned by uid {st.st_uid}, not by the node's owner or a trusted user"
        )


def default_trust() -> Trust:
    """Before a node is known: our own objects and root's."""
    return Trust(frozenset({os.geteuid(), 0}))


def node_trust(st: os.stat_result, path: str) -> Trust:
    """The trust a process extends to a node whose segment ``st`` describes.

    Raises :class:`UntrustedObject` when the segment itself is not trusted.
    """
    euid = os.geteuid()
    shared = (st.st_mode & 0o060) == 0o060
    if st.st_uid in (euid, 0):
        Trust(frozenset({euid, 0})).check(st, path)
        return Trust(frozenset({euid, 0}), st.st_gid if shared else None)
    if euid != 0 and shared and st.st_gid in os.getgroups():
        Trust(frozenset({st.st_uid}), None).check(st, path)
        return Trust(frozenset({st.st_uid, euid, 0}), st.st_gid)
    raise UntrustedObject(
        path,
        f"owned by uid {st.st_uid} (you are uid {euid}) and not shared with a group of yours",
    )


def open_checked(path: str, flags: int, trust: Trust, kind: str = "file", mode: int = 0o600) -> int:
    """``os.open`` without following a symlink, then :meth:`Trust.check` on the descriptor."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the name is a symlink
            raise UntrustedObject(path, "it is a symbolic link") from None
        raise
    try:
        trust.check(os.fstat(fd), path, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd
