"""TIPC wire format: constants, header layout and the small codecs every layer shares.

This module is the single place where TIPC header bits are defined, packed and unpacked.
It mirrors the accessors of the Linux kernel's ``net/tipc/msg.h`` and the message routines
of ``net/tipc/msg.c`` (``tipc_msg_validate``, ``tipc_msg_reverse``), plus the node-identity
helpers of ``net/tipc/addr.c`` / ``core.h`` (``tipc_nodeid2string``, ``hash128to32``) and the
16-bit sequence arithmetic of ``core.h`` (the 20-byte ``struct distr_item`` of
``name_distr.h`` lives in :mod:`tipcshm.wire.names`). The facts come from
/work/shared/tipc-wire.md; no kernel code is copied.

Theory of operation
-------------------
A TIPC message is a header of 24..60 bytes (6..15 big-endian 32-bit words) followed by
data. Words 0-2 have the same layout for every user; words 3-10 carry addresses and, for
internal users, per-user fields (tipc-wire.md §1.6) that other codecs read out of
:attr:`Header.words`. There are two ways in:

* **Checked path** (control plane, tests, anything received): :func:`decode_header` /
  :func:`validate_msg` turn untrusted bytes into a frozen :class:`Header` or raise
  :class:`WireError`; :func:`encode_header` / :func:`pack_header_into` turn a Header back
  into exactly the same bytes.
* **Hot path** (socket layer, ~1 µs per message): precompiled whole-header structs
  (:data:`HDR24` ... :data:`HDR60`), word builders :func:`make_w0` / :func:`make_w1` and
  one-line word decoders (:func:`w0_size`, :func:`w1_mtype`, ...). These do no range checks;
  the caller guarantees field widths.

Field bit table (``wN`` = bytes 4N..4N+3, bit 0 = least significant)::

    word  bits   field             Header attribute   constant(s)
    w0    31:29  version (=2)      version            W0_VERSION_SHIFT/_BITS
    w0    28:25  user              user               W0_USER_SHIFT/_BITS
    w0    24:21  header size / 4   hsize (bytes)      W0_HSIZE_SHIFT/_BITS
    w0    20     non-sequenced     non_seq            NON_SEQ_BIT
    w0    19     dest droppable    dest_droppable     DEST_DROPPABLE_BIT
    w0    18     src droppable     src_droppable      SRC_DROPPABLE_BIT
    w0    17     SYN               syn                SYN_BIT
    w0    16:0   total size        size               SIZE_MASK
    w1    31:29  message type      mtype              W1_MTYPE_SHIFT/_BITS
    w1    28:25  error code        errcode            W1_ERRCODE_SHIFT/_BITS
    w1    24:21  reroute counter   reroute_cnt        W1_REROUTE_SHIFT/_BITS
    w1    20:19  lookup scope      lookup_scope       W1_LOOKUP_SCOPE_SHIFT/_BITS
    w1    18:16  (per-user)        w1_bits_18_16      W1_BITS_18_16_SHIFT/_BITS
    w1    15:0   broadcast ack     bcast_ack          W1_BCAST_ACK_MASK
    w2    31:16  link ack          link_ack           W2_ACK_SHIFT/_BITS
    w2    15:0   link seqno        link_seqno         W2_SEQNO_MASK
    w3           previous node     prev_node
    w4           originating port  orig_port
    w5           destination port  dest_port
    w6           originating node  orig_node          (24-byte header: = prev_node)
    w7           destination node  dest_node
    w8           service type      name_type
    w9           instance / lower  name_instance      (alias: name_lower)
    w10          range upper       name_upper
    w11-14       discovery only    extra (raw bytes)

Every field of words 0-2 is decoded, so the three words round-trip bit-exactly even when a
user re-uses bits (the link protocol's 13-bit ``seq_gap`` spans w1[28:16], for instance).

Validation (:func:`decode_header`) follows ``tipc_msg_validate``: version 2, header size
24..60 (always a multiple of 4, it is counted in words), size >= header size, and
``size - hsize <= MAX_USER_MSG_SIZE`` for **every** user, as the kernel checks it for every
user too. :func:`decode_header` needs only the header bytes present (so it can read the
inner header at the start of a first fragment); :func:`validate_msg` additionally requires
the whole ``size`` bytes, as the kernel does for a received datagram.

Errors: :class:`WireError` means "the bytes we were given are bad" (the remote's fault).
Encoders raise plain :class:`ValueError` for a value the caller built wrongly (our fault).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from struct import Struct
from typing import Final

__all__ = [
    # constants
    "TIPC_VERSION",
    "SHORT_H_SIZE",
    "BASIC_H_SIZE",
    "NAMED_H_SIZE",
    "MCAST_H_SIZE",
    "GROUP_H_SIZE",
    "INT_H_SIZE",
    "MAX_H_SIZE",
    "MIN_H_SIZE",
    "MAX_USER_MSG_SIZE",
    "MAX_MSG_SIZE",
    "MAX_FORWARD_SIZE",
    "NODE_ID_LEN",
    "LOOKUP_SCOPE_CLUSTER",
    "LOOKUP_SCOPE_NODE",
    # enums
    "User",
    "DataType",
    "LinkMsgType",
    "DiscMsgType",
    "NameDistrType",
    "FragType",
    "TunnelType",
    "ConnMgrType",
    "GroupMsgType",
    "CryptoMsgType",
    "ErrorCode",
    # errors
    "WireError",
    # header
    "Header",
    "decode_header",
    "validate_msg",
    "encode_header",
    "encode_message",
    "pack_header_into",
    "reverse_for_reject",
    # hot path
    "HDR_W01",
    "HDR24",
    "HDR32",
    "HDR40",
    "HDR44",
    "HDR60",
    "HDR_STRUCTS",
    "U32",
    "W0_VERSION_SHIFT",
    "W0_VERSION_BITS",
    "W0_USER_SHIFT",
    "W0_USER_BITS",
    "W0_HSIZE_SHIFT",
    "W0_HSIZE_BITS",
    "W0_NON_SEQ_SHIFT",
    "W0_DEST_DROPPABLE_SHIFT",
    "W0_SRC_DROPPABLE_SHIFT",
    "W0_SYN_SHIFT",
    "W0_SIZE_BITS",
    "W1_MTYPE_SHIFT",
    "W1_MTYPE_BITS",
    "W1_ERRCODE_SHIFT",
    "W1_ERRCODE_BITS",
    "W1_REROUTE_SHIFT",
    "W1_REROUTE_BITS",
    "W1_LOOKUP_SCOPE_SHIFT",
    "W1_LOOKUP_SCOPE_BITS",
    "W1_BITS_18_16_SHIFT",
    "W1_BITS_18_16_BITS",
    "W1_BCAST_ACK_BITS",
    "W2_ACK_SHIFT",
    "W2_ACK_BITS",
    "W2_SEQNO_BITS",
    "NON_SEQ_BIT",
    "DEST_DROPPABLE_BIT",
    "SRC_DROPPABLE_BIT",
    "SYN_BIT",
    "SIZE_MASK",
    "W0_VERSION_FIELD",
    "W0_HSIZE_MASK",
    "W1_ERRCODE_MASK",
    "W1_BCAST_ACK_MASK",
    "W2_SEQNO_MASK",
    "make_w0",
    "make_w1",
    "make_w2",
    "w0_version",
    "w0_user",
    "w0_hsize",
    "w0_size",
    "w0_non_seq",
    "w0_dest_droppable",
    "w0_src_droppable",
    "w0_syn",
    "w1_mtype",
    "w1_errcode",
    "w1_reroute",
    "w1_lookup_scope",
    "w1_bcast_ack",
    "w2_ack",
    "w2_seqno",
    # node identity
    "hash128to32",
    "identity_to_str",
    "identity_from_str",
    # sequence arithmetic
    "SEQ_MASK",
    "seq_less_eq",
    "seq_less",
    "seq_more",
    "seq_add",
]

# ---------------------------------------------------------------------------------------
# Sizes and limits (msg.h, uapi tipc.h)
# ---------------------------------------------------------------------------------------

TIPC_VERSION: Final = 2

SHORT_H_SIZE: Final = 24  # CONN_MSG once connected; connection aborts
BASIC_H_SIZE: Final = 32  # DIRECT_MSG; a returned message is never shorter
NAMED_H_SIZE: Final = 40
MCAST_H_SIZE: Final = 44
GROUP_H_SIZE: Final = 44
INT_H_SIZE: Final = 40  # every internal user except LINK_CONFIG
MAX_H_SIZE: Final = 60  # LINK_CONFIG (discovery)
MIN_H_SIZE: Final = 24

MAX_USER_MSG_SIZE: Final = 66000  # TIPC_MAX_USER_MSG_SIZE
MAX_MSG_SIZE: Final = MAX_H_SIZE + MAX_USER_MSG_SIZE
MAX_FORWARD_SIZE: Final = 1024  # at most this much data rides back on a rejected message
NODE_ID_LEN: Final = 16  # bytes in a 128-bit node identity

# Lookup scope values in w1[20:19] (0 for direct and connected messages).
LOOKUP_SCOPE_CLUSTER: Final = 2
LOOKUP_SCOPE_NODE: Final = 3

# ---------------------------------------------------------------------------------------
# Enumerations. Decoders keep raw ints; these are for building messages and for display.
# ---------------------------------------------------------------------------------------


class User(IntEnum):
    """Message user, w0[28:25]. 0-3 are data importances; the rest are internal users."""

    LOW_IMPORTANCE = 0
    MEDIUM_IMPORTANCE = 1
    HIGH_IMPORTANCE = 2
    CRITICAL_IMPORTANCE = 3
    # Node-internal importance class of system messages (bundles, protocol traffic);
    # never sent as a user on the wire.
    SYSTEM_IMPORTANCE = 4
    BCAST_PROTOCOL = 5
    MSG_BUNDLER = 6
    LINK_PROTOCOL = 7
    CONN_MANAGER = 8
    GROUP_PROTOCOL = 9  # was ROUTE_DISTRIBUTOR (obsolete)
    TUNNEL_PROTOCOL = 10  # was CHANGEOVER_PROTOCOL
    NAME_DISTRIBUTOR = 11
    MSG_FRAGMENTER = 12
    LINK_CONFIG = 13  # discovery
    # Key exchange on the wire; the kernel's node-internal SOCK_WAKEUP shares the number.
    MSG_CRYPTO = 14
    TOP_SRV = 15  # node-internal pseudo user


class DataType(IntEnum):
    """w1[31:29] of a data message (users 0-3)."""

    CONN_MSG = 0
    MCAST_MSG = 1
    NAMED_MSG = 2
    DIRECT_MSG = 3
    GRP_MEMBER_EVT = 4  # node-local only
    GRP_BCAST_MSG = 5
    GRP_MCAST_MSG = 6
    GRP_UCAST_MSG = 7


class LinkMsgType(IntEnum):
    """w1[31:29] of LINK_PROTOCOL and BCAST_PROTOCOL messages."""

    STATE_MSG = 0
    RESET_MSG = 1
    ACTIVATE_MSG = 2


class DiscMsgType(IntEnum):
    """w1[31:29] of LINK_CONFIG (discovery) messages."""

    DSC_REQ_MSG = 0
    DSC_RESP_MSG = 1
    DSC_TRIAL_MSG = 2
    DSC_TRIAL_FAIL_MSG = 3


class NameDistrType(IntEnum):
    """w1[31:29] of NAME_DISTRIBUTOR messages."""

    PUBLICATION = 0
    WITHDRAWAL = 1


class FragType(IntEnum):
    """w1[31:29] of MSG_FRAGMENTER messages."""

    FIRST_FRAGMENT = 0
    FRAGMENT = 1
    LAST_FRAGMENT = 2


class TunnelType(IntEnum):
    """w1[31:29] of TUNNEL_PROTOCOL messages."""

    SYNCH_MSG = 0
    FAILOVER_MSG = 1


class ConnMgrType(IntEnum):
    """w1[31:29] of CONN_MANAGER messages."""

    CONN_PROBE = 0
    CONN_PROBE_REPLY = 1
    CONN_ACK = 2


class GroupMsgType(IntEnum):
    """w1[31:29] of GROUP_PROTOCOL messages."""

    GRP_JOIN_MSG = 0
    GRP_LEAVE_MSG = 1
    GRP_ADV_MSG = 2
    GRP_ACK_MSG = 3
    GRP_RECLAIM_MSG = 4
    GRP_REMIT_MSG = 5


class CryptoMsgType(IntEnum):
    """w1[31:29] of MSG_CRYPTO messages."""

    KEY_DISTR_MSG = 0


class ErrorCode(IntEnum):
    """w1[28:25] error code (uapi tipc.h; applications see it in TIPC_ERRINFO)."""

    OK = 0
    NO_NAME = 1
    NO_PORT = 2
    NO_NODE = 3
    OVERLOAD = 4
    CONN_SHUTDOWN = 5


# Message-type enum per user; users 0-3 share DataType.
_MTYPE_ENUMS: Final[dict[int, type[IntEnum]]] = {
    User.LOW_IMPORTANCE: DataType,
    User.MEDIUM_IMPORTANCE: DataType,
    User.HIGH_IMPORTANCE: DataType,
    User.CRITICAL_IMPORTANCE: DataType,
    User.BCAST_PROTOCOL: LinkMsgType,
    User.LINK_PROTOCOL: LinkMsgType,
    User.CONN_MANAGER: ConnMgrType,
    User.GROUP_PROTOCOL: GroupMsgType,
    User.TUNNEL_PROTOCOL: TunnelType,
    User.NAME_DISTRIBUTOR: NameDistrType,
    User.MSG_FRAGMENTER: FragType,
    User.LINK_CONFIG: DiscMsgType,
    User.MSG_CRYPTO: CryptoMsgType,
}


class WireError(ValueError):
    """Received bytes are not a well-formed TIPC message (the remote's fault).

    This is the only exception any decoder in this module raises for untrusted input:
    short buffers, a wrong version, impossible sizes (the per-user codecs of this package
    raise it too, e.g. for a name-distributor payload that is not a whole number of
    items). Unknown enum values are *not* errors: decoders keep the
    raw integers. It subclasses :class:`ValueError` so ``except ValueError`` also works.
    Local mistakes when encoding raise a plain :class:`ValueError` instead.
    """


# ---------------------------------------------------------------------------------------
# Bit positions. Every mask and shift below is derived from these.
# ---------------------------------------------------------------------------------------


def _mask(bits: int) -> int:
    return (1 << bits) - 1


W0_VERSION_SHIFT: Final = 29
W0_VERSION_BITS: Final = 3
W0_USER_SHIFT: Final = 25
W0_USER_BITS: Final = 4
W0_HSIZE_SHIFT: Final = 21  # header size counted in 32-bit words
W0_HSIZE_BITS: Final = 4
W0_NON_SEQ_SHIFT: Final = 20
W0_DEST_DROPPABLE_SHIFT: Final = 19
W0_SRC_DROPPABLE_SHIFT: Final = 18
W0_SYN_SHIFT: Final = 17
W0_SIZE_BITS: Final = 17  # total size occupies w0[16:0]

W1_MTYPE_SHIFT: Final = 29
W1_MTYPE_BITS: Final = 3
W1_ERRCODE_SHIFT: Final = 25
W1_ERRCODE_BITS: Final = 4
W1_REROUTE_SHIFT: Final = 21
W1_REROUTE_BITS: Final = 4
W1_LOOKUP_SCOPE_SHIFT: Final = 19
W1_LOOKUP_SCOPE_BITS: Final = 2
W1_BITS_18_16_SHIFT: Final = 16
W1_BITS_18_16_BITS: Final = 3
W1_BCAST_ACK_BITS: Final = 16  # w1[15:0]

W2_ACK_SHIFT: Final = 16
W2_ACK_BITS: Final = 16
W2_SEQNO_BITS: Final = 16  # w2[15:0]

_VERSION_M: Final = _mask(W0_VERSION_BITS)
_USER_M: Final = _mask(W0_USER_BITS)
_HSIZE_M: Final = _mask(W0_HSIZE_BITS)
_MTYPE_M: Final = _mask(W1_MTYPE_BITS)
_ERRCODE_M: Final = _mask(W1_ERRCODE_BITS)
_REROUTE_M: Final = _mask(W1_REROUTE_BITS)
_SCOPE_M: Final = _mask(W1_LOOKUP_SCOPE_BITS)
_B1816_M: Final = _mask(W1_BITS_18_16_BITS)
_ACK_M: Final = _mask(W2_ACK_BITS)
_U32_M: Final = _mask(32)

NON_SEQ_BIT: Final = 1 << W0_NON_SEQ_SHIFT
DEST_DROPPABLE_BIT: Final = 1 << W0_DEST_DROPPABLE_SHIFT
SRC_DROPPABLE_BIT: Final = 1 << W0_SRC_DROPPABLE_SHIFT
SYN_BIT: Final = 1 << W0_SYN_SHIFT
SIZE_MASK: Final = _mask(W0_SIZE_BITS)
W0_VERSION_FIELD: Final = TIPC_VERSION << W0_VERSION_SHIFT  # pre-shifted version 2
W0_HSIZE_MASK: Final = _HSIZE_M << W0_HSIZE_SHIFT
W1_ERRCODE_MASK: Final = _ERRCODE_M << W1_ERRCODE_SHIFT
W1_BCAST_ACK_MASK: Final = _mask(W1_BCAST_ACK_BITS)
W2_SEQNO_MASK: Final = _mask(W2_SEQNO_BITS)

# ---------------------------------------------------------------------------------------
# Hot path: whole-header structs, word builders and word decoders (no range checks).
# ---------------------------------------------------------------------------------------

U32: Final = Struct(">I")
_W012: Final = Struct(">3I")  # the generic words 0..2
_W3_7: Final = Struct(">5I")  # prev node, orig port, dest port, orig node, dest node
#: Words 0 and 1 alone: what a receive path reads first (size, header size, user, error).
HDR_W01: Final = Struct(">II")
HDR24: Final = Struct(">6I")
HDR32: Final = Struct(">8I")
HDR40: Final = Struct(">10I")
HDR44: Final = Struct(">11I")
HDR60: Final = Struct(">15I")
#: Struct for a header of ``n`` words, indexed by ``hsize // 4`` (6..15).
HDR_STRUCTS: Final[dict[int, Struct]] = {n: Struct(f">{n}I") for n in range(6, 16)}


def make_w0(
    user: int,
    hsize: int,
    size: int,
    *,
    non_seq: bool = False,
    dest_droppable: bool = False,
    src_droppable: bool = False,
    syn: bool = False,
) -> int:
    """Word 0 with version 2. ``hsize`` and ``size`` are in bytes; no range checks.

    On a hot path build the constant part once and add the size per message:
    ``base = make_w0(user, NAMED_H_SIZE, 0, dest_droppable=True)``, then ``base | size``.
    """
    return (
        W0_VERSION_FIELD
        | (user << W0_USER_SHIFT)
        | ((hsize >> 2) << W0_HSIZE_SHIFT)
        | (non_seq << W0_NON_SEQ_SHIFT)
        | (dest_droppable << W0_DEST_DROPPABLE_SHIFT)
        | (src_droppable << W0_SRC_DROPPABLE_SHIFT)
        | (syn << W0_SYN_SHIFT)
        | size
    )


def make_w1(
    mtype: int,
    *,
    errcode: int = 0,
    reroute: int = 0,
    lookup_scope: int = 0,
    bcast_ack: int = 0,
) -> int:
    """Word 1 from its generic fields (w1[18:16] left 0); no range checks."""
    return (
        (mtype << W1_MTYPE_SHIFT)
        | (errcode << W1_ERRCODE_SHIFT)
        | (reroute << W1_REROUTE_SHIFT)
        | (lookup_scope << W1_LOOKUP_SCOPE_SHIFT)
        | bcast_ack
    )


def make_w2(ack: int, seqno: int) -> int:
    """Word 2: link ack in the high half, link sequence number in the low half."""
    return (ack << W2_ACK_SHIFT) | seqno


def w0_version(w0: int) -> int:
    return (w0 >> W0_VERSION_SHIFT) & _VERSION_M


def w0_user(w0: int) -> int:
    return (w0 >> W0_USER_SHIFT) & _USER_M


def w0_hsize(w0: int) -> int:
    """Header size in bytes."""
    return ((w0 >> W0_HSIZE_SHIFT) & _HSIZE_M) << 2


def w0_size(w0: int) -> int:
    """Total message size in bytes, header included."""
    return w0 & SIZE_MASK


def w0_non_seq(w0: int) -> bool:
    return bool(w0 & NON_SEQ_BIT)


def w0_dest_droppable(w0: int) -> bool:
    return bool(w0 & DEST_DROPPABLE_BIT)


def w0_src_droppable(w0: int) -> bool:
    return bool(w0 & SRC_DROPPABLE_BIT)


def w0_syn(w0: int) -> bool:
    return bool(w0 & SYN_BIT)


def w1_mtype(w1: int) -> int:
    return (w1 >> W1_MTYPE_SHIFT) & _MTYPE_M


def w1_errcode(w1: int) -> int:
    return (w1 >> W1_ERRCODE_SHIFT) & _ERRCODE_M


def w1_reroute(w1: int) -> int:
    return (w1 >> W1_REROUTE_SHIFT) & _REROUTE_M


def w1_lookup_scope(w1: int) -> int:
    return (w1 >> W1_LOOKUP_SCOPE_SHIFT) & _SCOPE_M


def w1_bcast_ack(w1: int) -> int:
    return w1 & W1_BCAST_ACK_MASK


def w2_ack(w2: int) -> int:
    return (w2 >> W2_ACK_SHIFT) & _ACK_M


def w2_seqno(w2: int) -> int:
    return w2 & W2_SEQNO_MASK


# ---------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------

# Fields held in words 3..10, in word order.
_ADDR_FIELDS: Final = (
    "prev_node",
    "orig_port",
    "dest_port",
    "orig_node",
    "dest_node",
    "name_type",
    "name_instance",
    "name_upper",
)
_FIRST_EXTRA_WORD: Final = 11
# (Header field, width in bits) for the range check in Header.check().
_FIELD_BITS: Final = (
    ("version", W0_VERSION_BITS),
    ("user", W0_USER_BITS),
    ("non_seq", 1),
    ("dest_droppable", 1),
    ("src_droppable", 1),
    ("syn", 1),
    ("size", W0_SIZE_BITS),
    ("mtype", W1_MTYPE_BITS),
    ("errcode", W1_ERRCODE_BITS),
    ("reroute_cnt", W1_REROUTE_BITS),
    ("lookup_scope", W1_LOOKUP_SCOPE_BITS),
    ("w1_bits_18_16", W1_BITS_18_16_BITS),
    ("bcast_ack", W1_BCAST_ACK_BITS),
    ("link_ack", W2_ACK_BITS),
    ("link_seqno", W2_SEQNO_BITS),
    *((name, 32) for name in _ADDR_FIELDS),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """Every field of a TIPC header, as raw integers (unknown values are kept as they are).

    Fields of words the header does not carry are 0, except ``orig_node`` in a 24-byte
    header, which is ``prev_node`` (the kernel's ``msg_orignode``). ``extra`` holds the raw
    words 11..14 of a header longer than 44 bytes (discovery uses 60); its length is
    ``max(0, hsize - 44)``. Per-user re-use of words 3..10 (tipc-wire.md §1.6) is left to
    the per-user codecs, which read :attr:`words`.

    A Header is *valid* if every value fits its bit field, ``hsize`` is one of 24, 28, ...,
    60, ``extra`` has the right length and fields the header size cannot carry are 0 (or,
    for ``orig_node`` in a 24-byte header, equal to ``prev_node``). Valid headers encode and
    decode back to an equal Header byte-exactly.
    """

    version: int = TIPC_VERSION
    user: int = 0
    hsize: int = BASIC_H_SIZE
    non_seq: bool = False
    dest_droppable: bool = False
    src_droppable: bool = False
    syn: bool = False
    size: int = BASIC_H_SIZE
    mtype: int = 0
    errcode: int = 0
    reroute_cnt: int = 0
    lookup_scope: int = 0
    w1_bits_18_16: int = 0
    bcast_ack: int = 0
    link_ack: int = 0
    link_seqno: int = 0
    prev_node: int = 0
    orig_port: int = 0
    dest_port: int = 0
    orig_node: int = 0
    dest_node: int = 0
    name_type: int = 0
    name_instance: int = 0
    name_upper: int = 0
    extra: bytes = b""

    # -- derived views ------------------------------------------------------------------

    @property
    def name_lower(self) -> int:
        """Alias of ``name_instance`` (w9) for range addresses."""
        return self.name_instance

    @property
    def data_size(self) -> int:
        """Payload bytes announced by the header (``size - hsize``)."""
        return self.size - self.hsize

    @property
    def is_short(self) -> bool:
        return self.hsize == SHORT_H_SIZE

    @property
    def is_data(self) -> bool:
        """User 0-3: an application message (``msg_isdata``)."""
        return self.user <= User.CRITICAL_IMPORTANCE

    @property
    def user_enum(self) -> User:
        """The user as :class:`User` (every 4-bit value is defined)."""
        return User(self.user)

    @property
    def msg_type(self) -> IntEnum | None:
        """``mtype`` as the enum of this user, or None if the value or user has none."""
        enum = _MTYPE_ENUMS.get(self.user)
        if enum is None:
            return None
        try:
            return enum(self.mtype)
        except ValueError:
            return None

    @property
    def error(self) -> ErrorCode | None:
        """``errcode`` as :class:`ErrorCode`, or None for a value uapi does not define."""
        try:
            return ErrorCode(self.errcode)
        except ValueError:
            return None

    @property
    def words(self) -> tuple[int, ...]:
        """The header as ``hsize // 4`` raw 32-bit words (no validity check)."""
        w0 = (
            (self.version << W0_VERSION_SHIFT)
            | (self.user << W0_USER_SHIFT)
            | ((self.hsize >> 2) << W0_HSIZE_SHIFT)
            | (self.non_seq << W0_NON_SEQ_SHIFT)
            | (self.dest_droppable << W0_DEST_DROPPABLE_SHIFT)
            | (self.src_droppable << W0_SRC_DROPPABLE_SHIFT)
            | (self.syn << W0_SYN_SHIFT)
            | self.size
        )
        w1 = (
            (self.mtype << W1_MTYPE_SHIFT)
            | (self.errcode << W1_ERRCODE_SHIFT)
            | (self.reroute_cnt << W1_REROUTE_SHIFT)
            | (self.lookup_scope << W1_LOOKUP_SCOPE_SHIFT)
            | (self.w1_bits_18_16 << W1_BITS_18_16_SHIFT)
            | self.bcast_ack
        )
        w2 = (self.link_ack << W2_ACK_SHIFT) | self.link_seqno
        words = [
            w0,
            w1,
            w2,
            self.prev_node,
            self.orig_port,
            self.dest_port,
            self.orig_node,
            self.dest_node,
            self.name_type,
            self.name_instance,
            self.name_upper,
        ]
        extra = self.extra
        words.extend(int.from_bytes(extra[i : i + 4], "big") for i in range(0, len(extra) - 3, 4))
        return tuple(words[: self.hsize >> 2])

    def check(self) -> None:
        """Raise :class:`ValueError` naming the first field that makes this Header invalid."""
        for name, bits in _FIELD_BITS:
            value = getattr(self, name)
            if not 0 <= value <= _mask(bits):
                raise ValueError(f"Header.{name}={value!r} does not fit in {bits} bit(s)")
        hsize = self.hsize
        if not (MIN_H_SIZE <= hsize <= MAX_H_SIZE and hsize % 4 == 0):
            raise ValueError(f"Header.hsize={hsize!r}: must be a multiple of 4 in 24..60")
        nwords = hsize >> 2
        for index, name in enumerate(_ADDR_FIELDS, start=3):
            if index < nwords:
                continue
            value = getattr(self, name)
            if name == "orig_node" and value == self.prev_node:
                continue  # a 24-byte header's originating node is its previous node
            if value:
                raise ValueError(
                    f"Header.{name}={value:#x} needs word {index}, "
                    f"but a {hsize}-byte header ends at word {nwords - 1}"
                )
        want = max(0, hsize - 4 * _FIRST_EXTRA_WORD)
        if len(self.extra) != want:
            raise ValueError(
                f"Header.extra has {len(self.extra)} bytes; a {hsize}-byte header needs {want}"
            )


def _nbytes(buf: bytes | bytearray | memoryview) -> int:
    return buf.nbytes if isinstance(buf, memoryview) else len(buf)


def decode_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Decode and validate the header at ``buf[offset:]``.

    Checks (``tipc_msg_validate``): at least 24 bytes, version 2, header size >= 24 and
    present in ``buf``, ``size >= hsize`` and ``size - hsize <= MAX_USER_MSG_SIZE`` (for
    every user, as the kernel). The data itself need not be present; see
    :func:`validate_msg`. Raises :class:`WireError` and nothing else on bad bytes.
    """
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    avail = _nbytes(buf) - offset
    if avail < MIN_H_SIZE:
        raise WireError(f"{avail} bytes at offset {offset}: shorter than a minimal header (24)")
    w0, w1, w2 = _W012.unpack_from(buf, offset)
    version = (w0 >> W0_VERSION_SHIFT) & _VERSION_M
    if version != TIPC_VERSION:
        raise WireError(f"version {version} at offset {offset}, expected {TIPC_VERSION}")
    hsize = ((w0 >> W0_HSIZE_SHIFT) & _HSIZE_M) << 2
    if hsize < MIN_H_SIZE:
        raise WireError(f"header size {hsize} at offset {offset} is below {MIN_H_SIZE}")
    if avail < hsize:
        raise WireError(f"{hsize}-byte header at offset {offset} but only {avail} bytes")
    size = w0 & SIZE_MASK
    if size < hsize:
        raise WireError(f"message size {size} at offset {offset} is below header size {hsize}")
    if size - hsize > MAX_USER_MSG_SIZE:
        raise WireError(
            f"message at offset {offset} announces {size - hsize} data bytes "
            f"(max {MAX_USER_MSG_SIZE})"
        )
    words = HDR_STRUCTS[hsize >> 2].unpack_from(buf, offset)
    nwords = len(words)
    addr = list(words[3:11])
    addr.extend([0] * (8 - len(addr)))
    if nwords <= 6:
        addr[3] = addr[0]  # 24-byte header: originating node = previous node
    extra = b"".join(U32.pack(w) for w in words[_FIRST_EXTRA_WORD:]) if nwords > 11 else b""
    return Header(
        version=version,
        user=(w0 >> W0_USER_SHIFT) & _USER_M,
        hsize=hsize,
        non_seq=bool(w0 & NON_SEQ_BIT),
        dest_droppable=bool(w0 & DEST_DROPPABLE_BIT),
        src_droppable=bool(w0 & SRC_DROPPABLE_BIT),
        syn=bool(w0 & SYN_BIT),
        size=size,
        mtype=(w1 >> W1_MTYPE_SHIFT) & _MTYPE_M,
        errcode=(w1 >> W1_ERRCODE_SHIFT) & _ERRCODE_M,
        reroute_cnt=(w1 >> W1_REROUTE_SHIFT) & _REROUTE_M,
        lookup_scope=(w1 >> W1_LOOKUP_SCOPE_SHIFT) & _SCOPE_M,
        w1_bits_18_16=(w1 >> W1_BITS_18_16_SHIFT) & _B1816_M,
        bcast_ack=w1 & W1_BCAST_ACK_MASK,
        link_ack=(w2 >> W2_ACK_SHIFT) & _ACK_M,
        link_seqno=w2 & W2_SEQNO_MASK,
        prev_node=addr[0],
        orig_port=addr[1],
        dest_port=addr[2],
        orig_node=addr[3],
        dest_node=addr[4],
        name_type=addr[5],
        name_instance=addr[6],
        name_upper=addr[7],
        extra=extra,
    )


def validate_msg(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """:func:`decode_header` plus the kernel's receive check that all ``size`` bytes are
    present (trailing bytes beyond ``size`` are allowed and ignored)."""
    hdr = decode_header(buf, offset)
    avail = _nbytes(buf) - offset
    if avail < hdr.size:
        raise WireError(f"message at offset {offset} announces {hdr.size} bytes, has {avail}")
    return hdr


def encode_header(h: Header) -> bytes:
    """The ``h.hsize`` bytes of a valid header; :class:`ValueError` if ``h`` is invalid.

    Version and ``size >= hsize`` are not enforced, so tests can build frames that the
    decoder must reject.
    """
    h.check()
    return HDR_STRUCTS[h.hsize >> 2].pack(*h.words)


def encode_message(h: Header, payload: bytes) -> bytes:
    """The header ``h`` followed by ``payload``: the bytes of a whole message whose
    per-user codec keeps the data as it is. ValueError if ``h`` is invalid or its size
    does not cover exactly the header and ``payload``."""
    if h.size != h.hsize + len(payload):
        raise ValueError(
            f"header says {h.size} bytes but header + payload are {h.hsize + len(payload)}"
        )
    return encode_header(h) + payload


def pack_header_into(buf: bytearray | memoryview, offset: int, h: Header) -> None:
    """Write the header ``h`` into ``buf`` at ``offset`` (see :func:`encode_header`)."""
    h.check()
    HDR_STRUCTS[h.hsize >> 2].pack_into(buf, offset, *h.words)


def reverse_for_reject(
    frame: bytes | bytearray | memoryview,
    err: ErrorCode | int,
    own_node: int | None = None,
) -> bytes | None:
    """Build the message that returns ``frame`` to its sender with error ``err``.

    Mirrors ``tipc_msg_reverse``. Returns None when the kernel would drop instead: the
    original is dest-droppable or already carries an error code. Otherwise the result is
    the original header (at least BASIC_H_SIZE: a 24-byte header is extended to 32) with
    ``errcode = err``, non-sequenced cleared, origin and destination ports swapped,
    ``dest_node`` = the original *previous* node (the hop it came from), ``prev_node`` and
    ``orig_node`` = ``own_node``, followed by at most MAX_FORWARD_SIZE (1024) bytes of the
    original data, none at all for a SYN rejected with OVERLOAD (the sender kept a copy).
    Every other field (user, type, name, reroute count, link words) is carried over.

    ``own_node`` is the rejecting node; it defaults to the original ``dest_node``, which a
    24-byte header does not have, so it is required there (:class:`ValueError`).
    Raises :class:`WireError` if ``frame`` is not a complete valid message.
    """
    hdr = validate_msg(frame)
    if hdr.dest_droppable or hdr.errcode:
        return None
    err = int(err)
    if not 0 <= err <= _ERRCODE_M:
        raise ValueError(f"error code {err} does not fit in {W1_ERRCODE_BITS} bits")
    if own_node is None:
        if hdr.is_short:
            raise ValueError("own_node is required to reject a message with a 24-byte header")
        own_node = hdr.dest_node
    old_hsize = hdr.hsize
    hsize = BASIC_H_SIZE if old_hsize == SHORT_H_SIZE else old_hsize
    dlen = min(hdr.data_size, MAX_FORWARD_SIZE)
    if hdr.syn and err == ErrorCode.OVERLOAD:
        dlen = 0
    src = memoryview(frame).cast("B")
    out = bytearray(hsize + dlen)
    out[:old_hsize] = src[:old_hsize]
    out[hsize:] = src[old_hsize : old_hsize + dlen]
    w0, w1, _ = _W012.unpack_from(out)
    w0 = (w0 & ~(W0_HSIZE_MASK | NON_SEQ_BIT | SIZE_MASK)) | (
        ((hsize >> 2) << W0_HSIZE_SHIFT) | (hsize + dlen)
    )
    w1 = (w1 & ~W1_ERRCODE_MASK) | (err << W1_ERRCODE_SHIFT)
    U32.pack_into(out, 0, w0 & _U32_M)
    U32.pack_into(out, 4, w1 & _U32_M)
    _W3_7.pack_into(out, 12, own_node, hdr.dest_port, hdr.orig_port, own_node, hdr.prev_node)
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Node identity (core.h hash128to32, addr.c tipc_nodeid2string, iproute2 str2nodeid)
# ---------------------------------------------------------------------------------------

_ID_WORDS: Final = Struct(">4I")
# Bytes tipc_nodeid2string accepts as "already text" (NUL is accepted too).
_ID_TEXT_CHARS: Final = frozenset(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.:_-@"
)
_HEX_CHARS: Final = frozenset("0123456789abcdefABCDEF")


def _check_identity(identity: bytes | bytearray | memoryview) -> bytes:
    raw = bytes(identity)
    if len(raw) != NODE_ID_LEN:
        raise WireError(f"node identity must be {NODE_ID_LEN} bytes, got {len(raw)}")
    return raw


def hash128to32(identity: bytes | bytearray | memoryview) -> int:
    """32-bit node address of a 16-byte identity: XOR of its four big-endian words, or
    their OR when the XOR is 0. WireError if ``identity`` is not 16 bytes."""
    a, b, c, d = _ID_WORDS.unpack(_check_identity(identity))
    folded: int = a ^ b ^ c ^ d
    return folded or (a | b | c | d)


def identity_to_str(identity: bytes | bytearray | memoryview) -> str:
    """Printable form of a 16-byte identity, as ``tipc_nodeid2string``.

    If every byte is in ``[0-9A-Za-z.:_@-]`` or NUL, the identity is text: the bytes up to
    the first NUL (all-NUL gives ""). Otherwise it is the 32-digit lower-case hex string
    with trailing '0' *characters* stripped (so ``c0a80010`` + zeros prints ``c0a8001``,
    exactly as the kernel does). WireError if ``identity`` is not 16 bytes.
    """
    raw = _check_identity(identity)
    if all(byte == 0 or byte in _ID_TEXT_CHARS for byte in raw):
        return raw.split(b"\0", 1)[0].decode("ascii")
    return raw.hex().rstrip("0")


def identity_from_str(s: str) -> bytes:
    """16-byte identity from the string a user gives ``tipc node set identity``.

    Mirrors iproute2 ``str2nodeid``: a string of at most 16 characters from
    ``[0-9A-Za-z.:_@-]`` is taken as text and NUL padded; otherwise a string of at most 32
    hex digits is read as bytes (an odd digit count gets a trailing 0 nibble) and zero
    padded. Note the first rule wins, so ``"c0a80001"`` is the *text* identity; build the
    IP-derived one with ``bytes.fromhex("c0a80001").ljust(16, b"\\0")``. ValueError for
    anything else (empty, too long, other characters).
    """
    if not s or len(s) > 2 * NODE_ID_LEN:
        raise ValueError(f"node identity {s!r} must have 1..32 characters")
    if len(s) <= NODE_ID_LEN and all(ord(c) < 128 and ord(c) in _ID_TEXT_CHARS for c in s):
        return s.encode("ascii").ljust(NODE_ID_LEN, b"\0")
    if all(c in _HEX_CHARS for c in s):
        digits = s if len(s) % 2 == 0 else s + "0"
        return bytes.fromhex(digits).ljust(NODE_ID_LEN, b"\0")
    raise ValueError(
        f"node identity {s!r} is neither a name (<=16 of [0-9A-Za-z.:_@-]) nor <=32 hex digits"
    )


# ---------------------------------------------------------------------------------------
# 16-bit sequence arithmetic (core.h less_eq / less / more / mod)
# ---------------------------------------------------------------------------------------

SEQ_MASK: Final = 0xFFFF
_SEQ_HALF: Final = 0x8000


def seq_less_eq(a: int, b: int) -> bool:
    """``a`` precedes or equals ``b`` in 16-bit serial order."""
    return ((b - a) & SEQ_MASK) < _SEQ_HALF


def seq_less(a: int, b: int) -> bool:
    """``a`` strictly precedes ``b``."""
    diff = (b - a) & SEQ_MASK
    return 0 < diff < _SEQ_HALF


def seq_more(a: int, b: int) -> bool:
    """``a`` strictly follows ``b`` (= not ``seq_less_eq(a, b)``)."""
    return ((b - a) & SEQ_MASK) >= _SEQ_HALF


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 65536 (``n`` may be negative)."""
    return (a + n) & SEQ_MASK


# ---------------------------------------------------------------------------------------
# Hot-path field helpers for the socket layer (sock.py, conn.py) and the connection core.
# Pre-shifted masks let a receive path test several fields with one AND; the offsets
# name the address words a socket reads straight out of a ring.
# ---------------------------------------------------------------------------------------

#: w0 bits of a user >= 4: clear for the data importances 0-3 (``msg_isdata``).
W0_NON_DATA_USER_MASK: Final = (_USER_M & ~User.CRITICAL_IMPORTANCE) << W0_USER_SHIFT
#: w0[28:25], the user, in place.
W0_USER_MASK: Final = _USER_M << W0_USER_SHIFT
#: ``(w0 >> W0_HSIZE_BYTES_SHIFT) & W0_HSIZE_BYTES_MASK`` is the header size in bytes
#: (the field counts words: shifting two bits less multiplies by 4).
W0_HSIZE_BYTES_SHIFT: Final = W0_HSIZE_SHIFT - 2
W0_HSIZE_BYTES_MASK: Final = _HSIZE_M << 2
#: w0 of a 24-byte header with the size and flag bits cleared.
W0_SHORT_HSIZE_FIELD: Final = (SHORT_H_SIZE >> 2) << W0_HSIZE_SHIFT
#: w1[31:29], the message type, in place.
W1_MTYPE_MASK: Final = _MTYPE_M << W1_MTYPE_SHIFT
#: w1 bits that are 0 exactly for an error-free message of type 0 (CONN_MSG, CONN_PROBE).
W1_MTYPE_ERRCODE_MASK: Final = W1_MTYPE_MASK | W1_ERRCODE_MASK
#: w0 bits a connection's plain data message has exactly as :data:`W0_PLAIN_CONN_DATA`:
#: a 24-byte header, a data importance, no SYN.
W0_PLAIN_CONN_MASK: Final = W0_HSIZE_MASK | W0_NON_DATA_USER_MASK | SYN_BIT
W0_PLAIN_CONN_DATA: Final = W0_SHORT_HSIZE_FIELD

# Byte offsets of the address words (w3..w10) from the start of a message.
PREV_NODE_OFFSET: Final = 12
ORIG_PORT_OFFSET: Final = 16
DEST_PORT_OFFSET: Final = 20
ORIG_NODE_OFFSET: Final = 24
DEST_NODE_OFFSET: Final = 28
NAME_TYPE_OFFSET: Final = 32
NAME_INSTANCE_OFFSET: Final = 36
NAME_UPPER_OFFSET: Final = 40

_u32_from = U32.unpack_from


def hsize_of(w0: int) -> int:
    """Header size in bytes (same as :func:`w0_hsize`)."""
    return (w0 >> W0_HSIZE_BYTES_SHIFT) & W0_HSIZE_BYTES_MASK


def data_len_of(w0: int) -> int:
    """Payload bytes of the message whose word 0 is ``w0`` (size - header size)."""
    return (w0 & SIZE_MASK) - ((w0 >> W0_HSIZE_BYTES_SHIFT) & W0_HSIZE_BYTES_MASK)


def user_of(w0: int) -> int:
    """The message user (same as :func:`w0_user`)."""
    return (w0 >> W0_USER_SHIFT) & _USER_M


def is_data_user(w0: int) -> bool:
    """User 0-3, an application message (``msg_isdata``)."""
    return not w0 & W0_NON_DATA_USER_MASK


def msg_orig_port(buf: bytes | bytearray | memoryview, off: int = 0) -> int:
    return int(_u32_from(buf, off + ORIG_PORT_OFFSET)[0])


def msg_dest_port(buf: bytes | bytearray | memoryview, off: int = 0) -> int:
    return int(_u32_from(buf, off + DEST_PORT_OFFSET)[0])


def orig_node_offset(hsize: int) -> int:
    """Where the originating node is: w6, or w3 (previous node) in a 24-byte header."""
    return ORIG_NODE_OFFSET if hsize > SHORT_H_SIZE else PREV_NODE_OFFSET


def msg_orig_node(buf: bytes | bytearray | memoryview, off: int, hsize: int) -> int:
    return int(_u32_from(buf, off + orig_node_offset(hsize))[0])


__all__ += [
    "W0_NON_DATA_USER_MASK",
    "W0_USER_MASK",
    "W0_HSIZE_BYTES_SHIFT",
    "W0_HSIZE_BYTES_MASK",
    "W0_SHORT_HSIZE_FIELD",
    "W1_MTYPE_MASK",
    "W1_MTYPE_ERRCODE_MASK",
    "W0_PLAIN_CONN_MASK",
    "W0_PLAIN_CONN_DATA",
    "PREV_NODE_OFFSET",
    "ORIG_PORT_OFFSET",
    "DEST_PORT_OFFSET",
    "ORIG_NODE_OFFSET",
    "DEST_NODE_OFFSET",
    "NAME_TYPE_OFFSET",
    "NAME_INSTANCE_OFFSET",
    "NAME_UPPER_OFFSET",
    "hsize_of",
    "data_len_of",
    "user_of",
    "is_data_user",
    "msg_orig_port",
    "msg_dest_port",
    "orig_node_offset",
    "msg_orig_node",
]
