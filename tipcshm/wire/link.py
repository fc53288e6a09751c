"""LINK_PROTOCOL (user 7) and BCAST_PROTOCOL (user 5) messages, and the gap-ACK block record.

Mirrors the accessors of ``net/tipc/msg.h`` that ``net/tipc/link.c``
(``tipc_link_build_proto_msg``, ``tipc_link_proto_rcv``) uses on these users; the field
facts come from tipc-wire.md §1.6 and §5.2-5.3.

Theory of operation
-------------------
A link protocol message is a 40-byte header (``INT_H_SIZE``) whose words 1, 4, 5, 8 and 9
are re-used::

    w1  31:29 type (STATE 0, RESET 1, ACTIVATE 2)
        28:16 seq_gap (NACK count); in ACTIVATE bit 16 = "dest session valid"
        15:0  bcast ack; in ACTIVATE the *receiver's* session
    w2  31:16 ack  15:0 seqno (STATE counter or snd_nxt + 32767)
    w4  31:16 last_bcast  15:0 next_sent
    w5  31:16 session, 14 bc_ack_invalid, 13 peer_stopping, 12 redundant_link,
        11:9 bearer id, 8:4 priority, 3:1 net plane, 0 probe   (bit 15 kept as ``w5_spare``)
    w8  9:0   bc_gap                                           (31:10 kept as ``w8_spare``)
    w9  31:16 max packet / 4, 15:0 tolerance (ms)
    w0  bit 19 (dest-droppable) = keepalive

The body follows: the 16-byte NUL-padded interface name in RESET/ACTIVATE; in STATE an
optional gap-ACK block record (:class:`GapAckBlocks`, present when the *receiver*
advertised TIPC_GAP_ACK_BLOCK) and an optional monitor record. The codec keeps the body
as raw bytes, so every kernel frame re-encodes byte for byte; the link decides how to
read it.

BCAST_PROTOCOL on a unicast link is the "bcast init" STATE (:class:`BcastProtoMsg`):
w4[31:16] last_bcast, w5[14] bc_ack_invalid, the rest the generic layout.

The link also stamps and reads words 1 and 2 of *any* sequenced message
(:func:`stamp`, :func:`peek`): those helpers live here so that no shift or mask is
repeated in :mod:`tipcshm.core.link`.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct
from typing import Final

from tipcshm.wire.header import (
    INT_H_SIZE,
    MAX_USER_MSG_SIZE,
    SIZE_MASK,
    TIPC_VERSION,
    W0_HSIZE_SHIFT,
    W0_USER_SHIFT,
    W0_VERSION_SHIFT,
    LinkMsgType,
    User,
    WireError,
)

__all__ = [
    "DELIVERED_USERS",
    "MAX_LINK_WIN",
    "MIN_LINK_WIN",
    "MAX_BC_GAP",
    "MAX_SEQ_GAP",
    "IF_NAME_LEN",
    "KEEPALIVE_BIT",
    "MAX_GAP_ACK_BLOCKS",
    "BcastProtoMsg",
    "FrameInfo",
    "GapAckBlocks",
    "LinkProtoMsg",
    "decode_link_or_bcast",
    "importance_of",
    "peek",
    "restamp_acks",
    "scan",
    "send_importance",
    "stamp",
    "stamped",
]

#: RESET/ACTIVATE carry the sender's interface name in this many NUL-padded bytes
#: (``TIPC_MAX_IF_NAME``).
IF_NAME_LEN: Final = 16
#: The kernel builds at most this many gap-ACK blocks per record (``MAX_GAP_ACK_BLKS``).
MAX_GAP_ACK_BLOCKS: Final = 128

_W: Final = Struct(">10I")
_U16: Final = Struct(">H")
_GAB_HDR: Final = Struct(">HBB")
_GAB: Final = Struct(">HH")
_W12: Final = Struct(">II")

_HDR_FIXED: Final = (TIPC_VERSION << W0_VERSION_SHIFT) | ((INT_H_SIZE >> 2) << W0_HSIZE_SHIFT)
_USER_M: Final = 0xF
_NON_SEQ: Final = 1 << 20
KEEPALIVE_BIT: Final = 1 << 19  # w0 dest-droppable, re-used as "keepalive" by user 7
_SRC_DROP: Final = 1 << 18
_SYN: Final = 1 << 17
_FLAGS: Final = _NON_SEQ | KEEPALIVE_BIT | _SRC_DROP | _SYN

_MTYPE_SHIFT: Final = 29
_SEQ_GAP_SHIFT: Final = 16
_SEQ_GAP_M: Final = 0x1FFF
#: The largest NACK count a STATE can carry (13 bits, w1[28:16]).
MAX_SEQ_GAP: Final = _SEQ_GAP_M
_U16_M: Final = 0xFFFF
_DEST_SESSION_VALID: Final = 1  # bit 16 of w1 = bit 0 of the seq_gap field

_W5_SESSION_SHIFT: Final = 16
_W5_SPARE: Final = 1 << 15
_W5_BC_ACK_INVALID: Final = 1 << 14
_W5_PEER_STOPPING: Final = 1 << 13
_W5_REDUNDANT: Final = 1 << 12
_W5_BEARER_SHIFT: Final = 9
_W5_BEARER_M: Final = 0x7
_W5_PRIO_SHIFT: Final = 4
_W5_PRIO_M: Final = 0x1F
_W5_PLANE_SHIFT: Final = 1
_W5_PLANE_M: Final = 0x7
_W5_PROBE: Final = 1
_W8_BC_GAP_M: Final = 0x3FF
#: The largest broadcast NACK count a STATE can carry (10 bits, w8[9:0]).
MAX_BC_GAP: Final = _W8_BC_GAP_M

# Receive-side facts a unicast link and a broadcast receive link share (link.c):
MIN_LINK_WIN: Final = 16  # a STATE acks every this many received packets
MAX_LINK_WIN: Final = 8191  # receive window: farther seqnos are dropped as duplicates
# Users a link delivers to its owner as they are (tipc_data_input), as ints.
DELIVERED_USERS: Final = frozenset(
    int(u)
    for u in (
        User.LOW_IMPORTANCE,
        User.MEDIUM_IMPORTANCE,
        User.HIGH_IMPORTANCE,
        User.CRITICAL_IMPORTANCE,
        User.CONN_MANAGER,
        User.GROUP_PROTOCOL,
        User.NAME_DISTRIBUTOR,
    )
)
_W9_MTU_SHIFT: Final = 16

# Importance as msg_importance reads it: data users unless errored, w9[2:0] of
# fragments and bundles, SYSTEM for everything else.
_IMP_M: Final = 0x7
_ERRCODE_SHIFT: Final = 25
_ERRCODE_M: Final = 0xF
_W1_ERRCODE: Final = _ERRCODE_M << _ERRCODE_SHIFT
_SYSTEM_IMPORTANCE: Final = int(User.SYSTEM_IMPORTANCE)


def _u16(value: int, name: str) -> None:
    if not 0 <= value <= _U16_M:
        raise ValueError(f"{name}={value!r} does not fit in 16 bits")


def _check_bits(value: int, mask: int, name: str) -> None:
    if not 0 <= value <= mask:
        raise ValueError(f"{name}={value!r} does not fit in {mask.bit_length()} bits")


def _split(buf: bytes | bytearray | memoryview, user: int) -> tuple[tuple[int, ...], bytes]:
    """Check the generic layout of a 40-byte-header message of ``user``; words and body."""
    mv = memoryview(buf).cast("B")
    if mv.nbytes < INT_H_SIZE:
        raise WireError(f"{mv.nbytes} bytes: shorter than a {INT_H_SIZE}-byte header")
    words = _W.unpack_from(mv)
    w0 = words[0]
    if (w0 >> W0_VERSION_SHIFT) != TIPC_VERSION:
        raise WireError(f"version {w0 >> W0_VERSION_SHIFT}, expected {TIPC_VERSION}")
    if (w0 >> W0_USER_SHIFT) & _USER_M != user:
        raise WireError(f"user {(w0 >> W0_USER_SHIFT) & _USER_M}, expected {user}")
    hsize = ((w0 >> W0_HSIZE_SHIFT) & 0xF) << 2
    if hsize != INT_H_SIZE:
        raise WireError(f"header size {hsize}, user {user} uses {INT_H_SIZE}")
    size = w0 & SIZE_MASK
    if size < INT_H_SIZE or size - INT_H_SIZE > MAX_USER_MSG_SIZE:
        raise WireError(f"impossible message size {size}")
    if mv.nbytes < size:
        raise WireError(f"message announces {size} bytes, has {mv.nbytes}")
    return words, bytes(mv[INT_H_SIZE:size])


@dataclass(frozen=True, slots=True, kw_only=True)
class GapAckBlocks:
    """The gap-ACK block record of a STATE (msg.h ``struct tipc_gap_ack_blks``).

    Each block is ``(ack, gap)``: the peer has everything up to ``ack`` of the run and
    misses the ``gap`` packets after it. The kernel writes the broadcast blocks first.
    """

    bcast: tuple[tuple[int, int], ...] = ()
    unicast: tuple[tuple[int, int], ...] = ()

    @property
    def size(self) -> int:
        return _GAB_HDR.size + _GAB.size * (len(self.bcast) + len(self.unicast))

    def encode(self) -> bytes:
        if len(self.bcast) + len(self.unicast) > MAX_GAP_ACK_BLOCKS:
            raise ValueError(f"more than {MAX_GAP_ACK_BLOCKS} gap-ACK blocks")
        out = bytearray(_GAB_HDR.pack(self.size, len(self.unicast), len(self.bcast)))
        for ack, gap in (*self.bcast, *self.unicast):
            _u16(ack, "ack")
            _u16(gap, "gap")
            out += _GAB.pack(ack, gap)
        return bytes(out)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> GapAckBlocks:
        """The record at the start of ``buf`` (anything after it is not looked at)."""
        mv = memoryview(buf).cast("B")
        if mv.nbytes < _GAB_HDR.size:
            raise WireError(f"{mv.nbytes} bytes: no room for a gap-ACK record header")
        length, ucnt, bcnt = _GAB_HDR.unpack_from(mv)
        if ucnt + bcnt > MAX_GAP_ACK_BLOCKS:
            raise WireError(f"{ucnt + bcnt} gap-ACK blocks, at most {MAX_GAP_ACK_BLOCKS}")
        if length != _GAB_HDR.size + _GAB.size * (ucnt + bcnt):
            raise WireError(f"gap-ACK record length {length} disagrees with {ucnt}+{bcnt}")
        if length > mv.nbytes:
            raise WireError(f"gap-ACK record of {length} bytes in {mv.nbytes}")
        blocks = [_GAB.unpack_from(mv, _GAB_HDR.size + 4 * i) for i in range(ucnt + bcnt)]
        return cls(bcast=tuple(blocks[:bcnt]), unicast=tuple(blocks[bcnt:]))


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkProtoMsg:
    """One LINK_PROTOCOL message (RESET_MSG, ACTIVATE_MSG or STATE_MSG).

    ``seq_gap`` and ``bcast_ack`` hold w1 as the kernel reads it for STATE; in ACTIVATE
    the same bits carry the dest-session trick, read through :attr:`dest_session_valid`
    and :attr:`dest_session` (use :meth:`activate_fields` to build them).
    """

    mtype: int
    seq_gap: int = 0
    bcast_ack: int = 0
    ack: int = 0
    seqno: int = 0
    prev_node: int = 0
    orig_node: int = 0
    dest_node: int = 0
    last_bcast: int = 0
    next_sent: int = 0
    session: int = 0
    bc_ack_invalid: bool = False
    peer_stopping: bool = False
    redundant_link: bool = False
    bearer_id: int = 0
    priority: int = 0
    net_plane: int = 0
    probe: bool = False
    keepalive: bool = False
    bc_gap: int = 0
    max_pkt: int = 0
    tolerance: int = 0
    body: bytes = b""
    # bits the kernel leaves alone, kept so that decode/encode is byte-exact
    non_seq: bool = False
    src_droppable: bool = False
    syn: bool = False
    w5_spare: bool = False
    w8_spare: int = 0

    # -- views ---------------------------------------------------------------------------

    @property
    def msg_type(self) -> LinkMsgType | None:
        try:
            return LinkMsgType(self.mtype)
        except ValueError:
            return None

    @property
    def dest_session_valid(self) -> bool:
        """ACTIVATE only: w1[16] says that :attr:`dest_session` is meaningful."""
        return bool(self.seq_gap & _DEST_SESSION_VALID)

    @property
    def dest_session(self) -> int:
        """ACTIVATE only: the session of the link this message is sent to."""
        return self.bcast_ack

    @staticmethod
    def activate_fields(dest_session: int) -> dict[str, int]:
        """The ``seq_gap``/``bcast_ack`` values of an ACTIVATE echoing ``dest_session``."""
        return {"seq_gap": _DEST_SESSION_VALID, "bcast_ack": dest_session}

    @property
    def if_name(self) -> str:
        """RESET/ACTIVATE: the sender's interface name (NUL-terminated in 16 bytes)."""
        raw = self.body[:IF_NAME_LEN]
        return raw.split(b"\0", 1)[0].decode("latin-1")

    @staticmethod
    def if_name_body(name: str) -> bytes:
        raw = name.encode("latin-1")[: IF_NAME_LEN - 1]
        return raw.ljust(IF_NAME_LEN, b"\0")

    @property
    def size(self) -> int:
        return INT_H_SIZE + len(self.body)

    # -- codec ---------------------------------------------------------------------------

    def encode(self) -> bytes:
        _check_bits(self.mtype, 0x7, "mtype")
        _check_bits(self.seq_gap, _SEQ_GAP_M, "seq_gap")
        for name in ("bcast_ack", "ack", "seqno", "last_bcast", "next_sent", "session"):
            _u16(getattr(self, name), name)
        for name in ("prev_node", "orig_node", "dest_node"):
            _check_bits(getattr(self, name), 0xFFFFFFFF, name)
        _check_bits(self.bearer_id, _W5_BEARER_M, "bearer_id")
        _check_bits(self.priority, _W5_PRIO_M, "priority")
        _check_bits(self.net_plane, _W5_PLANE_M, "net_plane")
        _check_bits(self.bc_gap, _W8_BC_GAP_M, "bc_gap")
        _check_bits(self.w8_spare, 0xFFFFFFFF >> 10, "w8_spare")
        _check_bits(self.max_pkt, _U16_M << 2, "max_pkt")
        if self.max_pkt & 3:
            raise ValueError(f"max_pkt={self.max_pkt} is not a multiple of 4")
        _u16(self.tolerance, "tolerance")
        size = self.size
        if size - INT_H_SIZE > MAX_USER_MSG_SIZE:
            raise ValueError(f"body of {len(self.body)} bytes is too long")
        w0 = (
            _HDR_FIXED
            | (int(User.LINK_PROTOCOL) << W0_USER_SHIFT)
            | (_NON_SEQ if self.non_seq else 0)
            | (KEEPALIVE_BIT if self.keepalive else 0)
            | (_SRC_DROP if self.src_droppable else 0)
            | (_SYN if self.syn else 0)
            | size
        )
        w1 = (self.mtype << _MTYPE_SHIFT) | (self.seq_gap << _SEQ_GAP_SHIFT) | self.bcast_ack
        w2 = (self.ack << 16) | self.seqno
        w4 = (self.last_bcast << 16) | self.next_sent
        w5 = (
            (self.session << _W5_SESSION_SHIFT)
            | (_W5_SPARE if self.w5_spare else 0)
            | (_W5_BC_ACK_INVALID if self.bc_ack_invalid else 0)
            | (_W5_PEER_STOPPING if self.peer_stopping else 0)
            | (_W5_REDUNDANT if self.redundant_link else 0)
            | (self.bearer_id << _W5_BEARER_SHIFT)
            | (self.priority << _W5_PRIO_SHIFT)
            | (self.net_plane << _W5_PLANE_SHIFT)
            | (_W5_PROBE if self.probe else 0)
        )
        w8 = (self.w8_spare << 10) | self.bc_gap
        w9 = ((self.max_pkt >> 2) << _W9_MTU_SHIFT) | self.tolerance
        head = _W.pack(w0, w1, w2, self.prev_node, w4, w5, self.orig_node, self.dest_node, w8, w9)
        # w4/w5 of the generic layout are ports; the link protocol owns them entirely.
        return head + self.body

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> LinkProtoMsg:
        words, body = _split(buf, User.LINK_PROTOCOL)
        w0, w1, w2, w3, w4, w5, w6, w7, w8, w9 = words
        return cls(
            mtype=w1 >> _MTYPE_SHIFT,
            seq_gap=(w1 >> _SEQ_GAP_SHIFT) & _SEQ_GAP_M,
            bcast_ack=w1 & _U16_M,
            ack=w2 >> 16,
            seqno=w2 & _U16_M,
            prev_node=w3,
            orig_node=w6,
            dest_node=w7,
            last_bcast=w4 >> 16,
            next_sent=w4 & _U16_M,
            session=w5 >> _W5_SESSION_SHIFT,
            w5_spare=bool(w5 & _W5_SPARE),
            bc_ack_invalid=bool(w5 & _W5_BC_ACK_INVALID),
            peer_stopping=bool(w5 & _W5_PEER_STOPPING),
            redundant_link=bool(w5 & _W5_REDUNDANT),
            bearer_id=(w5 >> _W5_BEARER_SHIFT) & _W5_BEARER_M,
            priority=(w5 >> _W5_PRIO_SHIFT) & _W5_PRIO_M,
            net_plane=(w5 >> _W5_PLANE_SHIFT) & _W5_PLANE_M,
            probe=bool(w5 & _W5_PROBE),
            keepalive=bool(w0 & KEEPALIVE_BIT),
            non_seq=bool(w0 & _NON_SEQ),
            src_droppable=bool(w0 & _SRC_DROP),
            syn=bool(w0 & _SYN),
            bc_gap=w8 & _W8_BC_GAP_M,
            w8_spare=w8 >> 10,
            max_pkt=(w9 >> _W9_MTU_SHIFT) << 2,
            tolerance=w9 & _U16_M,
            body=body,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BcastProtoMsg:
    """One BCAST_PROTOCOL message; on a unicast link only the "bcast init" STATE.

    Named fields are the ones the init carries; the remaining bits of words 1, 4, 5, 8, 9
    (legacy NACK ranges, unused) are kept raw so that decode/encode is byte-exact.
    """

    mtype: int = int(LinkMsgType.STATE_MSG)
    bcast_ack: int = 0
    ack: int = 0
    seqno: int = 0
    prev_node: int = 0
    last_bcast: int = 0
    bc_ack_invalid: bool = False
    orig_node: int = 0
    dest_node: int = 0
    body: bytes = b""
    non_seq: bool = False
    dest_droppable: bool = False
    src_droppable: bool = False
    syn: bool = False
    w1_spare: int = 0  # w1[28:16]
    w4_spare: int = 0  # w4[15:0]
    w5_spare: int = 0  # w5 without bit 14
    w8: int = 0
    w9: int = 0

    def encode(self) -> bytes:
        _check_bits(self.mtype, 0x7, "mtype")
        _check_bits(self.w1_spare, _SEQ_GAP_M, "w1_spare")
        for name in ("bcast_ack", "ack", "seqno", "last_bcast", "w4_spare"):
            _u16(getattr(self, name), name)
        for name in ("prev_node", "orig_node", "dest_node", "w8", "w9", "w5_spare"):
            _check_bits(getattr(self, name), 0xFFFFFFFF, name)
        if self.w5_spare & _W5_BC_ACK_INVALID:
            raise ValueError("w5_spare must not hold bit 14 (bc_ack_invalid)")
        size = INT_H_SIZE + len(self.body)
        if size - INT_H_SIZE > MAX_USER_MSG_SIZE:
            raise ValueError(f"body of {len(self.body)} bytes is too long")
        w0 = (
            _HDR_FIXED
            | (int(User.BCAST_PROTOCOL) << W0_USER_SHIFT)
            | (_NON_SEQ if self.non_seq else 0)
            | (KEEPALIVE_BIT if self.dest_droppable else 0)
            | (_SRC_DROP if self.src_droppable else 0)
            | (_SYN if self.syn else 0)
            | size
        )
        w1 = (self.mtype << _MTYPE_SHIFT) | (self.w1_spare << _SEQ_GAP_SHIFT) | self.bcast_ack
        w5 = self.w5_spare | (_W5_BC_ACK_INVALID if self.bc_ack_invalid else 0)
        return (
            _W.pack(
                w0,
                w1,
                (self.ack << 16) | self.seqno,
                self.prev_node,
                (self.last_bcast << 16) | self.w4_spare,
                w5,
                self.orig_node,
                self.dest_node,
                self.w8,
                self.w9,
            )
            + self.body
        )

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> BcastProtoMsg:
        words, body = _split(buf, User.BCAST_PROTOCOL)
        w0, w1, w2, w3, w4, w5, w6, w7, w8, w9 = words
        return cls(
            mtype=w1 >> _MTYPE_SHIFT,
            w1_spare=(w1 >> _SEQ_GAP_SHIFT) & _SEQ_GAP_M,
            bcast_ack=w1 & _U16_M,
            ack=w2 >> 16,
            seqno=w2 & _U16_M,
            prev_node=w3,
            last_bcast=w4 >> 16,
            w4_spare=w4 & _U16_M,
            bc_ack_invalid=bool(w5 & _W5_BC_ACK_INVALID),
            w5_spare=w5 & ~_W5_BC_ACK_INVALID,
            orig_node=w6,
            dest_node=w7,
            w8=w8,
            w9=w9,
            non_seq=bool(w0 & _NON_SEQ),
            dest_droppable=bool(w0 & KEEPALIVE_BIT),
            src_droppable=bool(w0 & _SRC_DROP),
            syn=bool(w0 & _SYN),
            body=body,
        )


def decode_link_or_bcast(buf: bytes | bytearray | memoryview) -> LinkProtoMsg | BcastProtoMsg:
    """Decode a user-7 or user-5 message; :class:`WireError` for anything else."""
    mv = memoryview(buf).cast("B")
    if mv.nbytes < 4:
        raise WireError("shorter than one word")
    user = (mv[0] >> 1) & _USER_M
    if user == User.LINK_PROTOCOL:
        return LinkProtoMsg.decode(mv)
    if user == User.BCAST_PROTOCOL:
        return BcastProtoMsg.decode(mv)
    raise WireError(f"user {user} is neither LINK_PROTOCOL nor BCAST_PROTOCOL")


# ---------------------------------------------------------------------------------------
# Words 1-2 of any sequenced message: what the link reads and stamps.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the link needs from a received frame before deciding where it goes."""

    user: int
    mtype: int
    size: int
    non_seq: bool
    seqno: int
    ack: int
    bcast_ack: int
    prev_node: int
    importance: int


def importance_of(w0: int, w1: int, w9: int) -> int:
    """``msg_importance``: the data users unless errored, w9[2:0] of fragments and
    bundles, SYSTEM importance (4) for every other user."""
    user = (w0 >> W0_USER_SHIFT) & _USER_M
    if user <= User.CRITICAL_IMPORTANCE and not (w1 >> _ERRCODE_SHIFT) & _ERRCODE_M:
        return user
    if user in (User.MSG_FRAGMENTER, User.MSG_BUNDLER):
        return w9 & _IMP_M
    return _SYSTEM_IMPORTANCE


_PEEK: Final = Struct(">4I")
_W9_OFF: Final = 36
_MIN_H: Final = 24
_HSIZE_M: Final = 0xF
_CRITICAL: Final = int(User.CRITICAL_IMPORTANCE)
_W9_IMPORTANCE_USERS: Final = frozenset({int(User.MSG_FRAGMENTER), int(User.MSG_BUNDLER)})


def scan(buf: bytes | bytearray | memoryview) -> tuple[int, int, bool, int, int, int]:
    """:func:`peek` for the receive path: the same checks, and the fields the link
    dispatches on as a plain tuple ``(user, size, non_seq, seqno, ack, prev_node)``
    (no :class:`FrameInfo` to build per frame). :class:`WireError` on bad bytes."""
    n = buf.nbytes if type(buf) is memoryview else len(buf)
    if n < _MIN_H:
        raise WireError(f"{n} bytes: shorter than a minimal header (24)")
    w0, w1, w2, w3 = _PEEK.unpack_from(buf)
    if (w0 >> W0_VERSION_SHIFT) != TIPC_VERSION:
        raise WireError(f"version {w0 >> W0_VERSION_SHIFT}, expected {TIPC_VERSION}")
    hsize = ((w0 >> W0_HSIZE_SHIFT) & _HSIZE_M) << 2
    size = w0 & SIZE_MASK
    if hsize < _MIN_H or size < hsize or size > n or size - hsize > MAX_USER_MSG_SIZE:
        raise WireError(f"bad sizes: header {hsize}, message {size}, datagram {n}")
    return (
        (w0 >> W0_USER_SHIFT) & _USER_M,
        size,
        bool(w0 & _NON_SEQ),
        w2 & _U16_M,
        w2 >> 16,
        w3,
    )


def peek(buf: bytes | bytearray | memoryview) -> FrameInfo:
    """Validate the generic header of a received frame (tipc_msg_validate) and read the
    fields the link dispatches on. :class:`WireError` on bad bytes."""
    user, size, non_seq, seqno, ack, prev_node = scan(buf)
    w0, w1 = _W12.unpack_from(buf)
    hsize = ((w0 >> W0_HSIZE_SHIFT) & _HSIZE_M) << 2
    w9 = _U32.unpack_from(buf, _W9_OFF)[0] if hsize > _W9_OFF else 0
    return FrameInfo(
        user=user,
        mtype=w1 >> _MTYPE_SHIFT,
        size=size,
        non_seq=non_seq,
        seqno=seqno,
        ack=ack,
        bcast_ack=w1 & _U16_M,
        prev_node=prev_node,
        importance=importance_of(w0, w1, w9),
    )


def send_importance(msg: bytes | bytearray | memoryview) -> int:
    """Check a complete message an owner hands to the link, as :func:`peek` checks a
    received one, plus "its announced size is exactly its length"; return its
    ``msg_importance``. Reads words 0, 1 (and 9 of a fragment or bundle) only.
    :class:`WireError` on bad bytes.

    This runs once per message sent, so the good case is one test of word 0; the
    reasons for a refusal are worked out only when there is one."""
    n = msg.nbytes if type(msg) is memoryview else len(msg)
    if n >= _MIN_H:
        w0, w1 = _W12.unpack_from(msg)
        hsize = ((w0 >> W0_HSIZE_SHIFT) & _HSIZE_M) << 2
        if (
            w0 >> W0_VERSION_SHIFT == TIPC_VERSION
            and w0 & SIZE_MASK == n
            and _MIN_H <= hsize <= n
            and n - hsize <= MAX_USER_MSG_SIZE
        ):
            user = (w0 >> W0_USER_SHIFT) & _USER_M
            if user <= _CRITICAL and not w1 & _W1_ERRCODE:
                return user
            if user in _W9_IMPORTANCE_USERS:
                return (_U32.unpack_from(msg, _W9_OFF)[0] & _IMP_M) if hsize > _W9_OFF else 0
            return _SYSTEM_IMPORTANCE
    size = scan(msg)[1]  # raises for every fault but the one left
    raise WireError(f"message announces {size} bytes, has {n}")


_U32: Final = Struct(">I")
_W1_KEEP: Final = ~_U16_M & 0xFFFFFFFF


def stamp(buf: bytearray, seqno: int, ack: int, bcast_ack: int) -> None:
    """Write link seqno, ack and bcast ack into a queued message (tipc_link_xmit)."""
    w1, _ = _W12.unpack_from(buf, 4)
    _W12.pack_into(buf, 4, (w1 & _W1_KEEP) | bcast_ack, (ack << 16) | seqno)


def stamped(msg: bytes, seqno: int, ack: int, bcast_ack: int) -> bytes:
    """A copy of ``msg`` with link seqno, ack and bcast ack written in (what
    :func:`stamp` does to a bytearray), made with one copy of the body."""
    w1 = _U32.unpack_from(msg, 4)[0]
    return b"".join(
        (msg[:4], _W12.pack((w1 & _W1_KEEP) | bcast_ack, (ack << 16) | seqno), msg[12:])
    )


def restamp_acks(buf: bytes | bytearray, ack: int, bcast_ack: int) -> bytes:
    """A copy of ``buf`` with fresh ack and bcast ack (a retransmission)."""
    out = bytearray(buf)
    w1, w2 = _W12.unpack_from(out, 4)
    _W12.pack_into(out, 4, (w1 & _W1_KEEP) | bcast_ack, (ack << 16) | (w2 & _U16_M))
    return bytes(out)
