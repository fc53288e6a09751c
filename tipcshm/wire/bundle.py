"""MSG_BUNDLER (user 6): several small messages in one link packet.

Mirrors ``tipc_msg_try_bundle`` / ``tipc_msg_bundle`` (building) and
``tipc_msg_extract`` (opening) in net/tipc/msg.c; the facts are in tipc-wire.md §1.6
and §5.7.

Theory of operation
-------------------
The link bundles only when its transmit window is full: a small message waiting in
the backlog behind another small one is packed into the same packet instead of
queueing separately (the link decides when; this module only knows how). A bundle is
a 40-byte (INT_H_SIZE) MSG_BUNDLER header followed by complete inner messages, each
starting at a 4-byte-aligned offset from the start of the bundle's data; the bytes
between the end of one inner message and the next aligned offset are padding. No
padding follows the last message. The outer header says::

    w0      user 6, header size 40, size of the whole bundle
    w1      type 0
    w2      link ack / seqno (filled by the link)
    w3, w6  previous and originating node: the previous node of the first inner message
    w7      destination node
    w9      [31:16] number of inner messages; [2:0] importance of the first message

A message is never bundled if it is a fragment, a tunnel or a broadcast-protocol
packet (the kernel's rule) or a bundle itself (its receiver would not open it twice),
or if it would fill the packet on its own (``max_size <= 40 + size``).

The receiver walks the data from offset 0: each inner message must be a valid TIPC
message that ends inside the bundle. :func:`unbundle` is stricter than the kernel in
reporting inconsistencies (a count that disagrees with w9, left-over bytes that cannot
hold a message, inner users that are never bundled): all of them raise
:class:`~tipcshm.wire.header.WireError`, so the link can count and drop the packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from tipcshm.wire.fragment import IMPORTANCE_MASK, message_importance
from tipcshm.wire.header import (
    HDR40,
    INT_H_SIZE,
    MAX_USER_MSG_SIZE,
    MIN_H_SIZE,
    SIZE_MASK,
    TIPC_VERSION,
    U32,
    W0_HSIZE_MASK,
    W0_HSIZE_SHIFT,
    W0_USER_BITS,
    W0_USER_SHIFT,
    W0_VERSION_SHIFT,
    Header,
    User,
    WireError,
    decode_header,
    encode_message,
    make_w0,
    validate_msg,
    w0_hsize,
    w0_size,
    w0_user,
    w0_version,
    w1_errcode,
)

__all__ = [
    "MSGCNT_SHIFT",
    "NEVER_BUNDLED",
    "BundleBuilder",
    "BundleMsg",
    "align4",
    "bundlable",
    "unbundle",
    "unbundle_select",
]

MSGCNT_SHIFT: Final = 16  # w9[31:16] number of inner messages
_MSGCNT_MAX: Final = 0xFFFF
#: Users that never go into a bundle.
NEVER_BUNDLED: Final = frozenset(
    {User.MSG_FRAGMENTER, User.TUNNEL_PROTOCOL, User.BCAST_PROTOCOL, User.MSG_BUNDLER}
)
_NEVER_BUNDLED_INTS: Final = frozenset(int(u) for u in NEVER_BUNDLED)
_PADDING: Final = bytes(3)
_BUNDLE_W0: Final = make_w0(User.MSG_BUNDLER, INT_H_SIZE, 0)
_BUNDLER: Final = int(User.MSG_BUNDLER)
_USER_M: Final = (1 << W0_USER_BITS) - 1
_HSIZE_TO_BYTES: Final = W0_HSIZE_SHIFT - 2  # the field counts 32-bit words
_W9_OFF: Final = 36
_unpack_u32: Final = U32.unpack_from


def align4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (the kernel's BUF_ALIGN)."""
    return (n + 3) & ~3


def bundlable(msg: bytes | bytearray | memoryview, max_size: int) -> bool:
    """Whether ``msg`` (one complete message the caller built) may go into a bundle of
    at most ``max_size`` bytes: its user is not in :data:`NEVER_BUNDLED` and it leaves
    room for at least one more message (``max_size > 40 + size``)."""
    if len(msg) < MIN_H_SIZE:
        return False
    w0 = U32.unpack_from(msg)[0]
    return w0_user(w0) not in _NEVER_BUNDLED_INTS and max_size > INT_H_SIZE + w0_size(w0)


class BundleBuilder:
    """Packs messages into one MSG_BUNDLER message of at most ``max_size`` bytes.

    ``first`` opens the bundle (ValueError if it is not :func:`bundlable`); the outer
    header takes its importance. :meth:`try_add` appends while there is room. The
    builder copies the bytes it is given.
    """

    __slots__ = ("_body", "_count", "_dest", "_importance", "_max", "_own")

    def __init__(self, first: bytes, *, own_addr: int, dest_addr: int, max_size: int) -> None:
        if not bundlable(first, max_size):
            raise ValueError("the first message of a bundle must be bundlable")
        w0 = U32.unpack_from(first)[0]
        size = w0_size(w0)
        hsize = w0_hsize(w0)
        if (
            w0_version(w0) != TIPC_VERSION
            or len(first) < size
            or hsize < MIN_H_SIZE
            or size < hsize
            or size - hsize > MAX_USER_MSG_SIZE
        ):
            raise ValueError("the first message of a bundle is not a valid TIPC message")
        self._own = own_addr
        self._dest = dest_addr
        self._max = max_size
        self._importance = _importance(first, w0)
        self._body = bytearray(memoryview(first)[:size])
        self._count = 1

    @property
    def count(self) -> int:
        """Number of inner messages so far."""
        return self._count

    @property
    def size(self) -> int:
        """Size of the bundle as :meth:`encode` would return it now."""
        return INT_H_SIZE + len(self._body)

    @property
    def importance(self) -> int:
        return self._importance

    def try_add(self, msg: bytes | bytearray | memoryview) -> bool:
        """Append ``msg`` if it is bundlable and fits (after padding to a 4-byte offset)
        within ``max_size``; False leaves the bundle unchanged."""
        n = len(msg)
        if n < MIN_H_SIZE:
            return False
        w0 = _unpack_u32(msg)[0]
        msz = w0 & SIZE_MASK
        body = self._body
        used = len(body)
        offset = (used + 3) & ~3
        if (
            n < msz
            or INT_H_SIZE + offset + msz > self._max
            or (w0 >> W0_USER_SHIFT) & _USER_M in _NEVER_BUNDLED_INTS
            or self._count >= _MSGCNT_MAX
        ):
            return False
        if offset != used:
            body += _PADDING[: offset - used]
        body += msg if n == msz else memoryview(msg)[:msz]
        self._count += 1
        return True

    def header(self) -> Header:
        """The outer header for the bundle as it is now."""
        return Header(
            user=User.MSG_BUNDLER,
            hsize=INT_H_SIZE,
            size=INT_H_SIZE + len(self._body),
            prev_node=self._own,
            orig_node=self._own,
            dest_node=self._dest,
            name_instance=(self._count << MSGCNT_SHIFT) | self._importance,
        )

    def encode(self) -> bytes:
        """The MSG_BUNDLER message (link words 0; the link stamps them)."""
        body = self._body
        own = self._own
        head = HDR40.pack(
            _BUNDLE_W0 | (INT_H_SIZE + len(body)),
            0,
            0,
            own,
            0,
            0,
            own,
            self._dest,
            0,
            (self._count << MSGCNT_SHIFT) | self._importance,
        )
        return head + body


def _importance(msg: bytes | bytearray | memoryview, w0: int) -> int:
    """:func:`~tipcshm.wire.fragment.message_importance` of a message whose word 0 the
    caller has read (the builder's path: no Header object)."""
    user = w0_user(w0)
    if user <= User.CRITICAL_IMPORTANCE and not w1_errcode(U32.unpack_from(msg, 4)[0]):
        return user
    return message_importance(decode_header(msg)) & IMPORTANCE_MASK


def _walk(
    buf: bytes, start: int, end: int, count: int, keep: frozenset[int] | None = None
) -> tuple[list[bytes], int]:
    """Split the data area ``buf[start:end]`` of a bundle into its inner messages (see
    :func:`unbundle`); ``start`` is a multiple of 4, so alignment can be computed on
    offsets into ``buf``. With ``keep``, only inner messages of those users are
    returned and the others counted (second item); every one is checked either way.

    Each inner message gets the checks of ``tipc_msg_validate`` (the same as
    :func:`~tipcshm.wire.header.validate_msg`), made on word 0 alone: this runs once
    per bundled message on the receive path, so the field reads are inlined.
    """
    out: list[bytes] = []
    append = out.append
    unpack = U32.unpack_from
    left_out = 0
    pos = start
    while pos < end:
        if end - pos < MIN_H_SIZE:
            raise WireError(f"{end - pos} bytes left at bundle offset {pos - start}: not a message")
        w0 = unpack(buf, pos)[0]
        hsize = (w0 & W0_HSIZE_MASK) >> _HSIZE_TO_BYTES
        size = w0 & SIZE_MASK
        if (
            w0 >> W0_VERSION_SHIFT != TIPC_VERSION
            or hsize < MIN_H_SIZE
            or size < hsize
            or size - hsize > MAX_USER_MSG_SIZE
            or pos + size > end
        ):
            validate_msg(memoryview(buf)[pos:end])  # names the fault
            raise WireError(f"invalid inner message at bundle offset {pos - start}")
        user = (w0 >> W0_USER_SHIFT) & _USER_M
        if user in _NEVER_BUNDLED_INTS:
            raise WireError(f"user {user} inside a bundle at offset {pos - start}")
        if keep is None or user in keep:
            append(buf[pos : pos + size])
        else:
            left_out += 1
        pos += size
        if pos < end:
            pos = (pos + 3) & ~3
    if pos != end:
        raise WireError(
            f"bundle data ends at {end - start}, inside the padding after {pos - start - 4}"
        )
    if len(out) + left_out != count:
        raise WireError(f"bundle announces {count} messages but holds {len(out) + left_out}")
    return out, left_out


def _area(frame: bytes) -> tuple[int, int, int]:
    """Check a bundle's outer header (as :func:`_outer`, on words 0 and 9 alone) and
    return where its data area starts and ends and the count it announces."""
    n = len(frame)
    if n >= INT_H_SIZE:
        w0 = U32.unpack_from(frame)[0]
        hsize = (w0 & W0_HSIZE_MASK) >> _HSIZE_TO_BYTES
        size = w0 & SIZE_MASK
        if (
            w0 >> W0_VERSION_SHIFT == TIPC_VERSION
            and (w0 >> W0_USER_SHIFT) & _USER_M == _BUNDLER
            and INT_H_SIZE <= hsize < size <= n
            and size - hsize <= MAX_USER_MSG_SIZE
        ):
            return hsize, size, U32.unpack_from(frame, _W9_OFF)[0] >> MSGCNT_SHIFT
    hdr = _outer(frame)  # names the fault
    return hdr.hsize, hdr.size, hdr.name_instance >> MSGCNT_SHIFT  # pragma: no cover


def _as_bytes(frame: bytes | bytearray | memoryview) -> bytes:
    return frame if type(frame) is bytes else bytes(frame)


def unbundle(frame: bytes | bytearray | memoryview) -> list[bytes]:
    """The inner messages of one MSG_BUNDLER message, in order (``tipc_msg_extract``).

    WireError if the frame is not a valid bundle or on any inconsistency: an inner
    message that does not validate or runs past the bundle, left-over bytes, a count
    that disagrees with w9[31:16], an inner user that is never bundled, an empty bundle.
    """
    buf = _as_bytes(frame)
    start, end, count = _area(buf)
    return _walk(buf, start, end, count)[0]


def unbundle_select(
    frame: bytes | bytearray | memoryview, users: frozenset[int]
) -> tuple[list[bytes], int]:
    """:func:`unbundle` in one pass for a receiver that takes only some users: the
    inner messages whose user is in ``users``, in order, and how many others the
    bundle held. The whole bundle is checked as :func:`unbundle` checks it."""
    buf = _as_bytes(frame)
    start, end, count = _area(buf)
    return _walk(buf, start, end, count, users)


def _outer(frame: bytes | bytearray | memoryview) -> Header:
    hdr = validate_msg(frame)
    if hdr.user != User.MSG_BUNDLER:
        raise WireError(f"user {hdr.user} is not MSG_BUNDLER ({int(User.MSG_BUNDLER)})")
    if hdr.hsize < INT_H_SIZE:
        raise WireError(f"bundle header of {hdr.hsize} bytes, needs {INT_H_SIZE}")
    if hdr.size == hdr.hsize:
        raise WireError("empty bundle")
    return hdr


@dataclass(frozen=True, slots=True)
class BundleMsg:
    """One MSG_BUNDLER message: its generic header and its data area as sent.

    The data area is kept whole so that the padding (which the kernel does not clear)
    re-encodes byte for byte; :attr:`messages` walks it. Build bundles with
    :class:`BundleBuilder`.
    """

    header: Header
    payload: bytes

    @property
    def count(self) -> int:
        return self.header.name_instance >> MSGCNT_SHIFT

    @property
    def importance(self) -> int:
        return self.header.name_instance & IMPORTANCE_MASK

    @property
    def messages(self) -> list[bytes]:
        """The inner messages (WireError if the payload is inconsistent)."""
        return _walk(self.payload, 0, len(self.payload), self.count)[0]

    def encode(self) -> bytes:
        return encode_message(self.header, self.payload)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> BundleMsg:
        """Decode and fully validate one bundle (as :func:`unbundle`); WireError."""
        hdr = _outer(buf)
        view = memoryview(buf).cast("B")
        payload = bytes(view[hdr.hsize : hdr.size])
        _walk(payload, 0, len(payload), hdr.name_instance >> MSGCNT_SHIFT)
        return cls(hdr, payload)
