"""Tests for tipcshm.wire.names: the NAME_DISTRIBUTOR codec.

Kernel frames come from the reference captures (tests/pcap.py): 03 and 04 hold the bulk
publications of two Linux 6.1 nodes (VM1 = c000020b, VM2 = c000020c) on their unicast
link, and capture 03 also an incremental PUBLICATION and a WITHDRAWAL that went over the
broadcast link (non-sequenced, cluster id in w5).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm import wire
from tipcshm.wire import User, WireError, decode_header
from tipcshm.wire.names import (
    DISTR_ITEM_SIZE,
    MAX_ITEMS,
    DistrItem,
    NameDistrMsg,
    items_per_message,
)

VM1 = 0xC000020B
VM2 = 0xC000020C


def _bits(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << n) - 1)


_items = st.builds(DistrItem, *[_bits(32)] * 5)

_msgs = st.builds(
    NameDistrMsg,
    mtype=_bits(3),
    prev_node=_bits(32),
    orig_node=_bits(32),
    dest_node=_bits(32),
    items=st.lists(_items, max_size=8).map(tuple),
    bulk=st.booleans(),
    last_bulk=st.booleans(),
    non_legacy=st.booleans(),
    seqno=_bits(16),
    bc_ack_invalid=st.booleans(),
    non_seq=st.booleans(),
    link_ack=_bits(16),
    link_seqno=_bits(16),
    bcast_ack=_bits(16),
    w0_flags=_bits(3),
    w1_unused=_bits(10),
    w4_unused=_bits(16),
    w5_other=_bits(32).map(lambda v: v & ~(1 << 14)),
    w8=_bits(32),
    w9=_bits(32),
)


def _kernel_frames(name: str) -> list[bytes]:
    path = pcap_dir() / name
    if not path.exists():
        pytest.skip(f"reference capture {name} is not available")
    out = []
    for dgram in read_udp(path):
        try:
            hdr = decode_header(dgram.payload)
        except WireError:
            continue
        if hdr.user == User.NAME_DISTRIBUTOR:
            out.append(dgram.payload[: hdr.size])
    return out


# ---------------------------------------------------------------------------------------
# Kernel captures
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capture",
    ["03-two-kernels-link-setup-and-traffic.pcap", "04-two-kernels-unicast-replicast.pcap"],
)
def test_every_kernel_frame_round_trips(capture: str) -> None:
    frames = _kernel_frames(capture)
    assert frames, "the capture holds name distribution traffic"
    for frame in frames:
        assert NameDistrMsg.decode(frame).encode() == frame


def test_kernel_bulk_fields() -> None:
    frames = _kernel_frames("03-two-kernels-link-setup-and-traffic.pcap")
    bulks = [NameDistrMsg.decode(f) for f in frames]
    bulks = [m for m in bulks if m.bulk]
    by_origin = {m.orig_node: m for m in bulks}
    assert set(by_origin) == {VM1, VM2}
    vm2 = by_origin[VM2]
    # One bulk message each: bulk + last-bulk + non-legacy, bc_ack_invalid, unicast.
    assert vm2.mtype == wire.NameDistrType.PUBLICATION
    assert vm2.bulk and vm2.last_bulk and vm2.non_legacy and not vm2.is_legacy
    assert vm2.bc_ack_invalid and not vm2.non_seq
    assert (vm2.prev_node, vm2.orig_node, vm2.dest_node) == (VM2, VM2, VM1)
    assert vm2.seqno == 2 and vm2.w5_other == 0
    # Its own node-state binding {0, addr, addr}, port 0, key addr, is always there.
    assert DistrItem(0, VM2, VM2, 0, VM2) in vm2.items
    assert vm2.size == 40 + DISTR_ITEM_SIZE * len(vm2.items)


def test_kernel_incremental_over_broadcast_link() -> None:
    frames = _kernel_frames("03-two-kernels-link-setup-and-traffic.pcap")
    incr = [m for m in map(NameDistrMsg.decode, frames) if not m.bulk]
    kinds = {(m.mtype, m.seqno) for m in incr}
    assert kinds == {(wire.NameDistrType.PUBLICATION, 5), (wire.NameDistrType.WITHDRAWAL, 6)}
    for m in incr:
        assert m.non_legacy and not m.last_bulk and m.non_seq
        assert len(m.items) == 1
        assert m.w5_other == 4711  # the broadcast link's cluster id, kept raw
        assert m.dest_node == 0 and m.orig_node == VM1


# ---------------------------------------------------------------------------------------
# Building and validation
# ---------------------------------------------------------------------------------------


def test_build_incremental_bytes() -> None:
    msg = NameDistrMsg(
        mtype=wire.NameDistrType.WITHDRAWAL,
        prev_node=VM1,
        orig_node=VM1,
        dest_node=VM2,
        items=(DistrItem(18888, 1, 2, 3, 4),),
        non_legacy=True,
        seqno=0x1234,
    )
    raw = msg.encode()
    assert len(raw) == 60
    words = wire.HDR40.unpack_from(raw)
    assert words[0] == wire.make_w0(User.NAME_DISTRIBUTOR, 40, 60)
    assert words[1] == (1 << 29) | (1 << 26)
    assert words[3:8] == (VM1, 0x1234, 0, VM1, VM2)
    assert raw[40:] == wire.encode_items(msg.items)
    assert NameDistrMsg.decode(raw) == msg


def test_legacy_flags() -> None:
    # Only the non-legacy bit decides (msg_is_legacy); bulk bits do not.
    for flag in ("bulk", "last_bulk", "non_legacy"):
        other = NameDistrMsg(mtype=0, prev_node=1, orig_node=1, dest_node=2, **{flag: True})
        assert other.is_legacy == (flag != "non_legacy")


def test_items_per_message() -> None:
    assert items_per_message(1472) == (1472 - 40) // 20 == 71
    assert items_per_message(60) == 1
    assert items_per_message(10) == 1  # never zero: a bulk always fits the node-state item
    assert items_per_message(10**6) == MAX_ITEMS


def _frame(**kw: object) -> bytes:
    fields: dict[str, object] = dict(mtype=0, prev_node=1, orig_node=1, dest_node=2)
    fields.update(kw)
    return NameDistrMsg(**fields).encode()  # type: ignore[arg-type]


def test_decode_rejects() -> None:
    good = _frame(items=(DistrItem(1, 2, 3, 4, 5),))
    with pytest.raises(WireError):
        NameDistrMsg.decode(good[:-1])  # shorter than its size
    with pytest.raises(WireError):
        NameDistrMsg.decode(good[:30])
    # Data that is not a whole number of items.
    bad = bytearray(good + b"\0")
    bad[2:4] = (len(bad)).to_bytes(2, "big")
    with pytest.raises(WireError):
        NameDistrMsg.decode(bytes(bad))
    # Another user.
    other = bytearray(good)
    w0 = int.from_bytes(other[:4], "big")
    w0 = (w0 & ~(0xF << 25)) | (User.CONN_MANAGER << 25)
    other[:4] = w0.to_bytes(4, "big")
    with pytest.raises(WireError):
        NameDistrMsg.decode(bytes(other))
    # A 44-byte header.
    longer = bytearray(good[:40] + b"\0\0\0\0" + good[40:])
    w0 = int.from_bytes(longer[:4], "big")
    w0 = (w0 & ~((0xF << 21) | 0x1FFFF)) | (11 << 21) | len(longer)
    longer[:4] = w0.to_bytes(4, "big")
    with pytest.raises(WireError):
        NameDistrMsg.decode(bytes(longer))


def test_trailing_bytes_ignored() -> None:
    good = _frame(items=(DistrItem(1, 2, 3, 4, 5),))
    assert NameDistrMsg.decode(good + b"junk").encode() == good


def test_encode_rejects_bad_fields() -> None:
    for kw in (
        {"seqno": 1 << 16},
        {"mtype": 8},
        {"orig_node": -1},
        {"w5_other": 1 << 14},
        {"w1_unused": 1 << 10},
        {"items": (DistrItem(1 << 32, 0, 0, 0, 0),)},
    ):
        with pytest.raises(ValueError):
            _frame(**kw)


def test_items_reexported_from_wire() -> None:
    assert wire.DistrItem is DistrItem
    assert {"DistrItem", "encode_items", "decode_items", "DISTR_ITEM"} <= set(wire.__all__)


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(_msgs)
def test_property_round_trip(msg: NameDistrMsg) -> None:
    raw = msg.encode()
    assert len(raw) == msg.size
    assert NameDistrMsg.decode(raw) == msg
    assert NameDistrMsg.decode(memoryview(raw)) == msg
    assert NameDistrMsg.decode(bytearray(raw)).encode() == raw


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_property_fuzz_only_wire_error(data: bytes) -> None:
    try:
        msg = NameDistrMsg.decode(data)
    except WireError:
        return
    assert msg.encode() == data[: msg.size]


@settings(max_examples=200)
@given(_msgs, st.integers(0, 59), st.integers(0, 255))
def test_property_mutated_frames(msg: NameDistrMsg, pos: int, value: int) -> None:
    raw = bytearray(msg.encode())
    raw[pos % len(raw)] = value
    try:
        again = NameDistrMsg.decode(bytes(raw))
    except WireError:
        return
    assert again.encode() == bytes(raw[: again.size])
