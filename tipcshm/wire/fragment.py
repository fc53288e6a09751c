"""MSG_FRAGMENTER (user 12): splitting a message too big for one link packet.

Mirrors ``tipc_msg_build`` (the fragmenting half) and the header layout that
``tipc_buf_append`` / ``tipc_msg_fragment`` read in net/tipc/msg.c; the facts are in
tipc-wire.md §1.6 and §5.8.

Theory of operation
-------------------
A message of ``size`` bytes (header included) that does not fit in the link's segment
size ``mss`` travels as a train of fragments. Each fragment is a 40-byte (INT_H_SIZE)
MSG_FRAGMENTER header followed by the next ``mss - 40`` bytes of the original message,
the original header included: the first fragment's payload therefore starts with the
complete original header, and only the last one is shorter than ``mss``. The fragment
header says::

    w0      user 12, header size 40, size of this fragment
    w1      type FIRST_FRAGMENT (0) / FRAGMENT (1) / LAST_FRAGMENT (2)
    w2      link ack / seqno (filled by the link when it queues the fragment)
    w3, w6  previous and originating node: the sending node
    w4      [31:16] fragment number, counted from 1; [15:0] fragment count, which only
            the tunnel fragmenter (tipc_msg_fragment) fills, so 0 here
    w7      destination node of the original message
    w9      [2:0] importance of the original message (msg_importance)

Every other bit is 0 when the kernel sends it. :class:`FragmentMsg` keeps the whole
generic :class:`~tipcshm.wire.header.Header` so that a decoded fragment re-encodes byte
for byte, including the link words.

Limits: a fragment carries at least :data:`MIN_FRAGMENT_MSS` - 40 bytes, so the first
one always holds the complete original header (at most 60 bytes); the fragment number
is 16 bits, so a train has at most :data:`MAX_FRAGMENTS` fragments (at the minimum
segment size a 66060-byte message needs 1101).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tipcshm.wire.header import (
    HDR40,
    HDR_W01,
    INT_H_SIZE,
    MAX_H_SIZE,
    MAX_USER_MSG_SIZE,
    SIZE_MASK,
    TIPC_VERSION,
    U32,
    W0_HSIZE_MASK,
    W0_HSIZE_SHIFT,
    W0_USER_BITS,
    W0_USER_SHIFT,
    W0_VERSION_SHIFT,
    W1_MTYPE_SHIFT,
    FragType,
    Header,
    User,
    WireError,
    decode_header,
    encode_message,
    make_w0,
    make_w1,
    validate_msg,
)

__all__ = [
    "FRAGM_NO_SHIFT",
    "IMPORTANCE_MASK",
    "MAX_FRAGMENTS",
    "MIN_FRAGMENT_MSS",
    "NOF_FRAGMS_MASK",
    "FragmentMsg",
    "first_fragment_inner",
    "fragment",
    "fragment_fields",
    "message_importance",
]

FRAGM_NO_SHIFT: Final = 16  # w4[31:16] fragment number
NOF_FRAGMS_MASK: Final = 0xFFFF  # w4[15:0] fragment count (tunnel fragmentation only)
IMPORTANCE_MASK: Final = 0x7  # w9[2:0] importance (fragmenter and bundler)
MAX_FRAGMENTS: Final = 0xFFFF  # the fragment number is 16 bits
#: Smallest segment size :func:`fragment` accepts: the first fragment must hold the
#: whole original header.
MIN_FRAGMENT_MSS: Final = INT_H_SIZE + MAX_H_SIZE

# msg_importance(): data users are their own importance unless the message carries an
# error (then it is a system message); fragmenter and bundler carry it in w9.
_SYSTEM_IMPORTANCE: Final = int(User.SYSTEM_IMPORTANCE)
_CRITICAL: Final = int(User.CRITICAL_IMPORTANCE)
_U32_MAX: Final = 0xFFFFFFFF
_FRAGMENT_W0: Final = make_w0(User.MSG_FRAGMENTER, INT_H_SIZE, 0)
_FRAGMENTER: Final = int(User.MSG_FRAGMENTER)
_USER_M: Final = (1 << W0_USER_BITS) - 1
_HSIZE_TO_BYTES: Final = W0_HSIZE_SHIFT - 2  # the field counts 32-bit words
_W4_OFF: Final = 16


def message_importance(hdr: Header) -> int:
    """Importance of a message as the kernel's ``msg_importance`` computes it: 0-3 for
    data messages without an error code, w9[2:0] for MSG_FRAGMENTER and MSG_BUNDLER,
    TIPC_SYSTEM_IMPORTANCE (4) for everything else."""
    if hdr.user <= _CRITICAL and not hdr.errcode:
        return hdr.user
    if hdr.user in (User.MSG_FRAGMENTER, User.MSG_BUNDLER):
        return hdr.name_instance & IMPORTANCE_MASK
    return _SYSTEM_IMPORTANCE


@dataclass(frozen=True, slots=True)
class FragmentMsg:
    """One MSG_FRAGMENTER message: its generic header and its slice of the original.

    The fragmenter's own fields live in ``header`` (w4 and w9, see the module doc) and
    are read through the properties; build new fragments with :meth:`build`.
    """

    header: Header
    payload: bytes

    @property
    def frag_type(self) -> int:
        """FIRST_FRAGMENT, FRAGMENT or LAST_FRAGMENT (:class:`FragType` values)."""
        return self.header.mtype

    @property
    def fragm_no(self) -> int:
        return self.header.orig_port >> FRAGM_NO_SHIFT

    @property
    def nof_fragms(self) -> int:
        return self.header.orig_port & NOF_FRAGMS_MASK

    @property
    def importance(self) -> int:
        return self.header.name_instance & IMPORTANCE_MASK

    @classmethod
    def build(
        cls,
        *,
        frag_type: FragType | int,
        fragm_no: int,
        importance: int,
        own_addr: int,
        dest_addr: int,
        payload: bytes,
        nof_fragms: int = 0,
    ) -> FragmentMsg:
        """A fragment as ``tipc_msg_build`` makes it (link words 0); ValueError for a
        field that does not fit."""
        if not 0 <= fragm_no <= MAX_FRAGMENTS or not 0 <= nof_fragms <= NOF_FRAGMS_MASK:
            raise ValueError(f"fragment number {fragm_no}/{nof_fragms} does not fit 16 bits")
        if not 0 <= importance <= IMPORTANCE_MASK:
            raise ValueError(f"importance {importance} does not fit 3 bits")
        hdr = Header(
            user=User.MSG_FRAGMENTER,
            hsize=INT_H_SIZE,
            size=INT_H_SIZE + len(payload),
            mtype=int(frag_type),
            prev_node=own_addr,
            orig_port=(fragm_no << FRAGM_NO_SHIFT) | nof_fragms,
            orig_node=own_addr,
            dest_node=dest_addr,
            name_instance=importance,
        )
        hdr.check()
        return cls(hdr, bytes(payload))

    def encode(self) -> bytes:
        """The fragment's bytes; ValueError if header and payload disagree on the size."""
        return encode_message(self.header, self.payload)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> FragmentMsg:
        """Decode one MSG_FRAGMENTER message (trailing bytes beyond its size ignored);
        WireError for anything else, including an unknown fragment type."""
        hdr = validate_msg(buf)
        if hdr.user != User.MSG_FRAGMENTER:
            raise WireError(f"user {hdr.user} is not MSG_FRAGMENTER ({int(User.MSG_FRAGMENTER)})")
        if hdr.hsize < INT_H_SIZE:
            raise WireError(f"fragment header of {hdr.hsize} bytes, needs {INT_H_SIZE}")
        if hdr.mtype > FragType.LAST_FRAGMENT:
            raise WireError(f"unknown fragment type {hdr.mtype}")
        return cls(hdr, bytes(memoryview(buf).cast("B")[hdr.hsize : hdr.size]))


def fragment_fields(buf: bytes | bytearray | memoryview) -> tuple[int, int, memoryview]:
    """What a receiver needs of one MSG_FRAGMENTER message, read from words 0, 1 and 4
    with every check of :meth:`FragmentMsg.decode`: ``(frag_type, fragm_no, payload)``,
    the payload a view into ``buf`` (no copy). WireError as ``decode`` raises it."""
    n = buf.nbytes if type(buf) is memoryview else len(buf)
    if n >= INT_H_SIZE:
        w0, w1 = HDR_W01.unpack_from(buf)
        hsize = (w0 & W0_HSIZE_MASK) >> _HSIZE_TO_BYTES
        size = w0 & SIZE_MASK
        ftype = w1 >> W1_MTYPE_SHIFT
        if (
            w0 >> W0_VERSION_SHIFT == TIPC_VERSION
            and (w0 >> W0_USER_SHIFT) & _USER_M == _FRAGMENTER
            and INT_H_SIZE <= hsize <= size <= n
            and size - hsize <= MAX_USER_MSG_SIZE
            and ftype <= FragType.LAST_FRAGMENT
        ):
            w4 = U32.unpack_from(buf, _W4_OFF)[0]
            return ftype, w4 >> FRAGM_NO_SHIFT, memoryview(buf)[hsize:size]
    FragmentMsg.decode(buf)  # names the fault
    raise WireError("not a valid fragment")  # pragma: no cover - decode raised


def fragment(msg: bytes, mss: int, *, own_addr: int, dest_addr: int) -> list[bytes]:
    """Split the complete TIPC message ``msg`` into MSG_FRAGMENTER messages of at most
    ``mss`` bytes (FIRST_FRAGMENT, FRAGMENT..., LAST_FRAGMENT, numbered from 1), as
    ``tipc_msg_build`` does when a message exceeds the link's segment size.

    ``own_addr`` becomes the previous and originating node, ``dest_addr`` the
    destination node; the importance is the original's (:func:`message_importance`).
    The link stamps seqno and acks later. ValueError (the caller's mistake) if ``msg``
    is not one valid message, if it fits in ``mss`` (nothing to fragment), if ``mss``
    is below :data:`MIN_FRAGMENT_MSS` or if more than :data:`MAX_FRAGMENTS` fragments
    would be needed.
    """
    try:
        inner = validate_msg(msg)
    except WireError as exc:
        raise ValueError(f"not a valid TIPC message: {exc}") from exc
    size = inner.size
    if mss < MIN_FRAGMENT_MSS:
        raise ValueError(f"segment size {mss} is below {MIN_FRAGMENT_MSS}")
    if size <= mss:
        raise ValueError(f"a {size}-byte message fits in one {mss}-byte packet")
    chunk = mss - INT_H_SIZE
    count = -(-size // chunk)
    if count > MAX_FRAGMENTS:
        raise ValueError(f"{size} bytes in {chunk}-byte pieces needs {count} fragments")
    if not (0 <= own_addr <= _U32_MAX and 0 <= dest_addr <= _U32_MAX):
        raise ValueError(f"node addresses {own_addr:#x}/{dest_addr:#x} must be u32")
    importance = message_importance(inner)
    data = memoryview(msg)[:size]
    w1_first, w1_middle, w1_last = (make_w1(t) for t in FragType)
    out: list[bytes] = []
    for index in range(count):
        piece = data[index * chunk : (index + 1) * chunk]
        if index == 0:
            w1 = w1_first
        elif index == count - 1:
            w1 = w1_last
        else:
            w1 = w1_middle
        head = HDR40.pack(
            _FRAGMENT_W0 | (INT_H_SIZE + len(piece)),
            w1,
            0,
            own_addr,
            (index + 1) << FRAGM_NO_SHIFT,
            0,
            own_addr,
            dest_addr,
            0,
            importance,
        )
        out.append(head + piece)
    return out


def first_fragment_inner(frag: FragmentMsg) -> Header:
    """The original message's header at the start of a FIRST_FRAGMENT's payload;
    WireError if it is not there or not valid."""
    return decode_header(frag.payload)
