"""LINK_PROTOCOL / BCAST_PROTOCOL / gap-ACK codecs (tipcshm.wire.link): round trips,
fuzz, and every user-5/7 frame of the kernel captures 02-04 byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import pcap_dir, read_udp

from tipcshm.wire import LinkMsgType, User, WireError
from tipcshm.wire.link import (
    BcastProtoMsg,
    GapAckBlocks,
    LinkProtoMsg,
    decode_link_or_bcast,
    peek,
    restamp_acks,
    stamp,
)

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)

link_msgs = st.builds(
    LinkProtoMsg,
    mtype=st.integers(0, 7),
    seq_gap=st.integers(0, 0x1FFF),
    bcast_ack=U16,
    ack=U16,
    seqno=U16,
    prev_node=U32,
    orig_node=U32,
    dest_node=U32,
    last_bcast=U16,
    next_sent=U16,
    session=U16,
    bc_ack_invalid=st.booleans(),
    peer_stopping=st.booleans(),
    redundant_link=st.booleans(),
    bearer_id=st.integers(0, 7),
    priority=st.integers(0, 31),
    net_plane=st.integers(0, 7),
    probe=st.booleans(),
    keepalive=st.booleans(),
    bc_gap=st.integers(0, 0x3FF),
    max_pkt=st.integers(0, 0xFFFF).map(lambda v: v * 4),
    tolerance=U16,
    body=st.binary(max_size=64),
    non_seq=st.booleans(),
    src_droppable=st.booleans(),
    syn=st.booleans(),
    w5_spare=st.booleans(),
    w8_spare=st.integers(0, 0x3FFFFF),
)

bcast_msgs = st.builds(
    BcastProtoMsg,
    mtype=st.integers(0, 7),
    bcast_ack=U16,
    ack=U16,
    seqno=U16,
    prev_node=U32,
    last_bcast=U16,
    bc_ack_invalid=st.booleans(),
    orig_node=U32,
    dest_node=U32,
    body=st.binary(max_size=32),
    non_seq=st.booleans(),
    dest_droppable=st.booleans(),
    src_droppable=st.booleans(),
    syn=st.booleans(),
    w1_spare=st.integers(0, 0x1FFF),
    w4_spare=U16,
    w5_spare=U32.map(lambda v: v & ~(1 << 14)),
    w8=U32,
    w9=U32,
)

blocks = st.lists(st.tuples(U16, U16), max_size=8).map(tuple)


@given(link_msgs)
def test_link_proto_round_trip(msg: LinkProtoMsg) -> None:
    raw = msg.encode()
    assert len(raw) == msg.size
    assert LinkProtoMsg.decode(raw) == msg
    assert decode_link_or_bcast(raw + b"trailing") == msg


@given(bcast_msgs)
def test_bcast_proto_round_trip(msg: BcastProtoMsg) -> None:
    raw = msg.encode()
    assert BcastProtoMsg.decode(raw) == msg
    assert peek(raw).user == User.BCAST_PROTOCOL


@given(blocks, blocks, st.binary(max_size=8))
def test_gap_ack_round_trip(b: tuple, u: tuple, tail: bytes) -> None:  # type: ignore[type-arg]
    rec = GapAckBlocks(bcast=b, unicast=u)
    assert GapAckBlocks.decode(rec.encode() + tail) == rec


def test_activate_dest_session_view() -> None:
    msg = LinkProtoMsg(mtype=LinkMsgType.ACTIVATE_MSG, **LinkProtoMsg.activate_fields(0x118C))
    got = LinkProtoMsg.decode(msg.encode())
    assert got.dest_session_valid and got.dest_session == 0x118C
    assert LinkProtoMsg(mtype=2, body=LinkProtoMsg.if_name_body("b1")).if_name == "b1"


@given(U16, U16, U16, link_msgs)
def test_stamp_and_restamp(seqno: int, ack: int, bc: int, msg: LinkProtoMsg) -> None:
    buf = bytearray(msg.encode())
    stamp(buf, seqno, ack, bc)
    info = peek(buf)
    assert (info.seqno, info.ack, info.bcast_ack) == (seqno, ack, bc)
    again = peek(restamp_acks(bytes(buf), bc, ack))
    assert (again.seqno, again.ack, again.bcast_ack) == (seqno, bc, ack)
    # nothing else moved
    assert bytes(buf)[:4] == msg.encode()[:4] and bytes(buf)[12:] == msg.encode()[12:]


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fuzz_decoders_raise_only_wire_error(raw: bytes) -> None:
    for decode in (LinkProtoMsg.decode, BcastProtoMsg.decode, GapAckBlocks.decode, peek):
        try:
            decode(raw)
        except WireError:
            pass


@settings(max_examples=300)
@given(link_msgs, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))
def test_fuzz_mutated_link_frames(msg: LinkProtoMsg, flips: list) -> None:  # type: ignore[type-arg]
    raw = bytearray(msg.encode())
    for pos, val in flips:
        if pos < len(raw):
            raw[pos] = val
    try:
        got = decode_link_or_bcast(bytes(raw))
    except WireError:
        return
    assert got.encode() == bytes(raw[: len(got.encode())])


CAPTURES = [
    "02-kernel-vs-host-discovery-probe.pcap",
    "03-two-kernels-link-setup-and-traffic.pcap",
    "04-two-kernels-unicast-replicast.pcap",
]


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_frames_byte_exact(name: str) -> None:
    path = pcap_dir() / name
    if not path.exists():
        pytest.skip(f"{path} missing")
    seen = {User.LINK_PROTOCOL: 0, User.BCAST_PROTOCOL: 0}
    for dgram in read_udp(path):
        raw = dgram.payload
        user = peek(raw).user
        if user not in seen:
            continue
        msg = decode_link_or_bcast(raw)
        assert msg.encode() == raw[: peek(raw).size], dgram.number
        seen[User(user)] += 1
        if isinstance(msg, LinkProtoMsg) and msg.mtype == LinkMsgType.STATE_MSG and msg.body:
            # kernel <-> kernel: both advertise TIPC_GAP_ACK_BLOCK, so STATEs carry one
            rec = GapAckBlocks.decode(msg.body)
            assert rec.encode() == msg.body[: rec.size]
        if isinstance(msg, LinkProtoMsg) and msg.mtype != LinkMsgType.STATE_MSG:
            assert msg.if_name == "b1" and msg.max_pkt == 14000
    assert seen[User.LINK_PROTOCOL] > 0
    if name.startswith("03"):
        assert seen[User.BCAST_PROTOCOL] >= 2
