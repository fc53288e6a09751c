"""Joining MSG_FRAGMENTER fragments back into the original message.

Mirrors ``tipc_buf_append`` in net/tipc/msg.c, as ``tipc_link_input`` uses it: one
reassembly slot per link (the link delivers in order, so fragments of one message
arrive one after the other, never interleaved with another fragmented message).

Theory of operation
-------------------
A FIRST_FRAGMENT opens the slot, FRAGMENTs append to it and the LAST_FRAGMENT closes
it: the concatenated payloads must be one valid TIPC message of exactly that length,
which :meth:`Reassembler.push` returns. The fragment header's own 40 bytes are
dropped; nothing of it survives into the result.

What cannot belong raises :class:`~tipcshm.core.errors.RemoteProtocolError`:

* bytes that are not a MSG_FRAGMENTER message (state unchanged, as for any garbage);
* a FRAGMENT or LAST_FRAGMENT with no open FIRST_FRAGMENT, or a FIRST_FRAGMENT while
  one is open;
* a fragment number that is not the next one (the kernel's fragmenter numbers 1, 2,
  3...; the kernel itself does not check, but a gap on an in-order link means the peer
  is broken);
* a first fragment that does not start with a valid header, more bytes than that
  header announces (so a partial message never exceeds 66000 + 60 bytes), or a result
  that does not validate.

For all but the first case the partial message is dropped, as ``tipc_buf_append``
frees its head on error; the link then resets itself (``tipc_link_input`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

from tipcshm.core.errors import RemoteProtocolError
from tipcshm.wire.fragment import fragment_fields
from tipcshm.wire.header import FragType, WireError, decode_header, validate_msg

__all__ = ["ReassemblyStatistics", "Reassembler"]


@dataclass(frozen=True, slots=True)
class ReassemblyStatistics:
    """Counters of one :class:`Reassembler` (``tipc link statistics show`` prints the
    link's "RX fragments n/m" from the first two)."""

    fragments: int  # fragments accepted
    reassembled: int  # whole messages returned
    errors: int  # fragments refused with RemoteProtocolError
    partial_bytes: int  # bytes held for the message being joined now


class Reassembler:
    """One reassembly slot (see the module doc).

    The fragments' payloads are kept as views (of the link's immutable frames) and
    joined once, when the last fragment arrives: a message costs one copy of its bytes
    and one header check per fragment.
    """

    __slots__ = ("_errors", "_expect", "_fragments", "_have", "_next_no", "_parts", "_reassembled")

    def __init__(self) -> None:
        self._parts: list[memoryview | bytes] | None = None
        self._have = 0  # bytes in _parts
        self._expect = 0  # size the original header announces
        self._next_no = 0
        self._fragments = 0
        self._reassembled = 0
        self._errors = 0

    @property
    def busy(self) -> bool:
        """True while a message is partly joined."""
        return self._parts is not None

    def reset(self) -> None:
        """Drop a partial message (the link was reset)."""
        self._parts = None
        self._have = 0
        self._expect = 0
        self._next_no = 0

    def _fail(self, why: str, *, drop: bool = True) -> RemoteProtocolError:
        self._errors += 1
        if drop:
            self.reset()
        return RemoteProtocolError(why)

    def push(self, frame: bytes | bytearray | memoryview) -> bytes | None:
        """Feed one MSG_FRAGMENTER message; the whole original message when this was
        its last fragment, else None. RemoteProtocolError as the module doc says."""
        try:
            ftype, fragm_no, payload = fragment_fields(frame)
        except WireError as exc:
            raise self._fail(f"not a fragment: {exc}", drop=False) from None
        # A view is kept until the message is complete: only an immutable frame may
        # be held that way.
        return self.push_fields(
            ftype, fragm_no, payload if type(frame) is bytes else bytes(payload)
        )

    def push_fields(self, ftype: int, fragm_no: int, payload: memoryview | bytes) -> bytes | None:
        """:meth:`push` for a fragment already read with
        :func:`~tipcshm.wire.fragment.fragment_fields` (the link checks every frame
        before it changes any state, and does not read it twice). ``payload`` must not
        change until the message is complete."""
        if ftype == FragType.FIRST_FRAGMENT:
            if self._parts is not None:
                raise self._fail("FIRST_FRAGMENT while a message is being joined")
            if fragm_no != 1:
                raise self._fail(f"first fragment numbered {fragm_no}")
            try:
                inner = decode_header(payload)
            except WireError as exc:
                raise self._fail(f"first fragment does not start with a header: {exc}") from None
            if len(payload) >= inner.size:
                raise self._fail(
                    f"first fragment holds {len(payload)} bytes of a {inner.size}-byte message"
                )
            self._parts = [payload]
            self._have = len(payload)
            self._expect = inner.size
            self._next_no = 2
            self._fragments += 1
            return None
        parts = self._parts
        if parts is None:
            raise self._fail(f"fragment type {ftype} without a FIRST_FRAGMENT")
        if fragm_no != self._next_no:
            raise self._fail(f"fragment {fragm_no}, expected {self._next_no}")
        have = self._have + len(payload)
        if have > self._expect:
            raise self._fail(f"{have} bytes joined, the message has {self._expect}")
        parts.append(payload)
        self._have = have
        self._fragments += 1
        if ftype == FragType.FRAGMENT:
            self._next_no += 1
            return None
        if have != self._expect:
            raise self._fail(f"last fragment ends at {have} of {self._expect} bytes")
        msg = b"".join(parts)
        try:
            validate_msg(msg)
        except WireError as exc:  # pragma: no cover - the size checks above imply it
            raise self._fail(f"reassembled message is invalid: {exc}") from None
        self.reset()
        self._reassembled += 1
        return msg

    def statistics(self) -> ReassemblyStatistics:
        return ReassemblyStatistics(
            fragments=self._fragments,
            reassembled=self._reassembled,
            errors=self._errors,
            partial_bytes=self._have,
        )
