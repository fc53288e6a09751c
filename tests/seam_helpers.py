"""A fake peer node for the destination-seam tests, without a bearer worker.

The test is the bearer worker's stand-in: it writes a link row UP for a peer node into
the node segment (and bumps its bearer's B_LINK_GEN, as the worker does after every row
change), owns bearer 0's inbox (creating it if the supervisor did not) and reads what the
sockets put there; it plays the peer by writing frames into a socket's inbox, as the
bearer worker delivers what arrives over the link.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tipcshm import proc, wire
from tipcshm.client import get_client
from tipcshm.shm.lane import Inbox
from tipcshm.shm.layout import (
    B_LINK_GEN,
    BEARER_FRAME_PREFIX,
    L_CAPS,
    L_PEER,
    L_STATE,
    LINKS_PER_BEARER,
    LinkRowState,
    NodeSegment,
    bearer_inbox_name,
    inbox_name,
)
from tipcshm.wire.discovery import DEFAULT_CAPS, KERNEL_CAPS

PEER = 0x01001234  # the fake peer node's address
OTHER = 0x01005678  # a node no link reaches


@dataclass
class Frame:
    """One frame a socket put into the bearer inbox: the prefix's fields, the message."""

    dest: int
    reserved: int
    msg: bytes

    @property
    def hdr(self) -> wire.Header:
        return wire.validate_msg(self.msg)

    @property
    def data(self) -> bytes:
        h = self.hdr
        return self.msg[h.hsize : h.size]


class FakePeer:
    """Bearer 0 with a link row to PEER (see the module docstring)."""

    def __init__(self, node: str, row: int = 3, bearer: int = 0) -> None:
        self.node = node
        self.client = get_client(node)
        self.seg: NodeSegment = self.client.seg
        self.own = self.client.addr
        self.bearer = bearer
        self.row = bearer * LINKS_PER_BEARER + row
        name = bearer_inbox_name(node, bearer)
        self.created = False
        self._lanes: dict[int, tuple[Inbox, Any]] = {}
        try:
            self.inbox = Inbox.attach(name, trust=self.seg.trust, tag=self.seg.tag)
        except FileNotFoundError:
            self.inbox = Inbox.create(
                name,
                lanes=self.client.lanes,
                lane_bytes=self.client.lane_bytes,
                mode=self.client.mode,
                gid=self.client.gid,
                tag=self.client.tag,
                owner=proc.self_token(),
            )
            self.created = True

    # -- the link table ----------------------------------------------------------------
    def _bump(self) -> None:
        i = (self.seg.bearer_off(self.bearer) + B_LINK_GEN) // 4
        self.seg.u32[i] = (self.seg.u32[i] + 1) & 0xFFFFFFFF

    def link(self, state: int = LinkRowState.UP, caps: int = int(KERNEL_CAPS)) -> None:
        off = self.seg.link_off(self.row)
        self.seg.u32[(off + L_PEER) // 4] = PEER
        self.seg.u32[(off + L_CAPS) // 4] = caps
        self.seg.u32[(off + L_STATE) // 4] = state
        self._bump()

    def unlink(self) -> None:
        off = self.seg.link_off(self.row)
        self.seg.u32[(off + L_STATE) // 4] = LinkRowState.FREE
        self._bump()

    # -- frames out (what the sockets sent) ---------------------------------------------
    def take(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            raw = self.inbox.get()
            if raw is not None:
                dest, reserved = BEARER_FRAME_PREFIX.unpack_from(raw)
                return Frame(dest, reserved, bytes(raw[BEARER_FRAME_PREFIX.size :]))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no frame came into the bearer inbox")
            self.inbox.wait(min(left, 0.05))

    def none_waiting(self) -> bool:
        return self.inbox.poll() is None

    def drain(self) -> int:
        n = 0
        while self.inbox.get() is not None:
            n += 1
        return n

    # -- frames in (the peer's) -----------------------------------------------------------
    def deliver(self, port: int, msg: bytes) -> None:
        """Write ``msg`` into local socket ``port``'s inbox, as the bearer worker does
        (through one lane per destination, so the peer's messages stay in order)."""
        got = self._lanes.get(port)
        if got is None:
            ib = Inbox.attach(inbox_name(self.node, port), trust=self.seg.trust)
            got = self._lanes[port] = (ib, ib.producer())
        p = got[1]
        with p.lock:
            assert p.write(msg)

    def close(self) -> None:
        for ib, _ in self._lanes.values():
            ib.detach()
        with contextlib.suppress(OSError, ValueError):
            self.unlink()
        if self.created:
            self.inbox.unlink()
        self.inbox.detach()


@contextlib.contextmanager
def fake_peer(
    node: str, *, linked: bool = True, caps: int = int(KERNEL_CAPS)
) -> Iterator[FakePeer]:
    peer = FakePeer(node)
    try:
        if linked:
            peer.link(caps=caps)
        yield peer
    finally:
        peer.close()


def conn_msg(
    src_port: int, dst_port: int, data: bytes = b"", *, err: int = 0, user: int = 0
) -> bytes:
    """A 24-byte CONN_MSG from <PEER:src_port>, as the kernel puts it on the wire."""
    h = wire.Header(
        user=user,
        hsize=wire.SHORT_H_SIZE,
        size=wire.SHORT_H_SIZE + len(data),
        mtype=wire.DataType.CONN_MSG,
        errcode=err,
        prev_node=PEER,
        orig_port=src_port,
        dest_port=dst_port,
        orig_node=PEER,
    )
    return wire.encode_message(h, data)


__all__ = [
    "DEFAULT_CAPS",
    "KERNEL_CAPS",
    "OTHER",
    "PEER",
    "FakePeer",
    "Frame",
    "conn_msg",
    "fake_peer",
]
