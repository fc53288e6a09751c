"""NAME_DISTRIBUTOR (user 11): the messages that carry service bindings between nodes.

Mirrors the message side of the kernel's ``net/tipc/name_distr.c`` (``named_prepare_buf``,
``publ_to_item``, ``named_distribute``) and the ``msg_*bulk*`` / ``msg_named_seqno``
accessors of ``msg.h``; facts from tipc-wire.md §1.6 and §6. No kernel code is copied.

Theory of operation
-------------------
A name-distributor message is a 40-byte internal header followed by zero or more 20-byte
:class:`DistrItem` records (``struct distr_item``: type, lower, upper, port, key, all
big-endian u32). The node that published every item is the message's *originating* node
(w6), so one message never mixes nodes. Field layout (``wN`` = bytes 4N..4N+3)::

    word  bits   field                         NameDistrMsg attribute
    w0           generic (user 11, hsize 40)   non_seq (the broadcast link), w0_flags
    w1    31:29  PUBLICATION / WITHDRAWAL      mtype
    w1    28     bulk                          bulk
    w1    27     last bulk                     last_bulk
    w1    26     non-legacy                    non_legacy
    w1    25:16  unused                        w1_unused
    w1    15:0   broadcast ack                 bcast_ack
    w2           link ack / link seqno         link_ack, link_seqno
    w3           previous node                 prev_node
    w4    31:16  unused                        w4_unused
    w4    15:0   distribution seqno            seqno
    w5    14     bc_ack_invalid                bc_ack_invalid
    w5    other  (the broadcast link writes    w5_other
                 the cluster id here)
    w6           originating node              orig_node
    w7           destination node              dest_node
    w8, w9       unused                        w8, w9

Every bit is kept, so ``NameDistrMsg.decode(b).encode() == b`` for each frame a kernel
sends. Three kinds of message exist on the wire:

* **bulk** (``bulk``, ``non_legacy``, ``bc_ack_invalid``): the publisher's whole
  cluster-scope table, sent to one node when it comes up; the last one also has
  ``last_bulk`` and the publisher's next distribution ``seqno``;
* **incremental** (``non_legacy``): one item, one ``seqno`` per update;
* **legacy** (non-legacy bit clear; old kernels send only these): applied by the
  receiver as soon as it arrives.

Errors: :meth:`NameDistrMsg.decode` raises :class:`~tipcshm.wire.header.WireError` for
anything that is not a well-formed name-distributor message; encoders raise
:class:`ValueError` for a field that does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from struct import Struct
from struct import error as StructError
from typing import Final

from tipcshm.wire.header import (
    HDR40,
    INT_H_SIZE,
    MAX_USER_MSG_SIZE,
    NON_SEQ_BIT,
    W0_SYN_SHIFT,
    W1_BCAST_ACK_MASK,
    W1_MTYPE_BITS,
    W1_MTYPE_SHIFT,
    W2_ACK_SHIFT,
    W2_SEQNO_MASK,
    User,
    WireError,
    make_w0,
    make_w2,
    validate_msg,
)

__all__ = [
    "DISTR_ITEM",
    "DISTR_ITEM_SIZE",
    "MAX_ITEMS",
    "MAX_PUBL",
    "DistrItem",
    "NameDistrMsg",
    "decode_items",
    "encode_items",
    "items_per_message",
]

# ---------------------------------------------------------------------------------------
# Items (name_distr.h struct distr_item)
# ---------------------------------------------------------------------------------------

DISTR_ITEM: Final = Struct(">5I")
DISTR_ITEM_SIZE: Final = DISTR_ITEM.size  # 20
#: Bindings a node holds at most (the kernel's TIPC_MAX_PUBL, tipc-wire §6).
MAX_PUBL: Final = 65535
#: Most items one message can carry (its data may not exceed MAX_USER_MSG_SIZE).
MAX_ITEMS: Final = MAX_USER_MSG_SIZE // DISTR_ITEM_SIZE


@dataclass(frozen=True, slots=True)
class DistrItem:
    """One binding in a NAME_DISTRIBUTOR payload; the publishing node is the message's
    originating node."""

    type: int
    lower: int
    upper: int
    port: int
    key: int


def _nbytes(buf: bytes | bytearray | memoryview) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def encode_items(items: Iterable[DistrItem]) -> bytes:
    """Concatenate ``items`` as 20-byte big-endian records; ValueError if a value is not u32."""
    out = bytearray()
    for item in items:
        try:
            out += DISTR_ITEM.pack(item.type, item.lower, item.upper, item.port, item.key)
        except StructError as exc:
            raise ValueError(f"{item!r}: every field must be a u32") from exc
    return bytes(out)


def decode_items(buf: bytes | bytearray | memoryview) -> list[DistrItem]:
    """Split a NAME_DISTRIBUTOR payload into items; WireError unless a multiple of 20."""
    n = _nbytes(buf)
    if n % DISTR_ITEM_SIZE:
        raise WireError(f"name distributor payload of {n} bytes is not a multiple of 20")
    return [DistrItem(*fields) for fields in DISTR_ITEM.iter_unpack(buf)]


def items_per_message(mtu: int) -> int:
    """How many items a bulk message may carry on a link of ``mtu`` bytes: whatever fits
    after the 40-byte header (``named_distribute``), at least 1 and at most MAX_ITEMS."""
    return max(1, min(MAX_ITEMS, (mtu - INT_H_SIZE) // DISTR_ITEM_SIZE))


# ---------------------------------------------------------------------------------------
# The message
# ---------------------------------------------------------------------------------------

_BULK_BIT: Final = 1 << 28
_LAST_BULK_BIT: Final = 1 << 27
_NON_LEGACY_BIT: Final = 1 << 26
_W1_UNUSED_SHIFT: Final = 16
_W1_UNUSED_MASK: Final = 0x3FF  # w1[25:16]
_W4_UNUSED_SHIFT: Final = 16
_SEQNO_MASK: Final = 0xFFFF  # w4[15:0]
_BC_ACK_INVALID_BIT: Final = 1 << 14  # w5[14]
_W0_FLAGS_MASK: Final = 0x7  # w0[19:17] from W0_SYN_SHIFT up: SYN, src/dest droppable
_MTYPE_MASK: Final = (1 << W1_MTYPE_BITS) - 1
_U32: Final = 0xFFFFFFFF
_U16: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class NameDistrMsg:
    """One NAME_DISTRIBUTOR message (layout in the module docstring).

    ``mtype`` is a :class:`~tipcshm.wire.header.NameDistrType` value (kept raw when
    decoded). The ``w*`` fields hold bits the kernel does not use; they are 0 in
    everything tipcshm builds and only exist so that a decoded frame re-encodes exactly.
    """

    mtype: int
    prev_node: int
    orig_node: int
    dest_node: int
    items: tuple[DistrItem, ...] = ()
    bulk: bool = False
    last_bulk: bool = False
    non_legacy: bool = False
    seqno: int = 0
    bc_ack_invalid: bool = False
    non_seq: bool = False
    link_ack: int = 0
    link_seqno: int = 0
    bcast_ack: int = 0
    w0_flags: int = 0
    w1_unused: int = 0
    w4_unused: int = 0
    w5_other: int = 0
    w8: int = 0
    w9: int = 0

    @property
    def is_legacy(self) -> bool:
        """Non-legacy bit clear (msg_is_legacy): the receiver applies it at once, without
        looking at ``seqno``. Old kernels send only these."""
        return not self.non_legacy

    @property
    def size(self) -> int:
        return INT_H_SIZE + DISTR_ITEM_SIZE * len(self.items)

    def _check(self) -> None:
        limits = (
            ("mtype", self.mtype, _MTYPE_MASK),
            ("prev_node", self.prev_node, _U32),
            ("orig_node", self.orig_node, _U32),
            ("dest_node", self.dest_node, _U32),
            ("seqno", self.seqno, _SEQNO_MASK),
            ("link_ack", self.link_ack, _U16),
            ("link_seqno", self.link_seqno, W2_SEQNO_MASK),
            ("bcast_ack", self.bcast_ack, W1_BCAST_ACK_MASK),
            ("w0_flags", self.w0_flags, _W0_FLAGS_MASK),
            ("w1_unused", self.w1_unused, _W1_UNUSED_MASK),
            ("w4_unused", self.w4_unused, _U16),
            ("w5_other", self.w5_other, _U32 & ~_BC_ACK_INVALID_BIT),
            ("w8", self.w8, _U32),
            ("w9", self.w9, _U32),
        )
        for name, value, mask in limits:
            if value < 0 or value & ~mask:
                raise ValueError(f"NameDistrMsg.{name}={value!r} does not fit its field")
        if len(self.items) > MAX_ITEMS:
            raise ValueError(f"{len(self.items)} items exceed the {MAX_ITEMS} a message holds")

    def encode(self) -> bytes:
        """The whole message: 40-byte header and the items."""
        self._check()
        size = self.size
        w0 = make_w0(User.NAME_DISTRIBUTOR, INT_H_SIZE, size, non_seq=self.non_seq) | (
            self.w0_flags << W0_SYN_SHIFT
        )
        w1 = (
            (self.mtype << W1_MTYPE_SHIFT)
            | (_BULK_BIT if self.bulk else 0)
            | (_LAST_BULK_BIT if self.last_bulk else 0)
            | (_NON_LEGACY_BIT if self.non_legacy else 0)
            | (self.w1_unused << _W1_UNUSED_SHIFT)
            | self.bcast_ack
        )
        w4 = (self.w4_unused << _W4_UNUSED_SHIFT) | self.seqno
        w5 = self.w5_other | (_BC_ACK_INVALID_BIT if self.bc_ack_invalid else 0)
        header = HDR40.pack(
            w0,
            w1,
            make_w2(self.link_ack, self.link_seqno),
            self.prev_node,
            w4,
            w5,
            self.orig_node,
            self.dest_node,
            self.w8,
            self.w9,
        )
        return header + encode_items(self.items)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> NameDistrMsg:
        """Parse one message (bytes beyond its ``size`` are ignored, as the kernel does).

        WireError unless the header validates, the user is NAME_DISTRIBUTOR, the header is
        40 bytes and the data is a whole number of items.
        """
        hdr = validate_msg(buf)
        if hdr.user != User.NAME_DISTRIBUTOR:
            raise WireError(f"user {hdr.user} is not NAME_DISTRIBUTOR ({User.NAME_DISTRIBUTOR})")
        if hdr.hsize != INT_H_SIZE:
            raise WireError(f"name distributor header of {hdr.hsize} bytes, expected 40")
        items = decode_items(memoryview(buf).cast("B")[INT_H_SIZE : hdr.size])
        w0, w1, w2, w3, w4, w5, w6, w7, w8, w9 = HDR40.unpack_from(buf)
        return cls(
            mtype=(w1 >> W1_MTYPE_SHIFT) & _MTYPE_MASK,
            prev_node=w3,
            orig_node=w6,
            dest_node=w7,
            items=tuple(items),
            bulk=bool(w1 & _BULK_BIT),
            last_bulk=bool(w1 & _LAST_BULK_BIT),
            non_legacy=bool(w1 & _NON_LEGACY_BIT),
            seqno=w4 & _SEQNO_MASK,
            bc_ack_invalid=bool(w5 & _BC_ACK_INVALID_BIT),
            non_seq=bool(w0 & NON_SEQ_BIT),
            link_ack=w2 >> W2_ACK_SHIFT,
            link_seqno=w2 & W2_SEQNO_MASK,
            bcast_ack=w1 & W1_BCAST_ACK_MASK,
            w0_flags=(w0 >> W0_SYN_SHIFT) & _W0_FLAGS_MASK,
            w1_unused=(w1 >> _W1_UNUSED_SHIFT) & _W1_UNUSED_MASK,
            w4_unused=w4 >> _W4_UNUSED_SHIFT,
            w5_other=w5 & ~_BC_ACK_INVALID_BIT,
            w8=w8,
            w9=w9,
        )
