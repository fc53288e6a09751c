"""CONN_MANAGER (user 8): the connection supervision and flow-control messages.

Mirrors the fields net/tipc/socket.c reads and writes in ``tipc_sk_conn_proto_rcv``,
``tipc_sk_build_ack`` and ``tipc_sk_check_probing_state`` (accessors of msg.h:
``msg_conn_ack``, ``msg_adv_win``, ``msg_nagle_ack``). Facts from tipc-wire.md §1.6, §8.

Theory of operation
-------------------
A CONN_MANAGER message has a 40-byte header (INT_H_SIZE) and normally no data. Its type
(w1[31:29]) is CONN_PROBE (0), CONN_PROBE_REPLY (1, the probe sent back reversed) or
CONN_ACK (2). Word 9 is redefined: w9[31:16] is the number of units the receiver
consumed since its last ack, w9[15:0] its advertised window in 1-KiB blocks (only with
TIPC_BLOCK_FLOWCTL; 0 otherwise). w0[18], the source-droppable bit of data messages, is
the nagle-ack flag. The addressing words are those of any connection message: previous
node, originating port and node, destination port and node. An error code in w1 means
the peer's socket is gone (the kernel ends the connection on it).

:class:`ConnMgrMsg` names those fields; every other bit of the header (link words,
w8, w10, flags the kernel never sets here) and any payload ride in :attr:`ConnMgrMsg.base`
and :attr:`ConnMgrMsg.data`, so that ``decode(b).encode() == b`` byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from struct import Struct
from typing import Final

from tipcshm.wire.header import (
    INT_H_SIZE,
    ConnMgrType,
    Header,
    User,
    WireError,
    encode_header,
    make_w1,
    validate_msg,
)

__all__ = [
    "ack_fields",
    "ACKED_SHIFT",
    "ADV_WINDOW_MASK",
    "ConnMgrMsg",
    "ConnMgrType",
    "build_ack",
    "decode",
    "pack_w9",
]

#: w9[31:16] acknowledged units, w9[15:0] advertised window.
ACKED_SHIFT: Final = 16
ADV_WINDOW_MASK: Final = 0xFFFF
_ACKED_MASK: Final = 0xFFFF

#: A canonical :attr:`ConnMgrMsg.base`: every bit CONN_MANAGER does not name is 0.
_BASE: Final = Header(user=User.CONN_MANAGER, hsize=INT_H_SIZE, size=INT_H_SIZE)
_HDR40: Final = Struct(">10I")


def pack_w9(acked: int, adv_window: int = 0) -> int:
    """Word 9 of a CONN_ACK (no range checks: the caller keeps both in 16 bits)."""
    return (acked << ACKED_SHIFT) | adv_window


@dataclass(frozen=True, slots=True)
class ConnMgrMsg:
    """One CONN_MANAGER message (see the module docstring).

    ``base`` holds the header bits this user does not name (its named fields are ignored
    there); decode puts them there so re-encoding is byte-exact. ``prev_node`` None
    means the sender itself (``orig_node``), as every socket-built message has it.
    """

    mtype: int
    orig_node: int
    orig_port: int
    dest_node: int
    dest_port: int
    acked: int = 0
    adv_window: int = 0
    nagle_ack: bool = False
    errcode: int = 0
    prev_node: int | None = None
    data: bytes = b""
    base: Header = field(default=_BASE, compare=True)

    @property
    def type(self) -> ConnMgrType | int:
        try:
            return ConnMgrType(self.mtype)
        except ValueError:
            return self.mtype

    def encode(self) -> bytes:
        """The message's bytes; :class:`ValueError` if a field does not fit."""
        if not 0 <= self.acked <= _ACKED_MASK or not 0 <= self.adv_window <= ADV_WINDOW_MASK:
            raise ValueError(
                f"acked={self.acked} / adv_window={self.adv_window}: each must fit 16 bits"
            )
        hsize = self.base.hsize
        if hsize < INT_H_SIZE:
            raise ValueError(f"CONN_MANAGER needs a {INT_H_SIZE}-byte header, base has {hsize}")
        hdr = replace(
            self.base,
            user=User.CONN_MANAGER,
            mtype=self.mtype,
            errcode=self.errcode,
            src_droppable=self.nagle_ack,
            size=hsize + len(self.data),
            prev_node=self.orig_node if self.prev_node is None else self.prev_node,
            orig_port=self.orig_port,
            dest_port=self.dest_port,
            orig_node=self.orig_node,
            dest_node=self.dest_node,
            name_instance=pack_w9(self.acked, self.adv_window),
        )
        return encode_header(hdr) + self.data

    @classmethod
    def from_header(cls, hdr: Header, data: bytes = b"") -> ConnMgrMsg:
        """The message of an already validated header (WireError if not CONN_MANAGER)."""
        if hdr.user != User.CONN_MANAGER:
            raise WireError(f"user {hdr.user} is not CONN_MANAGER ({int(User.CONN_MANAGER)})")
        if hdr.hsize < INT_H_SIZE:
            raise WireError(f"CONN_MANAGER with a {hdr.hsize}-byte header (needs {INT_H_SIZE})")
        w9 = hdr.name_instance
        base = replace(
            hdr,
            mtype=0,
            errcode=0,
            src_droppable=False,
            size=hdr.hsize,
            prev_node=0,
            orig_port=0,
            dest_port=0,
            orig_node=0,
            dest_node=0,
            name_instance=0,
        )
        return cls(
            mtype=hdr.mtype,
            orig_node=hdr.orig_node,
            orig_port=hdr.orig_port,
            dest_node=hdr.dest_node,
            dest_port=hdr.dest_port,
            acked=w9 >> ACKED_SHIFT,
            adv_window=w9 & ADV_WINDOW_MASK,
            nagle_ack=hdr.src_droppable,
            errcode=hdr.errcode,
            prev_node=None if hdr.prev_node == hdr.orig_node else hdr.prev_node,
            data=bytes(data),
            base=base,
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> ConnMgrMsg:
        """Decode one whole message (trailing bytes past its size are ignored)."""
        hdr = validate_msg(buf)
        mv = memoryview(buf).cast("B")
        return cls.from_header(hdr, bytes(mv[hdr.hsize : hdr.size]))


def decode(buf: bytes | bytearray | memoryview) -> ConnMgrMsg:
    """Module-level alias of :meth:`ConnMgrMsg.decode`."""
    return ConnMgrMsg.decode(buf)


_W0_ACK: Final = _BASE.words[0]
_W1_ACK: Final = make_w1(ConnMgrType.CONN_ACK)


def build_ack(
    own_node: int, own_port: int, peer_node: int, peer_port: int, acked: int, adv_window: int = 0
) -> bytes:
    """A CONN_ACK as :meth:`ConnMgrMsg.encode` would build it, without the dataclass
    (the receive path sends one per quarter window)."""
    return _HDR40.pack(
        _W0_ACK,
        _W1_ACK,
        0,
        own_node,
        own_port,
        peer_port,
        own_node,
        peer_node,
        0,
        ((acked & _ACKED_MASK) << ACKED_SHIFT) | adv_window,
    )


_ACK_WORDS: Final = Struct(">10I")


def ack_fields(buf: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """``(orig_node, orig_port, acked)`` of a CONN_ACK whose words 0 and 1 are exactly
    what :func:`build_ack` writes; None for anything else, which the caller decodes in
    full. The sender of a stream takes one ack per quarter ring read: this keeps the
    full decode (a Header and a dataclass, ~20 us) off that path."""
    if len(buf) < INT_H_SIZE:
        return None
    w = _ACK_WORDS.unpack_from(buf)
    if w[0] != _W0_ACK or w[1] != _W1_ACK:
        return None
    return w[6], w[4], w[9] >> ACKED_SHIFT
