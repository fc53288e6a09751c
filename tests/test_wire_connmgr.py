"""CONN_MANAGER codec (tipcshm.wire.connmgr): round trip, fuzz, the kernel's layout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipcshm import wire
from tipcshm.wire import connmgr
from tipcshm.wire.connmgr import ConnMgrMsg

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


@st.composite
def messages(draw: st.DrawFn) -> ConnMgrMsg:
    orig_node = draw(u32)
    prev = draw(st.one_of(st.none(), u32.filter(lambda v: v != orig_node)))
    base = wire.Header(
        user=wire.User.CONN_MANAGER,
        hsize=wire.INT_H_SIZE,
        size=wire.INT_H_SIZE,
        non_seq=draw(st.booleans()),
        link_ack=draw(u16),
        link_seqno=draw(u16),
        bcast_ack=draw(u16),
        name_type=draw(u32),
        name_upper=draw(st.just(0)),
    )
    return ConnMgrMsg(
        mtype=draw(st.integers(0, 7)),
        orig_node=orig_node,
        orig_port=draw(u32),
        dest_node=draw(u32),
        dest_port=draw(u32),
        acked=draw(u16),
        adv_window=draw(u16),
        nagle_ack=draw(st.booleans()),
        errcode=draw(st.integers(0, 15)),
        prev_node=prev,
        data=draw(st.binary(max_size=64)),
        base=base,
    )


@settings(max_examples=200)
@given(messages())
def test_round_trip(m: ConnMgrMsg) -> None:
    b = m.encode()
    assert ConnMgrMsg.decode(b) == m
    assert connmgr.decode(b).encode() == b


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_garbage_raises_wire_error_only(buf: bytes) -> None:
    try:
        m = ConnMgrMsg.decode(buf)
    except wire.WireError:
        return
    assert m.encode() == buf[: len(m.encode())]


@settings(max_examples=200)
@given(messages(), st.data())
def test_flipped_bytes_decode_or_wire_error(m: ConnMgrMsg, data: st.DataObject) -> None:
    b = bytearray(m.encode())
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] ^= data.draw(st.integers(1, 255))
    try:
        got = ConnMgrMsg.decode(bytes(b))
    except wire.WireError:
        return
    assert got.encode() == bytes(b)[: wire.w0_size(int.from_bytes(b[:4], "big"))]


def test_ack_layout_is_the_kernels() -> None:
    """tipc-wire §1.6: 40-byte header, user 8, CONN_ACK type 2, w9[31:16] acked units,
    w9[15:0] advertised window, w0[18] nagle ack; the addresses as any connection message."""
    m = ConnMgrMsg(
        mtype=wire.ConnMgrType.CONN_ACK,
        orig_node=0x1001,
        orig_port=7,
        dest_node=0x1002,
        dest_port=9,
        acked=128,
        adv_window=512,
        nagle_ack=True,
    )
    b = m.encode()
    h = wire.decode_header(b)
    assert (h.user, h.hsize, h.size, h.mtype) == (8, 40, 40, 2)
    assert h.src_droppable  # the nagle-ack bit is w0[18]
    assert h.name_instance == (128 << 16) | 512
    assert (h.prev_node, h.orig_node, h.orig_port, h.dest_node, h.dest_port) == (
        0x1001,
        0x1001,
        7,
        0x1002,
        9,
    )
    assert m.type is wire.ConnMgrType.CONN_ACK


@given(u32, u32, u32, u32, u16)
def test_build_ack_matches_the_codec(a: int, b: int, c: int, d: int, n: int) -> None:
    fast = connmgr.build_ack(a, b, c, d, n)
    slow = ConnMgrMsg(wire.ConnMgrType.CONN_ACK, a, b, c, d, acked=n).encode()
    assert fast == slow


def test_other_users_and_short_headers_are_refused() -> None:
    data = wire.encode_header(wire.Header(user=0, hsize=40, size=40))
    with pytest.raises(wire.WireError):
        ConnMgrMsg.decode(data)
    short = wire.encode_header(wire.Header(user=8, hsize=32, size=32))
    with pytest.raises(wire.WireError):
        ConnMgrMsg.decode(short)
    with pytest.raises(ValueError):
        ConnMgrMsg(0, 1, 2, 3, 4, acked=1 << 16).encode()


def test_kernel_captures_have_no_conn_manager_we_cannot_read() -> None:
    """Every CONN_MANAGER message in the reference captures re-encodes byte for byte
    (the captures carry none today: the property holds vacuously until they do)."""
    pcap = pytest.importorskip("pcap")
    d = pcap.pcap_dir()
    if not d.is_dir():
        pytest.skip("kernel captures not available")
    for path in sorted(d.glob("0[1-4]*.pcap")):
        for dg in pcap.read_udp(path):
            try:
                h = wire.decode_header(dg.payload)
            except wire.WireError:
                continue
            if h.user == wire.User.CONN_MANAGER:
                assert ConnMgrMsg.decode(dg.payload).encode() == dg.payload[: h.size]


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=60), st.integers(0, 39), st.integers(0, 255))
def test_ack_fields_agree_with_the_full_decode(tail: bytes, pos: int, byte: int) -> None:
    """The connection's fast ack reader answers only for what the full decoder reads as
    a CONN_ACK, and then with the same node, port and units (on our own acks and on
    copies with one byte changed)."""
    good = connmgr.build_ack(0x01001001, 7, 0x01001002, 9, 300) + tail
    bad = bytearray(good)
    bad[pos] = byte
    for frame in (good, bytes(bad)):
        fast = connmgr.ack_fields(frame)
        if fast is None:
            continue
        m = ConnMgrMsg.decode(frame)
        assert m.mtype == wire.ConnMgrType.CONN_ACK
        assert (m.orig_node, m.orig_port, m.acked) == fast
    assert connmgr.ack_fields(good) == (0x01001001, 7, 300)
