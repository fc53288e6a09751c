"""The link's one-pass receive and cheap send checks (issue 11, benchmark).

The fast readers must accept and refuse exactly what the full codecs accept and
refuse: ``scan`` and ``send_importance`` against ``peek``, ``unbundle_select`` against
``unbundle``, ``fragment_fields`` against ``FragmentMsg.decode``, ``stamped`` against
``stamp``. The link itself: a refused frame changes nothing, a bundle or fragment that
waited in the deferred queue is delivered as it was checked, and a reassembled message
that is not data is dropped, never an exception out of ``receive``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_link import A_ADDR, B_ADDR, Bench, data_msg, norm, up_bench
from test_wire_segmentation import OWN, PEER
from test_wire_segmentation import data_msg as seg_msg

from tipcshm.core.errors import RemoteProtocolError
from tipcshm.core.events import Delivered, LinkDown
from tipcshm.core.link import Link
from tipcshm.core.reassembly import Reassembler
from tipcshm.wire import FragType, Header, User, WireError, encode_header
from tipcshm.wire.bundle import BundleBuilder, unbundle, unbundle_select
from tipcshm.wire.fragment import FragmentMsg, fragment, fragment_fields
from tipcshm.wire.link import peek, scan, send_importance, stamp, stamped

U16 = st.integers(0, 0xFFFF)
small_msgs = st.builds(
    seg_msg,
    st.integers(0, 120),
    user=st.sampled_from([0, 1, 2, 3, 5, 7, 8, 9, 11, 13, 14, 15]),
    hsize=st.sampled_from([24, 32, 40]),
    fill=st.integers(0, 255),
    errcode=st.sampled_from([0, 0, 0, 1]),
)
flips = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)


def mutate(raw: bytes, changes: list[tuple[int, int]]) -> bytes:
    buf = bytearray(raw)
    for pos, val in changes:
        if pos < len(buf):
            buf[pos] = val
    return bytes(buf)


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except WireError:
        return WireError


# -- wire: the fast readers agree with the codecs ---------------------------------------


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=90), st.builds(mutate, small_msgs, flips)))
def test_scan_and_send_importance_agree_with_peek(raw: bytes) -> None:
    info = outcome(peek, raw)
    if info is WireError:
        assert outcome(scan, raw) is WireError
        assert outcome(send_importance, raw) is WireError
        return
    assert scan(raw) == (info.user, info.size, info.non_seq, info.seqno, info.ack, info.prev_node)
    assert scan(memoryview(raw)) == scan(raw)
    if info.size == len(raw):
        assert send_importance(raw) == info.importance
        assert send_importance(bytearray(raw)) == info.importance
    else:
        with pytest.raises(WireError, match="announces"):
            send_importance(raw)


@given(small_msgs, U16, U16, U16)
def test_stamped_is_stamp_on_a_copy(msg: bytes, seqno: int, ack: int, bc: int) -> None:
    buf = bytearray(msg)
    stamp(buf, seqno, ack, bc)
    assert stamped(msg, seqno, ack, bc) == bytes(buf)


def bundle_of(messages: list[bytes]) -> bytes | None:
    try:
        builder = BundleBuilder(messages[0], own_addr=OWN, dest_addr=PEER, max_size=1432)
    except ValueError:
        return None
    for m in messages[1:]:
        builder.try_add(m)
    return builder.encode()


KEEP = frozenset({0, 1, 2, 3, 8, 9, 11})


@settings(max_examples=300)
@given(st.lists(small_msgs, min_size=1, max_size=10), flips)
def test_unbundle_select_is_unbundle_filtered(messages: list[bytes], changes: list) -> None:  # type: ignore[type-arg]
    raw = bundle_of(messages)
    if raw is None:
        return
    for frame in (raw, mutate(raw, changes)):
        whole = outcome(unbundle, frame)
        if whole is WireError:
            assert outcome(unbundle_select, frame, KEEP) is WireError
            continue
        kept = [m for m in whole if peek(m).user in KEEP]
        assert unbundle_select(frame, KEEP) == (kept, len(whole) - len(kept))
        assert unbundle_select(memoryview(frame), KEEP) == (kept, len(whole) - len(kept))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_unbundle_select_fuzz_raises_only_wire_error(raw: bytes) -> None:
    assert (outcome(unbundle, raw) is WireError) == (
        outcome(unbundle_select, raw, KEEP) is WireError
    )


@settings(max_examples=300)
@given(st.integers(100, 4000), st.sampled_from([100, 300, 1432]), flips, st.integers(0, 9))
def test_fragment_fields_agree_with_decode(size: int, mss: int, changes: list, pick: int) -> None:  # type: ignore[type-arg]
    msg = seg_msg(size)
    if len(msg) <= mss:
        return
    frags = fragment(msg, mss, own_addr=OWN, dest_addr=PEER)
    raw = mutate(frags[pick % len(frags)], changes)
    dec = outcome(FragmentMsg.decode, raw)
    if dec is WireError:
        assert outcome(fragment_fields, raw) is WireError
        return
    ftype, no, payload = fragment_fields(raw)
    assert (ftype, no, bytes(payload)) == (dec.frag_type, dec.fragm_no, dec.payload)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fragment_fields_fuzz_raises_only_wire_error(raw: bytes) -> None:
    assert (outcome(FragmentMsg.decode, raw) is WireError) == (
        outcome(fragment_fields, raw) is WireError
    )


def test_reassembler_copies_what_it_may_not_keep() -> None:
    """A bytearray fed to push may change afterwards: the reassembler must not have
    kept a view of it."""
    msg = seg_msg(3000)
    frags = [bytearray(f) for f in fragment(msg, 1000, own_addr=OWN, dest_addr=PEER)]
    r = Reassembler()
    out = None
    for f in frags:
        out = r.push(f)
        f[40:] = bytes(len(f) - 40)  # the owner reuses its buffer
    assert out == msg
    assert r.statistics().partial_bytes == 0


def test_push_fields_is_push() -> None:
    msg = seg_msg(5000)
    r1, r2 = Reassembler(), Reassembler()
    for f in fragment(msg, 1432, own_addr=OWN, dest_addr=PEER):
        a = r1.push(f)
        b = r2.push_fields(*fragment_fields(f))
        assert a == b
        assert r1.statistics() == r2.statistics()
    assert a == msg


# -- events -------------------------------------------------------------------------------


def test_delivered_is_still_a_frozen_value() -> None:
    d = Delivered(1, b"x")
    assert d == Delivered(source=1, frame=b"x") and d != Delivered(2, b"x")
    assert hash(d) == hash(Delivered(1, b"x"))
    assert dataclasses.astuple(d) == (1, b"x")
    assert dataclasses.replace(d, source=3) == Delivered(3, b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.source = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Delivered(1)  # type: ignore[call-arg]


# -- the link ---------------------------------------------------------------------------


def snapshot(link: Link) -> tuple[object, ...]:
    return (
        link.state,
        link.rcv_nxt,
        link.snd_nxt,
        link.statistics(),
        link.queue_sizes(),
        link._reasm.statistics(),
        sorted(link._deferred),
    )


@functools.cache
def _in_flight(seed: int) -> tuple[Bench, list[bytes], int]:
    """An up pair and A's second window for B: 3 fragments of a 3000-byte message and
    bundles of small messages (plus how many small messages those bundles hold)."""
    bn = up_bench(seed)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    small = data_msg(A_ADDR, B_ADDR, b"s" * 40)
    for _ in range(a.window):
        a.send(small, bn.now)
    a.send(data_msg(A_ADDR, B_ADDR, b"f" * 3000), bn.now)
    while not a.congested(0):
        a.send(small, bn.now)
    for f in a.frames_to_send(bn.now):  # the first window: plain messages
        b.receive(f, bn.now)
    while b.next_event() is not None:
        pass
    bundled = a.statistics().tx_bundled
    for f in b.frames_to_send(bn.now):  # B's acks free A's window
        a.receive(f, bn.now)
    frames = a.frames_to_send(bn.now)
    assert [fragment_fields(f)[0] for f in frames[:3]] == list(FragType)
    inner = sum(len(unbundle(f)) for f in frames[3:])
    assert len(frames) > 40 and 0 < inner <= bundled
    return bn, frames, inner


def in_flight(seed: int) -> tuple[Bench, list[bytes], int]:
    """A fresh copy of :func:`_in_flight` (a few thousand sends: built once)."""
    return copy.deepcopy(_in_flight(seed))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), flips, st.integers(0, 5))
def test_a_refused_frame_changes_nothing(pick: int, changes: list, skip: int) -> None:  # type: ignore[type-arg]
    bn, frames, _ = in_flight(21)
    b = bn.b
    # some frames in, one left out so later ones wait in the deferred queue
    for i, f in enumerate(frames[: skip + 3]):
        if i != skip:
            b.receive(f, bn.now)
    b.frames_to_send(bn.now)
    while b.next_event() is not None:
        pass
    before = snapshot(b)
    bad = mutate(frames[pick % len(frames)], changes)
    try:
        b.receive(bad, bn.now)
    except RemoteProtocolError:
        assert snapshot(b) == before
        assert b.frames_to_send(bn.now) == [] and b.next_event() is None


def test_bundles_and_fragments_delivered_the_same_through_the_deferred_queue() -> None:
    bn, frames, inner = in_flight(22)
    b = bn.b
    bundles = b.statistics().rx_bundles
    for f in [frames[-1], *frames[1:-1], frames[0]]:  # all wait for the first
        b.receive(f, bn.now)
        assert b.is_up
    got = [norm(e.frame) for e in iter(b.next_event, None) if isinstance(e, Delivered)]
    assert (
        got
        == [norm(data_msg(A_ADDR, B_ADDR, b"f" * 3000))]
        + [norm(data_msg(A_ADDR, B_ADDR, b"s" * 40))] * inner
    )
    assert b.statistics().rx_bundles == bundles + len(frames) - 3


def test_bundle_inner_messages_of_other_users_are_counted_and_dropped() -> None:
    bn = up_bench(23)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    data = data_msg(A_ADDR, B_ADDR, b"d" * 20)
    other = data_msg(A_ADDR, B_ADDR, b"o" * 20, importance=int(User.LINK_CONFIG))
    builder = BundleBuilder(data, own_addr=A_ADDR, dest_addr=B_ADDR, max_size=a.mss)
    assert builder.try_add(other) and builder.try_add(data)
    dropped = b.statistics().dropped
    a.send(builder.encode(), bn.now)  # an owner may hand a ready bundle to the link
    for f in a.frames_to_send(bn.now):
        b.receive(f, bn.now)
    got = [e for e in iter(b.next_event, None) if isinstance(e, Delivered)]
    assert [norm(e.frame) for e in got] == [norm(data), norm(data)]
    assert b.statistics().dropped == dropped + 1 and b.statistics().rx_bundled == 3


@pytest.mark.parametrize("user", [User.MSG_BUNDLER, User.BCAST_PROTOCOL, User.LINK_CONFIG])
def test_a_reassembled_message_that_is_not_data_is_dropped(user: User) -> None:
    """tipc_data_input drops what is not data; a reassembled bundle or bcast-init is
    not opened (it could be anything: it was never checked as one)."""
    bn = up_bench(24)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    hdr = Header(user=int(user), hsize=40, size=3040, prev_node=A_ADDR, orig_node=A_ADDR)
    big = encode_header(hdr) + struct.pack(">I", 0xFFFFFFFF) * 750
    a.send(big, bn.now)
    dropped = b.statistics().dropped
    for f in a.frames_to_send(bn.now):
        b.receive(f, bn.now)  # nothing but RemoteProtocolError may come out; none here
    evs = list(iter(b.next_event, None))
    assert not [e for e in evs if isinstance(e, (Delivered, LinkDown))]
    assert b.is_up and b.statistics().rx_fragmented == 1
    assert b.statistics().dropped == dropped + 1


def test_fragment_types_survive_the_deferred_queue() -> None:
    bn = up_bench(25)
    bn.run(bn.now + 1.0)
    a, b = bn.a, bn.b
    msg = data_msg(A_ADDR, B_ADDR, bytes(range(256)) * 20)
    a.send(msg, bn.now)
    frames = a.frames_to_send(bn.now)
    kinds = [fragment_fields(f)[0] for f in frames]
    assert kinds[0] == FragType.FIRST_FRAGMENT and kinds[-1] == FragType.LAST_FRAGMENT
    for f in reversed(frames):
        b.receive(f, bn.now)
    got = [e.frame for e in iter(b.next_event, None) if isinstance(e, Delivered)]
    assert [norm(g) for g in got] == [norm(msg)]
