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
from tipcshm.wire.fragment import FragmentMsg, first_fragment_inner
from tipcshm.wire.header import FragType, WireError, validate_msg

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
    """One reassembly slot (see the module doc)."""

    __slots__ = ("_buf", "_errors", "_expect", "_fragments", "_next_no", "_reassembled")

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._expect = 0  # size the original header announces
        self._next_no = 0
        self._fragments = 0
        self._reassembled = 0
        self._errors = 0

    @property
    def busy(self) -> bool:
        """True while a message is partly joined."""
        return self._buf is not None

    def reset(self) -> None:
        """Drop a partial message (the link was reset)."""
        self._buf = None
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
            frag = FragmentMsg.decode(frame)
        except WireError as exc:
            raise self._fail(f"not a fragment: {exc}", drop=False) from None
        ftype = frag.frag_type
        if ftype == FragType.FIRST_FRAGMENT:
            if self._buf is not None:
                raise self._fail("FIRST_FRAGMENT while a message is being joined")
            if frag.fragm_no != 1:
                raise self._fail(f"first fragment numbered {frag.fragm_no}")
            try:
                inner = first_fragment_inner(frag)
            except WireError as exc:
                raise self._fail(f"first fragment does not start with a header: {exc}") from None
            if len(frag.payload) >= inner.size:
                raise self._fail(
                    f"first fragment holds {len(frag.payload)} bytes of a {inner.size}-byte message"
                )
            self._buf = bytearray(frag.payload)
            self._expect = inner.size
            self._next_no = 2
            self._fragments += 1
            return None
        buf = self._buf
        if buf is None:
            raise self._fail(f"fragment type {ftype} without a FIRST_FRAGMENT")
        if frag.fragm_no != self._next_no:
            raise self._fail(f"fragment {frag.fragm_no}, expected {self._next_no}")
        buf += frag.payload
        if len(buf) > self._expect:
            raise self._fail(f"{len(buf)} bytes joined, the message has {self._expect}")
        self._fragments += 1
        if ftype == FragType.FRAGMENT:
            self._next_no += 1
            return None
        if len(buf) != self._expect:
            raise self._fail(f"last fragment ends at {len(buf)} of {self._expect} bytes")
        try:
            validate_msg(buf)
        except WireError as exc:  # pragma: no cover - the size checks above imply it
            raise self._fail(f"reassembled message is invalid: {exc}") from None
        msg = bytes(buf)
        self.reset()
        self._reassembled += 1
        return msg

    def statistics(self) -> ReassemblyStatistics:
        return ReassemblyStatistics(
            fragments=self._fragments,
            reassembled=self._reassembled,
            errors=self._errors,
            partial_bytes=len(self._buf) if self._buf is not None else 0,
        )
