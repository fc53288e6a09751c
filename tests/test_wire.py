"""Tests for tipcshm.wire: header codec, rejection, name items, identities, sequence math.

Byte vectors come from three sources: hand-assembled words (from the bit table in
tipc-wire.md §1.1), and frames captured from two Linux 6.1 kernels
(/work/shared/tools/kernel-tipc/pcaps/03-two-kernels-link-setup-and-traffic.pcap, UDP
payloads; VM1 = node c000020b, VM2 = node c000020c), quoted by frame number.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipcshm import wire
from tipcshm.wire import (
    BASIC_H_SIZE,
    DISTR_ITEM,
    HDR24,
    HDR32,
    HDR40,
    HDR44,
    HDR60,
    MAX_FORWARD_SIZE,
    MAX_USER_MSG_SIZE,
    MIN_H_SIZE,
    SHORT_H_SIZE,
    ConnMgrType,
    DataType,
    DistrItem,
    ErrorCode,
    Header,
    LinkMsgType,
    User,
    WireError,
    decode_header,
    decode_items,
    encode_header,
    encode_items,
    hash128to32,
    identity_from_str,
    identity_to_str,
    make_w0,
    make_w1,
    make_w2,
    pack_header_into,
    reverse_for_reject,
    seq_add,
    seq_less,
    seq_less_eq,
    seq_more,
    validate_msg,
)

VM1 = 0xC000020B
VM2 = 0xC000020C

# Frame 64: VM2 -> VM1, RDM NamedMsg {18888, 17}, 40-byte header, "hello-from-vm2".
CAP_NAMED = bytes.fromhex(
    "414800364010000000020003c000020cc2a3f809029bfaefc000020cc000020b"
    "000049c80000001168656c6c6f2d66726f6d2d766d32"
)
# Frame 65: VM1 -> VM2, the DirectMsg echo (32-byte header).
CAP_DIRECT = bytes.fromhex(
    "4108002e6000000000030003c000020b029bfaefc2a3f809c000020bc000020c68656c6c6f2d66726f6d2d766d32"
)
# Frame 75: VM2 -> VM1, connect(): SYN NamedMsg {18888, 18}, no data, not droppable.
CAP_SYN = bytes.fromhex(
    "414200284010000000060007c000020c813a5b6205ca245ec000020cc000020b000049c800000012"
)
# Frame 77: VM2 -> VM1, 24-byte ConnMsg carrying "stream-hello".
CAP_CONN = bytes.fromhex("40c000240000000000070008c000020c813a5b6255261af073747265616d2d68656c6c6f")
# Frame 79: VM2 -> VM1, close(): critical-importance ConnMsg with TIPC_ERR_NO_PORT.
CAP_CLOSE = bytes.fromhex("46c000180400000000080009c000020c813a5b6255261af0")
# Frame 120: VM2 bcast link, header-only McastMsg {18888, 0..200}; w5 = cluster id 4711.
CAP_MCAST_SYNC = bytes.fromhex(
    "417a002c2410000000000001c000020c5f68b3fc00001267c000020c00000000000049c800000000000000c8"
)
# Frame 1: VM2 DSC_TRIAL (discovery, 60-byte header + 16-byte identity c000020c).
CAP_DISC = bytes.fromhex(
    "5bf0004c47ff928a00000000c000020c0000126700000003080017e6c000020c"
    "0000000000000000000000000000000000000000a416128a00000000"
    "c000020c000000000000000000000000"
)
# Frame 34: VM2 -> VM1 NAME_DISTRIBUTOR bulk publication, two items.
CAP_NAMED_DISTR = bytes.fromhex(
    "574000501c00000000000002c000020c0000000200004000c000020cc000020b"
    "0000000000000000000049c800000066000000668525da288525da29"
    "00000000c000020cc000020c00000000c000020c"
)

U32_MAX = 2**32 - 1


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------


def _bits(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << n) - 1)


@st.composite
def valid_headers(draw: st.DrawFn) -> Header:
    hsize = draw(st.sampled_from(range(MIN_H_SIZE, 61, 4)))
    nwords = hsize // 4
    addr = [draw(_bits(32)) if word < nwords else 0 for word in range(3, 11)]
    if nwords == 6:
        addr[3] = addr[0]  # a 24-byte header's orig_node is its prev_node
    n_extra = max(0, hsize - 44)
    return Header(
        version=2,
        user=draw(_bits(4)),
        hsize=hsize,
        non_seq=draw(st.booleans()),
        dest_droppable=draw(st.booleans()),
        src_droppable=draw(st.booleans()),
        syn=draw(st.booleans()),
        size=draw(st.integers(hsize, hsize + MAX_USER_MSG_SIZE)),
        mtype=draw(_bits(3)),
        errcode=draw(_bits(4)),
        reroute_cnt=draw(_bits(4)),
        lookup_scope=draw(_bits(2)),
        w1_bits_18_16=draw(_bits(3)),
        bcast_ack=draw(_bits(16)),
        link_ack=draw(_bits(16)),
        link_seqno=draw(_bits(16)),
        prev_node=addr[0],
        orig_port=addr[1],
        dest_port=addr[2],
        orig_node=addr[3],
        dest_node=addr[4],
        name_type=addr[5],
        name_instance=addr[6],
        name_upper=addr[7],
        extra=draw(st.binary(min_size=n_extra, max_size=n_extra)),
    )


def _full_header(user: int, hsize: int) -> Header:
    """A header with a distinct non-zero value in every field the size can carry."""
    nwords = hsize // 4
    addr = [0x01000000 * word + 0x00ABCD00 + word if word < nwords else 0 for word in range(3, 11)]
    if nwords == 6:
        addr[3] = addr[0]
    return Header(
        user=user,
        hsize=hsize,
        non_seq=True,
        dest_droppable=False,
        src_droppable=True,
        syn=True,
        size=hsize + 123,
        mtype=5,
        errcode=3,
        reroute_cnt=9,
        lookup_scope=2,
        w1_bits_18_16=5,
        bcast_ack=0xBEEF,
        link_ack=0x1234,
        link_seqno=0xFEDC,
        prev_node=addr[0],
        orig_port=addr[1],
        dest_port=addr[2],
        orig_node=addr[3],
        dest_node=addr[4],
        name_type=addr[5],
        name_instance=addr[6],
        name_upper=addr[7],
        extra=bytes(range(0xA0, 0xA0 + max(0, hsize - 44))),
    )


# ---------------------------------------------------------------------------------------
# Constants and enums
# ---------------------------------------------------------------------------------------


def test_sizes_and_limits() -> None:
    assert wire.TIPC_VERSION == 2
    assert (wire.SHORT_H_SIZE, wire.BASIC_H_SIZE, wire.NAMED_H_SIZE) == (24, 32, 40)
    assert (wire.MCAST_H_SIZE, wire.GROUP_H_SIZE, wire.INT_H_SIZE) == (44, 44, 40)
    assert (wire.MAX_H_SIZE, wire.MIN_H_SIZE) == (60, 24)
    assert wire.MAX_USER_MSG_SIZE == 66000
    assert wire.MAX_MSG_SIZE == 66060
    assert (wire.LOOKUP_SCOPE_CLUSTER, wire.LOOKUP_SCOPE_NODE) == (2, 3)
    assert (HDR24.size, HDR32.size, HDR40.size, HDR44.size, HDR60.size) == (24, 32, 40, 44, 60)
    assert DISTR_ITEM.size == 20


def test_enum_values() -> None:
    assert [int(u) for u in User] == list(range(16))
    assert User.LINK_PROTOCOL == 7 and User.NAME_DISTRIBUTOR == 11 and User.TOP_SRV == 15
    assert User.SYSTEM_IMPORTANCE == 4 and User.MSG_CRYPTO == 14 and User.LINK_CONFIG == 13
    assert [int(t) for t in DataType] == list(range(8))
    assert DataType.NAMED_MSG == 2 and DataType.GRP_UCAST_MSG == 7
    assert (LinkMsgType.STATE_MSG, LinkMsgType.RESET_MSG, LinkMsgType.ACTIVATE_MSG) == (0, 1, 2)
    assert wire.DiscMsgType.DSC_TRIAL_FAIL_MSG == 3
    assert (wire.NameDistrType.PUBLICATION, wire.NameDistrType.WITHDRAWAL) == (0, 1)
    assert wire.FragType.LAST_FRAGMENT == 2 and wire.TunnelType.FAILOVER_MSG == 1
    assert (ConnMgrType.CONN_PROBE, ConnMgrType.CONN_PROBE_REPLY, ConnMgrType.CONN_ACK) == (0, 1, 2)
    assert wire.GroupMsgType.GRP_REMIT_MSG == 5
    assert [int(e) for e in ErrorCode] == [0, 1, 2, 3, 4, 5]
    assert ErrorCode.CONN_SHUTDOWN == 5 and ErrorCode.OVERLOAD == 4


def test_bit_constants() -> None:
    assert wire.SIZE_MASK == 0x1FFFF
    assert wire.NON_SEQ_BIT == 0x00100000
    assert wire.DEST_DROPPABLE_BIT == 0x00080000
    assert wire.SRC_DROPPABLE_BIT == 0x00040000
    assert wire.SYN_BIT == 0x00020000
    assert wire.W0_VERSION_FIELD == 0x40000000
    assert wire.W1_ERRCODE_MASK == 0x1E000000
    assert wire.W1_BCAST_ACK_MASK == 0xFFFF and wire.W2_SEQNO_MASK == 0xFFFF


def test_public_names_exist() -> None:
    contract = {
        "TIPC_VERSION", "SHORT_H_SIZE", "BASIC_H_SIZE", "NAMED_H_SIZE", "MCAST_H_SIZE",
        "GROUP_H_SIZE", "INT_H_SIZE", "MAX_H_SIZE", "MIN_H_SIZE", "MAX_USER_MSG_SIZE",
        "MAX_MSG_SIZE", "User", "DataType", "LinkMsgType", "DiscMsgType", "NameDistrType",
        "FragType", "TunnelType", "ConnMgrType", "GroupMsgType", "ErrorCode",
        "LOOKUP_SCOPE_CLUSTER", "LOOKUP_SCOPE_NODE", "WireError", "Header", "decode_header",
        "encode_header", "pack_header_into", "HDR24", "HDR32", "HDR40", "HDR44", "make_w0",
        "make_w1", "SIZE_MASK", "w0_size", "w0_hsize", "w0_user", "w1_mtype", "w1_errcode",
        "reverse_for_reject", "DISTR_ITEM", "DistrItem", "encode_items", "decode_items",
        "hash128to32", "identity_to_str", "identity_from_str", "seq_less_eq", "seq_less",
        "seq_more", "seq_add",
    }  # fmt: skip
    assert contract <= set(wire.__all__)
    for name in wire.__all__:
        assert hasattr(wire, name), name


# ---------------------------------------------------------------------------------------
# Header codec
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("user", range(16))
@pytest.mark.parametrize("hsize", range(24, 61, 4))
def test_round_trip_every_size_and_user(user: int, hsize: int) -> None:
    h = _full_header(user, hsize)
    raw = encode_header(h)
    assert len(raw) == hsize
    w0, w1, w2 = struct.unpack_from(">3I", raw)
    assert w0 >> 29 == 2 and (w0 >> 25) & 0xF == user and ((w0 >> 21) & 0xF) * 4 == hsize
    assert w0 & 0x1FFFF == hsize + 123
    assert w1 == (5 << 29) | (3 << 25) | (9 << 21) | (2 << 19) | (5 << 16) | 0xBEEF
    assert w2 == 0x1234FEDC
    assert decode_header(raw + bytes(123)) == h
    assert h.words == struct.unpack(f">{hsize // 4}I", raw)


def test_pack_header_into_offset() -> None:
    h = _full_header(User.MSG_FRAGMENTER, 40)
    buf = bytearray(b"\xff" * 50)
    pack_header_into(buf, 5, h)
    assert buf[:5] == b"\xff" * 5 and buf[45:] == b"\xff" * 5
    assert bytes(buf[5:45]) == encode_header(h)
    assert decode_header(memoryview(buf), 5) == h


@given(valid_headers())
def test_property_valid_header_round_trips(h: Header) -> None:
    raw = encode_header(h)
    assert len(raw) == h.hsize
    back = decode_header(raw)
    assert back == h
    assert encode_header(back) == raw


@given(st.binary(min_size=60, max_size=60))
def test_property_decoded_bytes_reencode_exactly(data: bytes) -> None:
    # Force a valid w0 so most draws decode; every decoded header re-encodes byte-exactly.
    words = list(struct.unpack(">15I", data))
    hwords = 6 + words[0] % 10
    size = hwords * 4 + (words[0] >> 8) % 1000
    words[0] = make_w0(words[0] >> 28, hwords * 4, size) | (words[0] & 0x001E0000)
    raw = struct.pack(">15I", *words)[: hwords * 4]
    h = decode_header(raw)
    assert encode_header(h) == raw


@given(st.binary(max_size=96), st.integers(0, 8))
def test_fuzz_decode_returns_header_or_wire_error(data: bytes, offset: int) -> None:
    for buf in (data, bytearray(data), memoryview(data)):
        try:
            h = decode_header(buf, offset)
        except WireError:
            continue
        h.check()  # whatever decodes is a valid Header
        assert encode_header(h) == bytes(data[offset : offset + h.hsize])


@given(valid_headers(), st.lists(st.tuples(st.integers(0, 59), _bits(8)), max_size=4))
def test_fuzz_mutated_frames(h: Header, flips: list[tuple[int, int]]) -> None:
    frame = bytearray(encode_header(h))
    for pos, value in flips:
        if pos < len(frame):
            frame[pos] = value
    try:
        got = validate_msg(frame)
    except WireError:
        return
    assert got.size <= len(frame)


@given(st.binary(max_size=200), st.sampled_from(list(ErrorCode)))
def test_fuzz_reverse_for_reject(data: bytes, err: ErrorCode) -> None:
    try:
        out = reverse_for_reject(data, err, own_node=1)
    except WireError:
        return
    if out is not None:
        h = validate_msg(out)
        assert h.errcode == err and h.hsize >= BASIC_H_SIZE and h.size == len(out)


def test_hand_built_named_msg() -> None:
    # §1.1 by hand. w0: ver 010, user 0001, hsize 1010 (10 words), flags 0000, size 0x2d.
    # w1: mtype 010, err 0000, reroute 0001, scope 11, w1[18:16] 000, bcast ack 0x1234.
    frame = bytes.fromhex(
        "4340002d"  # w0
        "40381234"  # w1
        "00050006"  # w2 ack 5, seqno 6
        "01001001"  # w3 prev node
        "80000001"  # w4 orig port
        "00000000"  # w5 dest port (0: look up on arrival)
        "01001001"  # w6 orig node
        "01001002"  # w7 dest node
        "000049c8"  # w8 type 18888
        "00000011"  # w9 instance 17
        "68656c6c6f"  # "hello"
    )
    h = validate_msg(frame)
    assert (h.version, h.user, h.hsize, h.size, h.data_size) == (2, 1, 40, 45, 5)
    assert not (h.non_seq or h.dest_droppable or h.src_droppable or h.syn)
    assert (h.mtype, h.errcode, h.reroute_cnt, h.lookup_scope, h.bcast_ack) == (2, 0, 1, 3, 0x1234)
    assert (h.link_ack, h.link_seqno) == (5, 6)
    assert (h.prev_node, h.orig_port, h.dest_port) == (0x01001001, 0x80000001, 0)
    assert (h.orig_node, h.dest_node) == (0x01001001, 0x01001002)
    assert (h.name_type, h.name_instance, h.name_lower, h.name_upper) == (18888, 17, 17, 0)
    assert h.msg_type is DataType.NAMED_MSG and h.user_enum is User.MEDIUM_IMPORTANCE
    assert h.error is ErrorCode.OK and h.is_data and not h.is_short
    assert encode_header(h) == frame[:40]


def test_captured_named_and_direct() -> None:
    h = validate_msg(CAP_NAMED)
    assert (h.user, h.hsize, h.size, h.msg_type) == (0, 40, 54, DataType.NAMED_MSG)
    assert h.dest_droppable and not h.syn and h.lookup_scope == wire.LOOKUP_SCOPE_CLUSTER
    assert (h.link_ack, h.link_seqno) == (2, 3)
    assert (h.prev_node, h.orig_node, h.dest_node) == (VM2, VM2, VM1)
    assert (h.orig_port, h.dest_port) == (0xC2A3F809, 0x029BFAEF)
    assert (h.name_type, h.name_instance) == (18888, 17)
    assert CAP_NAMED[h.hsize : h.size] == b"hello-from-vm2"

    d = validate_msg(CAP_DIRECT)
    assert (d.hsize, d.size, d.msg_type) == (32, 46, DataType.DIRECT_MSG)
    assert (d.orig_port, d.dest_port) == (h.dest_port, h.orig_port)
    assert (d.orig_node, d.dest_node, d.name_type) == (VM1, VM2, 0)
    assert encode_header(d) == CAP_DIRECT[:32]


def test_captured_short_conn_msgs() -> None:
    c = validate_msg(CAP_CONN)
    assert (c.hsize, c.size, c.msg_type, c.is_short) == (24, 36, DataType.CONN_MSG, True)
    assert c.orig_node == c.prev_node == VM2  # not carried: taken from w3
    assert (c.dest_node, c.name_type, c.name_upper) == (0, 0, 0)
    assert (c.link_ack, c.link_seqno) == (7, 8)
    assert encode_header(c) == CAP_CONN[:24]

    close = validate_msg(CAP_CLOSE)
    assert close.user_enum is User.CRITICAL_IMPORTANCE
    assert close.error is ErrorCode.NO_PORT and close.size == 24


def test_captured_mcast_and_discovery() -> None:
    m = validate_msg(CAP_MCAST_SYNC)
    assert (m.hsize, m.size, m.msg_type) == (44, 44, DataType.MCAST_MSG)
    assert m.non_seq and m.syn and m.dest_droppable
    assert (m.dest_port, m.name_type, m.name_lower, m.name_upper) == (4711, 18888, 0, 200)
    assert encode_header(m) == CAP_MCAST_SYNC

    disc = validate_msg(CAP_DISC)
    assert (disc.user_enum, disc.hsize, disc.size) == (User.LINK_CONFIG, 60, 76)
    assert disc.msg_type is wire.DiscMsgType.DSC_TRIAL_MSG and disc.non_seq
    assert disc.words[1] & 0xFFFF == 0x928A  # node signature
    assert (disc.prev_node, disc.orig_port) == (VM2, 4711)  # w4 = cluster id
    assert len(disc.extra) == 16 and disc.extra[-4:] == bytes(4)
    assert disc.words[13] == 0xA416128A
    assert encode_header(disc) == CAP_DISC[:60]
    assert identity_to_str(CAP_DISC[60:76]) == "c000020c"
    assert hash128to32(CAP_DISC[60:76]) == VM2


def test_unknown_enum_values_do_not_crash() -> None:
    h = Header(user=User.LINK_PROTOCOL, hsize=40, size=40, mtype=7, errcode=15)
    back = decode_header(encode_header(h))
    assert back.mtype == 7 and back.msg_type is None
    assert back.errcode == 15 and back.error is None
    assert Header(user=User.MSG_BUNDLER, hsize=40, size=40).msg_type is None


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (b"", "shorter than a minimal header"),
        (CAP_NAMED[:23], "shorter than a minimal header"),
        (CAP_NAMED[:39], "40-byte header"),
        (bytes.fromhex("2148003640100000") + CAP_NAMED[8:], "version 1"),
        (struct.pack(">I", make_w0(0, 20, 54)) + CAP_NAMED[4:], "header size 20"),
        (bytes.fromhex("41480027") + CAP_NAMED[4:], "size 39 at offset 0 is below"),
        (struct.pack(">I", make_w0(0, 40, 40 + 66001)) + CAP_NAMED[4:], "66001 data bytes"),
    ],
)
def test_decode_rejects(frame: bytes, fragment: str) -> None:
    with pytest.raises(WireError, match=fragment):
        decode_header(frame)


def test_payload_limit_and_trailing_bytes() -> None:
    ok = struct.pack(">I", make_w0(User.MSG_BUNDLER, 40, 40 + MAX_USER_MSG_SIZE)) + CAP_NAMED[4:40]
    assert decode_header(ok).data_size == MAX_USER_MSG_SIZE  # header-only decode is fine
    with pytest.raises(WireError, match="announces 66040 bytes, has 40"):
        validate_msg(ok)
    h = validate_msg(CAP_NAMED + b"trailing junk")  # bytes beyond size are ignored
    assert h.size == 54
    with pytest.raises(WireError):
        validate_msg(CAP_NAMED[:-1])
    with pytest.raises(ValueError, match="negative offset"):
        decode_header(CAP_NAMED, -1)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"user": 16}, "user=16"),
        ({"size": 1 << 17}, "size="),
        ({"bcast_ack": -1}, "bcast_ack=-1"),
        ({"orig_port": 1 << 32}, "orig_port="),
        ({"non_seq": 2}, "non_seq=2"),
        ({"hsize": 26}, "hsize=26"),
        ({"hsize": 64}, "hsize=64"),
        ({"hsize": 20}, "hsize=20"),
        ({"name_type": 5}, "name_type=0x5 needs word 8"),
        ({"dest_node": 1, "hsize": 24}, "dest_node=0x1 needs word 7"),
        ({"extra": b"x"}, "extra has 1 bytes; a 32-byte header needs 0"),
    ],
)
def test_encode_rejects_invalid(changes: dict[str, Any], fragment: str) -> None:
    h = dataclasses.replace(Header(hsize=32, size=32), **changes)
    with pytest.raises(ValueError, match=fragment):
        encode_header(h)
    with pytest.raises(ValueError):
        pack_header_into(bytearray(64), 0, h)


def test_short_header_orig_node() -> None:
    h = Header(hsize=24, size=24, prev_node=7, orig_node=7)
    assert decode_header(encode_header(h)) == h
    # 0 means "not given" and is accepted; decoding reports prev_node.
    assert decode_header(encode_header(dataclasses.replace(h, orig_node=0))).orig_node == 7
    with pytest.raises(ValueError, match="orig_node=0x8 needs word 6"):
        encode_header(dataclasses.replace(h, orig_node=8))


def test_header_is_frozen() -> None:
    h = Header()
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.user = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Hot-path helpers
# ---------------------------------------------------------------------------------------


def test_make_words_match_header() -> None:
    w0 = make_w0(User.HIGH_IMPORTANCE, 44, 1000, non_seq=True, dest_droppable=True, syn=True)
    assert w0 == 0x457A03E8
    assert make_w0(0, 40, 54, dest_droppable=True) == 0x41480036  # CAP_NAMED w0
    assert make_w0(0, 24, 0) | 36 == 0x40C00024  # cached base | size, CAP_CONN w0
    w1 = make_w1(DataType.MCAST_MSG, errcode=2, lookup_scope=2)
    assert w1 == 0x24100000  # CAP_MCAST_SYNC w1
    w1 = make_w1(DataType.NAMED_MSG, errcode=1, reroute=3, lookup_scope=3, bcast_ack=0xABCD)
    h = Header(
        user=2, hsize=40, size=40, mtype=2, errcode=1, reroute_cnt=3, lookup_scope=3,
        bcast_ack=0xABCD, link_ack=0x1111, link_seqno=0x2222,
    )  # fmt: skip
    assert h.words[1] == w1
    assert h.words[2] == make_w2(0x1111, 0x2222) == 0x11112222


def test_word_decoders() -> None:
    w0, w1, w2 = struct.unpack_from(">3I", CAP_MCAST_SYNC)
    assert wire.w0_version(w0) == 2 and wire.w0_user(w0) == 0
    assert wire.w0_hsize(w0) == 44 and wire.w0_size(w0) == 44
    assert wire.w0_non_seq(w0) and wire.w0_dest_droppable(w0) and wire.w0_syn(w0)
    assert not wire.w0_src_droppable(w0)
    assert wire.w1_mtype(w1) == 1 and wire.w1_errcode(w1) == 2
    assert wire.w1_reroute(w1) == 0 and wire.w1_lookup_scope(w1) == 2
    assert wire.w1_bcast_ack(w1) == 0
    assert wire.w2_ack(w2) == 0 and wire.w2_seqno(w2) == 1
    _, _, w2 = struct.unpack_from(">3I", CAP_NAMED)
    assert (wire.w2_ack(w2), wire.w2_seqno(w2)) == (2, 3)
    assert wire.w1_bcast_ack(0xFFFF_1234) == 0x1234


def test_hot_path_packing_equals_codec() -> None:
    buf = bytearray(40)
    HDR40.pack_into(
        buf, 0,
        make_w0(0, 40, 54, dest_droppable=True), make_w1(2, lookup_scope=2), make_w2(2, 3),
        VM2, 0xC2A3F809, 0x029BFAEF, VM2, VM1, 18888, 17,
    )  # fmt: skip
    assert bytes(buf) == CAP_NAMED[:40]


# ---------------------------------------------------------------------------------------
# Rejection (tipc_msg_reverse)
# ---------------------------------------------------------------------------------------


def _clear_droppable(frame: bytes) -> bytes:
    (w0,) = struct.unpack_from(">I", frame)
    return struct.pack(">I", w0 & ~wire.DEST_DROPPABLE_BIT) + frame[4:]


def test_reject_named_msg() -> None:
    frame = _clear_droppable(CAP_NAMED)
    out = reverse_for_reject(frame, ErrorCode.NO_PORT)
    assert out is not None
    h = validate_msg(out)
    orig = decode_header(frame)
    assert (h.hsize, h.size, h.errcode) == (40, 54, ErrorCode.NO_PORT)
    assert (h.orig_port, h.dest_port) == (orig.dest_port, orig.orig_port)
    assert h.dest_node == orig.prev_node == VM2
    assert h.prev_node == h.orig_node == VM1  # own_node defaults to the original dest node
    assert (h.user, h.mtype, h.name_type, h.name_instance) == (0, 2, 18888, 17)
    assert (h.lookup_scope, h.link_ack, h.link_seqno) == (2, 2, 3)
    assert out[40:] == b"hello-from-vm2"
    # Hand-checked bytes: only w0 (unchanged here), w1 err, w3..w7 differ.
    assert out[:12] == bytes.fromhex("414000364410000000020003")
    assert out[12:32] == bytes.fromhex("c000020b029bfaefc2a3f809c000020bc000020c")


def test_reject_explicit_own_node_and_non_seq_cleared() -> None:
    h = Header(user=0, hsize=32, size=36, non_seq=True, mtype=3, prev_node=5, orig_node=6,
               dest_node=7, orig_port=100, dest_port=200)  # fmt: skip
    out = reverse_for_reject(encode_header(h) + b"abcd", ErrorCode.NO_NODE, own_node=9)
    assert out is not None
    r = decode_header(out)
    assert not r.non_seq and r.error is ErrorCode.NO_NODE
    assert (r.prev_node, r.orig_node, r.dest_node) == (9, 9, 5)
    assert (r.orig_port, r.dest_port) == (200, 100)
    assert out[32:] == b"abcd"


def test_reject_drops_droppable_and_errored() -> None:
    assert reverse_for_reject(CAP_NAMED, ErrorCode.NO_PORT) is None  # dest droppable
    assert reverse_for_reject(CAP_CLOSE, ErrorCode.NO_PORT, own_node=VM1) is None  # has error


def test_reject_short_header_extended_to_basic() -> None:
    assert decode_header(CAP_CONN).hsize == SHORT_H_SIZE
    out = reverse_for_reject(CAP_CONN, ErrorCode.NO_PORT, own_node=VM1)
    assert out is not None
    assert len(out) == BASIC_H_SIZE + 12
    h = validate_msg(out)
    assert (h.hsize, h.size, h.errcode, h.msg_type) == (32, 44, 2, DataType.CONN_MSG)
    assert (h.orig_port, h.dest_port) == (0x55261AF0, 0x813A5B62)
    assert (h.prev_node, h.orig_node, h.dest_node) == (VM1, VM1, VM2)
    assert (h.link_ack, h.link_seqno) == (7, 8)
    assert out[32:] == b"stream-hello"
    with pytest.raises(ValueError, match="own_node is required"):
        reverse_for_reject(CAP_CONN, ErrorCode.NO_PORT)


def test_reject_truncates_data_to_1024() -> None:
    payload = bytes(i % 251 for i in range(3000))
    h = Header(user=1, hsize=40, size=40 + len(payload), mtype=2, prev_node=1, orig_node=1,
               dest_node=2, orig_port=3, dest_port=4, name_type=1000, name_instance=5)  # fmt: skip
    out = reverse_for_reject(encode_header(h) + payload, ErrorCode.NO_NAME)
    assert out is not None and len(out) == 40 + MAX_FORWARD_SIZE
    r = decode_header(out)
    assert r.size == 40 + 1024 and r.error is ErrorCode.NO_NAME
    assert out[40:] == payload[:1024]


def test_reject_syn_overload_returns_no_data() -> None:
    syn = Header(user=0, hsize=40, size=50, syn=True, mtype=2, prev_node=1, orig_node=1,
                 dest_node=2, orig_port=3, dest_port=4, name_type=1000)  # fmt: skip
    frame = encode_header(syn) + b"0123456789"
    out = reverse_for_reject(frame, ErrorCode.OVERLOAD)
    assert out is not None and len(out) == 40
    r = decode_header(out)
    assert r.syn and r.size == 40 and r.error is ErrorCode.OVERLOAD
    kept = reverse_for_reject(frame, ErrorCode.NO_PORT)  # other errors keep the data
    assert kept is not None and kept[40:] == b"0123456789"
    captured = reverse_for_reject(CAP_SYN, ErrorCode.OVERLOAD)  # real empty SYN
    assert captured is not None and decode_header(captured).size == 40


def test_reject_bad_input() -> None:
    with pytest.raises(WireError):
        reverse_for_reject(b"\x00" * 30, ErrorCode.NO_PORT)
    with pytest.raises(WireError):
        reverse_for_reject(_clear_droppable(CAP_NAMED)[:50], ErrorCode.NO_PORT)
    with pytest.raises(ValueError, match="error code 16"):
        reverse_for_reject(_clear_droppable(CAP_NAMED), 16)


# ---------------------------------------------------------------------------------------
# Name distributor items
# ---------------------------------------------------------------------------------------


def test_captured_name_items() -> None:
    h = validate_msg(CAP_NAMED_DISTR)
    assert h.user_enum is User.NAME_DISTRIBUTOR and h.msg_type is wire.NameDistrType.PUBLICATION
    assert h.words[1] >> 26 & 0x7 == 0x7  # bulk, last-bulk, non-legacy
    items = decode_items(CAP_NAMED_DISTR[h.hsize : h.size])
    assert items == [
        DistrItem(type=18888, lower=0x66, upper=0x66, port=0x8525DA28, key=0x8525DA29),
        DistrItem(type=0, lower=VM2, upper=VM2, port=0, key=VM2),
    ]
    assert encode_items(items) == CAP_NAMED_DISTR[40:]


def test_items_errors() -> None:
    assert decode_items(b"") == []
    with pytest.raises(WireError, match="19 bytes"):
        decode_items(bytes(19))
    with pytest.raises(WireError):
        decode_items(memoryview(bytes(41)))
    with pytest.raises(ValueError, match="u32"):
        encode_items([DistrItem(1, 2, 3, 4, 1 << 32)])


@given(st.lists(st.builds(DistrItem, *[_bits(32)] * 5), max_size=10))
def test_property_items_round_trip(items: list[DistrItem]) -> None:
    raw = encode_items(items)
    assert len(raw) == 20 * len(items)
    assert decode_items(raw) == items
    assert decode_items(bytearray(raw)) == items


# ---------------------------------------------------------------------------------------
# Node identity
# ---------------------------------------------------------------------------------------


def test_hash128to32() -> None:
    assert hash128to32(bytes.fromhex("c0a80001") + bytes(12)) == 0xC0A80001
    assert hash128to32(b"kvm1" + bytes(12)) == 0x6B766D31
    assert hash128to32(bytes.fromhex("0102030405060708090a0b0c0d0e0f10")) == 0x00000010
    # XOR of the words is 0 -> OR of the words.
    assert hash128to32(bytes.fromhex("0102030401020304" + "00" * 8)) == 0x01020304
    assert hash128to32(bytes.fromhex("f00000000f000000ff00000000000000")) == 0xFF000000
    assert hash128to32(bytes(16)) == 0
    with pytest.raises(WireError, match="16 bytes"):
        hash128to32(bytes(15))


def test_identity_to_str() -> None:
    assert identity_to_str(b"kvm1" + bytes(12)) == "kvm1"
    assert identity_to_str(b"node-1.a@b:c_D9Z") == "node-1.a@b:c_D9Z"
    assert identity_to_str(b"ab\0cd" + bytes(11)) == "ab"  # C string: stops at first NUL
    assert identity_to_str(bytes(16)) == ""
    assert identity_to_str(bytes.fromhex("c0a80001") + bytes(12)) == "c0a80001"
    assert identity_to_str(bytes.fromhex("c0a80010") + bytes(12)) == "c0a8001"  # kernel quirk
    assert identity_to_str(b"\x01" + bytes(15)) == "01"
    assert identity_to_str(b"kvm 1" + bytes(11)) == "6b766d2031"  # space is not text
    # Trailing '0' characters go even when they belong to a non-zero last byte (0x10).
    assert identity_to_str(bytes(range(1, 17))) == "0102030405060708090a0b0c0d0e0f1"
    with pytest.raises(WireError):
        identity_to_str(b"short")


def test_identity_from_str() -> None:
    assert identity_from_str("kvm1") == b"kvm1" + bytes(12)
    assert identity_from_str("c0a80001") == b"c0a80001" + bytes(8)  # text rule wins
    assert identity_from_str("a" * 16) == b"a" * 16
    assert identity_from_str("c0a800010000000000") == bytes.fromhex("c0a80001") + bytes(12)
    assert identity_from_str("0102030405060708090a0b0c0d0e0f10") == bytes(range(1, 17))
    assert identity_from_str("ABCDEF01234567890") == bytes.fromhex("abcdef012345678900") + bytes(7)
    for bad in ("", "x" * 33, "has space", "caf\u00e9", "not-hex-and-longer-than-16"):
        with pytest.raises(ValueError):
            identity_from_str(bad)


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefxyz.:_-@", min_size=1,
               max_size=16))  # fmt: skip
def test_property_text_identity_round_trip(name: str) -> None:
    ident = identity_from_str(name)
    assert len(ident) == 16
    assert identity_to_str(ident) == name


@given(st.binary(min_size=16, max_size=16))
def test_property_identity_hash_and_str_total(ident: bytes) -> None:
    assert 0 <= hash128to32(ident) <= U32_MAX
    text = identity_to_str(ident)
    assert len(text) <= 32
    if ident != bytes(16):
        assert hash128to32(ident) != 0


# ---------------------------------------------------------------------------------------
# 16-bit sequence arithmetic
# ---------------------------------------------------------------------------------------


def test_seq_wrap_cases() -> None:
    assert seq_add(65535, 1) == 0 and seq_add(0, -1) == 65535 and seq_add(100, 65536) == 100
    assert seq_less_eq(65535, 0) and seq_less(65535, 0) and not seq_more(65535, 0)
    assert seq_more(0, 65535) and not seq_less_eq(0, 65535)
    assert seq_less_eq(5, 5) and not seq_less(5, 5) and not seq_more(5, 5)
    assert seq_less_eq(0, 32767) and seq_less(0, 32767)
    assert not seq_less_eq(0, 32768) and seq_more(0, 32768)
    assert seq_less(65000, 300) and seq_more(300, 65000)
    assert seq_less_eq(1, 65537)  # inputs are taken modulo 65536
    assert not seq_less(1, 65537)


@given(_bits(16), st.integers(1, 32767))
def test_property_seq_order(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_less(a, b) and seq_less_eq(a, b) and seq_more(b, a)
    assert not seq_more(a, b) and not seq_less_eq(b, a)
    assert seq_less_eq(a, a) and not seq_less(a, a)
